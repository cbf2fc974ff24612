//! `bench_report`: turns the raw results of `scripts/bench` into the report: medians per
//! scenario and system, the ratios c10m / baseline, a Markdown table (stdout and
//! `results.md`), `results.json`, and grouped-bar charts (`throughput.svg/.png`,
//! `p99.svg/.png`: one panel per scenario, the systems side by side).
//!
//! Input, in `--dir`:
//! - `meta.json`: the header (kernel, XDP mode, batch, need_wakeup, idle mode, placement,
//!   mode, rounds...) and the scenarios run, each `{id, title, unit, cpu_unit, systems}`
//!   (c10m first, then its baselines);
//! - `runs.jsonl`: one JSON object per line: `kind` `run` (a timed run: throughput,
//!   p50/p99/p999 in microseconds where the client reports them, requests (bytes for a
//!   stream), server CPU seconds, machine busy seconds, ok/reason), `strace` (a separate
//!   run under `strace -c -f`: syscalls and requests), or `status` (a scenario not run, or
//!   a system that failed before any run, with the reason).
//!
//! A system any of whose runs failed is reported as failed with the first reason: never a
//! number. Text in the charts needs a TrueType font (`--font`, else the usual DejaVu
//! paths); without one no chart is drawn and the report says so (the SVG backend
//! would need no font file, but plotters measures text with the same font backend).
//!
//! Usage: bench_report --dir results/20261201-120000 [--font /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf]

use clap::Parser;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "bench_report",
    about = "Markdown table, results.json and charts from scripts/bench's raw results"
)]
struct Args {
    /// Results directory written by scripts/bench (meta.json, runs.jsonl).
    #[arg(long)]
    dir: PathBuf,
    /// TrueType font for chart text (default: DejaVu Sans from fonts-dejavu-core).
    #[arg(long)]
    font: Option<PathBuf>,
}

/// Median of the values (mean of the middle two for an even count).
fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// One system's result in one scenario.
#[derive(Default)]
struct SysResult {
    name: String,
    /// Some(reason) if the system failed (any run, or its start).
    failed: Option<String>,
    /// Reasons noted on successful runs (e.g. a few socket errors).
    notes: Vec<String>,
    rounds: usize,
    throughput: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    p999: Vec<f64>,
    server_cpu: Vec<f64>,
    machine_cpu: Vec<f64>,
    syscalls_per_req: Option<f64>,
    strace_note: Option<String>,
}

impl SysResult {
    fn ok(&self) -> bool {
        self.failed.is_none()
    }
    fn thr(&self) -> Option<f64> {
        self.ok().then(|| median(&self.throughput)).flatten()
    }
    fn p99(&self) -> Option<f64> {
        self.ok().then(|| median(&self.p99)).flatten()
    }
    fn server_cpu(&self) -> Option<f64> {
        self.ok().then(|| median(&self.server_cpu)).flatten()
    }
    fn machine_cpu(&self) -> Option<f64> {
        self.ok().then(|| median(&self.machine_cpu)).flatten()
    }
}

struct Scenario {
    id: String,
    title: String,
    unit: String,
    cpu_unit: String,
    not_run: Option<String>,
    systems: Vec<SysResult>,
}

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}
fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Units of work per "cpu_unit": CPU seconds are reported per 10^6 requests or per GB.
fn per_unit(cpu_unit: &str) -> f64 {
    match cpu_unit {
        "GB" => 1e9,
        _ => 1e6,
    }
}

fn load(dir: &Path) -> Result<(Value, Vec<Scenario>), String> {
    let meta_path = dir.join("meta.json");
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(&meta_path)
            .map_err(|e| format!("{}: {e}", meta_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", meta_path.display()))?;
    let runs_path = dir.join("runs.jsonl");
    let runs_text =
        std::fs::read_to_string(&runs_path).map_err(|e| format!("{}: {e}", runs_path.display()))?;
    let mut runs = Vec::new();
    for (i, line) in runs_text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        runs.push(
            serde_json::from_str::<Value>(line)
                .map_err(|e| format!("{} line {}: {e}", runs_path.display(), i + 1))?,
        );
    }
    let mut out = Vec::new();
    for sc in meta["scenarios"].as_array().cloned().unwrap_or_default() {
        let id = s(&sc, "id").to_string();
        let cpu_unit = s(&sc, "cpu_unit").to_string();
        let unit_div = per_unit(&cpu_unit);
        let mine: Vec<&Value> = runs.iter().filter(|r| s(r, "scenario") == id).collect();
        let not_run = mine
            .iter()
            .find(|r| s(r, "kind") == "status" && s(r, "status") == "not_run")
            .map(|r| s(r, "reason").to_string());
        let mut systems = Vec::new();
        for name in sc["systems"].as_array().cloned().unwrap_or_default() {
            let name = name.as_str().unwrap_or("").to_string();
            let mut r = SysResult {
                name: name.clone(),
                ..Default::default()
            };
            for e in mine.iter().filter(|e| s(e, "system") == name) {
                match s(e, "kind") {
                    "status" => {
                        r.failed.get_or_insert_with(|| s(e, "reason").to_string());
                    }
                    "run" => {
                        r.rounds += 1;
                        if e["ok"].as_bool() != Some(true) {
                            r.failed.get_or_insert_with(|| {
                                format!("round {}: {}", e["round"], s(e, "reason"))
                            });
                            continue;
                        }
                        if !s(e, "reason").is_empty() {
                            r.notes
                                .push(format!("round {}: {}", e["round"], s(e, "reason")));
                        }
                        if let Some(t) = f(e, "throughput") {
                            r.throughput.push(t);
                        }
                        for (k, v) in [
                            ("p50_us", &mut r.p50),
                            ("p99_us", &mut r.p99),
                            ("p999_us", &mut r.p999),
                        ] {
                            if let Some(x) = f(e, k) {
                                v.push(x);
                            }
                        }
                        if let Some(n) = f(e, "requests").filter(|&n| n > 0.0) {
                            if let Some(c) = f(e, "server_cpu_s") {
                                r.server_cpu.push(c / n * unit_div);
                            }
                            if let Some(c) = f(e, "machine_busy_s") {
                                r.machine_cpu.push(c / n * unit_div);
                            }
                        }
                    }
                    "strace" => match (f(e, "syscalls"), f(e, "requests")) {
                        (Some(c), Some(n)) if e["ok"].as_bool() == Some(true) && n > 0.0 => {
                            r.syscalls_per_req = Some(c / n)
                        }
                        _ => r.strace_note = Some(s(e, "reason").to_string()),
                    },
                    _ => {}
                }
            }
            if r.failed.is_none() && not_run.is_none() && r.throughput.is_empty() {
                r.failed = Some("no completed run".into());
            }
            systems.push(r);
        }
        out.push(Scenario {
            id,
            title: s(&sc, "title").to_string(),
            unit: s(&sc, "unit").to_string(),
            cpu_unit,
            not_run,
            systems,
        });
    }
    Ok((meta, out))
}

/// A number for the table: few significant digits, no exponent.
fn num(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => Some(a / b),
        _ => None,
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "/").replace('\n', " ")
}

fn header_line(meta: &Value) -> String {
    format!(
        "kernel {}, {} CPUs, XDP {}, batch {}, need_wakeup {}, idle {}; {}",
        s(meta, "kernel"),
        meta["cpus"],
        s(meta, "xdp_mode"),
        meta["batch"],
        if meta["need_wakeup"].as_bool() == Some(true) {
            "on"
        } else {
            "off"
        },
        s(meta, "idle"),
        s(meta, "placement"),
    )
}

fn markdown(meta: &Value, scs: &[Scenario], charts: &str) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "## c10m vs the kernel ({} mode: {} round(s) x {} s, medians; commit {}, {})\n",
        s(meta, "mode"),
        meta["rounds"],
        meta["seconds"],
        s(meta, "commit"),
        s(meta, "date")
    );
    let _ = writeln!(m, "{}\n", header_line(meta));
    let _ = writeln!(
        m,
        "| scenario | system | throughput | p50 us | p99 us | p99.9 us | server CPU-s per unit | machine CPU-s per unit | syscalls / req (strace run) | c10m / this: throughput, p99, server CPU |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|---|");
    for sc in scs {
        let label = format!("{} `{}`", sc.title, sc.id);
        if let Some(reason) = &sc.not_run {
            let _ = writeln!(
                m,
                "| {} | - | not run: {} | | | | | | | |",
                cell(&label),
                cell(reason)
            );
            continue;
        }
        let c10m = sc.systems.first();
        for (i, r) in sc.systems.iter().enumerate() {
            let name = &r.name;
            if let Some(reason) = &r.failed {
                let _ = writeln!(
                    m,
                    "| {} | {} | FAILED: {} | | | | | | | |",
                    cell(&label),
                    name,
                    cell(reason)
                );
                continue;
            }
            let rat = if i == 0 {
                String::new()
            } else {
                let c = c10m.expect("first system");
                let parts = [
                    ratio(c.thr(), r.thr()),
                    ratio(c.p99(), r.p99()),
                    ratio(c.server_cpu(), r.server_cpu()),
                ];
                parts
                    .iter()
                    .map(|p| p.map_or("n/a".into(), |x| format!("x{x:.2}")))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let sysc = match (r.syscalls_per_req, &r.strace_note) {
                (Some(x), _) => num(Some(x)),
                (None, Some(n)) if !n.is_empty() => format!("n/a ({})", cell(n)),
                _ => "n/a".into(),
            };
            let _ = writeln!(
                m,
                "| {} | {} | {} {} | {} | {} | {} | {} / {} | {} / {} | {} | {} |",
                cell(&label),
                name,
                num(r.thr()),
                sc.unit,
                num(median(&r.p50)),
                num(r.p99()),
                num(median(&r.p999)),
                num(r.server_cpu()),
                sc.cpu_unit,
                num(r.machine_cpu()),
                sc.cpu_unit,
                sysc,
                rat
            );
        }
    }
    let notes: Vec<String> = scs
        .iter()
        .flat_map(|sc| {
            sc.systems.iter().flat_map(move |r| {
                r.notes
                    .iter()
                    .map(move |n| format!("{} / {}: {}", sc.id, r.name, n))
            })
        })
        .collect();
    let _ = writeln!(m);
    let _ = writeln!(
        m,
        "- throughput: requests (connections for `http_close`) per second as the client counts them, MB/s (10^6 B, one direction) for `bulk`; \
         latency from the client (wrk: its percentiles; redis-benchmark: no p99.9; lat_client: its own histogram); n/a: the client does not report it."
    );
    let _ = writeln!(
        m,
        "- server CPU: utime+stime of the server's processes (all threads, nginx master and worker) over the run, per 10^6 requests (per GB for bulk). \
         On veth a frame's receive work runs in the sender's context, so each side's CPU includes its peer's receive path (FACTS.md). \
         c10m in adaptive idle busy-polls while traffic flows: under a saturating closed-loop client its CPU is whatever share of its core it gets, \
         so its CPU per request is an upper bound (FACTS.md: a fixed offered load is the fair comparison)."
    );
    let _ = writeln!(
        m,
        "- machine CPU: busy time of all CPUs from /proc/stat over the run (client, server, softirq), per the same unit; \
         it includes anything else running on the machine (loadavg during the bench: {}).",
        s(meta, "loadavg")
    );
    let _ = writeln!(
        m,
        "- syscalls / req: from a separate {} s run per system under `strace -c -f -p` (the server slowed by strace; that run is used for nothing else), \
         syscalls of all the server's threads divided by the requests the client completed in it.",
        meta["strace_seconds"]
    );
    let _ = writeln!(
        m,
        "- bulk: echo_client.py (python) generates the random data and hashes both directions inside the timed window, so the machine CPU per GB is mostly the client's."
    );
    let _ = writeln!(m, "- charts: {charts}");
    for n in notes {
        let _ = writeln!(m, "- note: {}", cell(&n));
    }
    m
}

fn results_json(meta: &Value, scs: &[Scenario]) -> Value {
    let stats = |v: &[f64]| -> Value {
        if v.is_empty() {
            return Value::Null;
        }
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        json!({"median": median(v), "min": min, "max": max, "values": v})
    };
    let scenarios: Vec<Value> = scs
        .iter()
        .map(|sc| {
            let c10m = sc.systems.first();
            let systems: Vec<Value> = sc
                .systems
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut o = json!({
                        "name": r.name,
                        "status": if sc.not_run.is_some() { "not_run" } else if r.ok() { "ok" } else { "failed" },
                        "reason": r.failed,
                        "rounds": r.rounds,
                        "notes": r.notes,
                    });
                    if r.ok() && sc.not_run.is_none() {
                        o["throughput"] = stats(&r.throughput);
                        o["p50_us"] = stats(&r.p50);
                        o["p99_us"] = stats(&r.p99);
                        o["p999_us"] = stats(&r.p999);
                        o["server_cpu_s_per_unit"] = stats(&r.server_cpu);
                        o["machine_cpu_s_per_unit"] = stats(&r.machine_cpu);
                        o["syscalls_per_request"] = json!(r.syscalls_per_req);
                        if i > 0 {
                            let c = c10m.expect("first system");
                            o["c10m_over_this"] = json!({
                                "throughput": ratio(c.thr(), r.thr()),
                                "p99": ratio(c.p99(), r.p99()),
                                "server_cpu": ratio(c.server_cpu(), r.server_cpu()),
                                "machine_cpu": ratio(c.machine_cpu(), r.machine_cpu()),
                                "syscalls": ratio(c.syscalls_per_req, r.syscalls_per_req),
                            });
                        }
                    }
                    o
                })
                .collect();
            json!({
                "id": sc.id, "title": sc.title, "unit": sc.unit, "cpu_unit": sc.cpu_unit,
                "status": if sc.not_run.is_some() { "not_run" } else { "run" },
                "reason": sc.not_run,
                "systems": systems,
            })
        })
        .collect();
    json!({"meta": meta, "scenarios": scenarios})
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

/// One chart: a panel per scenario, a bar per system (value from `pick`), failed or
/// not-run systems written as text where their bar would be.
fn draw_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    subtitle: &str,
    scs: &[Scenario],
    pick: &dyn Fn(&SysResult) -> Option<f64>,
    unit: &dyn Fn(&Scenario) -> String,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (top, root) = root.split_vertically(52);
    top.draw(&Text::new(
        title.to_string(),
        (10, 6),
        ("sans-serif", 18).into_font().color(&BLACK),
    ))?;
    top.draw(&Text::new(
        subtitle.to_string(),
        (10, 30),
        ("sans-serif", 12).into_font().color(&BLACK),
    ))?;
    let cols = 4usize.min(scs.len().max(1));
    let rows = scs.len().div_ceil(cols).max(1);
    let panels = root.split_evenly((rows, cols));
    for (sc, area) in scs.iter().zip(panels.iter()) {
        let n = sc.systems.len().max(1) as i32;
        let vals: Vec<Option<f64>> = sc
            .systems
            .iter()
            .map(|r| if sc.not_run.is_some() { None } else { pick(r) })
            .collect();
        let ymax = vals.iter().flatten().copied().fold(0.0f64, f64::max);
        if let Some(reason) = &sc.not_run {
            // No axes for a scenario that did not run: its title and why.
            let a = area.margin(8, 8, 8, 8);
            a.draw(&Text::new(
                sc.title.clone(),
                (0, 0),
                ("sans-serif", 13).into_font().color(&BLACK),
            ))?;
            let mut y = 40;
            for line in wrap(&format!("not run: {reason}"), 40).iter().take(8) {
                a.draw(&Text::new(
                    line.clone(),
                    (0, y),
                    ("sans-serif", 12).into_font().color(&RED),
                ))?;
                y += 16;
            }
            continue;
        }
        let ymax = if ymax > 0.0 { ymax * 1.2 } else { 1.0 };
        // (0..k).into_segmented() has k + 1 segments: one per system.
        let mut chart = ChartBuilder::on(area)
            .caption(&sc.title, ("sans-serif", 13))
            .margin(8)
            .x_label_area_size(22)
            .y_label_area_size(58)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..ymax)?;
        let names: Vec<String> = sc.systems.iter().map(|r| r.name.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .y_labels(6)
            .y_desc(unit(sc))
            .y_label_formatter(&|v| {
                if *v >= 1e6 {
                    format!("{:.1}M", v / 1e6)
                } else if *v >= 1e3 {
                    format!("{:.0}k", v / 1e3)
                } else if ymax >= 10.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            })
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .label_style(("sans-serif", 11))
            .draw()?;
        for (i, v) in vals.iter().enumerate() {
            let i = i as i32;
            let color = COLORS[i as usize % COLORS.len()];
            match v {
                Some(v) => {
                    let mut bar = Rectangle::new(
                        [
                            (SegmentValue::Exact(i), 0.0),
                            (SegmentValue::Exact(i + 1), *v),
                        ],
                        color.filled(),
                    );
                    bar.set_margin(0, 0, 10, 10);
                    chart.draw_series(std::iter::once(bar))?;
                    chart.draw_series(std::iter::once(Text::new(
                        num(Some(*v)),
                        (SegmentValue::CenterOf(i), *v + ymax * 0.02),
                        ("sans-serif", 11)
                            .into_font()
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )))?;
                }
                None => {
                    let r = &sc.systems[i as usize];
                    let what = if sc.not_run.is_some() {
                        "not run"
                    } else if r.failed.is_some() {
                        "failed"
                    } else {
                        "n/a"
                    };
                    chart.draw_series(std::iter::once(Text::new(
                        what.to_string(),
                        (SegmentValue::CenterOf(i), ymax * 0.5),
                        ("sans-serif", 12)
                            .into_font()
                            .color(&RED)
                            .pos(Pos::new(HPos::Center, VPos::Center)),
                    )))?;
                }
            }
        }
    }
    root.present()?;
    Ok(())
}

fn charts(dir: &Path, meta: &Value, scs: &[Scenario]) -> DrawResult<Vec<String>> {
    let cols = 4u32.min(scs.len().max(1) as u32);
    let rows = (scs.len() as u32).div_ceil(cols).max(1);
    // At least 1200 px wide: the header line must fit.
    let size = ((cols * 300).max(1200), rows * 250 + 52);
    let sub = format!(
        "kernel {}, XDP {}, batch {}, need_wakeup {}, c10m idle adaptive; servers CPU 1, clients CPU 0; {} mode, {} round(s) x {} s, medians; {}",
        s(meta, "kernel"),
        s(meta, "xdp_mode"),
        meta["batch"],
        if meta["need_wakeup"].as_bool() == Some(true) { "on" } else { "off" },
        s(meta, "mode"),
        meta["rounds"],
        meta["seconds"],
        s(meta, "date"),
    );
    let thr_title = "Throughput (higher is better)".to_string();
    let p99_title = "p99 latency, us (lower is better)".to_string();
    let thr = |r: &SysResult| r.thr();
    let p99 = |r: &SysResult| r.p99();
    let thr_unit = |sc: &Scenario| sc.unit.clone();
    let p99_unit = |_: &Scenario| "us".to_string();
    let mut written = Vec::new();
    // Scenarios without a p99 from any client (bulk) are left out of the p99 chart.
    let with_p99: Vec<&Scenario> = scs
        .iter()
        .filter(|sc| sc.not_run.is_none() && sc.systems.iter().any(|r| !r.p99.is_empty()))
        .collect();
    let with_p99: Vec<Scenario> = with_p99
        .into_iter()
        .map(|sc| Scenario {
            id: sc.id.clone(),
            title: sc.title.clone(),
            unit: sc.unit.clone(),
            cpu_unit: sc.cpu_unit.clone(),
            not_run: None,
            systems: sc
                .systems
                .iter()
                .map(|r| SysResult {
                    name: r.name.clone(),
                    failed: r.failed.clone(),
                    p99: r.p99.clone(),
                    ..Default::default()
                })
                .collect(),
        })
        .collect();
    let p99_size = {
        let n = with_p99.len().max(1) as u32;
        let c = 4u32.min(n);
        ((c * 300).max(1200), n.div_ceil(c) * 250 + 52)
    };
    for (name, title, set, pick, unit, sz) in [
        (
            "throughput",
            &thr_title,
            scs,
            &thr as &dyn Fn(&SysResult) -> Option<f64>,
            &thr_unit as &dyn Fn(&Scenario) -> String,
            size,
        ),
        ("p99", &p99_title, &with_p99[..], &p99, &p99_unit, p99_size),
    ] {
        let svg = dir.join(format!("{name}.svg"));
        draw_chart(
            SVGBackend::new(&svg, sz).into_drawing_area(),
            title,
            &sub,
            set,
            pick,
            unit,
        )?;
        written.push(svg.display().to_string());
        let png = dir.join(format!("{name}.png"));
        draw_chart(
            BitMapBackend::new(&png, sz).into_drawing_area(),
            title,
            &sub,
            set,
            pick,
            unit,
        )?;
        written.push(png.display().to_string());
    }
    Ok(written)
}

/// Greedy word wrap to lines of at most `width` characters (longer words stay whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for w in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + w.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(w);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// Register a TrueType font as plotters' "sans-serif"; Err(reason) if none is usable.
fn setup_font(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
        ]
        .iter()
        .map(PathBuf::from)
        .collect(),
    };
    for p in &candidates {
        if let Ok(bytes) = std::fs::read(p) {
            // plotters keeps the font for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(p.clone());
            }
        }
    }
    Err(format!(
        "no usable TrueType font ({}): install fonts-dejavu-core (scripts/setup) or pass --font",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let (meta, scs) = match load(&a.dir) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("bench_report: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let chart_note = match setup_font(a.font.as_deref()) {
        Err(e) => {
            eprintln!("bench_report: charts not drawn: {e}");
            format!("not drawn: {e}")
        }
        Ok(font) => match charts(&a.dir, &meta, &scs) {
            Ok(files) => format!(
                "{} (text: {})",
                files
                    .iter()
                    .map(|f| Path::new(f)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(", "),
                font.display()
            ),
            Err(e) => {
                eprintln!("bench_report: charts failed: {e}");
                format!("failed: {e}")
            }
        },
    };
    let md = markdown(&meta, &scs, &chart_note);
    let mut rj = results_json(&meta, &scs);
    rj["charts"] = json!(chart_note);
    let w = std::fs::write(a.dir.join("results.md"), &md).and_then(|()| {
        std::fs::write(
            a.dir.join("results.json"),
            serde_json::to_string_pretty(&rj).unwrap_or_default() + "\n",
        )
    });
    if let Err(e) = w {
        eprintln!("bench_report: writing results: {e}");
        return std::process::ExitCode::FAILURE;
    }
    print!("{md}");
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn failed_run_is_never_a_number() {
        let dir = std::env::temp_dir().join(format!("bench_report_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("meta.json"),
            r#"{"mode":"smoke","scenarios":[{"id":"a","title":"A","unit":"req/s","cpu_unit":"1M requests","systems":["c10m","k"]},
               {"id":"b","title":"B","unit":"req/s","cpu_unit":"1M requests","systems":["c10m"]}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("runs.jsonl"),
            concat!(
                r#"{"kind":"run","scenario":"a","system":"c10m","round":1,"ok":true,"reason":"","throughput":200,"p99_us":10,"requests":1000,"server_cpu_s":1,"machine_busy_s":2}"#, "\n",
                r#"{"kind":"run","scenario":"a","system":"k","round":1,"ok":false,"reason":"boom","throughput":100,"requests":1000}"#, "\n",
                r#"{"kind":"status","scenario":"b","system":"","status":"not_run","reason":"later"}"#, "\n",
            ),
        )
        .unwrap();
        let (meta, scs) = load(&dir).unwrap();
        assert_eq!(scs[0].systems[0].thr(), Some(200.0));
        assert_eq!(scs[0].systems[0].server_cpu(), Some(1000.0));
        assert_eq!(scs[0].systems[1].thr(), None);
        assert!(scs[0].systems[1]
            .failed
            .as_deref()
            .unwrap()
            .contains("boom"));
        assert_eq!(scs[1].not_run.as_deref(), Some("later"));
        let md = markdown(&meta, &scs, "none");
        assert!(md.contains("FAILED: round 1: boom"));
        assert!(md.contains("not run: later"));
        std::fs::remove_dir_all(&dir).ok();
    }
}

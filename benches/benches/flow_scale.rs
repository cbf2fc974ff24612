//! Flow-scaling micro-benchmark: per-segment cost of one engine as established flows grow,
//! next to a memory floor (DESIGN.md, "smoltcp at a million connections").
//!
//! Per size N (10, 1 k, 10 k, 100 k, 1 M; capped by `C10M_BENCH_MAX_FLOWS`, default
//! 100 000):
//! - `engine/N`: one server engine (echo app, 2 KiB + 2 KiB TCP buffers) over a `MemLink`
//!   with N flows established by a raw peer; one iteration = inject one 16-byte data
//!   segment for a uniformly random flow, one `poll` (delivery to the app and the echo),
//!   drain what the engine sent. Sequence numbers, acks piggybacked on the next segment
//!   of the same flow, and every echo are checked outside the timed region.
//! - `floor_full/N`: `FxHashMap<FourTuple, Box<state>>`, a ~480 B socket-sized state plus
//!   2 KiB + 2 KiB buffers in their own allocations (the engine's working set); one
//!   iteration = lookup of a random key, touch three lines of the state, copy 16 bytes into
//!   the receive buffer and on into the transmit buffer. Serial: each lookup's address
//!   depends on the previous touch, as in the engine, which handles one segment at a time
//!   with far more instructions per segment than out-of-order execution can look past.
//! - `floor_state/N`: the same, serial, without the buffers (~500 B per flow).
//! - `floor_mlp/N`: `floor_full` with independent iterations: the CPU overlaps the misses
//!   of several lookups (memory-level parallelism), a lower bound an engine could approach
//!   only by prefetching flows of a receive batch.
//!
//! The engine's setup (handshakes, then an untimed warm pass of max(N, 4096) segments) is
//! outside the timing; its RSS per flow is printed as `flows=N rss_per_flow_bytes=...`.
//! After each engine case it also times one `poll` carrying an ARP request (the gateway's,
//! then LAN broadcasts for other hosts): `arp_poll_us`.
//!
//! At the end it prints a table: median ns/segment (median over the measurement's chunks of
//! 4096 segments), the floors, the ratios, and the RSS per flow after establishing N flows.
//!
//! Run:
//!   cargo bench -p c10m-benches --bench flow_scale                       # 10 .. 100 k
//!   C10M_BENCH_MAX_FLOWS=1000000 cargo bench -p c10m-benches --bench flow_scale  # + 1 M (~6 GB)
//!   cargo bench -p c10m-benches --bench flow_scale -- --quick            # CI-sized
//!   cargo bench -p c10m-benches --bench flow_scale -- 'engine/'          # criterion filter
//! `cargo test --benches` runs each case once with at most 1 000 flows.

use c10m_benches::flow_scale::{EchoBench, Floor, CHUNK, GATEWAY_IP, GATEWAY_MAC, SERVER_IP};
use c10m_benches::mem::rss_bytes;
use c10m_stack::smoltcp::wire::Ipv4Address;
use criterion::{BenchmarkId, Criterion, Throughput};
use std::cell::RefCell;
use std::time::{Duration, Instant};

const SIZES: [usize; 5] = [10, 1_000, 10_000, 100_000, 1_000_000];
const DEFAULT_MAX_FLOWS: usize = 100_000;
/// Chunks shorter than this are too short to time on their own (criterion's first calls).
const MIN_CHUNK_FOR_MEDIAN: u64 = 256;
const SAMPLE_SIZE: usize = 20;

/// One benchmark's timings: per criterion call, the (segments, elapsed) of each chunk.
struct Rec {
    kind: &'static str,
    n: usize,
    calls: Vec<Vec<(u64, Duration)>>,
}

thread_local! {
    static RECS: RefCell<Vec<Rec>> = const { RefCell::new(Vec::new()) };
    static RSS: RefCell<Vec<(&'static str, usize, f64)>> = const { RefCell::new(Vec::new()) };
}

fn new_call(kind: &'static str, n: usize) {
    RECS.with(|r| {
        let mut r = r.borrow_mut();
        if !r.last().is_some_and(|x| x.kind == kind && x.n == n) {
            r.push(Rec {
                kind,
                n,
                calls: Vec::new(),
            });
        }
        r.last_mut().expect("just pushed").calls.push(Vec::new());
    });
}

fn record_chunk(k: u64, dt: Duration) {
    RECS.with(|r| {
        if let Some(c) = r.borrow_mut().last_mut().and_then(|x| x.calls.last_mut()) {
            c.push((k, dt));
        }
    });
}

/// RSS of the process before any setup.
static BASELINE_RSS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Set up and report RSS per flow: (RSS after setup - RSS before the first setup) / n.
/// Sizes run in ascending order and the allocator keeps what smaller, dropped setups
/// used, so this over-counts by at most the previous sizes' share (about 10% with 10x
/// steps): an upper bound, not a flattering figure. (No heap trimming: that needs a
/// libc call outside safe Rust, and such code lives only in the driver.)
fn measured_setup<T>(kind: &'static str, n: usize, f: impl FnOnce() -> T) -> T {
    let before = *BASELINE_RSS.get_or_init(|| rss_bytes().unwrap_or(0));
    let t0 = Instant::now();
    let v = f();
    let secs = t0.elapsed().as_secs_f64();
    let after = rss_bytes().unwrap_or(0);
    let per_flow = after.saturating_sub(before) as f64 / n as f64;
    println!("{kind}: flows={n} rss_per_flow_bytes={per_flow:.0} setup_s={secs:.2}");
    RSS.with(|r| r.borrow_mut().push((kind, n, per_flow)));
    v
}

fn sizes(bench_mode: bool) -> Vec<usize> {
    let mut max = match std::env::var("C10M_BENCH_MAX_FLOWS") {
        Ok(s) => s
            .trim()
            .replace('_', "")
            .parse()
            .expect("C10M_BENCH_MAX_FLOWS must be a number"),
        Err(_) => DEFAULT_MAX_FLOWS,
    };
    if !bench_mode {
        // `cargo test --benches` (debug build, one iteration each): keep it fast.
        max = max.min(1_000);
    }
    let mut v: Vec<usize> = SIZES.iter().copied().filter(|&n| n <= max).collect();
    if max >= 1 && !v.contains(&max) {
        v.push(max);
    }
    v
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    Some(if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    })
}

/// Median ns per iteration over the chunks of the measurement calls (the last
/// `measured_calls` criterion calls; earlier ones are warm-up).
fn median_ns(kind: &str, n: usize, measured_calls: usize) -> Option<f64> {
    RECS.with(|r| {
        let r = r.borrow();
        let rec = r.iter().find(|x| x.kind == kind && x.n == n)?;
        let from = rec.calls.len().saturating_sub(measured_calls);
        let chunks: Vec<(u64, Duration)> = rec.calls[from..].iter().flatten().copied().collect();
        let long: Vec<f64> = chunks
            .iter()
            .filter(|(k, _)| *k >= MIN_CHUNK_FOR_MEDIAN)
            .map(|(k, d)| d.as_nanos() as f64 / *k as f64)
            .collect();
        if !long.is_empty() {
            return median(long);
        }
        median(
            chunks
                .iter()
                .map(|(k, d)| d.as_nanos() as f64 / *k as f64)
                .collect(),
        )
    })
}

fn rss_of(kind: &str, n: usize) -> Option<f64> {
    RSS.with(|r| {
        r.borrow()
            .iter()
            .find(|x| x.0 == kind && x.1 == n)
            .map(|x| x.2)
    })
}

fn fmt(x: Option<f64>, prec: usize) -> String {
    x.map_or("-".into(), |v| format!("{v:.prec$}"))
}

fn print_summary(sizes: &[usize], measured_calls: usize) {
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    println!();
    println!("flow_scale summary: median ns/segment; floors = FxHashMap lookup + touch state");
    println!(
        "{:>9} {:>9} {:>10} {:>10} {:>11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "flows",
        "engine",
        "engine_b32",
        "floor_full",
        "floor_state",
        "floor_mlp",
        "e/full",
        "e/state",
        "e/mlp",
        "e/e10",
        "rss/flow_B"
    );
    let base = median_ns("engine", sizes[0], measured_calls);
    for &n in sizes {
        let e = median_ns("engine", n, measured_calls);
        let eb = median_ns("engine_b32", n, measured_calls);
        let f = median_ns("floor_full", n, measured_calls);
        let s = median_ns("floor_state", n, measured_calls);
        let m = median_ns("floor_mlp", n, measured_calls);
        println!(
            "{:>9} {:>9} {:>10} {:>10} {:>11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10}",
            n,
            fmt(e, 0),
            fmt(eb, 0),
            fmt(f, 0),
            fmt(s, 0),
            fmt(m, 0),
            fmt(ratio(e, f), 2),
            fmt(ratio(e, s), 2),
            fmt(ratio(e, m), 2),
            fmt(ratio(e, base), 2),
            fmt(rss_of("engine", n), 0),
        );
    }
    // Machine-readable, one line per size.
    for &n in sizes {
        println!(
            "flows={n} engine_median_ns={} engine_b32_median_ns={} floor_full_median_ns={} \
             floor_state_median_ns={} floor_mlp_median_ns={} rss_per_flow_bytes={}",
            fmt(median_ns("engine", n, measured_calls), 1),
            fmt(median_ns("engine_b32", n, measured_calls), 1),
            fmt(median_ns("floor_full", n, measured_calls), 1),
            fmt(median_ns("floor_state", n, measured_calls), 1),
            fmt(median_ns("floor_mlp", n, measured_calls), 1),
            fmt(rss_of("engine", n), 0)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let bench_mode = has("--bench") && !has("--test");
    let quick = has("--quick");
    let mut c = Criterion::default()
        .sample_size(SAMPLE_SIZE)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    // Criterion's measurement phase is its last `sample_size` calls (2 in --quick mode).
    let measured_calls = if quick { 2 } else { SAMPLE_SIZE };
    let sizes = sizes(bench_mode);

    let mut g = c.benchmark_group("flow_scale");
    g.throughput(Throughput::Elements(1));
    for &n in &sizes {
        let mut engine: Option<EchoBench> = None;
        g.bench_with_input(BenchmarkId::new("engine", n), &n, |b, &n| {
            let st = engine.get_or_insert_with(|| {
                measured_setup("engine", n, || {
                    let mut b = EchoBench::new(n);
                    println!(
                        "engine: flows={n} setup_worst_poll_us={:.0}",
                        b.setup_worst_poll.as_secs_f64() * 1e6
                    );
                    // Untimed warm pass: (most) flows have carried a segment, so buffers
                    // are touched and each flow has its RTO armed, as under load.
                    b.run(n.max(CHUNK) as u64, |_, _| {});
                    b
                })
            });
            b.iter_custom(|iters| {
                new_call("engine", n);
                st.run(iters, record_chunk)
            });
        });
        // The same engine under load: 32 segments of distinct random flows per poll, so
        // the first pass of the receive batch overlaps their lookups.
        if n >= 64 {
            if let Some(st) = engine.as_mut() {
                g.bench_with_input(BenchmarkId::new("engine_b32", n), &n, |b, &n| {
                    st.batch = 32;
                    b.iter_custom(|iters| {
                        new_call("engine_b32", n);
                        st.run(iters, record_chunk)
                    });
                    st.batch = 1;
                });
            }
        }
        if let Some(mut e) = engine.take() {
            // Cost of one ARP frame in the loop with N flows whose echo is unacked (each
            // has an RTO armed): the gateway's own request, then a LAN broadcast for
            // another host.
            let lan_host = ([0x02, 0, 0, 0, 0, 0x77], Ipv4Address::new(198, 18, 0, 77));
            let (gw, gw_out) = e.poll_with_arp((GATEWAY_MAC, GATEWAY_IP), SERVER_IP);
            let (other, other_out) = e.poll_with_arp(lan_host, Ipv4Address::new(198, 18, 0, 99));
            let (other2, _) = e.poll_with_arp(lan_host, Ipv4Address::new(198, 18, 0, 98));
            println!(
                "engine: flows={n} arp_poll_us: gateway_request={:.1} (frames out {gw_out}) \
                 lan_broadcast={:.1} (frames out {other_out}) again={:.1}",
                gw.as_secs_f64() * 1e6,
                other.as_secs_f64() * 1e6,
                other2.as_secs_f64() * 1e6,
            );
            let keep = [
                "rx_frames",
                "tcp_segments_in",
                "accepted",
                "tcp_no_flow",
                "timers_fired",
                "tx_no_buffer",
                "internal_errors",
                "neighbor_wakeups",
                "flows_active",
            ];
            let cs: Vec<String> = e
                .engine
                .counters()
                .into_iter()
                .filter(|(k, _)| keep.contains(k))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let after = rss_bytes().unwrap_or(0);
            println!(
                "engine: flows={n} segments_checked={} rss_after_run_mib={} {}",
                e.segments,
                after >> 20,
                cs.join(" ")
            );
        }

        for (kind, bufs, serial) in [
            ("floor_full", true, true),
            ("floor_state", false, true),
            ("floor_mlp", true, false),
        ] {
            let mut floor: Option<Floor> = None;
            g.bench_with_input(BenchmarkId::new(kind, n), &n, |b, &n| {
                let st = floor
                    .get_or_insert_with(|| measured_setup(kind, n, || Floor::new(n, bufs, serial)));
                b.iter_custom(|iters| {
                    new_call(kind, n);
                    st.run(iters, record_chunk)
                });
            });
        }
    }
    g.finish();
    c.final_summary();
    print_summary(&sizes, measured_calls);
}

//! `c10m`: the command line. `c10m serve` binds an AF_XDP port on one NIC queue, runs a
//! per-core engine over it and serves an application.

use c10m_apps::http::Http;
use c10m_apps::{echo::Echo, hash::Hash, xdp_link::XdpLink};
use c10m_driver::{AttachMode, Port, PortConfig, XdpMode};
use c10m_stack::smoltcp::time::Instant;
use c10m_stack::{App, Engine, EngineConfig, Idle, ListenOptions, Pool};
use clap::{Parser, Subcommand, ValueEnum};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "c10m",
    version,
    args_override_self = true,
    about = "Kernel-bypass TCP/IP stack service: AF_XDP + smoltcp, one engine per NIC queue",
    long_about = "Kernel-bypass TCP/IP stack service: AF_XDP + smoltcp, one engine per NIC queue.\n\n\
                  Quick start on the veth testbed (as root):\n  \
                  scripts/testbed up demo\n  \
                  ip netns exec demo-stack c10m serve --iface demo-s --ip 198.18.0.2/24 --app echo --port 7"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve an application on one interface queue until SIGINT/SIGTERM (or --duration).
    Serve(Serve),
    /// Generate load from one interface queue: C connections to --target, echo / HTTP GET
    /// / RESP requests in a closed loop or at a fixed --rate (open loop, latency from the
    /// scheduled send time as wrk2 does); prints a wrk-like summary and exits.
    Loadgen(LoadgenArgs),
    /// Frame-rate ceiling, receive side: take every frame of the queue (no address
    /// steering: the XDP program redirects all) and drop it; prints frames and Mpps.
    Rxdrop(RawArgs),
    /// Frame-rate ceiling, send side: transmit 64-byte UDP frames as fast as the TX ring
    /// and the kernel take them; prints frames and Mpps.
    Txgen(RawArgs),
}

#[derive(clap::Args)]
struct RawArgs {
    #[command(flatten)]
    link: PortArgs,
    /// Seconds to measure (rxdrop: from the first frame; it also stops 1 s after the
    /// last one).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// txgen: frame size in bytes (at least 60).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// txgen: destination MAC (default broadcast).
    #[arg(long, default_value = "ff:ff:ff:ff:ff:ff", value_parser = parse_mac)]
    dst_mac: [u8; 6],
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || format!("'{s}' is not a MAC address: write it like 02:00:00:00:00:01");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

/// rxdrop / txgen: a port with no address steering, a raw loop, one result line.
fn raw(a: RawArgs, rx: bool) -> Result<(), String> {
    let (mut port, mode, copy) = open_port(&a.link, Vec::new())?;
    let d = Duration::from_secs(a.seconds.max(1));
    let (what, r) = if rx {
        eprintln!(
            "c10m: rxdrop on {} queue {} (XDP {mode}, {copy}): ready",
            a.link.iface, a.link.queue
        );
        (
            "rxdrop",
            c10m_apps::raw::rxdrop(&mut port, d, Duration::from_secs(1)),
        )
    } else {
        let frame = c10m_apps::raw::udp_frame(a.size, port.mac(), a.dst_mac);
        eprintln!(
            "c10m: txgen on {} queue {} (XDP {mode}, {copy}): ready",
            a.link.iface, a.link.queue
        );
        ("txgen", c10m_apps::raw::txgen(&mut port, &frame, d))
    };
    println!(
        "{what}: frames={} secs={:.3} mpps={:.3} bytes={} kernel_drops={} wakeups={}",
        r.frames,
        r.secs,
        r.mpps(),
        r.bytes,
        r.kernel_rx_dropped,
        r.wakeups
    );
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum AppKind {
    /// TCP and UDP echo (RFC 862) on --port.
    Echo,
    /// SHA-256 of length-prefixed uploads (8-byte big-endian length, body up to 64 MiB;
    /// answers 32 bytes), hashed chunk by chunk on the processor pool.
    Hash,
    /// RESP2 key-value server (redis-cli / redis-benchmark compatible subset: GET SET
    /// DEL INCR MGET MSET EXPIRE TTL ...), pipelined, one in-memory store per engine.
    Kv,
    /// HTTP/1.1 on --port (keep-alive, pipelining, HEAD): --body at `/` and the files
    /// under --dir (preloaded into memory) at their relative paths.
    Http,
    /// L4 TCP proxy: every connection on --port is relayed to --backend, both ways, with
    /// backpressure; half-close and reset are passed on.
    Proxy,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Native (driver) XDP, falling back to generic with a log line that says so.
    Auto,
    /// Native (driver) XDP only.
    Native,
    /// Generic (skb) XDP: works on any interface, slower.
    Skb,
}

#[derive(Clone, Copy, ValueEnum)]
enum IdleArg {
    /// Busy-poll always: lowest latency, one full core.
    Spin,
    /// Spin while traffic flows, sleep in poll() when idle.
    Adaptive,
}

/// Which NIC queue an AF_XDP port binds and how (serve, loadgen, rxdrop, txgen).
#[derive(clap::Args)]
struct PortArgs {
    /// Interface to bind (in the current network namespace), e.g. a testbed's `NAME-s`
    /// (server side) or `NAME-p` (peer side).
    #[arg(long)]
    iface: String,
    /// NIC receive queue to own.
    #[arg(long, default_value_t = 0)]
    queue: u32,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    xdp_mode: Mode,
    /// Replace an XDP program that something else left on the interface.
    #[arg(long)]
    force: bool,
    /// UMEM frame size in bytes (2048 or 4096).
    #[arg(long, default_value_t = 2048)]
    frame_size: u32,
    /// Number of UMEM frames.
    #[arg(long, default_value_t = 4096)]
    frames: u32,
    /// Size of each AF_XDP ring (power of two).
    #[arg(long, default_value_t = 2048)]
    ring_size: u32,
}

/// The stack's own addresses on the interface (serve, loadgen).
#[derive(clap::Args)]
struct AddrArgs {
    /// The stack's IPv4 address with prefix length, e.g. 198.18.0.2/24. Must differ from
    /// the kernel's own addresses on the interface (the kernel keeps those).
    #[arg(long, value_parser = parse_v4_cidr)]
    ip: Option<(Ipv4Addr, u8)>,
    /// The stack's IPv6 address with prefix length, e.g. 2001:2::2/64.
    #[arg(long, value_parser = parse_v6_cidr)]
    ip6: Option<(Ipv6Addr, u8)>,
    /// Default IPv4 gateway (for peers off the local subnet).
    #[arg(long)]
    gateway: Option<Ipv4Addr>,
    /// Default IPv6 gateway.
    #[arg(long)]
    gateway6: Option<Ipv6Addr>,
}

impl AddrArgs {
    /// The addresses the XDP program steers to the stack; an error if there are none.
    fn steer(&self) -> Result<Vec<IpAddr>, String> {
        let v: Vec<IpAddr> = (self.ip.map(|(a, _)| IpAddr::V4(a)).into_iter())
            .chain(self.ip6.map(|(a, _)| IpAddr::V6(a)))
            .collect();
        if v.is_empty() {
            return Err(
                "give the stack an address: --ip 198.18.0.2/24 and/or --ip6 2001:2::2/64".into(),
            );
        }
        Ok(v)
    }

    /// Engine settings with these addresses, `mac` and a fresh seed; the rest default.
    fn engine_config(&self, mac: [u8; 6]) -> EngineConfig {
        EngineConfig {
            mac,
            ipv4: self.ip,
            ipv6: self.ip6,
            gateway4: self.gateway,
            gateway6: self.gateway6,
            seed: seed(),
            ..Default::default()
        }
    }

    /// Whether the stack can reach `to` (given with `flag`): an address of its family,
    /// on the subnet or through a gateway, and a port.
    fn check_reachable(&self, flag: &str, to: std::net::SocketAddr) -> Result<(), String> {
        let reachable = match to.ip() {
            IpAddr::V4(t) => {
                let Some((ip, len)) = self.ip else {
                    return Err(format!("{flag} {to} is IPv4: give --ip too"));
                };
                let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
                u32::from(t) & mask == u32::from(ip) & mask || self.gateway.is_some()
            }
            IpAddr::V6(t) => {
                let Some((ip, len)) = self.ip6 else {
                    return Err(format!("{flag} {to} is IPv6: give --ip6 too"));
                };
                let mask = u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
                u128::from(t) & mask == u128::from(ip) & mask || self.gateway6.is_some()
            }
        };
        if !reachable {
            return Err(format!(
                "{flag} {to} is not on the stack's subnet and no --gateway was given"
            ));
        }
        if to.port() == 0 {
            return Err(format!(
                "{flag} needs a port other than 0, e.g. 198.18.0.1:80"
            ));
        }
        Ok(())
    }

    /// "ADDR/LEN ..." for the start-up line.
    fn show(&self) -> String {
        let v: Vec<String> = (self.ip.map(|(ip, l)| format!("{ip}/{l}")).into_iter())
            .chain(self.ip6.map(|(ip, l)| format!("{ip}/{l}")))
            .collect();
        v.join(" ")
    }
}

#[derive(clap::Args)]
struct Serve {
    #[command(flatten)]
    link: PortArgs,
    #[command(flatten)]
    addr: AddrArgs,
    /// Application to serve.
    #[arg(long, value_enum, default_value_t = AppKind::Echo)]
    app: AppKind,
    /// TCP and UDP port the application listens on.
    #[arg(long, default_value_t = 7)]
    port: u16,
    /// Connections allowed in the TCP handshake at once; further SYNs are dropped and counted.
    #[arg(long, default_value_t = 1024)]
    backlog: usize,
    /// Most TCP flows held at once (any state).
    #[arg(long, default_value_t = 100_000)]
    max_flows: usize,
    /// TCP receive and send buffer per connection, bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    tcp_buf: usize,
    /// TCP receive and send buffer for connections on --port only (default: --tcp-buf).
    /// A small one bounds a bulk port's bytes in flight, which otherwise queue ahead of
    /// small requests on the same core (e.g. hash uploads next to --echo-port).
    #[arg(long)]
    port_buf: Option<usize>,
    /// Service connections on this port (--port or --echo-port) before the others in
    /// every loop iteration: small latency-sensitive requests next to bulk transfers on
    /// the same core. May be given more than once.
    #[arg(long, value_name = "PORT")]
    serve_first: Vec<u16>,
    /// Frames handled per receive batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// What the loop does when there is no work.
    #[arg(long, value_enum, default_value_t = IdleArg::Adaptive)]
    idle: IdleArg,
    /// hash: compute on the event loop instead of the processor pool (to show why the pool
    /// exists: every other connection of the core waits meanwhile).
    #[arg(long)]
    inline: bool,
    /// hash: also serve TCP echo on this port, from the same engine.
    #[arg(long)]
    echo_port: Option<u16>,
    /// http: the fixed body served at `/` (unless --dir has an index.html).
    #[arg(long, default_value = c10m_apps::http::DEFAULT_BODY)]
    body: String,
    /// http: serve every regular file under this directory (read into memory at start).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// proxy: where to relay connections, ADDRESS:PORT (IPv6: [ADDRESS]:PORT).
    #[arg(long)]
    backend: Option<std::net::SocketAddr>,
    /// kv: bound on the store's memory, bytes (0: none); over it, writes get redis's -OOM
    /// error [default: 1gb]
    ///
    /// Counted: keys + values + about 160 bytes a key. Over the bound, SET MSET SETNX
    /// APPEND INCR/DECR(BY) are refused while reads, DEL, EXPIRE and FLUSHALL still run,
    /// so clients can free memory. Units as in redis.conf: 1gb = 1024^3, 1g = 10^9 (k,
    /// kb, m, mb too).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    kv_maxmemory: Option<usize>,
    /// kv: largest argument (bulk string) a command may carry, bytes; at most
    /// --kv-max-query [default: 16mb]
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    kv_max_bulk: Option<usize>,
    /// kv: most arguments in one command, at least 3 (SET key value) [default: 1048576]
    #[arg(long, value_name = "N")]
    kv_max_args: Option<usize>,
    /// kv: most bytes one command may occupy while it is buffered; a client that sends a
    /// larger one gets an error and is disconnected [default: 32mb]
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    kv_max_query: Option<usize>,
    /// Worker threads of the processor pool (CPU-heavy work such as hashing).
    #[arg(long, default_value_t = 1)]
    pool_threads: usize,
    /// Jobs the processor pool queues at most; beyond it the app gets an error.
    #[arg(long, default_value_t = 1024)]
    pool_queue: usize,
    /// Callbacks longer than this many microseconds are counted and logged (0: off).
    #[arg(long, default_value_t = 1000)]
    callback_budget_us: u64,
    /// Adaptive idle: microseconds to keep spinning after the last work before sleeping.
    #[arg(long, default_value_t = 200)]
    idle_spin_us: u64,
    /// Stop by itself after this many seconds (0: run until SIGINT/SIGTERM).
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// Write the final counters as one JSON object to this file on exit.
    #[arg(long)]
    stats_json: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtoArg {
    /// --size bytes echoed back (RFC 862), every reply compared with its request.
    Echo,
    /// HTTP/1.1 GET --path (keep-alive; non-2xx counted).
    Http,
    /// RESP (redis) GET --key.
    RespGet,
    /// RESP (redis) SET --key to --size bytes.
    RespSet,
}

#[derive(clap::Args)]
struct LoadgenArgs {
    #[command(flatten)]
    link: PortArgs,
    #[command(flatten)]
    addr: AddrArgs,
    /// Server to load, ADDRESS:PORT (IPv6: [ADDRESS]:PORT).
    #[arg(long)]
    target: std::net::SocketAddr,
    /// Connections kept open (each with one request outstanding at a time).
    #[arg(short = 'c', long, default_value_t = 10)]
    connections: usize,
    /// Request template.
    #[arg(long, value_enum, default_value_t = ProtoArg::Echo)]
    proto: ProtoArg,
    /// echo: request size in bytes; resp-set: value size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// http: the path to GET.
    #[arg(long, default_value = "/")]
    path: String,
    /// http: Host header (default: the target's address).
    #[arg(long)]
    host: Option<String>,
    /// http: an extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// resp-get / resp-set: the key (with --keyspace K > 1: KEY:0 .. KEY:K-1 at random).
    #[arg(long, default_value = "key")]
    key: String,
    /// resp-get / resp-set: number of distinct keys.
    #[arg(long, default_value_t = 1)]
    keyspace: u64,
    /// Open loop: total requests per second over all connections, each request's latency
    /// counted from its scheduled send time (coordinated omission corrected, as wrk2).
    /// Without it: closed loop (next request when the previous reply is complete).
    #[arg(short = 'R', long)]
    rate: Option<f64>,
    /// Measured seconds (after --warmup).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measurement starts (not recorded).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// New connections per second at most (default: all at once).
    #[arg(long)]
    connect_rate: Option<f64>,
    /// Milliseconds without a complete reply before a request counts as a timeout (its
    /// connection is then aborted and reopened); also the handshake time limit.
    #[arg(long, default_value_t = 2000)]
    timeout: u64,
    /// Write the summary (and the engine's counters) as one JSON object to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// TCP receive and send buffer per connection, bytes.
    #[arg(long, default_value_t = 32 * 1024)]
    tcp_buf: usize,
    /// Most TCP flows held at once (any state, TIME-WAIT included).
    #[arg(long, default_value_t = 100_000)]
    max_flows: usize,
    /// Service connections on this port (--port or --echo-port) before the others in
    /// every loop iteration: small latency-sensitive requests next to bulk transfers on
    /// the same core. May be given more than once.
    #[arg(long, value_name = "PORT")]
    serve_first: Vec<u16>,
    /// Frames handled per receive batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// What the loop does when there is no work (adaptive: spin --idle-spin-us, then
    /// sleep 100 µs at a time).
    #[arg(long, value_enum, default_value_t = IdleArg::Spin)]
    idle: IdleArg,
    /// Adaptive idle: microseconds to keep spinning after the last work before sleeping.
    #[arg(long, default_value_t = 200)]
    idle_spin_us: u64,
}

fn parse_cidr<T: std::str::FromStr>(s: &str, max: u8, example: &str) -> Result<(T, u8), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("'{s}' has no prefix length: write it like {example}"))?;
    let addr = a
        .parse::<T>()
        .map_err(|_| format!("'{a}' is not an address of this family: write it like {example}"))?;
    let len = p
        .parse::<u8>()
        .ok()
        .filter(|l| *l <= max && *l > 0)
        .ok_or_else(|| format!("prefix length '{p}' must be 1..={max}, e.g. {example}"))?;
    Ok((addr, len))
}

fn parse_v4_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, l) = parse_cidr::<Ipv4Addr>(s, 32, "198.18.0.2/24")?;
    if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
        return Err(format!("{a} cannot be a host address"));
    }
    Ok((a, l))
}

fn parse_v6_cidr(s: &str) -> Result<(Ipv6Addr, u8), String> {
    let (a, l) = parse_cidr::<Ipv6Addr>(s, 128, "2001:2::2/64")?;
    if a.is_unspecified() || a.is_multicast() {
        return Err(format!("{a} cannot be a host address"));
    }
    Ok((a, l))
}

/// A size in bytes: digits, optionally with a unit as redis.conf writes them (k = 1000,
/// kb = 1024, m, mb, g, gb; any case).
fn parse_bytes(s: &str) -> Result<usize, String> {
    let bad = || {
        format!("'{s}' is not a size: write bytes, or a number with a unit as in redis.conf: 512mb, 2gb (k = 1000, kb = 1024)")
    };
    let t = s.trim().to_ascii_lowercase();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let unit: u64 = match &t[digits..] {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1 << 10,
        "m" => 1000 * 1000,
        "mb" => 1 << 20,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1 << 30,
        _ => return Err(bad()),
    };
    t[..digits]
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// The kv app's settings from the --kv-* flags (defaults for those not given); an error
/// if one is given with another --app, or if they do not fit together.
fn kv_config(a: &Serve) -> Result<c10m_apps::kv::Config, String> {
    let given = [
        ("--kv-maxmemory", a.kv_maxmemory.is_some()),
        ("--kv-max-bulk", a.kv_max_bulk.is_some()),
        ("--kv-max-args", a.kv_max_args.is_some()),
        ("--kv-max-query", a.kv_max_query.is_some()),
    ];
    if !matches!(a.app, AppKind::Kv) {
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            return Err(format!("{flag} is for --app kv"));
        }
    }
    let mut cfg = c10m_apps::kv::Config::default();
    let l = &mut cfg.limits;
    cfg.maxmemory = a.kv_maxmemory.unwrap_or(cfg.maxmemory);
    l.max_bulk = a.kv_max_bulk.unwrap_or(l.max_bulk);
    l.max_args = a.kv_max_args.unwrap_or(l.max_args);
    l.max_query = a.kv_max_query.unwrap_or(l.max_query);
    if l.max_bulk == 0 {
        return Err("--kv-max-bulk must be at least 1 byte (e.g. 16mb)".into());
    }
    if l.max_query == 0 {
        return Err("--kv-max-query must be at least 1 byte (e.g. 32mb)".into());
    }
    if l.max_args < 3 {
        return Err(format!(
            "--kv-max-args {} leaves no room for SET key value: give at least 3",
            l.max_args
        ));
    }
    if l.max_args > i32::MAX as usize {
        return Err(format!(
            "--kv-max-args {} is over {} (redis's own bound on a command's arguments)",
            l.max_args,
            i32::MAX
        ));
    }
    if l.max_bulk > l.max_query {
        let q = if a.kv_max_query.is_some() {
            "--kv-max-query"
        } else {
            "the default --kv-max-query"
        };
        return Err(format!(
            "--kv-max-bulk {} is larger than {q} {}: a command carrying such a value could \
             never be buffered; give --kv-max-query {} or more (or a smaller --kv-max-bulk)",
            l.max_bulk, l.max_query, l.max_bulk
        ));
    }
    Ok(cfg)
}

/// A flag SIGINT and SIGTERM set (the loops poll it).
fn stop_on_signals() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    Ok(stop)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Serve(s) => serve(s),
        Cmd::Loadgen(a) => loadgen(a),
        Cmd::Rxdrop(a) => raw(a, true),
        Cmd::Txgen(a) => raw(a, false),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("c10m: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The AF_XDP port on (iface, queue) steering `steer` to it, with words for its XDP mode
/// and copy mode (for the start-up line).
fn open_port(
    p: &PortArgs,
    steer: Vec<IpAddr>,
) -> Result<(Port, &'static str, &'static str), String> {
    let pcfg = PortConfig {
        ifname: p.iface.clone(),
        queue: p.queue,
        frame_size: p.frame_size,
        frame_count: p.frames,
        ring_size: p.ring_size,
        xdp_mode: match p.xdp_mode {
            Mode::Auto => XdpMode::Auto,
            Mode::Native => XdpMode::Native,
            Mode::Skb => XdpMode::Skb,
        },
        force: p.force,
        steer,
        need_wakeup: true,
    };
    let port = Port::open(&pcfg).map_err(|e| e.to_string())?;
    let mode = match port.attach_mode() {
        AttachMode::Native => "native",
        AttachMode::Skb => "skb (generic)",
    };
    let copy = if port.zero_copy() {
        "zero-copy"
    } else {
        "copy"
    };
    Ok((port, mode, copy))
}

fn serve(a: Serve) -> Result<(), String> {
    let backend = match (a.app, a.backend) {
        (AppKind::Proxy, None) => {
            return Err("--app proxy needs --backend ADDRESS:PORT, e.g. 198.18.0.1:80".into())
        }
        (AppKind::Proxy, Some(b)) => {
            a.addr.check_reachable("--backend", b)?;
            Some(b)
        }
        (_, Some(_)) => return Err("--backend is for --app proxy".into()),
        (_, None) => None,
    };
    let kv = kv_config(&a)?;
    if let Some(p) = a
        .serve_first
        .iter()
        .find(|&&p| p != a.port && Some(p) != a.echo_port)
    {
        return Err(format!(
            "--serve-first {p}: not a port this app listens on (--port {}{})",
            a.port,
            a.echo_port
                .map(|e| format!(", --echo-port {e}"))
                .unwrap_or_default()
        ));
    }
    let (port, mode, copy) = open_port(&a.link, a.addr.steer()?)?;
    let mac = port.mac();
    let ecfg = EngineConfig {
        tcp_rx_buf: a.tcp_buf,
        tcp_tx_buf: a.tcp_buf,
        max_flows: a.max_flows,
        rx_batch: a.batch,
        idle_spin_us: a.idle_spin_us,
        ..a.addr.engine_config(mac)
    };
    let stop = stop_on_signals()?;
    if a.duration > 0 {
        let stop = stop.clone();
        let d = Duration::from_secs(a.duration);
        std::thread::spawn(move || {
            std::thread::sleep(d);
            stop.store(true, Ordering::Relaxed);
        });
    }
    let link = XdpLink::new(port);
    let addrs = a.addr.show();
    let what = match a.app {
        AppKind::Echo => format!("echo on port {} (tcp+udp)", a.port),
        AppKind::Kv => format!(
            "kv (RESP2) on port {}, maxmemory {}",
            a.port,
            match kv.maxmemory {
                0 => "unbounded".to_string(),
                m => format!("{m} bytes"),
            }
        ),
        AppKind::Http => format!(
            "http on port {}{}",
            a.port,
            a.dir
                .as_ref()
                .map(|d| format!(" (files from {})", d.display()))
                .unwrap_or_default()
        ),
        AppKind::Proxy => format!("proxy on port {} to {}", a.port, backend.expect("checked")),
        AppKind::Hash => format!(
            "hash on port {}{}{}",
            a.port,
            if a.inline {
                " (inline: hashing on the loop)"
            } else {
                ""
            },
            a.echo_port
                .map(|p| format!(", echo on port {p}"))
                .unwrap_or_default()
        ),
    };
    eprintln!(
        "c10m: serving {what} at {} via {} queue {}, XDP {mode}, {copy} mode, mac {}",
        addrs,
        a.link.iface,
        a.link.queue,
        mac.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    );
    let counters = match a.app {
        AppKind::Echo => run_app(&a, link, ecfg, Echo::default(), &stop, |e| {
            listen_port(e, &a)?;
            e.udp_bind(a.port).map_err(|e| e.to_string())
        })?,
        AppKind::Http => {
            let app = Http::new(&a.body, a.dir.as_deref())?;
            let (n, bytes) = app.summary();
            eprintln!("c10m: http: {n} routes, {bytes} bytes in memory");
            run_app(&a, link, ecfg, app, &stop, |e| listen_port(e, &a))?
        }
        AppKind::Proxy => {
            let b = backend.expect("checked");
            let to = c10m_stack::smoltcp::wire::IpEndpoint::new(b.ip().into(), b.port());
            let app = c10m_apps::proxy::Proxy::new(to);
            run_app(&a, link, ecfg, app, &stop, |e| listen_port(e, &a))?
        }
        AppKind::Kv => {
            let app = c10m_apps::kv::Kv::new(kv);
            run_app(&a, link, ecfg, app, &stop, |e| listen_port(e, &a))?
        }
        AppKind::Hash => {
            let app = Hash::new(a.inline, a.echo_port);
            run_app(&a, link, ecfg, app, &stop, |e| {
                listen_port(e, &a)?;
                if let Some(p) = a.echo_port {
                    let o = ListenOptions {
                        backlog: a.backlog,
                        rx_buf: a.tcp_buf,
                        tx_buf: a.tcp_buf,
                        serve_first: a.serve_first.contains(&p),
                    };
                    e.listen_with(p, o)
                        .map_err(|e| format!("--echo-port {p}: {e}"))?;
                }
                Ok(())
            })?
        }
    };
    eprintln!("c10m: stopped; counters:");
    for (k, v) in &counters {
        eprintln!("{k} {v}");
    }
    if let Some(path) = &a.stats_json {
        let body: Vec<String> = counters
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        std::fs::write(path, format!("{{{}}}\n", body.join(",")))
            .map_err(|e| format!("writing --stats-json {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Listen on --port with its own buffers (--port-buf) if given.
fn listen_port<A: App>(e: &mut Engine<XdpLink, A>, a: &Serve) -> Result<(), String> {
    let buf = a.port_buf.unwrap_or(a.tcp_buf);
    let o = ListenOptions {
        backlog: a.backlog,
        rx_buf: buf,
        tx_buf: buf,
        serve_first: a.serve_first.contains(&a.port),
    };
    e.listen_with(a.port, o)
        .map_err(|e| format!("--port {}: {e}", a.port))
}

/// Build the engine for `app`, bind its ports, attach the processor pool, run until
/// stopped; returns the final counters.
fn run_app<A: App>(
    a: &Serve,
    link: XdpLink,
    ecfg: EngineConfig,
    app: A,
    stop: &AtomicBool,
    bind: impl FnOnce(&mut Engine<XdpLink, A>) -> Result<(), String>,
) -> Result<Vec<(&'static str, u64)>, String> {
    let mut engine = Engine::new(link, ecfg, app, Instant::from_millis(0));
    bind(&mut engine)?;
    let pool = Pool::new(a.pool_threads, a.pool_queue);
    engine.attach_pool(&pool, a.pool_queue);
    engine.set_callback_budget(
        (a.callback_budget_us > 0).then(|| Duration::from_micros(a.callback_budget_us)),
    );
    eprintln!("c10m: ready");
    let idle = match a.idle {
        IdleArg::Spin => Idle::Spin,
        IdleArg::Adaptive => Idle::Adaptive,
    };
    engine.run(stop, idle);
    Ok(engine.counters())
}

fn loadgen(a: LoadgenArgs) -> Result<(), String> {
    use c10m_apps::loadgen::{self, Clock, IdleMode, Loadgen, Proto};
    if a.addr.ip.is_none() && a.addr.ip6.is_none() {
        return Err(
            "give the generator an address: --ip 198.18.0.4/24 and/or --ip6 2001:2::4/64".into(),
        );
    }
    a.addr.check_reachable("--target", a.target)?;
    let target_ip = a.target.ip();
    if a.connections == 0 {
        return Err("-c/--connections must be at least 1".into());
    }
    if !(a.duration > 0.0 && a.duration.is_finite()) {
        return Err(format!(
            "-d/--duration must be a positive number of seconds (got {})",
            a.duration
        ));
    }
    if !(a.warmup >= 0.0 && a.warmup.is_finite()) {
        return Err(format!(
            "--warmup must be 0 or more seconds (got {})",
            a.warmup
        ));
    }
    if let Some(r) = a.rate {
        if !(r > 0.0 && r.is_finite()) {
            return Err(format!(
                "-R/--rate must be a positive number of requests per second (got {r})"
            ));
        }
    }
    if let Some(r) = a.connect_rate {
        if !(r > 0.0 && r.is_finite()) {
            return Err(format!(
                "--connect-rate must be a positive number per second (got {r})"
            ));
        }
    }
    if a.timeout == 0 {
        return Err("--timeout must be at least 1 ms".into());
    }
    if matches!(a.proto, ProtoArg::Echo) && a.size == 0 {
        return Err("--size must be at least 1 for --proto echo".into());
    }
    if !a.path.starts_with('/') {
        return Err(format!("--path must start with '/' (got '{}')", a.path));
    }
    for h in &a.headers {
        if !h.contains(':') || h.contains('\r') || h.contains('\n') {
            return Err(format!("-H '{h}': write a header as 'Name: value'"));
        }
    }
    let host = a
        .host
        .clone()
        .unwrap_or_else(|| match (a.target.port(), target_ip) {
            (80, IpAddr::V4(ip)) => ip.to_string(),
            (80, IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => a.target.to_string(),
        });
    let proto = match a.proto {
        ProtoArg::Echo => Proto::Echo { size: a.size },
        ProtoArg::Http => Proto::Http {
            request: loadgen::http_request(&a.path, &host, &a.headers),
        },
        ProtoArg::RespGet => Proto::RespGet {
            key: a.key.clone(),
            keyspace: a.keyspace.max(1),
        },
        ProtoArg::RespSet => Proto::RespSet {
            key: a.key.clone(),
            keyspace: a.keyspace.max(1),
            value: vec![b'x'; a.size],
        },
    };
    let cfg = loadgen::Config {
        target: a.target.into(),
        connections: a.connections,
        proto,
        rate: a.rate,
        duration: Duration::from_secs_f64(a.duration),
        warmup: Duration::from_secs_f64(a.warmup),
        connect_rate: a.connect_rate,
        timeout: Duration::from_millis(a.timeout),
    };
    let (port, mode, copy) = open_port(&a.link, a.addr.steer()?)?;
    let ecfg = EngineConfig {
        tcp_rx_buf: a.tcp_buf,
        tcp_tx_buf: a.tcp_buf,
        max_flows: a.max_flows,
        rx_batch: a.batch,
        idle_spin_us: a.idle_spin_us,
        ..a.addr.engine_config(port.mac())
    };
    let stop = stop_on_signals()?;
    let addrs = a.addr.show();
    let mode_line = match a.rate {
        Some(r) => format!("open loop at {r} req/s"),
        None => "closed loop".into(),
    };
    eprintln!(
        "c10m: loadgen: {} x{} to {} ({mode_line}, {}s{}) from {} via {} queue {}, XDP {mode}, {copy} mode",
        cfg.proto.name(),
        a.connections,
        a.target,
        a.duration,
        if a.warmup > 0.0 { format!(" after {}s warm-up", a.warmup) } else { String::new() },
        addrs,
        a.link.iface,
        a.link.queue
    );
    let clock = Clock::real();
    let mut engine = Engine::new(
        XdpLink::new(port),
        ecfg,
        Loadgen::new(cfg, clock.clone()),
        clock.engine_now(),
    );
    // The generator's callbacks are short; one that runs long was preempted, and the
    // latency figures already carry that.
    engine.set_callback_budget(None);
    let idle = match a.idle {
        IdleArg::Spin => IdleMode::Spin,
        IdleArg::Adaptive => IdleMode::Sleep {
            spin_us: a.idle_spin_us,
        },
    };
    let report = loadgen::run(&mut engine, &stop, idle);
    println!("{}", report.text());
    eprintln!("c10m: loadgen: engine counters (non-zero):");
    for (k, v) in report.counters.iter().filter(|(_, v)| *v != 0) {
        eprintln!("{k} {v}");
    }
    if let Some(path) = &a.json {
        std::fs::write(path, report.json())
            .map_err(|e| format!("writing --json {}: {e}", path.display()))?;
    }
    if report.requests == 0 {
        return Err(format!(
            "no request completed in {:.2}s (errors: connect {}, read {}, timeout {}): is a server listening at {}?",
            report.seconds, report.errors.connect, report.errors.read, report.errors.timeout, a.target
        ));
    }
    Ok(())
}

/// Per-process seed for ISNs (smoltcp's `random_seed`): time and pid mixed.
fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    t ^ ((std::process::id() as u64) << 32) ^ 0x9e37_79b9_7f4a_7c15
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(extra: &[&str]) -> Serve {
        let mut argv = vec!["c10m", "serve", "--iface", "x", "--ip", "198.18.0.2/24"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).map(|c| c.cmd) {
            Ok(Cmd::Serve(s)) => s,
            Ok(_) => unreachable!(),
            Err(e) => panic!("{extra:?}: {e}"),
        }
    }

    #[test]
    fn sizes_with_redis_units() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("2k"), Ok(2000));
        assert_eq!(parse_bytes("2KB"), Ok(2048));
        assert_eq!(parse_bytes("100mb"), Ok(100 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1gb"), Ok(1 << 30));
        for bad in ["", "mb", "-1", "1.5gb", "1tb", "99999999999999999999"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kv_flags_checked() {
        let cfg = kv_config(&serve_args(&["--app", "kv"])).unwrap();
        assert_eq!(cfg.maxmemory, c10m_apps::kv::DEFAULT_MAXMEMORY);
        let cfg = kv_config(&serve_args(&[
            "--app",
            "kv",
            "--kv-maxmemory",
            "0",
            "--kv-max-bulk",
            "64mb",
            "--kv-max-query",
            "64mb",
            "--kv-max-args",
            "3",
        ]))
        .unwrap();
        assert_eq!(
            (cfg.maxmemory, cfg.limits.max_bulk, cfg.limits.max_args),
            (0, 64 << 20, 3)
        );
        let err = |extra: &[&str]| kv_config(&serve_args(extra)).unwrap_err();
        assert_eq!(
            err(&["--app", "echo", "--kv-max-args", "9"]),
            "--kv-max-args is for --app kv"
        );
        assert!(err(&["--app", "kv", "--kv-max-bulk", "0"]).contains("at least 1"));
        assert!(err(&["--app", "kv", "--kv-max-args", "2"]).contains("at least 3"));
        let e = err(&["--app", "kv", "--kv-max-bulk", "64mb"]);
        assert!(e.contains("the default --kv-max-query 33554432"), "{e}");
        assert!(e.contains("give --kv-max-query 67108864 or more"), "{e}");
    }
}

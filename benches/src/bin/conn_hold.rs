//! `conn_hold`: a connection-scale client. Opens `--conns N` TCP connections to
//! `--target`, each bound to one of the `--src` addresses (round robin, port 0: the kernel
//! picks a free port per source address, so each address gives ~64 k connections with
//! ip_local_port_range 1024-65535), at most `--rate` new connections a second and at most
//! `--max-pending` not yet through their first echo. Each connection sends a distinct
//! 16-byte message and checks its echo, then all are held open. At the end of the hold
//! (`--hold-seconds` after the last first echo, or earlier on SIGUSR1) every connection
//! sends a second distinct message and checks its echo, again at most `--max-pending`
//! unanswered at once. Non-blocking (mio/epoll), one thread.
//!
//! One fd per connection: RLIMIT_NOFILE is 20 000 here, so one process holds at most
//! ~19 900; run several processes for more (e.g. 4 x 5 000 for 20 k).
//!
//! stderr: `conn_hold: holding established=N ...` when the opening phase is over (a
//! caller waits for it, then may send SIGUSR1 to end the hold), then on stdout one line
//!   conn_hold: opened=N established=N echoed_first=N echoed_last=N failed=K
//!              accept_rate_per_s=X secs=S start_unix=T0 open_done_unix=T1 ...
//! Exit status 0 only if all N connections echoed both times.
//!
//! Usage: conn_hold --target 198.18.0.2:7 --conns 5000 --src-range 198.19.0.1-198.19.0.8
//!        [--rate 0] [--max-pending 512] [--hold-seconds 5] [--timeout 120] [--linger0]

use c10m_benches::net::source_addrs;
use clap::Parser;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(
    name = "conn_hold",
    about = "Open N TCP connections, echo on each, hold them all, echo again on each"
)]
struct Args {
    /// Server address and port, e.g. 198.18.0.2:7.
    #[arg(long)]
    target: SocketAddrV4,
    /// Number of connections to open.
    #[arg(long)]
    conns: usize,
    /// Source addresses, comma separated (each socket is bound to one, port 0).
    #[arg(long, value_delimiter = ',')]
    src: Vec<Ipv4Addr>,
    /// Inclusive source address range, e.g. 198.19.0.1-198.19.0.40 (added to --src).
    #[arg(long)]
    src_range: Option<String>,
    /// Most new connections per second (0: as fast as --max-pending allows).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Most connections opened but not yet through their first echo.
    #[arg(long, default_value_t = 512)]
    max_pending: usize,
    /// Seconds to hold all connections after the last first echo (SIGUSR1 ends it early).
    #[arg(long, default_value_t = 5.0)]
    hold_seconds: f64,
    /// Overall time limit, seconds; the run fails if it is reached.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Close with RST (SO_LINGER 0) at the end instead of FIN: no TIME-WAIT left behind.
    #[arg(long)]
    linger0: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Connecting,
    Send(u8),
    Recv(u8),
    Held,
    Done,
    Failed,
}

struct Conn {
    s: Option<TcpStream>,
    st: St,
    off: u8,
}

#[derive(Default)]
struct Counts {
    opened: usize,
    established: usize,
    echoed_first: usize,
    echoed_last: usize,
    failed: usize,
    bind_err: usize,
    connect_err: usize,
    closed: usize,
    mismatch: usize,
    failed_held: usize,
}

/// The distinct 16-byte message of connection `idx` in phase `k` (1 or 2).
fn message(pid: u32, idx: usize, k: u8) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0..4].copy_from_slice(&pid.to_le_bytes());
    m[4..8].copy_from_slice(&(idx as u32).to_le_bytes());
    m[8] = k;
    let mut h = (u64::from(pid) << 32 | idx as u64) ^ (u64::from(k) << 56);
    h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 29;
    m[9..16].copy_from_slice(&h.to_le_bytes()[..7]);
    m
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn open_one(src: Ipv4Addr, target: SocketAddrV4) -> Result<TcpStream, (bool, io::Error)> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(|e| (true, e))?;
    s.set_nonblocking(true).map_err(|e| (true, e))?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())
        .map_err(|e| (true, e))?;
    match s.connect(&SocketAddr::V4(target).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(115) => {} // EINPROGRESS
        Err(e) => return Err((false, e)),
    }
    let t = TcpStream::from_std(s.into());
    let _ = t.set_nodelay(true);
    Ok(t)
}

struct Client {
    pid: u32,
    conns: Vec<Conn>,
    n: Counts,
    first_err: Option<String>,
    last_first_echo: Option<Instant>,
}

impl Client {
    fn fail(&mut self, i: usize, why: &str) {
        let c = &mut self.conns[i];
        if c.st == St::Failed {
            return;
        }
        if self.first_err.is_none() {
            let detail = c.s.as_ref().and_then(|s| match s.take_error() {
                Ok(Some(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
                Ok(None) => None,
            });
            self.first_err = Some(format!(
                "connection {i}: {why}{}",
                detail.map(|d| format!(" ({d})")).unwrap_or_default()
            ));
        }
        if matches!(c.st, St::Held) || matches!(c.st, St::Send(2) | St::Recv(2)) {
            self.n.failed_held += 1;
        }
        c.st = St::Failed;
        c.s = None;
        self.n.failed += 1;
        match why.split(':').next() {
            Some("connect") => self.n.connect_err += 1,
            Some("closed") => self.n.closed += 1,
            _ => self.n.mismatch += 1,
        }
    }

    /// Advance connection `i` as far as its socket allows (edge-triggered events).
    fn drive(&mut self, i: usize) {
        let mut tmp = [0u8; 16];
        loop {
            let pid = self.pid;
            let c = &mut self.conns[i];
            let Some(s) = c.s.as_mut() else { return };
            match c.st {
                St::Connecting => match s.take_error() {
                    Ok(Some(e)) => {
                        self.first_err
                            .get_or_insert(format!("connection {i}: connect: {e}"));
                        return self.fail(i, "connect");
                    }
                    Err(_) => return self.fail(i, "connect"),
                    Ok(None) => match s.peer_addr() {
                        Ok(_) => {
                            c.st = St::Send(1);
                            c.off = 0;
                            self.n.established += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                        Err(_) => return self.fail(i, "connect"),
                    },
                },
                St::Send(k) => {
                    let m = message(pid, i, k);
                    match s.write(&m[c.off as usize..]) {
                        Ok(0) => return self.fail(i, "closed: EOF from the server"),
                        Ok(w) => {
                            c.off += w as u8;
                            if c.off == 16 {
                                c.st = St::Recv(k);
                                c.off = 0;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return self.fail(i, &format!("closed: {e}")),
                    }
                }
                St::Recv(k) => {
                    let want = 16 - c.off as usize;
                    match s.read(&mut tmp[..want]) {
                        Ok(0) => return self.fail(i, "closed: EOF from the server"),
                        Ok(r) => {
                            let m = message(pid, i, k);
                            let o = c.off as usize;
                            if tmp[..r] != m[o..o + r] {
                                return self.fail(i, "mismatch");
                            }
                            c.off += r as u8;
                            if c.off == 16 {
                                c.off = 0;
                                if k == 1 {
                                    c.st = St::Held;
                                    self.n.echoed_first += 1;
                                    self.last_first_echo = Some(Instant::now());
                                } else {
                                    c.st = St::Done;
                                    self.n.echoed_last += 1;
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return self.fail(i, &format!("closed: {e}")),
                    }
                }
                St::Held | St::Done => {
                    // Nothing is expected: data is an error, EOF/RST means the server dropped us.
                    match s.read(&mut tmp) {
                        Ok(0) => return self.fail(i, "closed: EOF from the server"),
                        Ok(_) => return self.fail(i, "mismatch"),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return self.fail(i, &format!("closed: {e}")),
                    }
                }
                St::Failed => return,
            }
        }
    }
}

fn pump(poll: &mut Poll, events: &mut Events, cl: &mut Client, timeout: Duration) {
    match poll.poll(events, Some(timeout)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
        Err(e) => {
            eprintln!("conn_hold: poll: {e}");
            std::process::exit(2);
        }
    }
    for ev in events.iter() {
        cl.drive(ev.token().0);
    }
}

fn main() {
    let a = Args::parse();
    let srcs = match source_addrs(&a.src, a.src_range.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("conn_hold: {e}");
            std::process::exit(2);
        }
    };
    let release = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, release.clone())
        .expect("signal handler");

    let start = Instant::now();
    let start_unix = unix_now();
    let deadline = start + Duration::from_secs_f64(a.timeout);
    let mut poll = Poll::new().expect("epoll_create");
    let mut events = Events::with_capacity(1024);
    let mut cl = Client {
        pid: std::process::id(),
        conns: Vec::with_capacity(a.conns),
        n: Counts::default(),
        first_err: None,
        last_first_echo: None,
    };
    let mut timed_out = false;

    // Phase 1: open, first echo.
    while cl.n.echoed_first + cl.n.failed < a.conns {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        let allowed = if a.rate > 0.0 {
            ((now - start).as_secs_f64() * a.rate) as usize + 1
        } else {
            usize::MAX
        };
        while cl.n.opened < a.conns.min(allowed)
            && cl.n.opened - cl.n.echoed_first - cl.n.failed < a.max_pending
        {
            let i = cl.n.opened;
            cl.n.opened += 1;
            let src = srcs[i % srcs.len()];
            let mut conn = Conn {
                s: None,
                st: St::Connecting,
                off: 0,
            };
            match open_one(src, a.target) {
                Ok(mut s) => {
                    let interest = Interest::READABLE.add(Interest::WRITABLE);
                    match poll.registry().register(&mut s, Token(i), interest) {
                        Ok(()) => conn.s = Some(s),
                        Err(e) => {
                            cl.first_err.get_or_insert(format!("register: {e}"));
                            conn.st = St::Failed;
                            cl.n.failed += 1;
                            cl.n.connect_err += 1;
                        }
                    }
                }
                Err((is_bind, e)) => {
                    cl.first_err.get_or_insert(format!(
                        "{} from {src}: {e}",
                        if is_bind { "socket/bind" } else { "connect" }
                    ));
                    conn.st = St::Failed;
                    cl.n.failed += 1;
                    if is_bind {
                        cl.n.bind_err += 1;
                    } else {
                        cl.n.connect_err += 1;
                    }
                }
            }
            cl.conns.push(conn);
        }
        let wait = if cl.n.opened < a.conns && a.rate > 0.0 {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(50)
        };
        pump(&mut poll, &mut events, &mut cl, wait);
    }
    let open_done = Instant::now();
    let open_secs = (cl.last_first_echo.unwrap_or(open_done) - start).as_secs_f64();
    let open_done_unix = start_unix + open_secs;
    eprintln!(
        "conn_hold: holding established={} echoed_first={} failed={} open_secs={:.2} (pid {})",
        cl.n.established, cl.n.echoed_first, cl.n.failed, open_secs, cl.pid
    );

    // Phase 2: hold. Any event on a held connection now is a failure (drive() checks).
    let hold_end = open_done + Duration::from_secs_f64(a.hold_seconds);
    while !timed_out && !release.load(Ordering::Relaxed) && Instant::now() < hold_end {
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        pump(&mut poll, &mut events, &mut cl, Duration::from_millis(50));
    }

    // Phase 3: a second distinct message on every held connection, at most --max-pending
    // unanswered at once (as when opening). All at once, N messages leave in one burst
    // that no receive ring absorbs; on veth the drops are reported to the sending kernel
    // as local congestion, and it gives connections up (ETIMEDOUT) within seconds.
    let last_start = Instant::now();
    let failed_before = cl.n.failed_held;
    if !timed_out {
        let held: Vec<usize> = (0..cl.conns.len())
            .filter(|&i| cl.conns[i].st == St::Held)
            .collect();
        let mut next = 0;
        loop {
            let answered = cl.n.echoed_last + cl.n.failed_held - failed_before;
            // (A connection that fails while waiting its turn counts as answered.)
            while next < held.len() && next.saturating_sub(answered) < a.max_pending {
                let i = held[next];
                next += 1;
                if cl.conns[i].st == St::Held {
                    cl.conns[i].st = St::Send(2);
                    cl.conns[i].off = 0;
                    cl.drive(i);
                }
            }
            if cl.n.echoed_last + cl.n.failed_held - failed_before >= held.len() {
                break;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                break;
            }
            pump(&mut poll, &mut events, &mut cl, Duration::from_millis(50));
        }
    }
    let last_secs = last_start.elapsed().as_secs_f64();

    if a.linger0 {
        for c in &cl.conns {
            if let Some(s) = &c.s {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
        }
    }
    let n = &cl.n;
    let rate = if open_secs > 0.0 {
        n.echoed_first as f64 / open_secs
    } else {
        0.0
    };
    println!(
        "conn_hold: opened={} established={} echoed_first={} echoed_last={} failed={} \
         accept_rate_per_s={:.0} secs={:.2} open_secs={:.2} last_secs={:.2} start_unix={:.3} \
         open_done_unix={:.3} bind_err={} connect_err={} closed={} mismatch={} timed_out={}",
        n.opened,
        n.established,
        n.echoed_first,
        n.echoed_last,
        n.failed,
        rate,
        start.elapsed().as_secs_f64(),
        open_secs,
        last_secs,
        start_unix,
        open_done_unix,
        n.bind_err,
        n.connect_err,
        n.closed,
        n.mismatch,
        u8::from(timed_out)
    );
    if let Some(e) = &cl.first_err {
        eprintln!("conn_hold: first error: {e}");
    }
    let ok = n.echoed_first == a.conns && n.echoed_last == a.conns && !timed_out;
    std::process::exit(if ok { 0 } else { 1 });
}

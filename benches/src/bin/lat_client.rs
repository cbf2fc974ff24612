//! `lat_client`: latency of small echoes next to bulk uploads, the load of
//! `scripts/bench-hash` against `c10m serve --app hash --port 9 --echo-port 7`.
//!
//! Two roles run at once, each on its own thread with its own mio poll:
//! - `--echo-conns N` connections to ADDR:`--echo-port`, each closed-loop: write a
//!   `--msg-size`-byte request, wait for the whole echo (checked byte for byte), record
//!   the time from the write to the last byte of the answer, repeat.
//! - `--uploaders N` connections to ADDR:`--hash-port`, each uploading a
//!   `--upload-bytes` body again and again (8-byte big-endian length, then the body) and
//!   reading the 32-byte SHA-256 the server answers, compared with the digest computed
//!   here with sha2 (each uploader has its own pseudo-random body, hashed once before
//!   the clock starts).
//!
//! All connections are opened first; then the first `--warmup` seconds are not counted,
//! then `--seconds` are measured and the process ends (every loop is bounded by that
//! deadline). Output: one JSON line on stdout:
//! `{"echo_requests":..,"echo_rps":..,"echo_p50_us":..,"echo_p99_us":..,"echo_p999_us":..,
//! "echo_max_us":..,"uploads_completed":..,"upload_mb_s":..,"digest_failures":0,...}`.
//! `upload_mb_s` counts body bytes written during the measured window, in 10^6 bytes
//! per second; `uploads_completed` counts digests received in it. Exit status 1 if a
//! digest or an echo was wrong, a connection failed, or no echo was measured.
//!
//! Usage: lat_client --addr 198.18.0.2 --echo-conns 50 --uploaders 8 --seconds 10

use clap::Parser;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "lat_client",
    about = "Closed-loop echo latency next to continuous SHA-256 uploads (hash app client)"
)]
struct Args {
    /// Server address (c10m's IPv4 address on the testbed).
    #[arg(long, default_value = "198.18.0.2")]
    addr: IpAddr,
    /// Echo port.
    #[arg(long, default_value_t = 7)]
    echo_port: u16,
    /// Hash (upload) port.
    #[arg(long, default_value_t = 9)]
    hash_port: u16,
    /// Closed-loop echo connections.
    #[arg(long, default_value_t = 50)]
    echo_conns: usize,
    /// Bytes per echo request.
    #[arg(long, default_value_t = 64)]
    msg_size: usize,
    /// Uploading connections (0: echo only).
    #[arg(long, default_value_t = 0)]
    uploaders: usize,
    /// Body size of each upload, bytes (the server accepts at most 64 MiB).
    #[arg(long, default_value_t = 16 << 20)]
    upload_bytes: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of load before the measurement starts (not counted).
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Seconds allowed for each connect.
    #[arg(long, default_value_t = 5.0)]
    connect_timeout: f64,
}

/// The measured window, shared by both roles.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn counts(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }
}

fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(TcpStream::from_std(s))
}

#[derive(Default)]
struct EchoResult {
    /// Latency of every request of the window, nanoseconds.
    samples: Vec<u64>,
    mismatches: u64,
    errors: u64,
}

struct EchoConn {
    sock: TcpStream,
    req: Vec<u8>,
    sent: usize,
    got: usize,
    reply: Vec<u8>,
    started: Instant,
    dead: bool,
}

/// Push the rest of the current request; Ok(false) if the socket is full.
fn write_rest(sock: &mut TcpStream, buf: &[u8], off: &mut usize) -> io::Result<bool> {
    while *off < buf.len() {
        match sock.write(&buf[*off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Handle readiness of one echo connection: finish writes, read answers (until
/// WouldBlock: mio is edge-triggered), record and start the next request.
fn echo_step(c: &mut EchoConn, w: Window, r: &mut EchoResult) -> io::Result<()> {
    loop {
        if c.sent < c.req.len() {
            write_rest(&mut c.sock, &c.req, &mut c.sent)?;
        }
        match c.sock.read(&mut c.reply[c.got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                c.got += n;
                if c.got == c.reply.len() {
                    let now = Instant::now();
                    if c.reply != c.req {
                        r.mismatches += 1;
                    }
                    if w.counts(c.started) && now < w.end {
                        r.samples
                            .push(now.duration_since(c.started).as_nanos() as u64);
                    }
                    // Next request: different bytes each time, so a stale echo is seen.
                    for b in c.req.iter_mut() {
                        *b = b.wrapping_add(1);
                    }
                    c.got = 0;
                    c.sent = 0;
                    c.started = Instant::now();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn run_echo(socks: Vec<TcpStream>, msg: usize, w: Window) -> io::Result<EchoResult> {
    let mut poll = Poll::new()?;
    let mut r = EchoResult::default();
    let mut conns: Vec<EchoConn> = Vec::with_capacity(socks.len());
    for (i, mut sock) in socks.into_iter().enumerate() {
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        conns.push(EchoConn {
            sock,
            req: (0..msg).map(|k| (k + i) as u8).collect(),
            sent: 0,
            got: 0,
            reply: vec![0; msg],
            started: Instant::now(),
            dead: false,
        });
    }
    for c in conns.iter_mut() {
        c.started = Instant::now();
        if let Err(e) = write_rest(&mut c.sock, &c.req, &mut c.sent) {
            eprintln!("lat_client: echo write: {e}");
            c.dead = true;
            r.errors += 1;
        }
    }
    let mut errors = 0;
    drive(
        &mut poll,
        w.end,
        &mut conns,
        "echo connection",
        &mut errors,
        |c| echo_step(c, w, &mut r),
    )?;
    r.errors += errors;
    Ok(r)
}

#[derive(Default)]
struct UploadResult {
    /// Body bytes written inside the window.
    bytes: u64,
    completed: u64,
    digest_failures: u64,
    errors: u64,
}

struct Uploader {
    sock: TcpStream,
    /// Length prefix and body, sent as one stream.
    request: Vec<u8>,
    digest: [u8; 32],
    sent: usize,
    answer: [u8; 32],
    got: usize,
    dead: bool,
}

/// A deterministic pseudo-random body (xorshift64*), different for each seed.
fn body(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    v.extend_from_slice(&(len as u64).to_be_bytes());
    while v.len() < len + 8 {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        let k = (len + 8 - v.len()).min(8);
        v.extend_from_slice(&r[..k]);
    }
    v
}

fn upload_step(u: &mut Uploader, w: Window, r: &mut UploadResult) -> io::Result<()> {
    loop {
        if u.sent < u.request.len() {
            let before = u.sent;
            let done = write_rest(&mut u.sock, &u.request, &mut u.sent);
            if w.counts(Instant::now()) {
                // Only body bytes count, not the 8-byte prefix.
                r.bytes += (u.sent.max(8) - before.max(8)) as u64;
            }
            if !done? {
                return Ok(());
            }
        }
        match u.sock.read(&mut u.answer[u.got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                u.got += n;
                if u.got == 32 {
                    if u.answer != u.digest {
                        r.digest_failures += 1;
                    }
                    if w.counts(Instant::now()) {
                        r.completed += 1;
                    }
                    u.got = 0;
                    u.sent = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn run_uploads(mut ups: Vec<Uploader>, w: Window) -> io::Result<UploadResult> {
    let mut poll = Poll::new()?;
    let mut r = UploadResult::default();
    for (i, u) in ups.iter_mut().enumerate() {
        poll.registry().register(
            &mut u.sock,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
    }
    let mut errors = 0;
    drive(&mut poll, w.end, &mut ups, "uploader", &mut errors, |u| {
        upload_step(u, w, &mut r)
    })?;
    r.errors += errors;
    Ok(r)
}

/// Nearest-rank percentile of sorted samples, in microseconds.
/// A connection `drive` steps: its socket, and whether it failed.
trait Stepped {
    fn sock(&mut self) -> &mut TcpStream;
    fn dead(&mut self) -> &mut bool;
}

impl Stepped for EchoConn {
    fn sock(&mut self) -> &mut TcpStream {
        &mut self.sock
    }
    fn dead(&mut self) -> &mut bool {
        &mut self.dead
    }
}

impl Stepped for Uploader {
    fn sock(&mut self) -> &mut TcpStream {
        &mut self.sock
    }
    fn dead(&mut self) -> &mut bool {
        &mut self.dead
    }
}

/// Run `step` on each connection `poll` reports ready (its token is its index) until
/// `end`; a step that fails marks the connection dead, counts it in `errors` and
/// deregisters it.
fn drive<T: Stepped>(
    poll: &mut Poll,
    end: Instant,
    conns: &mut [T],
    what: &str,
    errors: &mut u64,
    mut step: impl FnMut(&mut T) -> io::Result<()>,
) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        match poll.poll(&mut events, Some(end - now)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if *c.dead() {
                continue;
            }
            if let Err(e) = step(c) {
                eprintln!("lat_client: {what} {}: {e}", ev.token().0);
                *c.dead() = true;
                *errors += 1;
                let _ = poll.registry().deregister(c.sock());
            }
        }
    }
}

fn pct_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    if a.msg_size == 0 || a.seconds <= 0.0 || a.warmup < 0.0 {
        eprintln!("lat_client: --msg-size and --seconds must be > 0, --warmup >= 0");
        return std::process::ExitCode::from(2);
    }
    match run(&a) {
        Ok(ok) if ok => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lat_client: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> io::Result<bool> {
    let to = Duration::from_secs_f64(a.connect_timeout);
    // Bodies and their digests first: hashing 16 MiB per uploader is not measured.
    let mut ups = Vec::with_capacity(a.uploaders);
    for i in 0..a.uploaders {
        let request = body(a.upload_bytes, i as u64 + 1);
        let digest: [u8; 32] = Sha256::digest(&request[8..]).into();
        let sock = connect(SocketAddr::new(a.addr, a.hash_port), to)?;
        ups.push(Uploader {
            sock,
            request,
            digest,
            sent: 0,
            answer: [0; 32],
            got: 0,
            dead: false,
        });
    }
    let mut echo = Vec::with_capacity(a.echo_conns);
    for _ in 0..a.echo_conns {
        echo.push(connect(SocketAddr::new(a.addr, a.echo_port), to)?);
    }
    let start = Instant::now() + Duration::from_secs_f64(a.warmup);
    let w = Window {
        start,
        end: start + Duration::from_secs_f64(a.seconds),
    };
    let msg = a.msg_size;
    let echo_t = std::thread::Builder::new()
        .name("echo".into())
        .spawn(move || run_echo(echo, msg, w))?;
    let up_t = std::thread::Builder::new()
        .name("upload".into())
        .spawn(move || run_uploads(ups, w))?;
    let mut e = echo_t
        .join()
        .map_err(|_| io::Error::other("echo thread panicked"))??;
    let u = up_t
        .join()
        .map_err(|_| io::Error::other("upload thread panicked"))??;
    e.samples.sort_unstable();
    let s = &e.samples;
    let secs = a.seconds;
    println!(
        "{{\"echo_conns\":{},\"uploaders\":{},\"seconds\":{},\"echo_requests\":{},\
         \"echo_rps\":{:.0},\"echo_p50_us\":{:.1},\"echo_p99_us\":{:.1},\"echo_p999_us\":{:.1},\
         \"echo_max_us\":{:.1},\"echo_mismatches\":{},\"uploads_completed\":{},\
         \"upload_mb_s\":{:.1},\"digest_failures\":{},\"errors\":{}}}",
        a.echo_conns,
        a.uploaders,
        secs,
        s.len(),
        s.len() as f64 / secs,
        pct_us(s, 0.50),
        pct_us(s, 0.99),
        pct_us(s, 0.999),
        s.last().map_or(0.0, |&m| m as f64 / 1000.0),
        e.mismatches,
        u.completed,
        u.bytes as f64 / secs / 1e6,
        u.digest_failures,
        e.errors + u.errors,
    );
    let ok = u.digest_failures == 0
        && e.mismatches == 0
        && e.errors + u.errors == 0
        && (a.echo_conns == 0 || !s.is_empty());
    Ok(ok)
}

//! `conn_rate`: a connection-rate client. For `--seconds S` (and at most `--max-conns`),
//! keeps `--parallel P` short connections in flight (non-blocking, mio/epoll, one thread):
//! each connects (bound to the next `--src` address, port 0), sends 64 bytes, reads the
//! 64-byte echo, checks it and closes.
//!
//! Ports: by default a connection is closed with SO_LINGER 0, i.e. an RST instead of a FIN:
//! neither side keeps a TIME-WAIT entry, so the client never runs out of ports and the
//! server frees the connection at once (the same for c10m and a kernel server). With
//! `--graceful` it closes with FIN; the client then keeps each 4-tuple in TIME-WAIT for
//! 60 s: spread over many source addresses (`--src-range`) and a wide
//! ip_local_port_range (scripts/testbed --clients does both), ~64 k per address.
//!
//! Prints one line on stdout:
//!   conn_rate: conns=N secs=S conn_per_s=X failed=K connect_err=.. closed=.. mismatch=.. timeouts=..
//! Exit status 0 if at least one connection completed and none failed.
//!
//! Usage: conn_rate --target 198.18.0.2:7 --seconds 5 --parallel 64 --src-range 198.19.0.1-198.19.0.8

use c10m_benches::net::source_addrs;
use clap::Parser;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "conn_rate",
    about = "Short TCP connections (connect, 64 B echo, close) as fast as possible"
)]
struct Args {
    /// Server address and port, e.g. 198.18.0.2:7.
    #[arg(long)]
    target: SocketAddrV4,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Stop after this many completed connections.
    #[arg(long, default_value_t = 10_000_000)]
    max_conns: u64,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Source addresses, comma separated (used round robin, port 0).
    #[arg(long, value_delimiter = ',')]
    src: Vec<Ipv4Addr>,
    /// Inclusive source address range, e.g. 198.19.0.1-198.19.0.40 (added to --src).
    #[arg(long)]
    src_range: Option<String>,
    /// Close with FIN (TIME-WAIT on the client) instead of RST (SO_LINGER 0).
    #[arg(long)]
    graceful: bool,
    /// A connection not done after this many seconds counts as failed.
    #[arg(long, default_value_t = 5.0)]
    conn_timeout: f64,
}

const MSG: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Connecting,
    Send,
    Recv,
}

struct Slot {
    s: TcpStream,
    st: St,
    off: usize,
    born: Instant,
    msg: [u8; MSG],
}

#[derive(Default)]
struct Counts {
    started: u64,
    done: u64,
    connect_err: u64,
    closed: u64,
    mismatch: u64,
    timeouts: u64,
}

impl Counts {
    fn failed(&self) -> u64 {
        self.connect_err + self.closed + self.mismatch + self.timeouts
    }
}

fn open_one(src: Ipv4Addr, target: SocketAddrV4, graceful: bool) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    if !graceful {
        s.set_linger(Some(Duration::ZERO))?;
    }
    s.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    match s.connect(&SocketAddr::V4(target).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(115) => {} // EINPROGRESS
        Err(e) => return Err(e),
    }
    let t = TcpStream::from_std(s.into());
    let _ = t.set_nodelay(true);
    Ok(t)
}

enum Outcome {
    Pending,
    Done,
    Failed(fn(&mut Counts), String),
}

fn drive(c: &mut Slot) -> Outcome {
    let mut tmp = [0u8; MSG];
    loop {
        match c.st {
            St::Connecting => match c.s.take_error() {
                Ok(Some(e)) | Err(e) => {
                    return Outcome::Failed(|n| n.connect_err += 1, format!("connect: {e}"))
                }
                Ok(None) => match c.s.peer_addr() {
                    Ok(_) => c.st = St::Send,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return Outcome::Pending,
                    Err(e) => {
                        return Outcome::Failed(|n| n.connect_err += 1, format!("connect: {e}"))
                    }
                },
            },
            St::Send => match c.s.write(&c.msg[c.off..]) {
                Ok(0) => return Outcome::Failed(|n| n.closed += 1, "closed by the server".into()),
                Ok(w) => {
                    c.off += w;
                    if c.off == MSG {
                        c.off = 0;
                        c.st = St::Recv;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Outcome::Failed(|n| n.closed += 1, e.to_string()),
            },
            St::Recv => match c.s.read(&mut tmp[..MSG - c.off]) {
                Ok(0) => return Outcome::Failed(|n| n.closed += 1, "closed by the server".into()),
                Ok(r) => {
                    if tmp[..r] != c.msg[c.off..c.off + r] {
                        return Outcome::Failed(|n| n.mismatch += 1, "echo mismatch".into());
                    }
                    c.off += r;
                    if c.off == MSG {
                        return Outcome::Done;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Outcome::Failed(|n| n.closed += 1, e.to_string()),
            },
        }
    }
}

fn main() {
    let a = Args::parse();
    let srcs = match source_addrs(&a.src, a.src_range.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("conn_rate: {e}");
            std::process::exit(2);
        }
    };
    let parallel = a.parallel.max(1);
    let mut poll = Poll::new().expect("epoll_create");
    let mut events = Events::with_capacity(1024);
    let mut slots: Vec<Option<Slot>> = (0..parallel).map(|_| None).collect();
    let mut n = Counts::default();
    let mut first_err: Option<String> = None;
    let conn_timeout = Duration::from_secs_f64(a.conn_timeout);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.seconds);
    let mut last_scan = start;
    let mut in_flight = 0usize;

    loop {
        let now = Instant::now();
        let running = now < end && n.started < a.max_conns;
        if !running && in_flight == 0 {
            break;
        }
        // Past the end (plus one connection timeout for stragglers): stop.
        if now >= end + conn_timeout {
            break;
        }
        if running {
            for (i, slot) in slots.iter_mut().enumerate() {
                if slot.is_some() || n.started >= a.max_conns {
                    continue;
                }
                let src = srcs[(n.started % srcs.len() as u64) as usize];
                let mut msg = [0u8; MSG];
                let mut h = n
                    .started
                    .wrapping_add(1)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15);
                for b in msg.iter_mut() {
                    h ^= h >> 31;
                    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    *b = h as u8;
                }
                n.started += 1;
                match open_one(src, a.target, a.graceful) {
                    Ok(mut s) => {
                        let interest = Interest::READABLE.add(Interest::WRITABLE);
                        if let Err(e) = poll.registry().register(&mut s, Token(i), interest) {
                            first_err.get_or_insert(format!("register: {e}"));
                            n.connect_err += 1;
                            continue;
                        }
                        *slot = Some(Slot {
                            s,
                            st: St::Connecting,
                            off: 0,
                            born: now,
                            msg,
                        });
                        in_flight += 1;
                    }
                    Err(e) => {
                        first_err.get_or_insert(format!("connect from {src}: {e}"));
                        n.connect_err += 1;
                    }
                }
            }
        }
        match poll.poll(&mut events, Some(Duration::from_millis(10))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("conn_rate: poll: {e}");
                std::process::exit(2);
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = slots[i].as_mut() else { continue };
            match drive(c) {
                Outcome::Pending => continue,
                Outcome::Done => n.done += 1,
                Outcome::Failed(f, why) => {
                    f(&mut n);
                    first_err.get_or_insert(why);
                }
            }
            // Closing the fd removes it from the epoll set; SO_LINGER 0 makes it an RST.
            slots[i] = None;
            in_flight -= 1;
        }
        if now.duration_since(last_scan) >= Duration::from_millis(100) {
            last_scan = now;
            for slot in slots.iter_mut() {
                if slot.as_ref().is_some_and(|c| now - c.born > conn_timeout) {
                    *slot = None;
                    in_flight -= 1;
                    n.timeouts += 1;
                }
            }
        }
    }
    // Connections still in flight at the very end are neither counted as done nor failed.
    for slot in slots.iter_mut().flatten() {
        let _ = SockRef::from(&slot.s).set_linger(Some(Duration::ZERO));
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = if secs > 0.0 {
        n.done as f64 / secs
    } else {
        0.0
    };
    println!(
        "conn_rate: conns={} secs={:.2} conn_per_s={:.0} failed={} connect_err={} closed={} \
         mismatch={} timeouts={} parallel={} srcs={} close={}",
        n.done,
        secs,
        rate,
        n.failed(),
        n.connect_err,
        n.closed,
        n.mismatch,
        n.timeouts,
        parallel,
        srcs.len(),
        if a.graceful { "fin" } else { "rst" }
    );
    if let Some(e) = first_err {
        eprintln!("conn_rate: first error: {e}");
    }
    std::process::exit(if n.done > 0 && n.failed() == 0 { 0 } else { 1 });
}

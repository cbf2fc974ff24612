//! `epoll_echo`: the kernel baseline for connection scale, a single-threaded non-blocking
//! TCP echo server on epoll (through mio), the classic "C10K" design.
//!
//! Every connection costs one file descriptor. RLIMIT_NOFILE is 20 000 here and cannot be
//! raised, so one process holds at most ~19 900 connections: for more, run several
//! instances on the same address with `--reuseport` (SO_REUSEPORT); the kernel spreads new
//! connections over them by 4-tuple hash (scripts/bench-conns runs N/19 000 of them).
//!
//! Backpressure: a connection whose echo could not be written in full keeps the unsent
//! part in its own buffer and is not read again until that part is gone, so a client
//! that does not read cannot make the server buffer without bound. Idle connections
//! hold no user-space buffer at all.
//!
//! Prints `epoll_echo: ready` on stderr once listening, and on SIGINT/SIGTERM or after
//! `--max-seconds` one line `epoll_echo: accepted=N open=N closed=N accept_errors=N ...`.
//!
//! Usage: epoll_echo --bind 198.18.0.3:7 [--reuseport] [--backlog 4096] [--max-seconds 600]

use c10m_benches::net::tcp_listener;
use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "epoll_echo",
    about = "Single-threaded epoll (mio) TCP echo server: the kernel baseline"
)]
struct Args {
    /// Address and port to listen on, e.g. 198.18.0.3:7.
    #[arg(long)]
    bind: SocketAddr,
    /// Set SO_REUSEPORT so that several instances can share --bind (one process holds
    /// at most RLIMIT_NOFILE connections).
    #[arg(long)]
    reuseport: bool,
    /// listen() backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 4096)]
    backlog: i32,
    /// Stop by itself after this many seconds.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
}

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet echoed (empty, unallocated, for an idle connection).
    pending: Vec<u8>,
}

#[derive(Default)]
struct Stats {
    accepted: u64,
    closed: u64,
    accept_errors: u64,
    emfile: u64,
    bytes: u64,
    max_open: u64,
}

fn listener(a: &Args) -> io::Result<TcpListener> {
    tcp_listener(a.bind, a.backlog, a.reuseport).map(TcpListener::from_std)
}

/// Echo as much as the socket takes; returns Ok(false) when the connection is finished.
fn drive(c: &mut Conn, buf: &mut [u8], st: &mut Stats) -> bool {
    loop {
        // Flush what is left over first; read nothing more while anything is unsent.
        while !c.pending.is_empty() {
            match c.stream.write(&c.pending) {
                Ok(0) => return false,
                Ok(n) => {
                    c.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if c.pending.capacity() > 0 {
            c.pending = Vec::new(); // idle connections keep no buffer
        }
        let n = match c.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        st.bytes += n as u64;
        let mut off = 0;
        while off < n {
            match c.stream.write(&buf[off..n]) {
                Ok(0) => return false,
                Ok(w) => off += w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if off < n {
            c.pending.extend_from_slice(&buf[off..n]);
        }
    }
}

fn main() {
    let a = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).expect("signal handler");
    }
    let mut l = match listener(&a) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("epoll_echo: cannot listen on {}: {e}", a.bind);
            std::process::exit(1);
        }
    };
    let mut poll = Poll::new().expect("epoll_create");
    poll.registry()
        .register(&mut l, LISTENER, Interest::READABLE)
        .expect("register listener");
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut st = Stats::default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.max_seconds);
    let mut open: u64 = 0;
    // After EMFILE the listener's edge is spent: retry accept on every timeout tick.
    let mut retry_accept = false;
    eprintln!(
        "epoll_echo: ready on {} (pid {})",
        a.bind,
        std::process::id()
    );

    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("epoll_echo: poll: {e}");
                break;
            }
        }
        let mut accept_now = retry_accept;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept_now = true;
                continue;
            }
            let i = ev.token().0;
            let done = match conns.get_mut(i).and_then(|c| c.as_mut()) {
                Some(c) => !drive(c, &mut buf, &mut st),
                None => false,
            };
            if done {
                if let Some(mut c) = conns[i].take() {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
                free.push(i);
                st.closed += 1;
                open -= 1;
            }
        }
        if accept_now {
            retry_accept = false;
            loop {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nodelay(true);
                        let i = free.pop().unwrap_or_else(|| {
                            conns.push(None);
                            conns.len() - 1
                        });
                        let interest = Interest::READABLE.add(Interest::WRITABLE);
                        if poll
                            .registry()
                            .register(&mut s, Token(i), interest)
                            .is_err()
                        {
                            free.push(i);
                            st.accept_errors += 1;
                            continue;
                        }
                        let mut c = Conn {
                            stream: s,
                            pending: Vec::new(),
                        };
                        st.accepted += 1;
                        open += 1;
                        st.max_open = st.max_open.max(open);
                        if drive(&mut c, &mut buf, &mut st) {
                            conns[i] = Some(c);
                        } else {
                            let _ = poll.registry().deregister(&mut c.stream);
                            free.push(i);
                            st.closed += 1;
                            open -= 1;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        st.accept_errors += 1;
                        if e.raw_os_error() == Some(24) || e.raw_os_error() == Some(23) {
                            // EMFILE/ENFILE: the fd limit. Leave the connection queued.
                            if st.emfile == 0 {
                                eprintln!(
                                    "epoll_echo: accept: {e} with {open} open: fd limit reached \
                                     (run more instances with --reuseport)"
                                );
                            }
                            st.emfile += 1;
                            retry_accept = true;
                        }
                        break;
                    }
                }
            }
        }
    }
    eprintln!(
        "epoll_echo: accepted={} open={} closed={} max_open={} accept_errors={} emfile={} bytes={} secs={:.1}",
        st.accepted,
        open,
        st.closed,
        st.max_open,
        st.accept_errors,
        st.emfile,
        st.bytes,
        start.elapsed().as_secs_f64()
    );
}

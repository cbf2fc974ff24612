//! `thread_echo`: the other classic kernel baseline, one blocking thread per connection
//! (std::net), each with a small stack (`--stack-kib`, default 64 KiB).
//!
//! Each connection costs a file descriptor (RLIMIT_NOFILE is 20 000 here: run several
//! instances with `--reuseport` for more) and a thread (its stack is mapped but only the
//! touched pages count in RSS; `kernel.threads-max` and `vm.max_map_count` bound it too).
//!
//! Prints `thread_echo: ready` on stderr once listening, and on SIGINT/SIGTERM or after
//! `--max-seconds` one line `thread_echo: accepted=N open=N spawn_errors=N ...`.
//!
//! Usage: thread_echo --bind 198.18.0.3:7 [--reuseport] [--backlog 4096] [--max-seconds 600]

use c10m_benches::net::tcp_listener;
use clap::Parser;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "thread_echo",
    about = "Thread-per-connection TCP echo server (std::net): a kernel baseline"
)]
struct Args {
    /// Address and port to listen on, e.g. 198.18.0.3:7.
    #[arg(long)]
    bind: SocketAddr,
    /// Set SO_REUSEPORT so that several instances can share --bind.
    #[arg(long)]
    reuseport: bool,
    /// listen() backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 4096)]
    backlog: i32,
    /// Stack size of each connection's thread, KiB.
    #[arg(long, default_value_t = 64)]
    stack_kib: usize,
    /// Stop by itself after this many seconds.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
}

#[derive(Default)]
struct Stats {
    accepted: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
    bytes: AtomicU64,
    spawn_errors: AtomicU64,
    accept_errors: AtomicU64,
}

fn listener(a: &Args) -> io::Result<TcpListener> {
    // Non-blocking accept so the main thread notices SIGTERM and --max-seconds.
    tcp_listener(a.bind, a.backlog, a.reuseport)
}

fn serve(mut s: TcpStream, st: &Stats) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                st.bytes.fetch_add(n as u64, Ordering::Relaxed);
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

fn main() {
    let a = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).expect("signal handler");
    }
    let l = match listener(&a) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("thread_echo: cannot listen on {}: {e}", a.bind);
            std::process::exit(1);
        }
    };
    let st = Arc::new(Stats::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.max_seconds);
    eprintln!(
        "thread_echo: ready on {} (pid {})",
        a.bind,
        std::process::id()
    );
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_nodelay(true);
                st.accepted.fetch_add(1, Ordering::Relaxed);
                let open = st.open.fetch_add(1, Ordering::Relaxed) + 1;
                st.max_open.fetch_max(open, Ordering::Relaxed);
                let st2 = st.clone();
                let spawned = std::thread::Builder::new()
                    .stack_size(a.stack_kib * 1024)
                    .spawn(move || {
                        serve(s, &st2);
                        st2.open.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    st.spawn_errors.fetch_add(1, Ordering::Relaxed);
                    st.open.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if st.accept_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!(
                        "thread_echo: accept: {e} (fd limit? run more instances with --reuseport)"
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    eprintln!(
        "thread_echo: accepted={} open={} max_open={} spawn_errors={} accept_errors={} bytes={} secs={:.1}",
        st.accepted.load(Ordering::Relaxed),
        st.open.load(Ordering::Relaxed),
        st.max_open.load(Ordering::Relaxed),
        st.spawn_errors.load(Ordering::Relaxed),
        st.accept_errors.load(Ordering::Relaxed),
        st.bytes.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
    // Threads still blocked in read() end with the process.
    std::process::exit(0);
}

//! `kv`: a RESP2 key-value server that redis clients (redis-cli, redis-benchmark, client
//! libraries) can talk to: PING ECHO GET SET (EX/PX/NX/XX/GET/KEEPTTL) SETNX DEL UNLINK
//! EXISTS INCR DECR INCRBY DECRBY MGET MSET STRLEN APPEND EXPIRE PEXPIRE TTL PTTL PERSIST
//! FLUSHALL FLUSHDB DBSIZE SELECT 0, a minimal INFO, COMMAND and CONFIG GET (enough for
//! clients to start), QUIT. Strings only. Replies and error texts follow redis 7.0.
//!
//! Requests may be pipelined (every complete command in the received bytes runs, replies
//! go out in order in one send) and may be inline (telnet-style lines). A command split
//! across segments is kept in the connection's state, with the parser's progress, so a
//! 16 MiB value is scanned once. Input is bounded ([`Limits`]): an oversized or
//! malformed request gets redis's `-ERR Protocol error: ...` and the connection is closed
//! after the reply, as redis does.
//!
//! Backpressure: replies that do not fit the send buffer wait in the connection's output
//! queue; once more than [`OUT_HIGH`] bytes wait, no further command runs and the input
//! stays in the socket (its window closes) until the peer reads.
//!
//! The store lives in the App, i.e. one per engine. With one engine (one core) today that
//! is the whole data set. Several engines would shard it: each engine owning the keys
//! whose hash selects it, a command for another engine's key forwarded over a message
//! channel (and the reply sent back in order), multi-key commands split and joined.
//!
//! Expiry is lazy (a key whose time is up is dropped when touched) plus a bounded sweep
//! before each batch of commands (at most [`SWEEP_MAX`] due keys, in deadline order).
//!
//! Memory is bounded ([`Config::maxmemory`], redis's `maxmemory` with its `noeviction`
//! policy): the store accounts its bytes (keys, values, an estimated cost per entry: see
//! [`store`]), and while that is over the bound the commands redis marks `denyoom` (SET
//! SETNX MSET APPEND INCR DECR INCRBY DECRBY) get `-OOM command not allowed when used
//! memory > 'maxmemory'.`, whatever the key. Reads, DEL, EXPIRE and FLUSHALL still run,
//! so clients can free memory and the server recovers. As in redis, the check comes
//! before the command: the write that crosses the bound succeeds, the next is refused.

mod cmd;
pub mod resp;
pub mod store;

use c10m_stack::{App, CloseReason, Conn};
pub use resp::Limits;
use resp::{Parsed, Partial};
use store::Store;

/// Unsent reply bytes above which a connection's further commands wait.
pub const OUT_HIGH: usize = 256 << 10;
/// Due keys removed per batch of commands.
pub const SWEEP_MAX: usize = 16;
/// Default `maxmemory`: 1 GiB of accounted bytes per store. A bound rather than redis's
/// unlimited default, so a client that keeps writing cannot drive the host into swap or
/// the OOM killer (taking the NIC queue's engine with it); small against the RAM of a
/// machine that runs kernel-bypass services (the testbed machines have 16 GiB and more)
/// with room for the allocator's slack beyond the estimate. One store per engine: N
/// engines may hold N times this. Raise it with `--kv-maxmemory`, 0 for no bound.
pub const DEFAULT_MAXMEMORY: usize = 1 << 30;

/// Settings of a kv server.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Input bounds.
    pub limits: Limits,
    /// Bound on the store's accounted bytes ([`store::Store::used`]) above which `denyoom`
    /// commands are refused; 0: no bound (as in redis).
    pub maxmemory: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            maxmemory: DEFAULT_MAXMEMORY,
        }
    }
}

/// Counters (see [`Kv::counters`]).
#[derive(Debug, Default)]
pub struct Stats {
    pub commands: u64,
    /// Error replies (unknown command, arity, syntax, not an integer, protocol).
    pub errors: u64,
    pub unknown: u64,
    pub protocol_errors: u64,
    /// Connections closed because a buffered command outgrew `Limits::max_query`.
    pub query_too_big: u64,
    /// Commands refused with -OOM (memory used over `maxmemory`); also in `errors`.
    pub oom_refused: u64,
    pub hits: u64,
    pub misses: u64,
    pub conns: u64,
    pub conns_open: u64,
}

/// The kv application: one store per engine.
pub struct Kv {
    store: Store,
    limits: Limits,
    /// 0: no bound.
    maxmemory: usize,
    /// Wall-clock milliseconds at start; the store's clock is this plus the engine's
    /// monotonic time, so deadlines are Unix milliseconds (as in redis) that never jump.
    epoch_ms: i64,
    pub stats: Stats,
}

impl Default for Kv {
    fn default() -> Self {
        Kv::new(Config::default())
    }
}

/// A connection: input that did not form a complete command yet, output not yet queued.
#[derive(Debug, Default)]
pub struct KvConn {
    /// Unprocessed input, starting at a command boundary (empty in the common case:
    /// commands are parsed straight from the engine's buffer).
    inbuf: Vec<u8>,
    /// Parser progress on the command at the start of `inbuf`.
    partial: Partial,
    /// Replies; `out[out_off..]` is not yet in the socket.
    out: Vec<u8>,
    out_off: usize,
    /// Complete commands wait in `inbuf` because the output is over `OUT_HIGH`.
    stalled: bool,
    /// No more commands: close once the output is queued (protocol error, QUIT).
    closing: bool,
    /// The peer sent FIN.
    peer_fin: bool,
    /// Our FIN is queued.
    closed: bool,
}

impl KvConn {
    fn unsent(&self) -> usize {
        self.out.len() - self.out_off
    }
}

/// Why `run` stopped.
enum Stop {
    /// Every byte was a complete command.
    End,
    /// A command is incomplete from the returned offset on.
    Incomplete,
    /// The output is over `OUT_HIGH`.
    Blocked,
    /// The connection closes (protocol error, QUIT); the rest of the input is ignored.
    Closed,
}

impl Kv {
    pub fn new(cfg: Config) -> Kv {
        let epoch_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Kv {
            store: Store::default(),
            limits: cfg.limits,
            maxmemory: cfg.maxmemory,
            epoch_ms,
            stats: Stats::default(),
        }
    }

    fn now_ms(&self, c: &Conn<'_, Self>) -> i64 {
        self.epoch_ms + c.now().total_millis()
    }

    /// Run the complete commands at the start of `buf`; returns how many bytes they took.
    fn run(&mut self, buf: &[u8], st: &mut KvConn, now: i64) -> (usize, Stop) {
        let mut pos = 0;
        loop {
            if pos == buf.len() {
                return (pos, Stop::End);
            }
            if st.unsent() > OUT_HIGH {
                return (pos, Stop::Blocked);
            }
            let flow = match resp::parse(&buf[pos..], &mut st.partial, &self.limits) {
                Parsed::Incomplete => return (pos, Stop::Incomplete),
                Parsed::Skip(n) => {
                    st.partial.reset();
                    pos += n;
                    continue;
                }
                Parsed::Multi(n) => {
                    let cmd = &buf[pos..pos + n];
                    let argv: Vec<&[u8]> =
                        st.partial.args.iter().map(|&(s, e)| &cmd[s..e]).collect();
                    pos += n;
                    self.exec(&argv, &mut st.out, now)
                }
                Parsed::Inline(n, args) => {
                    let argv: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
                    pos += n;
                    self.exec(&argv, &mut st.out, now)
                }
                Parsed::Error(msg) => {
                    self.stats.errors += 1;
                    self.stats.protocol_errors += 1;
                    resp::err(&mut st.out, msg.as_bytes());
                    st.closing = true;
                    return (pos, Stop::Closed);
                }
            };
            st.partial.reset();
            if flow == cmd::Flow::Close {
                st.closing = true;
                return (pos, Stop::Closed);
            }
        }
    }

    /// Run what `data` (after what `inbuf` holds) completes; returns the bytes of `data`
    /// consumed (the rest stays in the socket: backpressure).
    fn pump(&mut self, st: &mut KvConn, data: &[u8], now: i64) -> usize {
        if st.closing {
            return data.len();
        }
        st.stalled = false;
        if !st.inbuf.is_empty() {
            let mut inbuf = std::mem::take(&mut st.inbuf);
            let (n, stop) = self.run(&inbuf, st, now);
            inbuf.drain(..n);
            match stop {
                Stop::Closed => return data.len(),
                Stop::Blocked => {
                    st.inbuf = inbuf;
                    st.stalled = true;
                    return 0;
                }
                Stop::End => {} // inbuf is empty: parse `data` in place below
                Stop::Incomplete => {
                    // inbuf holds the start of one command: add `data` and go on there.
                    if inbuf.len() + data.len() > self.limits.max_query {
                        return self.too_big(st, data.len());
                    }
                    inbuf.extend_from_slice(data);
                    let (n, stop) = self.run(&inbuf, st, now);
                    inbuf.drain(..n);
                    st.stalled = matches!(stop, Stop::Blocked);
                    if !matches!(stop, Stop::Closed) {
                        st.inbuf = inbuf;
                    }
                    return data.len();
                }
            }
        }
        let (n, stop) = self.run(data, st, now);
        match stop {
            Stop::End | Stop::Blocked => n,
            Stop::Closed => data.len(),
            Stop::Incomplete => {
                if data.len() - n > self.limits.max_query {
                    return self.too_big(st, data.len());
                }
                st.inbuf.extend_from_slice(&data[n..]);
                data.len()
            }
        }
    }

    /// A buffered command outgrew `max_query`: error reply, then close (redis closes such
    /// a client without a reply; one line saying why is kinder).
    fn too_big(&mut self, st: &mut KvConn, consumed: usize) -> usize {
        self.stats.query_too_big += 1;
        self.stats.errors += 1;
        resp::err(&mut st.out, b"Protocol error: query buffer limit exceeded");
        st.inbuf = Vec::new();
        st.partial = Partial::default();
        st.closing = true;
        consumed
    }

    /// Queue as much output as fits; close when the conversation is over.
    fn flush(c: &mut Conn<'_, Self>) {
        let st = c.state();
        if st.unsent() > 0 {
            let out = std::mem::take(&mut st.out);
            let off = st.out_off;
            let n = c.send(&out[off..]);
            let st = c.state();
            st.out = out;
            st.out_off += n;
            if st.out_off == st.out.len() {
                st.out.clear();
                st.out_off = 0;
                if st.out.capacity() > OUT_HIGH * 2 {
                    st.out = Vec::new();
                }
            } else if st.out_off > OUT_HIGH {
                st.out.drain(..st.out_off);
                st.out_off = 0;
            }
        }
        let st = c.state();
        let done = st.closing || (st.peer_fin && !st.stalled);
        if done && !st.closed && st.unsent() == 0 {
            st.closed = true;
            st.inbuf = Vec::new();
            c.close();
        }
    }
}

impl App for Kv {
    type ConnState = KvConn;
    type Done = ();

    fn name(&self) -> &'static str {
        "kv"
    }

    fn on_accept(&mut self, _c: &mut Conn<'_, Self>) -> bool {
        self.stats.conns += 1;
        self.stats.conns_open += 1;
        true
    }

    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        Kv::flush(c);
        if c.state().closing || c.state().closed {
            return data.len(); // nothing more runs on this connection
        }
        if c.state().unsent() > OUT_HIGH {
            return 0; // the peer is not reading: leave the input in the socket
        }
        let now = self.now_ms(c);
        self.store.sweep(now, SWEEP_MAX);
        let mut st = std::mem::take(c.state());
        let used = self.pump(&mut st, data, now);
        *c.state() = st;
        Kv::flush(c);
        used
    }

    fn on_writable(&mut self, c: &mut Conn<'_, Self>) {
        Kv::flush(c);
        let st = c.state();
        if st.stalled && !st.closing && st.unsent() <= OUT_HIGH {
            let now = self.now_ms(c);
            let mut st = std::mem::take(c.state());
            self.pump(&mut st, &[], now);
            *c.state() = st;
            Kv::flush(c);
        }
    }

    fn on_peer_fin(&mut self, c: &mut Conn<'_, Self>) {
        // Answer what was asked (commands may still wait on the output), then close.
        c.state().peer_fin = true;
        Kv::flush(c);
    }

    fn on_closed(&mut self, _c: &mut Conn<'_, Self>, _reason: CloseReason) {
        self.stats.conns_open -= 1;
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("app_kv_commands", self.stats.commands),
            ("app_kv_errors", self.stats.errors),
            ("app_kv_unknown_commands", self.stats.unknown),
            ("app_kv_protocol_errors", self.stats.protocol_errors),
            ("app_kv_query_too_big", self.stats.query_too_big),
            ("app_kv_oom_refused", self.stats.oom_refused),
            ("app_kv_used_memory", self.store.used() as u64),
            ("app_kv_hits", self.stats.hits),
            ("app_kv_misses", self.stats.misses),
            ("app_kv_keys", self.store.len() as u64),
            ("app_kv_keys_volatile", self.store.volatile() as u64),
            ("app_kv_expired", self.store.expired),
            ("app_kv_conns", self.stats.conns),
            ("app_kv_conns_open", self.stats.conns_open),
        ]
    }
}

#[cfg(test)]
mod tests;

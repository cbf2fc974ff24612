//! `c10m loadgen`: a load generator on the same stack (one engine, one NIC queue, no
//! file descriptor per connection). C connections to one target, each with one request
//! outstanding at a time, in one of two modes:
//!
//! - closed loop: a connection sends its next request as soon as the previous reply is
//!   complete; latency is measured from the actual send.
//! - open loop (`rate`): requests are scheduled at fixed intervals per connection (C / R
//!   apart, the connections staggered by 1 / R) and latency is measured from the
//!   *scheduled* send time, as wrk2 does (coordinated-omission correction): a request
//!   that waits because its connection is still busy with the previous reply carries that
//!   wait in its latency.
//!
//! The load starts when all C connections are open, as wrk's does (it connects them all
//! before its event loop sends the first request): a server that accepts one connection
//! per event-loop iteration (nginx without `multi_accept`) and is already busy with the
//! first connections' requests would otherwise leave the later ones in its accept queue,
//! past the timeout, and each reopened connection at the back of the queue again. A
//! connection still not open `timeout` after the connect phase should have ended does
//! not hold the others back longer.
//!
//! Request templates ([`Proto`]): echo (N bytes, the reply compared byte for byte), HTTP
//! GET (status line, Content-Length or chunked body, keep-alive; non-2xx counted) and
//! RESP GET / SET (one reply parsed; `-ERR` counted like a non-2xx). Latencies go to an
//! HdrHistogram in microseconds; [`Report`] renders a wrk-like summary and JSON.
//!
//! The app ([`Loadgen`]) holds the per-connection state machine; [`Driver`] runs the
//! parts that need the engine itself between iterations (opening connections at
//! `connect_rate`, scheduled sends, timeouts), and [`run`] is the loop: driver step +
//! `Engine::poll`, until the duration is over, then an orderly close.

use c10m_stack::smoltcp::time::Instant;
use c10m_stack::smoltcp::wire::IpEndpoint;
use c10m_stack::{App, CloseReason, Conn, ConnId, Engine, Link};
use hdrhistogram::Histogram;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest response head (HTTP) or RESP line accepted before the reply counts as malformed.
const MAX_LINE: usize = 64 * 1024;
/// Pause before a slot retries after a failed connect (RST, no port...).
const RETRY_US: u64 = 10_000;
/// How often the driver looks for requests and handshakes past `timeout`.
const TIMEOUT_SCAN_US: u64 = 5_000;
/// Longest wait for the orderly close at the end.
const CLOSE_WAIT_US: u64 = 1_000_000;

/// What a request looks like and how its reply is parsed.
#[derive(Debug, Clone)]
pub enum Proto {
    /// `size` bytes (a sequence number and a pattern), echoed back and compared.
    Echo { size: usize },
    /// A fixed HTTP request (see [`http_request`]); the reply is an HTTP/1.x response.
    Http { request: Vec<u8> },
    /// RESP `GET key` (keys `key:0` .. `key:K-1` at random when keyspace K > 1).
    RespGet { key: String, keyspace: u64 },
    /// RESP `SET key value` with `value` (keys as for GET).
    RespSet {
        key: String,
        keyspace: u64,
        value: Vec<u8>,
    },
}

impl Proto {
    pub fn name(&self) -> &'static str {
        match self {
            Proto::Echo { .. } => "echo",
            Proto::Http { .. } => "http",
            Proto::RespGet { .. } => "resp-get",
            Proto::RespSet { .. } => "resp-set",
        }
    }
}

/// An HTTP/1.1 GET for `path` with `Host: host` and extra `headers` ("Name: value").
pub fn http_request(path: &str, host: &str, headers: &[String]) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Load settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub target: IpEndpoint,
    pub connections: usize,
    pub proto: Proto,
    /// Open loop at this many requests per second in all; None: closed loop.
    pub rate: Option<f64>,
    /// Measured time (after the warm-up).
    pub duration: Duration,
    /// Time before the measurement starts: requests run, nothing is recorded.
    pub warmup: Duration,
    /// New connections per second at most (None: all at once).
    pub connect_rate: Option<f64>,
    /// A request without a complete reply this long after it was sent (open loop: after
    /// it was scheduled) counts as a timeout and its connection is aborted and reopened; a
    /// handshake this long counts as a connect error (and keeps trying).
    pub timeout: Duration,
}

/// The time source: the real clock, or a hand-moved one for tests.
#[derive(Debug, Clone)]
pub enum Clock {
    Real(std::time::Instant),
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn real() -> Clock {
        Clock::Real(std::time::Instant::now())
    }
    /// Microseconds since the clock's start.
    pub fn now_us(&self) -> u64 {
        match self {
            Clock::Real(t) => t.elapsed().as_micros() as u64,
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }
    /// The same instant as the engine sees it.
    pub fn engine_now(&self) -> Instant {
        Instant::from_micros(self.now_us() as i64)
    }
}

/// Error and event counts (whole run, warm-up included).
#[derive(Debug, Default, Clone)]
pub struct Errors {
    /// `Engine::connect` refused, the handshake failed, or it took longer than timeout.
    pub connect: u64,
    /// The connection ended (reset, closed, timed out in TCP) with a request outstanding,
    /// a malformed reply, or bytes nobody asked for.
    pub read: u64,
    /// No complete reply within the timeout.
    pub timeout: u64,
    /// HTTP status outside 2xx, or a RESP error reply.
    pub status: u64,
    /// Echo replies that differed from the request.
    pub mismatch: u64,
}

/// What one complete reply said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    ok: bool,
    mismatch: bool,
    keep_alive: bool,
}

// ---------------------------------------------------------------------------------------
// Reply parsers (incremental: fed whatever arrives, they say how much they used).

enum Feed {
    /// All of the input used, the reply is not complete yet.
    More,
    /// The reply ended after this many bytes of the input.
    Done(usize, Outcome),
    /// Malformed reply.
    Bad(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd(u8),
    Trailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Head,
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

/// HTTP/1.x response parser: head through httparse, then a Content-Length, chunked or
/// until-close body.
#[derive(Debug)]
struct HttpParser {
    buf: Vec<u8>,
    body: Body,
    ok: bool,
    keep_alive: bool,
}

impl HttpParser {
    fn new() -> HttpParser {
        HttpParser {
            buf: Vec::new(),
            body: Body::Head,
            ok: false,
            keep_alive: true,
        }
    }
    fn reset(&mut self) {
        self.buf.clear();
        self.body = Body::Head;
        self.ok = false;
        self.keep_alive = true;
    }
    fn outcome(&self) -> Outcome {
        Outcome {
            ok: self.ok,
            mismatch: false,
            keep_alive: self.keep_alive,
        }
    }

    fn feed(&mut self, data: &[u8]) -> Feed {
        let mut i = 0;
        loop {
            match self.body {
                Body::Head => {
                    let from = self.buf.len().saturating_sub(3);
                    let old = self.buf.len();
                    self.buf.extend_from_slice(&data[i..]);
                    let Some(p) = find(&self.buf[from..], b"\r\n\r\n") else {
                        if self.buf.len() > MAX_LINE {
                            return Feed::Bad("response head too long");
                        }
                        return Feed::More;
                    };
                    let end = from + p + 4;
                    i += end - old;
                    self.buf.truncate(end);
                    match self.head() {
                        Err(e) => return Feed::Bad(e),
                        Ok(true) => return Feed::Done(i, self.outcome()),
                        Ok(false) => {}
                    }
                }
                Body::Length(n) => {
                    let take = (n as usize).min(data.len() - i);
                    i += take;
                    let left = n - take as u64;
                    if left == 0 {
                        return Feed::Done(i, self.outcome());
                    }
                    self.body = Body::Length(left);
                    return Feed::More;
                }
                Body::UntilClose => return Feed::More,
                Body::Chunked(Chunk::Data(n)) => {
                    let take = (n as usize).min(data.len() - i);
                    i += take;
                    let left = n - take as u64;
                    self.body = Body::Chunked(if left == 0 {
                        Chunk::DataEnd(2)
                    } else {
                        Chunk::Data(left)
                    });
                    if i == data.len() {
                        return Feed::More;
                    }
                }
                Body::Chunked(Chunk::DataEnd(k)) => {
                    let take = (k as usize).min(data.len() - i);
                    i += take;
                    let left = k - take as u8;
                    self.body = Body::Chunked(if left == 0 {
                        Chunk::Size
                    } else {
                        Chunk::DataEnd(left)
                    });
                    if i == data.len() {
                        return Feed::More;
                    }
                }
                Body::Chunked(state) => {
                    // Size and trailer lines.
                    let Some(p) = data[i..].iter().position(|&b| b == b'\n') else {
                        self.buf.extend_from_slice(&data[i..]);
                        if self.buf.len() > MAX_LINE {
                            return Feed::Bad("chunk line too long");
                        }
                        return Feed::More;
                    };
                    self.buf.extend_from_slice(&data[i..i + p + 1]);
                    i += p + 1;
                    let line = trim_crlf(&self.buf);
                    if state == Chunk::Size {
                        let hex = line.split(|&b| b == b';').next().unwrap_or(b"");
                        let n = std::str::from_utf8(hex)
                            .ok()
                            .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                            .ok_or("bad chunk size");
                        let n = match n {
                            Ok(n) => n,
                            Err(e) => return Feed::Bad(e),
                        };
                        self.body = Body::Chunked(if n == 0 {
                            Chunk::Trailer
                        } else {
                            Chunk::Data(n)
                        });
                        self.buf.clear();
                    } else {
                        let empty = line.is_empty();
                        self.buf.clear();
                        if empty {
                            return Feed::Done(i, self.outcome());
                        }
                    }
                    if i == data.len() {
                        return Feed::More;
                    }
                }
            }
        }
    }

    /// Parse the head in `buf`; true if the response has no body (done).
    fn head(&mut self) -> Result<bool, &'static str> {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        match r.parse(&self.buf) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err("incomplete response head"),
            Err(_) => return Err("malformed response head"),
        }
        let code = r.code.unwrap_or(0);
        let v11 = r.version == Some(1);
        let (mut len, mut chunked, mut close, mut keep) = (None, false, false, false);
        for h in r.headers.iter() {
            let v = std::str::from_utf8(h.value).unwrap_or("");
            if h.name.eq_ignore_ascii_case("content-length") {
                len = Some(v.trim().parse::<u64>().map_err(|_| "bad Content-Length")?);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked |= v.to_ascii_lowercase().contains("chunked");
            } else if h.name.eq_ignore_ascii_case("connection") {
                for t in v.split(',') {
                    close |= t.trim().eq_ignore_ascii_case("close");
                    keep |= t.trim().eq_ignore_ascii_case("keep-alive");
                }
            }
        }
        self.buf.clear();
        if (100..200).contains(&code) {
            // Interim response (100 Continue...): the real one follows.
            return Ok(false);
        }
        self.ok = (200..300).contains(&code);
        self.keep_alive = if v11 { !close } else { keep };
        if code == 204 || code == 304 {
            return Ok(true);
        }
        self.body = if chunked {
            Body::Chunked(Chunk::Size)
        } else if let Some(n) = len {
            if n == 0 {
                return Ok(true);
            }
            Body::Length(n)
        } else {
            self.keep_alive = false;
            Body::UntilClose
        };
        Ok(false)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim_crlf(l: &[u8]) -> &[u8] {
    let l = l.strip_suffix(b"\n").unwrap_or(l);
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// One RESP2 reply (simple string, error, integer, bulk string, arrays nested).
#[derive(Debug)]
struct RespParser {
    line: Vec<u8>,
    /// Elements still to read (the reply is complete at 0).
    pending: i64,
    /// Bulk payload + CRLF bytes still to skip.
    skip: usize,
    in_bulk: bool,
    first: bool,
    error: bool,
}

impl RespParser {
    fn new() -> RespParser {
        RespParser {
            line: Vec::new(),
            pending: 1,
            skip: 0,
            in_bulk: false,
            first: true,
            error: false,
        }
    }
    fn reset(&mut self) {
        *self = RespParser {
            line: std::mem::take(&mut self.line),
            ..RespParser::new()
        };
        self.line.clear();
    }

    fn feed(&mut self, data: &[u8]) -> Feed {
        let mut i = 0;
        while i < data.len() {
            if self.in_bulk {
                let take = self.skip.min(data.len() - i);
                i += take;
                self.skip -= take;
                if self.skip > 0 {
                    return Feed::More;
                }
                self.in_bulk = false;
                self.pending -= 1;
            } else {
                let Some(p) = data[i..].iter().position(|&b| b == b'\n') else {
                    self.line.extend_from_slice(&data[i..]);
                    if self.line.len() > MAX_LINE {
                        return Feed::Bad("RESP line too long");
                    }
                    return Feed::More;
                };
                self.line.extend_from_slice(&data[i..i + p + 1]);
                i += p + 1;
                if self.line.len() < 3 || !self.line.ends_with(b"\r\n") {
                    return Feed::Bad("RESP line without CRLF");
                }
                let kind = self.line[0];
                let n = || {
                    std::str::from_utf8(&self.line[1..self.line.len() - 2])
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or("bad RESP length")
                };
                match kind {
                    b'+' | b':' => self.pending -= 1,
                    b'-' => {
                        self.error |= self.first;
                        self.pending -= 1;
                    }
                    b'$' => match n() {
                        Ok(len) if len < 0 => self.pending -= 1,
                        Ok(len) => {
                            self.in_bulk = true;
                            self.skip = len as usize + 2;
                        }
                        Err(e) => return Feed::Bad(e),
                    },
                    b'*' => match n() {
                        Ok(len) => self.pending += len.max(0) - 1,
                        Err(e) => return Feed::Bad(e),
                    },
                    _ => return Feed::Bad("unknown RESP type"),
                }
                self.first = false;
                self.line.clear();
            }
            if self.pending == 0 && !self.in_bulk {
                return Feed::Done(
                    i,
                    Outcome {
                        ok: !self.error,
                        mismatch: false,
                        keep_alive: true,
                    },
                );
            }
        }
        Feed::More
    }
}

#[derive(Debug)]
enum Parser {
    Echo { got: usize, bad: bool },
    Http(HttpParser),
    Resp(RespParser),
}

impl Parser {
    fn for_proto(p: &Proto) -> Parser {
        match p {
            Proto::Echo { .. } => Parser::Echo { got: 0, bad: false },
            Proto::Http { .. } => Parser::Http(HttpParser::new()),
            Proto::RespGet { .. } | Proto::RespSet { .. } => Parser::Resp(RespParser::new()),
        }
    }
    fn reset(&mut self) {
        match self {
            Parser::Echo { got, bad } => {
                *got = 0;
                *bad = false;
            }
            Parser::Http(h) => h.reset(),
            Parser::Resp(r) => r.reset(),
        }
    }
    /// Feed reply bytes; `req` is the request they answer (echo compares against it).
    fn feed(&mut self, data: &[u8], req: &[u8]) -> Feed {
        match self {
            Parser::Echo { got, bad } => {
                let want = &req[*got..];
                let n = want.len().min(data.len());
                *bad |= data[..n] != want[..n];
                *got += n;
                if *got == req.len() {
                    Feed::Done(
                        n,
                        Outcome {
                            ok: !*bad,
                            mismatch: *bad,
                            keep_alive: true,
                        },
                    )
                } else {
                    Feed::More
                }
            }
            Parser::Http(h) => h.feed(data),
            Parser::Resp(r) => r.feed(data),
        }
    }
    /// The peer closed: a reply that runs until the close is complete now.
    fn at_close(&self) -> Option<Outcome> {
        match self {
            Parser::Http(h) if h.body == Body::UntilClose => Some(h.outcome()),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The app.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Connecting,
    Open,
    /// We closed or aborted it; `on_closed` follows.
    Closing,
}

/// One of the C connection slots; it outlives the connections it opens one after another.
struct Slot {
    conn: Option<ConnId>,
    phase: Phase,
    /// Bumped for every connection the slot opens (stale scheduled sends are dropped).
    epoch: u64,
    ever_connected: bool,
    connect_started: u64,
    connect_timed_out: bool,
    req: Vec<u8>,
    sent: usize,
    outstanding: bool,
    /// Latency origin of the outstanding request: actual (closed loop) or scheduled
    /// (open loop) send time, µs.
    start_us: u64,
    timed_out: bool,
    /// A scheduled send for this slot is in the heap.
    waiting: bool,
    parser: Parser,
    /// Open loop: requests scheduled so far (the next one is due at origin + k * interval).
    k: u64,
    origin: Option<f64>,
}

/// Per-connection state: slot index + 1 (0: not yet known).
pub type SlotRef = u32;

/// The load generator app (one per engine).
pub struct Loadgen {
    cfg: Config,
    clock: Clock,
    slots: Vec<Slot>,
    /// Connections whose handshake is under way, to their slot.
    pending: HashMap<ConnId, u32>,
    /// Slots that need a connection: (due µs, slot).
    to_connect: BinaryHeap<Reverse<(u64, u32)>>,
    /// Open loop: scheduled sends (due µs, slot, epoch).
    scheduled: BinaryHeap<Reverse<(u64, u32, u64)>>,
    seq: u64,
    rng: u64,
    stopping: bool,
    warm_end: u64,
    end: u64,
    /// When recording stopped (the end, or earlier on a signal).
    measured_until: Option<u64>,
    hist: Histogram<u64>,
    requests: u64,
    bytes_in: u64,
    pub errors: Errors,
    /// Connections opened by a slot that had one before (after a close, reset, timeout...).
    pub reconnects: u64,
    pub connected: u64,
    open_conns: u64,
    /// Requests completed outside the measurement window (warm-up).
    warmup_requests: u64,
    last_connect_error: Option<String>,
    /// Requests flow (every connection was open once, or `start_deadline` passed).
    started: bool,
    start_deadline: u64,
}

impl Loadgen {
    pub fn new(cfg: Config, clock: Clock) -> Loadgen {
        let slots = (0..cfg.connections)
            .map(|_| Slot {
                conn: None,
                phase: Phase::Idle,
                epoch: 0,
                ever_connected: false,
                connect_started: 0,
                connect_timed_out: false,
                req: Vec::new(),
                sent: 0,
                outstanding: false,
                start_us: 0,
                timed_out: false,
                waiting: false,
                parser: Parser::for_proto(&cfg.proto),
                k: 0,
                origin: None,
            })
            .collect();
        Loadgen {
            clock,
            slots,
            pending: HashMap::new(),
            to_connect: BinaryHeap::new(),
            scheduled: BinaryHeap::new(),
            seq: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            stopping: false,
            warm_end: 0,
            end: u64::MAX,
            measured_until: None,
            // 1 µs .. 1 h, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            requests: 0,
            bytes_in: 0,
            errors: Errors::default(),
            reconnects: 0,
            connected: 0,
            open_conns: 0,
            warmup_requests: 0,
            last_connect_error: None,
            started: false,
            start_deadline: u64::MAX,
            cfg,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
    /// Requests completed within the measurement window.
    pub fn requests(&self) -> u64 {
        self.requests
    }
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.hist
    }

    /// Start at `now`: every slot is due for a connection; the measurement window is
    /// [now + warmup, now + warmup + duration). Requests start when all connections are
    /// open, or `timeout` after the connect phase should have ended.
    fn begin(&mut self, now: u64) {
        self.warm_end = now + self.cfg.warmup.as_micros() as u64;
        self.end = self.warm_end + self.cfg.duration.as_micros() as u64;
        let connect_phase = self
            .cfg
            .connect_rate
            .map_or(0.0, |r| self.cfg.connections as f64 * 1e6 / r);
        self.start_deadline = now + connect_phase as u64 + self.cfg.timeout.as_micros() as u64;
        for i in 0..self.slots.len() {
            self.to_connect.push(Reverse((now, i as u32)));
        }
    }

    fn measuring(&self, now: u64) -> bool {
        now >= self.warm_end && now < self.end && self.measured_until.is_none()
    }

    /// Open loop: µs between two requests of one connection.
    fn interval(&self) -> Option<f64> {
        self.cfg.rate.map(|r| self.cfg.connections as f64 * 1e6 / r)
    }

    /// Fill the slot's request buffer with its next request.
    fn build_request(&mut self, s: usize) {
        self.seq += 1;
        let seq = self.seq;
        let key_n = |rng: &mut u64, keyspace: u64| {
            if keyspace <= 1 {
                return None;
            }
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            Some(*rng % keyspace)
        };
        let req = &mut self.slots[s].req;
        req.clear();
        match &self.cfg.proto {
            Proto::Echo { size } => {
                let tag = seq.to_be_bytes();
                req.extend((0..*size).map(|i| {
                    if i < 8 {
                        tag[i]
                    } else {
                        (seq as usize).wrapping_mul(131).wrapping_add(i * 7) as u8
                    }
                }));
            }
            Proto::Http { request } => req.extend_from_slice(request),
            Proto::RespGet { key, keyspace } => {
                let k = resp_key(key, key_n(&mut self.rng, *keyspace));
                resp_command(req, &[b"GET", k.as_bytes()]);
            }
            Proto::RespSet {
                key,
                keyspace,
                value,
            } => {
                let k = resp_key(key, key_n(&mut self.rng, *keyspace));
                resp_command(req, &[b"SET", k.as_bytes(), value]);
            }
        }
    }

    /// Make the slot's next request outstanding, latency counted from `start`.
    fn start_request(&mut self, s: usize, start: u64) {
        self.build_request(s);
        let sl = &mut self.slots[s];
        sl.sent = 0;
        sl.outstanding = true;
        sl.timed_out = false;
        sl.start_us = start;
        sl.parser.reset();
    }

    /// When the slot's next request is due: now (closed loop) or its place in the
    /// schedule (open loop; the slot's schedule starts at its first request).
    fn due(&mut self, s: usize, now: u64) -> u64 {
        match self.interval() {
            None => now,
            Some(iv) => {
                let stagger = s as f64 * iv / self.cfg.connections as f64;
                let sl = &mut self.slots[s];
                let origin = *sl.origin.get_or_insert(now as f64 + stagger);
                (origin + sl.k as f64 * iv) as u64
            }
        }
    }

    /// Whether the slot may start a request: the load started, the slot is open and idle.
    fn ready(&self, s: usize) -> bool {
        let sl = &self.slots[s];
        self.started && !self.stopping && !sl.outstanding && !sl.waiting && sl.phase == Phase::Open
    }

    /// Queue the slot's next request for `due` (the driver sends it then).
    fn schedule(&mut self, s: usize, due: u64) {
        let sl = &mut self.slots[s];
        sl.waiting = true;
        self.scheduled.push(Reverse((due, s as u32, sl.epoch)));
    }

    /// Send the slot's next request now, or schedule it (open loop).
    fn next_request(&mut self, c: &mut Conn<'_, Self>, s: usize) {
        if !self.ready(s) {
            return;
        }
        let now = self.clock.now_us();
        let due = self.due(s, now);
        if due > now {
            self.schedule(s, due);
            return;
        }
        self.start_request(s, due);
        self.push(c, s);
    }

    /// Start the load once every connection is open (or at `start_deadline`): each open
    /// slot's first request is scheduled; the driver sends it. True when it started now.
    fn start_load(&mut self, now: u64) -> bool {
        if self.started || (self.open_conns < self.slots.len() as u64 && now < self.start_deadline)
        {
            return false;
        }
        self.started = true;
        for s in 0..self.slots.len() {
            if self.ready(s) {
                let due = self.due(s, now);
                self.schedule(s, due);
            }
        }
        true
    }

    /// Queue as much of the outstanding request as fits.
    fn push(&mut self, c: &mut Conn<'_, Self>, s: usize) {
        let sl = &mut self.slots[s];
        if sl.outstanding && sl.sent < sl.req.len() {
            sl.sent += c.send(&sl.req[sl.sent..]);
        }
    }

    fn complete(&mut self, c: &mut Conn<'_, Self>, s: usize, out: Outcome) {
        let now = self.clock.now_us();
        let measuring = self.measuring(now);
        let interval = self.interval();
        let sl = &mut self.slots[s];
        sl.outstanding = false;
        if interval.is_some() {
            sl.k += 1;
        }
        if measuring {
            self.requests += 1;
            let _ = self.hist.record(now.saturating_sub(sl.start_us).max(1));
        } else {
            self.warmup_requests += 1;
        }
        if out.mismatch {
            self.errors.mismatch += 1;
        } else if !out.ok {
            self.errors.status += 1;
        }
        if !out.keep_alive {
            sl.phase = Phase::Closing;
            c.close();
            return;
        }
        self.next_request(c, s);
    }

    fn slot_of(&mut self, c: &mut Conn<'_, Self>) -> Option<usize> {
        let r = *c.state();
        (r > 0).then(|| r as usize - 1)
    }

    /// Bad reply bytes: count, abort, reopen.
    fn malformed(&mut self, c: &mut Conn<'_, Self>, s: usize, why: &str) {
        self.errors.read += 1;
        if self.errors.read == 1 {
            log::warn!("loadgen: {}: {why}", self.cfg.proto.name());
        }
        let open_loop = self.cfg.rate.is_some();
        let sl = &mut self.slots[s];
        if sl.outstanding && open_loop {
            sl.k += 1; // that request is lost (counted as an error)
        }
        sl.outstanding = false;
        sl.phase = Phase::Closing;
        c.abort();
    }
}

fn resp_key(key: &str, n: Option<u64>) -> String {
    match n {
        Some(n) => format!("{key}:{n}"),
        None => key.to_string(),
    }
}

fn resp_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

impl App for Loadgen {
    type ConnState = SlotRef;
    type Done = ();

    fn name(&self) -> &'static str {
        "loadgen"
    }

    fn on_connected(&mut self, c: &mut Conn<'_, Self>) {
        let Some(s) = self.pending.remove(&c.id()) else {
            c.abort();
            return;
        };
        *c.state() = s + 1;
        let s = s as usize;
        self.connected += 1;
        self.open_conns += 1;
        let sl = &mut self.slots[s];
        sl.phase = Phase::Open;
        sl.ever_connected = true;
        sl.parser.reset();
        if self.stopping {
            sl.phase = Phase::Closing;
            c.close();
            return;
        }
        self.next_request(c, s);
    }

    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        let Some(s) = self.slot_of(c) else {
            return data.len();
        };
        if self.measuring(self.clock.now_us()) {
            self.bytes_in += data.len() as u64;
        }
        let mut off = 0;
        while off < data.len() {
            let sl = &mut self.slots[s];
            if !sl.outstanding {
                if sl.phase == Phase::Open {
                    self.malformed(c, s, "bytes arrived with no request outstanding");
                }
                break;
            }
            match sl.parser.feed(&data[off..], &sl.req) {
                Feed::More => break,
                Feed::Done(n, out) => {
                    off += n;
                    self.complete(c, s, out);
                }
                Feed::Bad(why) => {
                    self.malformed(c, s, why);
                    break;
                }
            }
        }
        data.len()
    }

    fn on_writable(&mut self, c: &mut Conn<'_, Self>) {
        if let Some(s) = self.slot_of(c) {
            self.push(c, s);
        }
    }

    fn on_peer_fin(&mut self, c: &mut Conn<'_, Self>) {
        if let Some(s) = self.slot_of(c) {
            let sl = &self.slots[s];
            if sl.outstanding {
                if let Some(out) = sl.parser.at_close() {
                    self.complete(c, s, out);
                }
            }
        }
        c.close();
    }

    fn on_closed(&mut self, c: &mut Conn<'_, Self>, _reason: CloseReason) {
        let (id, state) = (c.id(), *c.state());
        let s = if state > 0 {
            state - 1
        } else {
            match self.pending.remove(&id) {
                Some(s) => s,
                None => return,
            }
        } as usize;
        let now = self.clock.now_us();
        let interval = self.interval();
        let sl = &mut self.slots[s];
        if sl.conn != Some(id) {
            return;
        }
        match sl.phase {
            Phase::Connecting => {
                if !sl.connect_timed_out {
                    self.errors.connect += 1;
                }
            }
            Phase::Open => {
                if sl.outstanding {
                    self.errors.read += 1;
                }
            }
            Phase::Closing | Phase::Idle => {}
        }
        if sl.phase != Phase::Connecting {
            self.open_conns -= 1;
        }
        if sl.outstanding && interval.is_some() {
            sl.k += 1; // that request is lost (counted as an error)
        }
        let failed = sl.phase == Phase::Connecting;
        sl.conn = None;
        sl.phase = Phase::Idle;
        sl.outstanding = false;
        sl.waiting = false;
        if !self.stopping {
            let due = if failed { now + RETRY_US } else { now };
            self.to_connect.push(Reverse((due, s as u32)));
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("app_loadgen_requests", self.requests),
            ("app_loadgen_warmup_requests", self.warmup_requests),
            ("app_loadgen_connected", self.connected),
            ("app_loadgen_reconnects", self.reconnects),
            ("app_loadgen_err_connect", self.errors.connect),
            ("app_loadgen_err_read", self.errors.read),
            ("app_loadgen_err_timeout", self.errors.timeout),
            ("app_loadgen_err_status", self.errors.status),
            ("app_loadgen_err_mismatch", self.errors.mismatch),
        ]
    }
}

// ---------------------------------------------------------------------------------------
// The driver: what must happen between engine iterations.

/// Opens connections (at `connect_rate`), sends scheduled requests and enforces the
/// timeout, between `Engine::poll` calls.
pub struct Driver {
    tokens: f64,
    last_refill: u64,
    next_scan: u64,
}

impl Driver {
    /// Start the load at `now` (µs of the app's clock).
    pub fn start<L: Link>(e: &mut Engine<L, Loadgen>, now: u64) -> Driver {
        e.app_mut().begin(now);
        Driver {
            tokens: 1.0,
            last_refill: now,
            next_scan: now + TIMEOUT_SCAN_US,
        }
    }

    /// Whether the measured time is over.
    pub fn finished<L: Link>(&self, e: &Engine<L, Loadgen>, now: u64) -> bool {
        now >= e.app().end
    }

    /// One step: connects, scheduled sends, timeouts, one engine iteration. Returns
    /// whether anything happened.
    pub fn step<L: Link>(&mut self, e: &mut Engine<L, Loadgen>, now: u64) -> bool {
        let t = Instant::from_micros(now as i64);
        let mut work = self.connects(e, now, t);
        work |= e.app_mut().start_load(now);
        work |= self.sends(e, now, t);
        if now >= self.next_scan {
            self.next_scan = now + TIMEOUT_SCAN_US;
            self.timeouts(e, now, t);
        }
        work | e.poll(t)
    }

    fn connects<L: Link>(&mut self, e: &mut Engine<L, Loadgen>, now: u64, t: Instant) -> bool {
        let rate = e.app().cfg.connect_rate;
        if let Some(r) = rate {
            let burst = (r / 1000.0).max(1.0);
            self.tokens = (self.tokens + (now - self.last_refill) as f64 * r / 1e6).min(burst);
            self.last_refill = now;
        }
        let target = e.app().cfg.target;
        let mut work = false;
        loop {
            let app = e.app_mut();
            match app.to_connect.peek() {
                Some(Reverse((due, _))) if *due <= now => {}
                _ => break,
            }
            if rate.is_some() && self.tokens < 1.0 {
                break;
            }
            let Reverse((_, s)) = app.to_connect.pop().expect("peeked");
            if app.stopping {
                continue;
            }
            self.tokens -= 1.0;
            work = true;
            match e.connect(target, t) {
                Ok(id) => {
                    let app = e.app_mut();
                    app.pending.insert(id, s);
                    let sl = &mut app.slots[s as usize];
                    if sl.ever_connected {
                        app.reconnects += 1;
                    }
                    sl.conn = Some(id);
                    sl.phase = Phase::Connecting;
                    sl.epoch += 1;
                    sl.connect_started = now;
                    sl.connect_timed_out = false;
                }
                Err(err) => {
                    let app = e.app_mut();
                    app.errors.connect += 1;
                    let msg = format!("connect to {target}: {err}");
                    if app.last_connect_error.as_deref() != Some(&msg) {
                        log::warn!("loadgen: {msg}");
                        app.last_connect_error = Some(msg);
                    }
                    app.to_connect.push(Reverse((now + 10 * RETRY_US, s)));
                }
            }
        }
        work
    }

    fn sends<L: Link>(&mut self, e: &mut Engine<L, Loadgen>, now: u64, t: Instant) -> bool {
        let mut work = false;
        loop {
            let app = e.app_mut();
            let (due, s, epoch) = match app.scheduled.peek() {
                Some(Reverse(x)) if x.0 <= now => *x,
                _ => break,
            };
            app.scheduled.pop();
            let s = s as usize;
            let sl = &app.slots[s];
            if sl.epoch != epoch || !sl.waiting || sl.phase != Phase::Open || app.stopping {
                continue;
            }
            let id = sl.conn.expect("open slot has a connection");
            app.slots[s].waiting = false;
            app.start_request(s, due);
            let req = std::mem::take(&mut app.slots[s].req);
            let n = e.with_conn(id, t, |c| c.send(&req));
            let sl = &mut e.app_mut().slots[s];
            sl.req = req;
            match n {
                Some(n) => sl.sent = n,
                None => sl.outstanding = false, // gone; on_closed reopens the slot
            }
            work = true;
        }
        work
    }

    fn timeouts<L: Link>(&mut self, e: &mut Engine<L, Loadgen>, now: u64, t: Instant) {
        let app = e.app_mut();
        let limit = app.cfg.timeout.as_micros() as u64;
        let open_loop = app.cfg.rate.is_some();
        let mut abort = Vec::new();
        for sl in app.slots.iter_mut() {
            if sl.phase == Phase::Open
                && sl.outstanding
                && !sl.timed_out
                && now.saturating_sub(sl.start_us) > limit
            {
                sl.timed_out = true;
                app.errors.timeout += 1;
                if open_loop {
                    sl.k += 1;
                }
                sl.phase = Phase::Closing;
                sl.outstanding = false;
                abort.extend(sl.conn);
            } else if sl.phase == Phase::Connecting
                && !sl.connect_timed_out
                && now.saturating_sub(sl.connect_started) > limit
            {
                // The engine cannot abort a handshake: count it once, let it keep trying.
                sl.connect_timed_out = true;
                app.errors.connect += 1;
            }
        }
        for id in abort {
            e.with_conn(id, t, |c| c.abort());
        }
    }

    /// Stop recording, close every connection (FIN) and run the engine until they are
    /// closed or `CLOSE_WAIT_US` passed.
    pub fn shutdown<L: Link>(&mut self, e: &mut Engine<L, Loadgen>, mut now: impl FnMut() -> u64) {
        let t0 = now();
        let app = e.app_mut();
        app.measured_until = Some(t0.min(app.end).max(app.warm_end));
        app.stopping = true;
        let open: Vec<ConnId> = app
            .slots
            .iter_mut()
            .filter(|s| s.phase == Phase::Open)
            .filter_map(|s| {
                s.phase = Phase::Closing;
                s.conn
            })
            .collect();
        let t = Instant::from_micros(t0 as i64);
        for id in open {
            e.with_conn(id, t, |c| c.close());
        }
        loop {
            let n = now();
            e.poll(Instant::from_micros(n as i64));
            if e.app().open_conns == 0 || n.saturating_sub(t0) > CLOSE_WAIT_US {
                break;
            }
        }
    }
}

/// How the loop waits when there is nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleMode {
    /// Busy-poll (a load generator's default: the lowest added latency).
    Spin,
    /// After `spin_us` without work, sleep up to 100 µs at a time (frames wait meanwhile).
    Sleep { spin_us: u64 },
}

/// Run the load on `e` (its app a [`Loadgen`] on the real clock) until the duration is
/// over or `stop` is set, close the connections, and report.
pub fn run<L: Link>(e: &mut Engine<L, Loadgen>, stop: &AtomicBool, idle: IdleMode) -> Report {
    let clock = e.app().clock.clone();
    let mut d = Driver::start(e, clock.now_us());
    let mut last_work = clock.now_us();
    loop {
        let now = clock.now_us();
        if stop.load(Ordering::Relaxed) || d.finished(e, now) {
            break;
        }
        if d.step(e, now) {
            last_work = now;
        } else if let IdleMode::Sleep { spin_us } = idle {
            if now - last_work > spin_us {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }
    d.shutdown(e, || clock.now_us());
    Report::new(e.app(), e.counters())
}

// ---------------------------------------------------------------------------------------
// The report.

/// Final figures: wrk-like text and JSON.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: String,
    pub proto: &'static str,
    pub connections: usize,
    pub rate: Option<f64>,
    pub seconds: f64,
    pub requests: u64,
    pub bytes: u64,
    pub latency_us: Latency,
    pub errors: Errors,
    pub reconnects: u64,
    pub connected: u64,
    pub counters: Vec<(&'static str, u64)>,
}

/// Latency summary, µs.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub min: u64,
    pub mean: f64,
    pub stdev: f64,
    pub max: u64,
    /// (percentile, value) for 50, 75, 90, 99, 99.9, 99.99.
    pub percentiles: Vec<(f64, u64)>,
}

pub const PERCENTILES: [f64; 6] = [50.0, 75.0, 90.0, 99.0, 99.9, 99.99];

impl Report {
    pub fn new(app: &Loadgen, counters: Vec<(&'static str, u64)>) -> Report {
        let until = app.measured_until.unwrap_or(app.end);
        let seconds = until.saturating_sub(app.warm_end) as f64 / 1e6;
        let h = &app.hist;
        let latency_us = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                min: h.min(),
                mean: h.mean(),
                stdev: h.stdev(),
                max: h.max(),
                percentiles: PERCENTILES
                    .iter()
                    .map(|&p| (p, h.value_at_quantile(p / 100.0)))
                    .collect(),
            }
        };
        Report {
            target: app.cfg.target.to_string(),
            proto: app.cfg.proto.name(),
            connections: app.cfg.connections,
            rate: app.cfg.rate,
            seconds,
            requests: app.requests,
            bytes: app.bytes_in,
            latency_us,
            errors: app.errors.clone(),
            reconnects: app.reconnects,
            connected: app.connected,
            counters,
        }
    }

    pub fn requests_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }
    pub fn bytes_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / self.seconds
        } else {
            0.0
        }
    }
    pub fn percentile(&self, p: f64) -> Option<u64> {
        self.latency_us
            .percentiles
            .iter()
            .find(|(q, _)| *q == p)
            .map(|x| x.1)
    }

    /// The wrk-like summary.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let mode = match self.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".into(),
        };
        let l = &self.latency_us;
        let _ = writeln!(
            o,
            "{:.2}s test @ {} {} ({mode})\n  {} connections",
            self.seconds, self.proto, self.target, self.connections
        );
        let _ = writeln!(o, "  Latency     Avg      Stdev     Max");
        let _ = writeln!(
            o,
            "           {:>8} {:>8} {:>8}",
            fmt_us(l.mean),
            fmt_us(l.stdev),
            fmt_us(l.max as f64)
        );
        let _ = writeln!(o, "  Latency Distribution");
        for (p, v) in &l.percentiles {
            let _ = writeln!(o, "  {:>7}  {:>8}", format!("{p}%"), fmt_us(*v as f64));
        }
        let _ = writeln!(
            o,
            "  {} requests in {:.2}s, {} read",
            self.requests,
            self.seconds,
            fmt_bytes(self.bytes as f64)
        );
        let e = &self.errors;
        let _ = writeln!(
            o,
            "  Errors: connect {}, read {}, timeout {}, non-2xx {}, mismatch {}",
            e.connect, e.read, e.timeout, e.status, e.mismatch
        );
        let _ = writeln!(
            o,
            "  Connections: {} opened, {} reconnects",
            self.connected, self.reconnects
        );
        let _ = writeln!(o, "Requests/sec: {:>10.2}", self.requests_per_sec());
        let _ = write!(o, "Transfer/sec: {:>10}", fmt_bytes(self.bytes_per_sec()));
        o
    }

    /// The same figures as one JSON object (counters included).
    pub fn json(&self) -> String {
        let l = &self.latency_us;
        let pct: Vec<String> = l
            .percentiles
            .iter()
            .map(|(p, v)| format!("\"p{}\":{v}", p.to_string().replace('.', "_")))
            .collect();
        let counters: Vec<String> = self
            .counters
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        let e = &self.errors;
        format!(
            "{{\"target\":\"{}\",\"proto\":\"{}\",\"connections\":{},\"rate\":{},\
             \"seconds\":{:.6},\"requests\":{},\"bytes\":{},\"requests_per_sec\":{:.3},\
             \"bytes_per_sec\":{:.3},\"latency_us\":{{\"min\":{},\"mean\":{:.3},\
             \"stdev\":{:.3},\"max\":{},{}}},\"errors\":{{\"connect\":{},\"read\":{},\
             \"timeout\":{},\"non_2xx\":{},\"mismatch\":{}}},\"connected\":{},\
             \"reconnects\":{},\"counters\":{{{}}}}}\n",
            self.target,
            self.proto,
            self.connections,
            self.rate.map_or("null".into(), |r| format!("{r}")),
            self.seconds,
            self.requests,
            self.bytes,
            self.requests_per_sec(),
            self.bytes_per_sec(),
            l.min,
            l.mean,
            l.stdev,
            l.max,
            pct.join(","),
            e.connect,
            e.read,
            e.timeout,
            e.status,
            e.mismatch,
            self.connected,
            self.reconnects,
            counters.join(",")
        )
    }
}

fn fmt_us(v: f64) -> String {
    if v < 1000.0 {
        format!("{v:.2}us")
    } else if v < 1e6 {
        format!("{:.2}ms", v / 1e3)
    } else {
        format!("{:.2}s", v / 1e6)
    }
}

fn fmt_bytes(v: f64) -> String {
    const K: f64 = 1024.0;
    if v < K {
        format!("{v:.0}B")
    } else if v < K * K {
        format!("{:.2}KB", v / K)
    } else if v < K * K * K {
        format!("{:.2}MB", v / K / K)
    } else {
        format!("{:.2}GB", v / K / K / K)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use c10m_stack::smoltcp::wire::{IpAddress, Ipv4Address};
    use c10m_stack::{EngineConfig, MemLink};

    fn http(feed: &[&[u8]]) -> Vec<Result<(usize, Outcome), String>> {
        let mut p = HttpParser::new();
        let mut out = Vec::new();
        for chunk in feed {
            let mut d: &[u8] = chunk;
            loop {
                match p.feed(d) {
                    Feed::More => break,
                    Feed::Done(n, o) => {
                        out.push(Ok((n, o)));
                        p.reset();
                        d = &d[n..];
                        if d.is_empty() {
                            break;
                        }
                    }
                    Feed::Bad(e) => {
                        out.push(Err(e.to_string()));
                        break;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn http_content_length_split_anywhere() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n";
        for cut in 1..r.len() {
            let got = http(&[&r[..cut], &r[cut..]]);
            assert_eq!(got.len(), 1, "cut at {cut}: {got:?}");
            let (_, o) = got[0].clone().unwrap();
            assert!(o.ok && o.keep_alive);
        }
    }

    #[test]
    fn http_chunked_close_and_status() {
        let r = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n";
        for cut in 1..r.len() {
            let got = http(&[&r[..cut], &r[cut..]]);
            assert_eq!(got.len(), 1, "cut at {cut}: {got:?}");
            let (_, o) = got[0].clone().unwrap();
            assert!(!o.ok && !o.keep_alive);
        }
        // Two responses back to back in one read; HTTP/1.0 without keep-alive closes.
        let two = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx";
        let got = http(&[two]);
        assert_eq!(got.len(), 2);
        assert!(got[0].as_ref().unwrap().1.keep_alive);
        assert!(!got[1].as_ref().unwrap().1.keep_alive);
        assert!(http(&[b"garbage\r\n\r\n"])[0].is_err());
    }

    #[test]
    fn resp_replies() {
        let cases: &[(&[u8], bool)] = &[
            (b"+OK\r\n", true),
            (b"-ERR wrong\r\n", false),
            (b":42\r\n", true),
            (b"$-1\r\n", true),
            (b"$5\r\nhello\r\n", true),
            (b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n", true),
            (b"*0\r\n", true),
        ];
        for (r, ok) in cases {
            for cut in 0..r.len() {
                let mut p = RespParser::new();
                let first = p.feed(&r[..cut]);
                let o = match first {
                    Feed::Done(n, o) => {
                        assert_eq!(n, cut);
                        o
                    }
                    Feed::More => match p.feed(&r[cut..]) {
                        Feed::Done(n, o) => {
                            assert_eq!(n, r.len() - cut);
                            o
                        }
                        _ => panic!("{:?} cut {cut}: not complete", String::from_utf8_lossy(r)),
                    },
                    Feed::Bad(e) => panic!("{e}"),
                };
                assert_eq!(o.ok, *ok);
            }
        }
    }

    fn ecfg(last: u8) -> EngineConfig {
        EngineConfig {
            mac: [0x02, 0, 0, 0, 0, last],
            ipv4: Some((Ipv4Address::new(198, 18, 0, last), 24)),
            tcp_rx_buf: 16 * 1024,
            tcp_tx_buf: 16 * 1024,
            seed: last as u64,
            ..Default::default()
        }
    }

    /// Run a loadgen against `server` over an in-memory link on a manual clock.
    fn load<S: App>(server: S, port: u16, cfg: Config) -> (Report, Engine<MemLink, S>) {
        let (la, lb) = MemLink::pair();
        let t = Arc::new(AtomicU64::new(0));
        let clock = Clock::Manual(t.clone());
        let mut s = Engine::new(lb, ecfg(2), server, Instant::from_micros(0));
        s.listen(port, 128).unwrap();
        let mut c = Engine::new(
            la,
            ecfg(4),
            Loadgen::new(cfg, clock),
            Instant::from_micros(0),
        );
        let mut d = Driver::start(&mut c, 0);
        let step = 20;
        while !d.finished(&c, t.load(Ordering::Relaxed)) {
            let now = t.load(Ordering::Relaxed);
            d.step(&mut c, now);
            s.poll(Instant::from_micros(now as i64));
            t.fetch_add(step, Ordering::Relaxed);
        }
        let tt = t.clone();
        d.shutdown(&mut c, || {
            s.poll(Instant::from_micros(tt.load(Ordering::Relaxed) as i64));
            tt.fetch_add(step, Ordering::Relaxed)
        });
        // Let the server take the last ACKs of the close.
        for _ in 0..100 {
            let now = t.fetch_add(step, Ordering::Relaxed);
            c.poll(Instant::from_micros(now as i64));
            s.poll(Instant::from_micros(now as i64));
        }
        let r = Report::new(c.app(), c.counters());
        (r, s)
    }

    fn config(proto: Proto, port: u16) -> Config {
        Config {
            target: IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), port),
            connections: 4,
            proto,
            rate: None,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
            connect_rate: None,
            timeout: Duration::from_secs(2),
        }
    }

    fn no_errors(r: &Report) {
        let e = &r.errors;
        assert_eq!(
            (e.connect, e.read, e.timeout, e.status, e.mismatch),
            (0, 0, 0, 0, 0),
            "{}",
            r.text()
        );
    }

    #[test]
    fn closed_loop_echo_over_memlink() {
        let (r, s) = load(
            crate::echo::Echo::default(),
            7,
            config(Proto::Echo { size: 300 }, 7),
        );
        assert!(r.requests > 100, "{}", r.text());
        no_errors(&r);
        assert!(r.latency_us.max > 0);
        assert!((r.seconds - 0.3).abs() < 0.01);
        assert_eq!(r.connected, 4);
        // The orderly close reached the server.
        assert_eq!(s.app().conns_closed, 4);
        assert!(r.json().contains("\"mismatch\":0"));
    }

    #[test]
    fn open_loop_rate_and_scheduled_latency() {
        let mut cfg = config(Proto::Echo { size: 64 }, 7);
        cfg.rate = Some(2000.0);
        cfg.duration = Duration::from_millis(500);
        let (r, _) = load(crate::echo::Echo::default(), 7, cfg);
        no_errors(&r);
        let rps = r.requests_per_sec();
        assert!((rps - 2000.0).abs() < 60.0, "{}", r.text());
    }

    #[test]
    fn http_get_against_the_http_app() {
        let app = crate::http::Http::new("hello\n", None).unwrap();
        let cfg = config(
            Proto::Http {
                request: http_request("/", "198.18.0.2", &[]),
            },
            80,
        );
        let (r, _) = load(app, 80, cfg);
        assert!(r.requests > 50, "{}", r.text());
        no_errors(&r);
        // 404s are counted, not hidden.
        let app = crate::http::Http::new("hello\n", None).unwrap();
        let cfg = config(
            Proto::Http {
                request: http_request("/nope", "198.18.0.2", &[]),
            },
            80,
        );
        let (r, _) = load(app, 80, cfg);
        assert!(
            r.requests > 50 && r.errors.status >= r.requests,
            "{}",
            r.text()
        );
        // Connection: close: every request on a new connection.
        let app = crate::http::Http::new("hello\n", None).unwrap();
        let cfg = config(
            Proto::Http {
                request: http_request("/", "198.18.0.2", &["Connection: close".into()]),
            },
            80,
        );
        let (r, _) = load(app, 80, cfg);
        assert!(r.requests > 20 && r.reconnects > 20, "{}", r.text());
        no_errors(&r);
    }

    #[test]
    fn resp_set_get_against_the_kv_app() {
        for proto in [
            Proto::RespSet {
                key: "k".into(),
                keyspace: 100,
                value: vec![b'v'; 100],
            },
            Proto::RespGet {
                key: "k".into(),
                keyspace: 1,
            },
        ] {
            let (r, _) = load(crate::kv::Kv::default(), 6379, config(proto, 6379));
            assert!(r.requests > 50, "{}", r.text());
            no_errors(&r);
        }
    }

    /// Echo that notes how many connections it had accepted when the first bytes came.
    #[derive(Default)]
    struct AcceptLog {
        accepted: u64,
        accepted_at_first_data: Option<u64>,
    }

    impl App for AcceptLog {
        type ConnState = ();
        type Done = ();
        fn on_accept(&mut self, _c: &mut Conn<'_, Self>) -> bool {
            self.accepted += 1;
            true
        }
        fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
            self.accepted_at_first_data.get_or_insert(self.accepted);
            c.send(data)
        }
    }

    #[test]
    fn requests_start_when_every_connection_is_open() {
        // As wrk does: a server that accepts one connection per event-loop iteration
        // (nginx's default) and is busy with the first connections' requests must not
        // leave the later connections in its accept queue (past the timeout, then
        // reopened to the back of the queue: starved for the whole run).
        let mut cfg = config(Proto::Echo { size: 64 }, 7);
        cfg.connections = 16;
        let (r, s) = load(AcceptLog::default(), 7, cfg.clone());
        no_errors(&r);
        assert!(r.requests > 100, "{}", r.text());
        assert_eq!(s.app().accepted_at_first_data, Some(16));
        // Open loop: the same, and the schedule starts then.
        cfg.rate = Some(2000.0);
        let (r, s) = load(AcceptLog::default(), 7, cfg);
        no_errors(&r);
        assert_eq!(s.app().accepted_at_first_data, Some(16));
        assert!(
            (r.requests_per_sec() - 2000.0).abs() < 100.0,
            "{}",
            r.text()
        );
    }

    #[test]
    fn refused_connections_are_connect_errors() {
        // Nothing listens on 9: RST to every SYN.
        let (r, _) = load(
            crate::echo::Echo::default(),
            7,
            config(Proto::Echo { size: 8 }, 9),
        );
        assert_eq!(r.requests, 0);
        assert!(r.errors.connect >= 4, "{}", r.text());
    }
}

//! kv without a network (commands through `pump`, fed in any segmentation) and through two
//! engines over an in-memory link (backpressure, large values, close after an error).

use super::*;
use c10m_stack::smoltcp::time::Instant;
use c10m_stack::smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
use c10m_stack::{Engine, EngineConfig, MemLink};

fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn cmds(lines: &[&str]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| cmd(&l.split(' ').map(str::as_bytes).collect::<Vec<_>>()))
        .collect()
}

/// Feed `input` in pieces of `step` bytes; returns the replies and the state.
fn feed(kv: &mut Kv, input: &[u8], step: usize, now: i64) -> (Vec<u8>, KvConn) {
    let mut st = KvConn::default();
    let mut pending: Vec<u8> = Vec::new(); // bytes "left in the socket"
    for chunk in input.chunks(step.max(1)) {
        pending.extend_from_slice(chunk);
        let used = kv.pump(&mut st, &pending, now);
        pending.drain(..used);
        // Pretend the peer reads everything.
        st.out_off = st.out.len();
    }
    while !pending.is_empty() || st.stalled {
        let used = kv.pump(&mut st, &pending, now);
        pending.drain(..used);
        st.out_off = st.out.len();
    }
    (st.out.clone(), st)
}

fn run_all(input: &[u8], step: usize) -> Vec<u8> {
    let mut kv = Kv::default();
    feed(&mut kv, input, step, 1_000_000).0
}

#[test]
fn commands_and_errors_like_redis() {
    let input = cmds(&[
        "PING",
        "ping hi",
        "set k v",
        "get k",
        "get nope",
        "SET n 9223372036854775806",
        "incr n",
        "incr n",
        "incr k",
        "decrby n -9223372036854775808",
        "mset a 1 b 2",
        "mget a b zz",
        "del a zz b",
        "exists k k n",
        "get",
        "mset a",
        "foo bar baz",
        "set k v nx",
        "set k w xx get",
        "set k v ex 0",
        "set k v ex x",
        "set k v bogus",
        "dbsize",
        "expire k 10 nx xx",
        "expire k 100",
        "ttl k",
        "pttl k",
        "ttl missing",
        "expire k -1",
        "exists k",
        "config get save",
        "flushall",
        "dbsize",
    ]);
    let want: &[u8] = b"+PONG\r\n$2\r\nhi\r\n+OK\r\n$1\r\nv\r\n$-1\r\n+OK\r\n\
        :9223372036854775807\r\n-ERR increment or decrement would overflow\r\n\
        -ERR value is not an integer or out of range\r\n-ERR decrement would overflow\r\n\
        +OK\r\n*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n:2\r\n:3\r\n\
        -ERR wrong number of arguments for 'get' command\r\n\
        -ERR wrong number of arguments for 'mset' command\r\n\
        -ERR unknown command 'foo', with args beginning with: 'bar' 'baz' \r\n\
        $-1\r\n$1\r\nv\r\n-ERR invalid expire time in 'set' command\r\n\
        -ERR value is not an integer or out of range\r\n-ERR syntax error\r\n:2\r\n\
        -ERR NX and XX, GT or LT options at the same time are not compatible\r\n\
        :1\r\n:100\r\n:100000\r\n:-2\r\n:1\r\n:0\r\n*2\r\n$4\r\nsave\r\n$0\r\n\r\n\
        +OK\r\n:0\r\n";
    for step in [usize::MAX, 1, 2, 3, 7, 64] {
        let got = run_all(&input, step);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "segments of {step} bytes"
        );
    }
}

#[test]
fn inline_and_protocol_errors_close() {
    assert_eq!(
        run_all(b"PING\r\nset a \"x y\"\r\n\r\nget a\n", usize::MAX),
        b"+PONG\r\n+OK\r\n$3\r\nx y\r\n"
    );
    let mut kv = Kv::default();
    let (out, st) = feed(
        &mut kv,
        b"*1\r\n$4\r\nPING\r\n*abc\r\n*1\r\n$4\r\nPING\r\n",
        5,
        0,
    );
    assert_eq!(
        out,
        b"+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n"
    );
    assert!(st.closing);
    assert_eq!(kv.stats.protocol_errors, 1);
    let (out, st) = feed(&mut kv, b"*1\r\n$999999999\r\n", 100, 0);
    assert_eq!(out, b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(st.closing);
}

#[test]
fn expiry_lazy_and_swept() {
    let mut kv = Kv::default();
    let (out, _) = feed(
        &mut kv,
        &cmds(&["set a 1 px 100", "set b 2 ex 1", "set c 3"]),
        usize::MAX,
        0,
    );
    assert_eq!(out, b"+OK\r\n+OK\r\n+OK\r\n");
    let (out, _) = feed(
        &mut kv,
        &cmds(&["get a", "ttl b", "dbsize"]),
        usize::MAX,
        100,
    );
    assert_eq!(out, b"$-1\r\n:1\r\n:2\r\n");
    kv.store.sweep(5_000, SWEEP_MAX);
    assert_eq!((kv.store.len(), kv.store.expired), (1, 2));
}

#[test]
fn large_value_and_bounded_query() {
    let big = vec![b'x'; 3 << 20];
    let mut input = cmd(&[b"SET", b"big", &big]);
    input.extend_from_slice(&cmd(&[b"STRLEN", b"big"]));
    assert_eq!(run_all(&input, 65536), b"+OK\r\n:3145728\r\n");
    let mut kv = Kv::new(Limits {
        max_bulk: 1 << 20,
        max_args: 8,
        max_query: 1 << 20,
    });
    let (out, _) = feed(&mut kv, &input, 65536, 0);
    assert_eq!(out, b"-ERR Protocol error: invalid bulk length\r\n");
    let (out, _) = feed(&mut kv, b"*9\r\n", 1, 0);
    assert_eq!(out, b"-ERR Protocol error: invalid multibulk length\r\n");
    let huge = vec![b'y'; 600 << 10];
    let (out, st) = feed(
        &mut kv,
        &cmd(&[b"MSET", b"a", &huge, b"b", &huge]),
        65536,
        0,
    );
    assert_eq!(out, b"-ERR Protocol error: query buffer limit exceeded\r\n");
    assert!(st.closing && st.inbuf.is_empty());
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"*$\r\n0123456789-+abc \"'\\x";
    for _ in 0..2000 {
        let len = (rnd() % 64) as usize;
        let input: Vec<u8> = (0..len)
            .map(|_| alphabet[(rnd() % alphabet.len() as u64) as usize])
            .collect();
        let mut kv = Kv::default();
        let step = (rnd() % 8 + 1) as usize;
        feed(&mut kv, &input, step, 0);
    }
}

// ---------------------------------------------------------------- over two engines

/// Sends `req` on one connection, collects every reply byte until the server closes.
struct Client {
    req: Vec<u8>,
    sent: usize,
    got: Vec<u8>,
    half_close: bool,
    closed: bool,
}

impl Client {
    fn push(&mut self, c: &mut Conn<'_, Self>) {
        while self.sent < self.req.len() {
            let n = c.send(&self.req[self.sent..]);
            if n == 0 {
                return;
            }
            self.sent += n;
        }
        if self.half_close {
            self.half_close = false;
            c.close();
        }
    }
}

impl App for Client {
    type ConnState = ();
    type Done = ();
    fn on_connected(&mut self, c: &mut Conn<'_, Self>) {
        self.push(c);
    }
    fn on_writable(&mut self, c: &mut Conn<'_, Self>) {
        self.push(c);
    }
    fn on_data(&mut self, _c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        self.got.extend_from_slice(data);
        data.len()
    }
    fn on_closed(&mut self, _c: &mut Conn<'_, Self>, _r: CloseReason) {
        self.closed = true;
    }
}

fn cfg(last: u8) -> EngineConfig {
    EngineConfig {
        mac: [0x02, 0, 0, 0, 0, last],
        ipv4: Some((Ipv4Address::new(198, 18, 0, last), 24)),
        tcp_rx_buf: 16 * 1024,
        tcp_tx_buf: 16 * 1024,
        seed: last as u64,
        ..Default::default()
    }
}

/// One connection carrying `req` (then FIN); returns what came back before the close.
fn over_engines(req: Vec<u8>, kv: Kv) -> (Vec<u8>, Kv) {
    let (la, lb) = MemLink::pair();
    let client = Client {
        req,
        sent: 0,
        got: Vec::new(),
        half_close: true,
        closed: false,
    };
    let mut c = Engine::new(la, cfg(1), client, Instant::from_millis(0));
    let mut s = Engine::new(lb, cfg(2), kv, Instant::from_millis(0));
    s.listen(6379, 16).unwrap();
    let server = IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 6379);
    c.connect(server, Instant::from_millis(0)).unwrap();
    let mut t = 0i64;
    while t < 120_000 && !(c.app().closed && s.flow_count() == 0) {
        for _ in 0..8 {
            c.poll(Instant::from_millis(t));
            s.poll(Instant::from_millis(t));
        }
        t += 1;
    }
    assert!(c.app().closed, "connection not closed after {t} ms");
    assert_eq!(s.flow_count(), 0);
    let got = std::mem::take(&mut c.app_mut().got);
    let mut kv = Kv::default();
    std::mem::swap(&mut kv, s.app_mut());
    (got, kv)
}

#[test]
fn pipelined_large_values_through_backpressure() {
    // 1 MiB value, then 40 GETs of it pipelined (40 MiB of replies through a 16 KiB send
    // buffer: the output queue stops at OUT_HIGH and resumes as the client reads).
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let mut req = cmd(&[b"SET", b"big", &big]);
    for _ in 0..40 {
        req.extend_from_slice(&cmd(&[b"GET", b"big"]));
    }
    req.extend_from_slice(&cmd(&[b"DBSIZE"]));
    let mut want = b"+OK\r\n".to_vec();
    for _ in 0..40 {
        want.extend_from_slice(format!("${}\r\n", big.len()).as_bytes());
        want.extend_from_slice(&big);
        want.extend_from_slice(b"\r\n");
    }
    want.extend_from_slice(b":1\r\n");
    let (got, kv) = over_engines(req, Kv::default());
    assert_eq!(got.len(), want.len());
    assert!(got == want, "replies differ");
    assert_eq!(kv.stats.commands, 42);
    assert_eq!(kv.stats.conns_open, 0);
}

#[test]
fn protocol_error_replies_then_closes() {
    let mut req = cmds(&["SET a 1"]);
    req.extend_from_slice(b"*1\r\nxyz\r\n");
    req.extend_from_slice(&cmds(&["GET a"]));
    let (got, kv) = over_engines(req, Kv::default());
    assert_eq!(
        got,
        b"+OK\r\n-ERR Protocol error: expected '$', got 'x'\r\n"
    );
    assert_eq!(kv.stats.protocol_errors, 1);
}

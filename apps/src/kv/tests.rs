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
    let mut kv = Kv::new(Config {
        limits: Limits {
            max_bulk: 1 << 20,
            max_args: 8,
            max_query: 1 << 20,
        },
        ..Config::default()
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

/// Accounted memory through the commands, back to the same figure after every kind of
/// removal.
#[test]
fn used_memory_follows_commands() {
    let mut kv = Kv::default();
    let base = {
        feed(&mut kv, &cmds(&["set k v"]), usize::MAX, 0);
        kv.store.used()
    };
    assert_eq!(base, 2 + store::ENTRY_OVERHEAD);
    let steps: &[&[&str]] = &[
        &["set k vvvvvvvv", "set k v"],
        &["set t 1 px 100", "del t"],
        &[
            "set t 1 ex 100",
            "persist t",
            "expire t 5",
            "pexpire t 1",
            "get t",
        ],
        &["mset a 1 b 2", "unlink a b"],
        &["incr n", "incrby n 1000", "append n x", "expire n 0"],
        &["setnx s 1", "append s 2345", "set s 1 keepttl", "del s"],
    ];
    for (i, lines) in steps.iter().enumerate() {
        let now = 1000 * (i as i64 + 1);
        feed(&mut kv, &cmds(lines), usize::MAX, now);
        kv.store.sweep(now + 999, SWEEP_MAX);
        assert_eq!(kv.store.used(), base, "after {lines:?}");
    }
    let (out, _) = feed(&mut kv, &cmds(&["set x 1 ex 9", "flushall"]), usize::MAX, 0);
    assert_eq!(out, b"+OK\r\n+OK\r\n");
    assert_eq!(kv.store.used(), 0);
}

/// noeviction: over `maxmemory`, denyoom commands get redis's -OOM (after the arity
/// check, before option parsing, whatever the key); reads, DEL, EXPIRE and FLUSHALL run;
/// once memory is freed, writes succeed again.
#[test]
fn maxmemory_refuses_writes_until_memory_is_freed() {
    let mut kv = Kv::new(Config {
        maxmemory: 1000,
        ..Config::default()
    });
    let big = vec![b'x'; 900];
    let mut input = cmd(&[b"SET", b"big", &big]); // under the bound when it runs
    input.extend_from_slice(&cmds(&["set small 1", "get small"]));
    let (out, _) = feed(&mut kv, &input, usize::MAX, 0);
    // The SET that crossed the bound succeeded; the next one is refused.
    assert_eq!(
        out,
        b"+OK\r\n-OOM command not allowed when used memory > 'maxmemory'.\r\n$-1\r\n"
    );
    assert!(kv.store.used() > 1000);
    let refused = [
        "set small 1",
        "set big v xx",
        "set k v bogus",
        "setnx n 1",
        "mset a 1 b",
        "incr big",
        "decr n",
        "incrby n 1",
        "decrby n 1",
        "append big x",
    ];
    let (out, _) = feed(&mut kv, &cmds(&refused), usize::MAX, 0);
    assert_eq!(out, cmd::OOM.repeat(refused.len()));
    assert_eq!(kv.stats.oom_refused, 1 + refused.len() as u64);
    // Arity is checked first; reads and removals run.
    let (out, _) = feed(
        &mut kv,
        &cmds(&[
            "set a",
            "strlen big",
            "exists big",
            "expire big 100",
            "ttl big",
            "persist big",
            "dbsize",
            "ping",
        ]),
        usize::MAX,
        0,
    );
    assert_eq!(
        out,
        b"-ERR wrong number of arguments for 'set' command\r\n:900\r\n:1\r\n:1\r\n\
          :100\r\n:1\r\n:1\r\n+PONG\r\n"
    );
    let info = String::from_utf8(feed(&mut kv, &cmds(&["info"]), usize::MAX, 0).0).unwrap();
    let used = format!("used_memory:{}\r\n", kv.store.used());
    assert!(
        info.contains(&used) && info.contains("maxmemory:1000\r\n"),
        "{info}"
    );
    let (out, _) = feed(
        &mut kv,
        &cmds(&[
            "config get maxmemory",
            "del big",
            "set small 1",
            "get small",
        ]),
        usize::MAX,
        0,
    );
    assert_eq!(
        out,
        b"*2\r\n$9\r\nmaxmemory\r\n$4\r\n1000\r\n:1\r\n+OK\r\n$1\r\n1\r\n"
    );
    // Over again: the key's expiry (the sweep before each batch) frees it, then FLUSHALL.
    let mut input = cmd(&[b"SET", b"big", &big, b"PX", b"10"]);
    input.extend_from_slice(&cmds(&["set k v"]));
    let (out, _) = feed(&mut kv, &input, usize::MAX, 0);
    assert_eq!(out, [&b"+OK\r\n"[..], cmd::OOM].concat());
    kv.store.sweep(10, SWEEP_MAX);
    let (out, _) = feed(&mut kv, &cmd(&[b"SET", b"big", &big]), usize::MAX, 10);
    assert_eq!(out, b"+OK\r\n");
    let (out, _) = feed(
        &mut kv,
        &cmds(&["set k v", "flushall", "set k v"]),
        usize::MAX,
        10,
    );
    assert_eq!(out, [cmd::OOM, b"+OK\r\n+OK\r\n"].concat());
    // 0: no bound.
    let mut kv = Kv::new(Config {
        maxmemory: 0,
        ..Config::default()
    });
    let (out, _) = feed(&mut kv, &cmds(&["set a 1", "set b 2"]), usize::MAX, 0);
    assert_eq!(out, b"+OK\r\n+OK\r\n");
    let (out, _) = feed(&mut kv, &cmds(&["config get maxmemory"]), usize::MAX, 0);
    assert_eq!(out, b"*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n");
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

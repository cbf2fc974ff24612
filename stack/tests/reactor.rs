//! The reactor API over the in-memory link: typed per-connection state, app timers,
//! offloading to the processor pool (results back on the connection's loop, dropped
//! safely when it closed, bounded queues), the callback budget.

use c10m_stack::smoltcp::time::{Duration, Instant};
use c10m_stack::smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
use c10m_stack::testkit::run_pair as run;
use c10m_stack::{
    App, CloseReason, Conn, ConnId, Engine, EngineConfig, MemLink, OffloadError, Pool,
};
use sha2::{Digest, Sha256};

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

/// Server: hashes each received chunk on the pool (the state travels with the job, one
/// job in flight per connection) and answers the digest of everything when the peer
/// half-closes.
#[derive(Default)]
struct Hasher {
    dropped_states: usize,
    errors: Vec<OffloadError>,
    /// Makes every job this slow (to close a connection while its job runs).
    job_delay_ms: u64,
}

#[derive(Default)]
struct HState {
    hasher: Option<Sha256>,
    busy: bool,
    fin: bool,
    answered: bool,
}

impl App for Hasher {
    type ConnState = HState;
    type Done = Sha256;

    fn on_accept(&mut self, c: &mut Conn<'_, Self>) -> bool {
        c.state().hasher = Some(Sha256::new());
        true
    }
    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        if c.state().busy {
            return 0; // wait for on_done; the bytes stay buffered
        }
        let mut h = c.state().hasher.take().expect("hasher present when idle");
        let chunk = data.to_vec();
        let delay = std::time::Duration::from_millis(self.job_delay_ms);
        match c.offload(move || {
            std::thread::sleep(delay);
            h.update(&chunk);
            h
        }) {
            Ok(()) => {
                c.state().busy = true;
                data.len()
            }
            Err(e) => {
                self.errors.push(e);
                c.abort();
                0
            }
        }
    }
    fn on_done(&mut self, c: &mut Conn<'_, Self>, h: Sha256) {
        let st = c.state();
        st.busy = false;
        st.hasher = Some(h);
        self.maybe_answer(c);
    }
    fn on_peer_fin(&mut self, c: &mut Conn<'_, Self>) {
        c.state().fin = true;
        self.maybe_answer(c);
    }
    fn on_closed(&mut self, c: &mut Conn<'_, Self>, _r: CloseReason) {
        if c.state().busy {
            self.dropped_states += 1;
        }
    }
}

impl Hasher {
    fn maybe_answer(&mut self, c: &mut Conn<'_, Self>) {
        let st = c.state();
        if st.fin && !st.busy && !st.answered {
            st.answered = true;
            let d = st.hasher.take().unwrap().finalize();
            assert_eq!(c.send(&d), 32);
            c.close();
        }
    }
}

/// Client: uploads `body`, half-closes, collects the reply.
struct Uploader {
    body: Vec<u8>,
    sent: usize,
    reply: Vec<u8>,
    closed: Option<CloseReason>,
    abort_after: Option<usize>,
    conn: Option<ConnId>,
}

impl Uploader {
    fn new(body: Vec<u8>) -> Uploader {
        Uploader {
            body,
            sent: 0,
            reply: vec![],
            closed: None,
            abort_after: None,
            conn: None,
        }
    }
    fn push(&mut self, c: &mut Conn<'_, Self>) {
        while self.sent < self.body.len() {
            let n = c.send(&self.body[self.sent..]);
            if n == 0 {
                return;
            }
            self.sent += n;
            if self.abort_after.is_some_and(|a| self.sent >= a) {
                c.abort();
                return;
            }
        }
        c.close();
    }
}

impl App for Uploader {
    type ConnState = ();
    type Done = ();
    fn on_connected(&mut self, c: &mut Conn<'_, Self>) {
        self.conn = Some(c.id());
        self.push(c);
    }
    fn on_writable(&mut self, c: &mut Conn<'_, Self>) {
        self.push(c);
    }
    fn on_data(&mut self, _c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        self.reply.extend_from_slice(data);
        data.len()
    }
    fn on_closed(&mut self, _c: &mut Conn<'_, Self>, r: CloseReason) {
        self.closed = Some(r);
    }
}

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn upload(size: usize, pool: &Pool) -> (Vec<u8>, Engine<MemLink, Hasher>) {
    let (la, lb) = MemLink::pair();
    let mut s = Engine::new(lb, cfg(2), Hasher::default(), Instant::from_millis(0));
    s.attach_pool(pool, 64);
    s.listen(9, 8).unwrap();
    let mut c = Engine::new(
        la,
        cfg(1),
        Uploader::new(body(size)),
        Instant::from_millis(0),
    );
    c.connect(
        IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 9),
        Instant::from_millis(0),
    )
    .unwrap();
    let mut t = 0;
    run(&mut c, &mut s, &mut t, i64::MAX, |c, s| {
        c.app().closed.is_some() && s.flow_count() == 0
    });
    (c.app().reply.clone(), s)
}

#[test]
fn offloaded_hash_matches_for_several_sizes() {
    let pool = Pool::new(2, 64);
    for size in [0, 1, 65536, 1 << 20] {
        let (reply, s) = upload(size, &pool);
        let want = Sha256::digest(body(size));
        assert_eq!(reply, want.as_slice(), "size {size}");
        assert!(s.stats().offload_results > 0 || size == 0);
        assert_eq!(s.stats().offload_results_dropped, 0);
    }
}

#[test]
fn result_for_a_closed_connection_is_dropped() {
    let pool = Pool::new(1, 64);
    let (la, lb) = MemLink::pair();
    let hasher = Hasher {
        job_delay_ms: 300,
        ..Default::default()
    };
    let mut s = Engine::new(lb, cfg(2), hasher, Instant::from_millis(0));
    s.attach_pool(&pool, 64);
    s.listen(9, 8).unwrap();
    // The client resets after 20 000 bytes, while the server's first job still runs.
    let mut up = Uploader::new(body(100_000));
    up.abort_after = Some(20_000);
    let mut c = Engine::new(la, cfg(1), up, Instant::from_millis(0));
    c.connect(
        IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 9),
        Instant::from_millis(0),
    )
    .unwrap();
    let mut t = 0;
    run(&mut c, &mut s, &mut t, i64::MAX, |c, s| {
        c.app().closed.is_some() && s.flow_count() == 0
    });
    assert_eq!(c.app().closed, Some(CloseReason::Aborted));
    assert_eq!(s.flow_count(), 0, "the reset flow must leave the table");
    assert_eq!(s.stats().closed_reset, 1);
    assert_eq!(s.app().dropped_states, 1, "closed with its job in flight");
    run(&mut c, &mut s, &mut t, i64::MAX, |_, s| {
        s.stats().offload_results_dropped >= 1
    });
    assert_eq!(s.stats().offload_results_dropped, 1);
    assert_eq!(s.stats().offload_results, 0);
}

/// An app that offloads without waiting for results hits the engine's in-flight bound
/// and sees the error (no unbounded queueing).
struct Flooder {
    errors: Vec<OffloadError>,
    ok: usize,
}

impl App for Flooder {
    type ConnState = ();
    type Done = u64;
    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        for _ in 0..10 {
            match c.offload(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                1
            }) {
                Ok(()) => self.ok += 1,
                Err(e) => self.errors.push(e),
            }
        }
        data.len()
    }
}

#[test]
fn full_offload_queue_is_an_error_the_app_sees() {
    let pool = Pool::new(1, 2);
    let (la, lb) = MemLink::pair();
    let mut s = Engine::new(
        lb,
        cfg(2),
        Flooder {
            errors: vec![],
            ok: 0,
        },
        Instant::from_millis(0),
    );
    s.attach_pool(&pool, 4);
    s.listen(9, 8).unwrap();
    let mut c = Engine::new(la, cfg(1), Uploader::new(body(10)), Instant::from_millis(0));
    c.connect(
        IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 9),
        Instant::from_millis(0),
    )
    .unwrap();
    let mut t = 0;
    run(&mut c, &mut s, &mut t, i64::MAX, |_, s| {
        !s.app().errors.is_empty()
    });
    let a = s.app();
    assert!(a.ok <= 4, "at most `in_flight` jobs accepted, got {}", a.ok);
    assert!(a
        .errors
        .iter()
        .all(|e| matches!(e, OffloadError::TooManyInFlight | OffloadError::QueueFull)));
}

/// App timers fire once, at their deadline, on the connection's own loop; per-connection
/// state is typed and handed back at close.
#[derive(Default)]
struct Ticker {
    fired_at: Vec<i64>,
    final_ticks: Option<u32>,
}

impl App for Ticker {
    type ConnState = u32;
    type Done = ();
    fn on_accept(&mut self, c: &mut Conn<'_, Self>) -> bool {
        c.set_timer(Duration::from_millis(100));
        true
    }
    fn on_data(&mut self, _c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        data.len()
    }
    fn on_timer(&mut self, c: &mut Conn<'_, Self>) {
        self.fired_at.push(c.now().total_millis());
        *c.state() += 1;
        if *c.state() < 3 {
            c.set_timer(Duration::from_millis(100));
        } else {
            c.close();
        }
    }
    fn on_peer_fin(&mut self, _c: &mut Conn<'_, Self>) {}
    fn on_closed(&mut self, c: &mut Conn<'_, Self>, _r: CloseReason) {
        self.final_ticks = Some(*c.state());
    }
}

#[test]
fn app_timer_fires_at_its_deadline_and_state_is_typed() {
    let (la, lb) = MemLink::pair();
    let mut s = Engine::new(lb, cfg(2), Ticker::default(), Instant::from_millis(0));
    s.listen(9, 8).unwrap();
    let mut up = Uploader::new(vec![]);
    up.abort_after = None;
    let mut c = Engine::new(la, cfg(1), up, Instant::from_millis(0));
    c.connect(
        IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 9),
        Instant::from_millis(0),
    )
    .unwrap();
    let mut t = 0;
    run(&mut c, &mut s, &mut t, i64::MAX, |_, s| {
        s.app().final_ticks.is_some()
    });
    let f = &s.app().fired_at;
    assert_eq!(f.len(), 3);
    assert!(f[1] - f[0] == 100 && f[2] - f[1] == 100, "fired at {f:?}");
    assert_eq!(s.app().final_ticks, Some(3));
}

/// A callback over the budget is counted.
struct Sleepy;
impl App for Sleepy {
    type ConnState = ();
    type Done = ();
    fn name(&self) -> &'static str {
        "sleepy"
    }
    fn on_data(&mut self, _c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        std::thread::sleep(std::time::Duration::from_millis(3));
        data.len()
    }
}

/// Upload 64 KiB to a `Sleepy` server (many slow polls); `time` is called with the server and each of its
/// polls' wall time. Returns the server's (slow_polls, slow_callbacks).
fn sleepy_upload(
    setup: impl FnOnce(&mut Engine<MemLink, Sleepy>),
    mut time: impl FnMut(&mut Engine<MemLink, Sleepy>, std::time::Duration),
) -> (u64, u64) {
    let (la, lb) = MemLink::pair();
    let mut s = Engine::new(lb, cfg(2), Sleepy, Instant::from_millis(0));
    s.set_callback_budget(Some(std::time::Duration::from_millis(1)));
    setup(&mut s);
    s.listen(9, 8).unwrap();
    let mut c = Engine::new(
        la,
        cfg(1),
        Uploader::new(body(64 * 1024)),
        Instant::from_millis(0),
    );
    c.connect(
        IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 9),
        Instant::from_millis(0),
    )
    .unwrap();
    let mut t = 0;
    while t < 60_000 && c.app().closed.is_none() {
        for _ in 0..8 {
            c.poll(Instant::from_millis(t));
            let t0 = std::time::Instant::now();
            s.poll(Instant::from_millis(t));
            time(&mut s, t0.elapsed());
        }
        t += 1;
    }
    assert!(c.app().closed.is_some(), "upload did not finish");
    let st = s.stats();
    (st.slow_polls, st.slow_callbacks)
}

#[test]
fn slow_callbacks_are_counted_when_every_callback_is_timed() {
    let (polls, cbs) = sleepy_upload(|s| s.time_every_callback(true), |_, _| {});
    assert_eq!(polls, 0, "no poll time was reported");
    assert!(cbs >= 1, "slow_callbacks={cbs}");
}

#[test]
fn a_slow_poll_turns_callback_timing_on() {
    // Without poll times (and without `time_every_callback`) callbacks are not timed.
    let (polls, cbs) = sleepy_upload(|_| {}, |_, _| {});
    assert_eq!((polls, cbs), (0, 0));
    // With them, the first slow poll is counted, and the callback of a later one is named.
    let (polls, cbs) = sleepy_upload(|_| {}, |s, took| s.report_poll_time(took));
    assert!(polls >= 2, "slow_polls={polls}");
    assert!(
        cbs >= 1 && cbs < polls,
        "slow_callbacks={cbs} slow_polls={polls}"
    );
}

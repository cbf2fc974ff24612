//! Two engines over an in-memory link: a client engine (active open) and a server engine
//! (listener, echo) move data both ways. No root, no kernel.

use c10m_stack::smoltcp::time::Instant;
use c10m_stack::smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
use c10m_stack::testkit::{payload, run_pair as run};
use c10m_stack::{App, CloseReason, Conn, ConnId, Datagram, Engine, EngineConfig, MemLink};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Echoes every byte back, honouring backpressure.
#[derive(Default)]
struct Echo {
    closed: Vec<CloseReason>,
}

impl App for Echo {
    type ConnState = ();
    type Done = ();

    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        c.send(data)
    }
    fn on_closed(&mut self, _c: &mut Conn<'_, Self>, r: CloseReason) {
        self.closed.push(r);
    }
    fn on_datagram(&mut self, d: &mut Datagram<'_>, data: &[u8]) {
        d.reply(data);
    }
}

/// Sends `payload` on every connection it opens, hashes what comes back, closes when all
/// of it returned.
struct Client {
    payload: Vec<u8>,
    conns: HashMap<ConnId, (usize, usize, Sha256)>, // sent, received, hash of received
    done: Vec<(usize, [u8; 32])>,
    closed: Vec<CloseReason>,
    connected: usize,
}

impl Client {
    fn new(payload: Vec<u8>) -> Client {
        Client {
            payload,
            conns: HashMap::new(),
            done: vec![],
            closed: vec![],
            connected: 0,
        }
    }

    fn push(&mut self, c: &mut Conn<'_, Self>) {
        let st = self.conns.get_mut(&c.id()).unwrap();
        while st.0 < self.payload.len() {
            let n = c.send(&self.payload[st.0..]);
            if n == 0 {
                break;
            }
            st.0 += n;
        }
    }
}

impl App for Client {
    type ConnState = ();
    type Done = ();

    fn on_connected(&mut self, c: &mut Conn<'_, Self>) {
        self.connected += 1;
        self.conns.insert(c.id(), (0, 0, Sha256::new()));
        self.push(c);
    }
    fn on_writable(&mut self, c: &mut Conn<'_, Self>) {
        self.push(c);
    }
    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        let total = self.payload.len();
        let st = self.conns.get_mut(&c.id()).unwrap();
        st.1 += data.len();
        st.2.update(data);
        if st.1 == total {
            let (_, got, h) = self.conns.remove(&c.id()).unwrap();
            self.done.push((got, h.finalize().into()));
            c.close();
        }
        data.len()
    }
    fn on_closed(&mut self, _c: &mut Conn<'_, Self>, r: CloseReason) {
        self.closed.push(r);
    }
}

fn cfg(last: u8, mac: u8) -> EngineConfig {
    EngineConfig {
        mac: [0x02, 0, 0, 0, 0, mac],
        ipv4: Some((Ipv4Address::new(198, 18, 0, last), 24)),
        tcp_rx_buf: 16 * 1024,
        tcp_tx_buf: 16 * 1024,
        seed: mac as u64,
        ..Default::default()
    }
}

#[test]
fn bulk_echo_both_ways_sha256_equal() {
    let (la, lb) = MemLink::pair();
    let data = payload(1 << 20, 7);
    let want: [u8; 32] = Sha256::digest(&data).into();
    let mut t = 0;
    let client = Client::new(data);
    let mut c = Engine::new(la, cfg(1, 1), client, Instant::from_millis(0));
    let mut s = Engine::new(lb, cfg(2, 2), Echo::default(), Instant::from_millis(0));
    s.listen(7, 128).unwrap();
    let server = IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 7);
    c.connect(server, Instant::from_millis(0)).unwrap();
    run(&mut c, &mut s, &mut t, 60_000, |c, _| {
        !c.app().done.is_empty()
    });
    let done = &c.app().done;
    assert_eq!(
        done.len(),
        1,
        "echo did not complete within 60 s of simulated time"
    );
    assert_eq!(done[0].0, 1 << 20);
    assert_eq!(done[0].1, want, "echoed bytes differ");
    // Orderly close on both sides; the server's flow leaves the table, the client's
    // lingers in TIME-WAIT (RFC 9293) until its timer fires.
    run(&mut c, &mut s, &mut t, 30_000, |c, s| {
        s.flow_count() == 0 && c.flow_count() == 0
    });
    assert_eq!(s.app().closed, vec![CloseReason::Normal]);
    assert_eq!(c.app().closed, vec![CloseReason::Normal]);
    assert_eq!(s.flow_count(), 0);
    assert_eq!(
        c.flow_count(),
        0,
        "TIME-WAIT flow must expire through the timer wheel"
    );
}

#[test]
fn many_concurrent_connections_and_backlog() {
    let (la, lb) = MemLink::pair();
    let mut t = 0;
    let client = Client::new(payload(3000, 9));
    let mut c = Engine::new(la, cfg(1, 1), client, Instant::from_millis(0));
    let mut s = Engine::new(lb, cfg(2, 2), Echo::default(), Instant::from_millis(0));
    s.listen(7, 64).unwrap();
    let server = IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 7);
    // Let ARP resolve first so all SYNs go out in one burst.
    run(&mut c, &mut s, &mut t, 5, |_, _| false);
    for _ in 0..200 {
        c.connect(server, Instant::from_millis(t)).unwrap();
    }
    run(&mut c, &mut s, &mut t, 120_000, |c, _| {
        c.app().done.len() == 200
    });
    let want: [u8; 32] = Sha256::digest(payload(3000, 9)).into();
    assert_eq!(c.app().done.len(), 200);
    assert!(c.app().done.iter().all(|d| d.1 == want));
    // 200 SYNs in one burst against a backlog of 64: the rest were dropped, counted and
    // recovered by the client's SYN retransmission.
    assert!(s.stats().drop_syn_backlog_full > 0);
    assert_eq!(s.stats().accepted, 200);
}

#[test]
fn syn_to_closed_port_gets_rst_and_no_state() {
    let (la, lb) = MemLink::pair();
    let mut t = 0;
    let client = Client::new(vec![1]);
    let mut c = Engine::new(la, cfg(1, 1), client, Instant::from_millis(0));
    let mut s = Engine::new(lb, cfg(2, 2), Echo::default(), Instant::from_millis(0));
    c.connect(
        IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 9),
        Instant::from_millis(0),
    )
    .unwrap();
    run(&mut c, &mut s, &mut t, 2_000, |c, _| {
        !c.app().closed.is_empty()
    });
    assert_eq!(c.app().closed, vec![CloseReason::Reset]);
    assert_eq!(s.flow_count(), 0);
    assert!(s.stats().tcp_no_flow >= 1);
    assert_eq!(c.flow_count(), 0);
}

#[test]
fn garbage_frames_are_counted_not_fatal() {
    let (la, lb) = MemLink::pair();
    let mut s = Engine::new(lb, cfg(2, 2), Echo::default(), Instant::from_millis(0));
    s.listen(7, 16).unwrap();
    let mut x = 1u64;
    for len in 0..600usize {
        let mut f: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if len > 14 {
            f[12] = [0x08, 0x86, 0x08][len % 3];
            f[13] = [0x00, 0xdd, 0x06][len % 3];
        }
        la.send_raw(f);
    }
    // `la` plays a raw peer: its frames go to `s`.
    drop(la);
    for i in 0..20 {
        s.poll(Instant::from_millis(i));
    }
    let st = s.stats();
    assert_eq!(st.rx_frames, 600);
    assert!(st.drop_malformed_ethernet > 0 && st.drop_malformed_ipv4 > 0);
    assert_eq!(s.flow_count(), 0);
}

/// Consumes at most 777 bytes per call: partial consumption across the receive ring's
/// wrap point must neither panic nor lose or reorder bytes.
struct Dribble;

impl App for Dribble {
    type ConnState = ();
    type Done = ();

    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        c.send(&data[..data.len().min(777)])
    }
}

#[test]
fn partial_consumption_across_ring_wrap() {
    let (la, lb) = MemLink::pair();
    let data = payload(300_000, 3);
    let want: [u8; 32] = Sha256::digest(&data).into();
    let mut t = 0;
    let client = Client::new(data);
    let mut c = Engine::new(la, cfg(1, 1), client, Instant::from_millis(0));
    let mut s = Engine::new(lb, cfg(2, 2), Dribble, Instant::from_millis(0));
    s.listen(7, 8).unwrap();
    c.connect(
        IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 7),
        Instant::from_millis(0),
    )
    .unwrap();
    run(&mut c, &mut s, &mut t, 60_000, |c, _| {
        !c.app().done.is_empty()
    });
    assert_eq!(c.app().done.len(), 1, "echo did not complete");
    assert_eq!(c.app().done[0].1, want);
}

/// smoltcp stays silent for 1 s after an ARP request; the engine must run flows that were
/// waiting for the neighbour as soon as the reply arrives, not when that silence ends.
#[test]
fn connect_does_not_wait_out_arp_silence() {
    let (la, lb) = MemLink::pair();
    let mut t = 0;
    let client = Client::new(payload(100, 1));
    let mut c = Engine::new(la, cfg(1, 1), client, Instant::from_millis(0));
    let mut s = Engine::new(lb, cfg(2, 2), Echo::default(), Instant::from_millis(0));
    s.listen(7, 64).unwrap();
    let server = IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 7);
    for _ in 0..20 {
        c.connect(server, Instant::from_millis(0)).unwrap();
    }
    run(&mut c, &mut s, &mut t, 2_000, |c, _| {
        c.app().done.len() == 20
    });
    assert_eq!(c.app().done.len(), 20);
    assert!(
        t < 100,
        "20 connects + echo took {t} ms of simulated time (ARP silence not cut short)"
    );
    assert!(c.stats().neighbor_wakeups > 0);
}

/// Echo client that sends one small message every 100 ms and records round-trip times.
struct Pinger {
    conn: Option<ConnId>,
    sent_at: Option<i64>,
    now: i64,
    rtts: Vec<i64>,
}

impl App for Pinger {
    type ConnState = ();
    type Done = ();

    fn on_connected(&mut self, c: &mut Conn<'_, Self>) {
        self.conn = Some(c.id());
    }
    fn on_data(&mut self, _c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        if let Some(s) = self.sent_at.take() {
            self.rtts.push(self.now - s);
        }
        data.len()
    }
}

/// Peers behind a gateway: smoltcp lets the gateway's entry lapse 60 s after learning it,
/// even under traffic. The engine refreshes it, so over 200 s no resolution is triggered by
/// a miss: every ARP request on the wire is one of the engine's own refreshes.
#[test]
fn gateway_entry_is_refreshed_under_traffic() {
    let (la, lb) = MemLink::pair();
    // The server (198.18.0.2/24) reaches the client (198.19.0.1) through its gateway
    // 198.18.0.254, an address the client engine also owns: so the client is off-link for
    // the server, and only the gateway's neighbour entry serves the flow.
    let mut ccfg = cfg(1, 1);
    ccfg.ipv4 = Some((Ipv4Address::new(198, 19, 0, 1), 24));
    let mut scfg = cfg(2, 2);
    scfg.gateway4 = Some(Ipv4Address::new(198, 18, 0, 254));
    let pinger = Pinger {
        conn: None,
        sent_at: None,
        now: 0,
        rtts: vec![],
    };
    let mut c = Engine::new(la, ccfg, pinger, Instant::from_millis(0));
    let mut s = Engine::new(lb, scfg, Echo::default(), Instant::from_millis(0));
    assert!(c.add_address(IpAddress::v4(198, 18, 0, 254), 24));
    s.listen(7, 8).unwrap();
    c.connect(
        IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 7),
        Instant::from_millis(0),
    )
    .unwrap();
    let mut t = 0i64;
    while t < 200_000 {
        c.app_mut().now = t;
        if t % 100 == 0 && c.app().sent_at.is_none() {
            if let Some(id) = c.app().conn {
                assert_eq!(c.send(id, b"ping", Instant::from_millis(t)), 4);
                c.app_mut().sent_at = Some(t);
            }
        }
        c.poll(Instant::from_millis(t));
        s.poll(Instant::from_millis(t));
        c.poll(Instant::from_millis(t));
        t += 1;
    }
    let rtts = &c.app().rtts;
    assert!(rtts.len() > 1900, "only {} round trips", rtts.len());
    assert!(
        rtts.iter().all(|r| *r <= 2),
        "a round trip stalled: max {:?} ms",
        rtts.iter().max()
    );
    let refreshes = s.stats().gateway_refreshes;
    assert!(refreshes >= 12, "{refreshes} refreshes in 200 s");

    // One request to learn the gateway the first time; after that only refreshes.
    assert!(
        s.link().neighbor_requests_sent() <= refreshes + 1,
        "server sent {} ARP requests but only {refreshes} refreshes: the gateway entry lapsed",
        s.link().neighbor_requests_sent()
    );
}

/// A full transmit side defers egress: smoltcp keeps the data and sends it next
/// iteration, nothing is built and dropped, and the transfer completes intact.
#[test]
fn full_link_defers_instead_of_dropping() {
    let (la, mut lb) = MemLink::pair();
    lb.set_tx_capacity(3);
    let data = payload(200_000, 11);
    let want: [u8; 32] = Sha256::digest(&data).into();
    let mut t = 0;
    let client = Client::new(data);
    let mut c = Engine::new(la, cfg(1, 1), client, Instant::from_millis(0));
    let mut s = Engine::new(lb, cfg(2, 2), Echo::default(), Instant::from_millis(0));
    s.listen(7, 8).unwrap();
    c.connect(
        IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 7),
        Instant::from_millis(0),
    )
    .unwrap();
    run(&mut c, &mut s, &mut t, 60_000, |c, _| {
        !c.app().done.is_empty()
    });
    assert_eq!(c.app().done.len(), 1);
    assert_eq!(c.app().done[0].1, want);
    let counters: HashMap<_, _> = s.counters().into_iter().collect();
    assert!(counters["tx_deferred"] > 0, "the 3-frame link never filled");
    assert_eq!(counters["tx_no_buffer"], 0, "frames were built and dropped");
}

/// The ephemeral allocator never hands out a 4-tuple still in the table, and running out
/// is an error, not a hang; a port comes back when its flow leaves.
#[test]
fn ephemeral_ports_exhaust_with_an_error() {
    let (la, _lb) = MemLink::pair();
    let mut c = cfg(1, 1);
    c.tcp_rx_buf = 512;
    c.tcp_tx_buf = 512;
    let client = Client::new(vec![]);
    let mut e = Engine::new(la, c, client, Instant::from_millis(0));
    let server = IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 7);
    let mut ports = std::collections::HashSet::new();
    let mut first = None;
    for _ in 0..16384 {
        let id = e
            .connect(server, Instant::from_millis(0))
            .expect("a free port");
        first.get_or_insert(id);
        ports.insert(id);
    }
    assert_eq!(ports.len(), 16384);
    assert_eq!(e.flow_count(), 16384, "every connect holds its own 4-tuple");
    assert_eq!(
        e.connect(server, Instant::from_millis(0)),
        Err(c10m_stack::ConnectError::PortsExhausted)
    );
    // Another remote has all its ports free.
    let other = IpEndpoint::new(IpAddress::v4(198, 18, 0, 3), 7);
    assert!(e.connect(other, Instant::from_millis(0)).is_ok());
    // Abort one connection: once its flow leaves the table, its port is free again.
    e.with_conn(first.unwrap(), Instant::from_millis(0), |c| c.abort());
    e.poll(Instant::from_millis(1));
    assert!(e.connect(server, Instant::from_millis(1)).is_ok());
}

/// Flows opened together must not send their keep-alive probes in the same instant (a
/// burst of N probes and N replies overflows the rings at scale): the interval is
/// jittered per flow. 200 idle flows, their first probes spread over many milliseconds.
#[test]
fn keep_alive_probes_are_spread_out() {
    let (la, lb) = MemLink::pair();
    let client = Client::new(vec![]);
    let mut c = Engine::new(la, cfg(1, 1), client, Instant::from_millis(0));
    let mut s = Engine::new(lb, cfg(2, 2), Echo::default(), Instant::from_millis(0));
    s.listen(7, 256).unwrap();
    let server = IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 7);
    let mut t = 0;
    run(&mut c, &mut s, &mut t, 5, |_, _| false);
    for _ in 0..200 {
        c.connect(server, Instant::from_millis(t)).unwrap();
    }
    run(&mut c, &mut s, &mut t, 5_000, |c, _| {
        c.app().connected == 200
    });
    assert_eq!(c.app().connected, 200);
    let sent = |s: &Engine<MemLink, Echo>| {
        s.counters()
            .into_iter()
            .find(|(k, _)| *k == "link_tx_frames")
            .map_or(0, |(_, v)| v)
    };
    // Idle until well past the first probes (60 s + up to 50 %), counting the server's
    // frames per millisecond.
    let mut busiest = 0;
    let mut total = 0;
    while t < 100_000 {
        let before = sent(&s);
        c.poll(Instant::from_millis(t));
        s.poll(Instant::from_millis(t));
        c.poll(Instant::from_millis(t));
        let n = sent(&s) - before;
        busiest = busiest.max(n);
        total += n;
        t += 1;
    }
    assert!(
        total >= 200,
        "every flow probed at least once ({total} frames)"
    );
    assert!(
        busiest <= 20,
        "{busiest} frames in one millisecond: probes are synchronized"
    );
    assert_eq!(s.flow_count(), 200, "live idle flows stay");
}

/// Many flows waiting on a full transmit side: each iteration services flows only while
/// the link has room and leaves the rest queued, in order, for the next one. Walking
/// every waiting flow each iteration (each finding no room) made an iteration cost
/// O(waiting flows) while still sending one ring's worth: at 300 k flows the loop slowed
/// to a few iterations a second and the echo round never finished. 2 000 flows echo at
/// once through a 4-frame link: the server's deferred egress attempts stay near one per
/// iteration, and every echo completes.
#[test]
fn full_link_does_not_walk_every_waiting_flow() {
    const FLOWS: usize = 2000;
    let (la, mut lb) = MemLink::pair();
    lb.set_tx_capacity(4);
    let client = Client::new(payload(64, 5));
    let mut c = Engine::new(la, cfg(1, 1), client, Instant::from_millis(0));
    let mut s = Engine::new(lb, cfg(2, 2), Echo::default(), Instant::from_millis(0));
    s.listen(7, 4096).unwrap();
    let server = IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 7);
    let mut t = 0;
    run(&mut c, &mut s, &mut t, 5, |_, _| false);
    for _ in 0..FLOWS {
        c.connect(server, Instant::from_millis(t)).unwrap();
    }
    let counter = |s: &Engine<MemLink, Echo>, name: &str| {
        s.counters()
            .into_iter()
            .find(|(k, _)| *k == name)
            .map_or(0, |(_, v)| v)
    };
    run(&mut c, &mut s, &mut t, 60_000, |c, _| {
        c.app().done.len() == FLOWS
    });
    assert_eq!(c.app().done.len(), FLOWS, "every echo completed");
    let (deferred, loops) = (counter(&s, "tx_deferred"), counter(&s, "loops"));
    assert!(
        deferred <= 2 * loops,
        "{deferred} deferred egress attempts in {loops} iterations: waiting flows are walked \
         on every iteration"
    );
}

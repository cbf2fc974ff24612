//! TCP behaviour of one engine (an echo server on 198.18.0.2:7) against a raw peer that
//! builds every segment by hand ([`c10m_stack::testkit`]): handshake, close, duplicate
//! and retransmitted SYNs, resets, segments for no flow, backlog and flow-table limits, a
//! SYN flood and malformed input. Section numbers refer to RFC 9293.
//!
//! The clock is manual: `Rig::pump` polls at the current time until the link is drained,
//! `Rig::advance` moves time forward in 10 ms steps so retransmission timers fire.

use c10m_stack::smoltcp::time::Instant;
use c10m_stack::smoltcp::wire::{IpAddress, Ipv4Address, Ipv6Address};
use c10m_stack::testkit::{parse, Arp, Parsed, RawPeer, Seg};
use c10m_stack::{App, CloseReason, Conn, ConnId, Engine, EngineConfig, ListenOptions, MemLink};

const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PORT: u16 = 7;

fn server_ip() -> IpAddress {
    IpAddress::v4(198, 18, 0, 2)
}
fn peer_ip() -> IpAddress {
    IpAddress::v4(198, 18, 0, 1)
}

/// Echoes everything and records what happened.
#[derive(Default)]
struct Echo {
    accepted: usize,
    ids: Vec<ConnId>,
    peer_fins: usize,
    closed: Vec<CloseReason>,
}

impl App for Echo {
    type ConnState = ();
    type Done = ();

    fn on_accept(&mut self, c: &mut Conn<'_, Self>) -> bool {
        self.accepted += 1;
        self.ids.push(c.id());
        true
    }
    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        c.send(data)
    }
    fn on_peer_fin(&mut self, c: &mut Conn<'_, Self>) {
        self.peer_fins += 1;
        c.close();
    }
    fn on_closed(&mut self, _c: &mut Conn<'_, Self>, r: CloseReason) {
        self.closed.push(r);
    }
}

/// A segment the engine sent, with its payload.
#[derive(Debug)]
struct Got {
    seg: Seg,
    data: Vec<u8>,
}

/// The peer's side of one connection: what it sends next, what it expects next.
#[derive(Debug, Clone, Copy)]
struct Tcb {
    peer: RawPeer,
    sport: u16,
    /// The engine's port.
    dport: u16,
    snd_nxt: u32,
    rcv_nxt: u32,
}

struct Rig {
    eng: Engine<MemLink, Echo>,
    /// The peer's end of the link: frames sent here reach the engine.
    wire: MemLink,
    peer: RawPeer,
    t: i64,
    /// ARP requests from the engine that the peer could not answer.
    arp_unanswered: Vec<Arp>,
}

impl Rig {
    /// Engine on 198.18.0.2/24 with the peer 198.18.0.1 as its IPv4 gateway (so off-link
    /// sources in the flood test are reached through the peer's MAC), listening on port 7.
    /// The peer introduces itself with an ARP request first: smoltcp learns neighbours
    /// from ARP only, and without it every first reply would wait for an ARP round trip.
    fn new(backlog: usize, tweak: impl FnOnce(&mut EngineConfig)) -> Rig {
        let (wire, link) = MemLink::pair();
        let mut cfg = EngineConfig {
            mac: SERVER_MAC,
            ipv4: Some((Ipv4Address::new(198, 18, 0, 2), 24)),
            gateway4: Some(Ipv4Address::new(198, 18, 0, 1)),
            tcp_rx_buf: 16 * 1024,
            tcp_tx_buf: 16 * 1024,
            seed: 0xc10,
            ..Default::default()
        };
        tweak(&mut cfg);
        let mut eng = Engine::new(link, cfg, Echo::default(), Instant::from_millis(0));
        eng.listen(PORT, backlog).unwrap();
        let peer = RawPeer::new(PEER_MAC, peer_ip(), SERVER_MAC, server_ip());
        let mut rig = Rig {
            eng,
            wire,
            peer,
            t: 0,
            arp_unanswered: Vec::new(),
        };
        rig.send(peer.arp_request());
        rig.poll_until_drained();
        let replies: Vec<_> = rig
            .eng
            .link()
            .drain_sent()
            .iter()
            .filter_map(|f| parse(f)?.arp())
            .collect();
        assert_eq!(replies.len(), 1, "engine must answer the ARP request");
        assert_eq!(replies[0].sender_mac.0, SERVER_MAC);
        rig
    }

    fn send(&self, frame: Vec<u8>) {
        self.wire.send_raw(frame);
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.t)
    }

    fn poll_until_drained(&mut self) {
        let now = self.now();
        loop {
            self.eng.poll(now);
            if self.eng.link().rx_pending() == 0 {
                break;
            }
        }
        // One more pass for work queued by the last batch.
        self.eng.poll(now);
    }

    /// Poll at the current time until every injected frame is handled. Returns the TCP
    /// segments the engine sent; ARP requests for the peer are answered on the way.
    fn pump(&mut self) -> Vec<Got> {
        let mut out = Vec::new();
        loop {
            self.poll_until_drained();
            let mut answered = false;
            for f in self.eng.link().drain_sent() {
                match parse(&f).expect("the engine sent a malformed frame") {
                    Parsed::Tcp(seg) => out.push(Got {
                        data: seg.payload(&f).to_vec(),
                        seg,
                    }),
                    Parsed::Arp(a) => match self.peer.arp_reply_to(&a) {
                        Some(r) => {
                            self.send(r);
                            answered = true;
                        }
                        None => self.arp_unanswered.push(a),
                    },
                    Parsed::Other(_) => {}
                }
            }
            if !answered {
                return out;
            }
        }
    }

    /// Move the clock forward by `ms` in 10 ms steps, pumping at each; all segments sent.
    fn advance(&mut self, ms: i64) -> Vec<Got> {
        let mut out = Vec::new();
        let end = self.t + ms;
        while self.t < end {
            self.t = (self.t + 10).min(end);
            out.extend(self.pump());
        }
        out
    }

    /// Three-way handshake from `peer:sport` with `isn` (RFC 9293 3.5): SYN, check the
    /// SYN-ACK, ACK. The app has accepted the connection when this returns.
    fn connect(&mut self, peer: RawPeer, sport: u16, isn: u32) -> Tcb {
        self.connect_to(peer, sport, PORT, isn)
    }

    /// `connect` to the engine's port `dport`.
    fn connect_to(&mut self, peer: RawPeer, sport: u16, dport: u16, isn: u32) -> Tcb {
        let accepted = self.eng.app().accepted;
        self.send(peer.syn(sport, dport, isn));
        let got = self.pump();
        let sa = only(to(&got, &peer, sport));
        assert!(sa.seg.syn && sa.seg.ack && !sa.seg.rst, "{sa:?}");
        assert_eq!(
            sa.seg.ack_no,
            isn.wrapping_add(1),
            "SYN-ACK acks the ISN + 1"
        );
        assert_eq!(sa.seg.src.port, dport);
        assert!(
            sa.seg.mss.is_some(),
            "SYN-ACK carries the MSS option (3.7.1)"
        );
        let tcb = Tcb {
            peer,
            sport,
            dport,
            snd_nxt: isn.wrapping_add(1),
            rcv_nxt: sa.seg.seq.wrapping_add(1),
        };
        self.send(peer.ack(sport, dport, tcb.snd_nxt, tcb.rcv_nxt));
        let got = self.pump();
        assert!(to(&got, &peer, sport).is_empty(), "{got:?}");
        assert_eq!(
            self.eng.app().accepted,
            accepted + 1,
            "on_accept after the ACK"
        );
        tcb
    }

    /// Send `data` on `c` and check that exactly it comes back, in sequence, acking it.
    fn echo(&mut self, c: &mut Tcb, data: &[u8]) {
        self.send(c.peer.data(c.sport, c.dport, c.snd_nxt, c.rcv_nxt, data));
        c.snd_nxt = c.snd_nxt.wrapping_add(data.len() as u32);
        let got = self.pump();
        let mine = to(&got, &c.peer, c.sport);
        let back: Vec<u8> = mine.iter().flat_map(|g| g.data.clone()).collect();
        assert_eq!(back, data, "echo on port {}: {mine:?}", c.sport);
        let first = mine.iter().find(|g| !g.data.is_empty()).unwrap();
        assert_eq!(first.seg.seq, c.rcv_nxt);
        let last = mine.last().unwrap();
        assert!(last.seg.ack);
        assert_eq!(last.seg.ack_no, c.snd_nxt, "our data is acknowledged");
        c.rcv_nxt = c.rcv_nxt.wrapping_add(data.len() as u32);
        self.send(c.peer.ack(c.sport, c.dport, c.snd_nxt, c.rcv_nxt));
        assert!(self.pump().is_empty());
    }
}

/// Segments addressed to `peer:port`.
fn to<'a>(got: &'a [Got], peer: &RawPeer, port: u16) -> Vec<&'a Got> {
    got.iter()
        .filter(|g| g.seg.dst.addr == peer.ip && g.seg.dst.port == port)
        .collect()
}

fn only(v: Vec<&Got>) -> &Got {
    assert_eq!(v.len(), 1, "expected exactly one segment: {v:?}");
    v[0]
}

/// 1. A whole connection by hand: handshake (3.5), data (3.10.7.4), passive close
///    (3.6: CLOSE-WAIT -> LAST-ACK -> CLOSED) and the flow leaving the table.
#[test]
fn handshake_data_and_close_by_hand() {
    let mut r = Rig::new(8, |_| {});
    let p = r.peer;
    let isn = 0xffff_fff0; // wraps during the connection
    r.send(p.syn(40000, PORT, isn));
    let got = r.pump();
    let sa = only(to(&got, &p, 40000));
    assert!(sa.seg.syn && sa.seg.ack && !sa.seg.fin && !sa.seg.rst);
    assert_eq!(sa.seg.ack_no, isn.wrapping_add(1));
    assert_eq!(sa.seg.dst_mac.0, PEER_MAC);
    assert_eq!(sa.seg.src.addr, server_ip());
    assert!(sa.data.is_empty());
    assert_eq!(r.eng.flow_count(), 1);
    assert_eq!(
        r.eng.app().accepted,
        0,
        "not accepted before the handshake completes"
    );

    let mut c = Tcb {
        peer: p,
        sport: 40000,
        dport: PORT,
        snd_nxt: isn.wrapping_add(1),
        rcv_nxt: sa.seg.seq.wrapping_add(1),
    };
    r.send(p.ack(40000, PORT, c.snd_nxt, c.rcv_nxt));
    assert!(r.pump().is_empty(), "a bare ACK is not answered");
    assert_eq!(r.eng.app().accepted, 1);
    assert_eq!(r.eng.stats().accepted, 1);

    r.echo(&mut c, b"hello");
    r.echo(&mut c, &[0xa5; 1000]);

    // Peer closes: FIN is acknowledged, Echo closes too, the engine's FIN follows.
    r.send(p.fin(40000, PORT, c.snd_nxt, c.rcv_nxt));
    c.snd_nxt = c.snd_nxt.wrapping_add(1);
    let got = r.pump();
    let mine = to(&got, &p, 40000);
    assert_eq!(r.eng.app().peer_fins, 1);
    let fin = mine.iter().find(|g| g.seg.fin).expect("engine's FIN");
    assert_eq!(fin.seg.seq, c.rcv_nxt);
    assert!(fin.seg.ack);
    assert_eq!(fin.seg.ack_no, c.snd_nxt, "our FIN is acknowledged");
    assert_eq!(
        r.eng.flow_count(),
        1,
        "LAST-ACK until the FIN is acknowledged"
    );
    c.rcv_nxt = c.rcv_nxt.wrapping_add(1);
    r.send(p.ack(40000, PORT, c.snd_nxt, c.rcv_nxt));
    assert!(r.pump().is_empty());
    assert_eq!(r.eng.flow_count(), 0);
    assert_eq!(r.eng.app().closed, vec![CloseReason::Normal]);
    assert_eq!(r.eng.stats().closed_normal, 1);
}

/// 2. A duplicate SYN in SYN-RECEIVED (the peer retransmitted it) creates no second flow;
///    the SYN-ACK comes back at the latest with the retransmission timer (3.8.1, initial
///    RTO 1 s) and the handshake completes.
#[test]
fn duplicate_syn_in_syn_received() {
    let mut r = Rig::new(8, |_| {});
    let p = r.peer;
    r.send(p.syn(40001, PORT, 5000));
    let sa = only(to(&r.pump(), &p, 40001)).seg;
    r.send(p.syn(40001, PORT, 5000));
    let again = r.pump();
    assert_eq!(r.eng.flow_count(), 1, "no second flow for a duplicate SYN");
    assert_eq!(r.eng.stats().syn_accepted, 1);
    // Whatever is answered at once (smoltcp drops it silently) must not be a new SYN-ACK.
    for g in &again {
        assert!(!g.seg.rst, "{g:?}");
        assert_eq!(g.seg.seq, sa.seq, "same ISN: {g:?}");
    }
    let got = r.advance(1_100);
    let re = to(&got, &p, 40001);
    assert!(!re.is_empty(), "SYN-ACK retransmitted within the RTO");
    assert!(re
        .iter()
        .all(|g| g.seg.syn && g.seg.ack && g.seg.seq == sa.seq));
    assert_eq!(re[0].seg.ack_no, 5001);

    let mut c = Tcb {
        peer: p,
        sport: 40001,
        dport: PORT,
        snd_nxt: 5001,
        rcv_nxt: sa.seq.wrapping_add(1),
    };
    r.send(p.ack(40001, PORT, c.snd_nxt, c.rcv_nxt));
    assert!(r.pump().is_empty());
    assert_eq!(r.eng.app().accepted, 1);
    r.echo(&mut c, b"after a duplicate SYN");
}

/// 3. RST in SYN-RECEIVED (3.10.7.4, first check, passive open: back to LISTEN): the
///    half-open flow is removed, its backlog slot freed, the failure counted.
#[test]
fn rst_in_syn_received_frees_the_backlog_slot() {
    let mut r = Rig::new(1, |_| {});
    let p = r.peer;
    r.send(p.syn(40002, PORT, 100));
    let sa = only(to(&r.pump(), &p, 40002)).seg;
    assert!(sa.syn && sa.ack && sa.ack_no == 101);
    // Backlog 1 is now full.
    r.send(p.syn(40003, PORT, 200));
    assert!(r.pump().is_empty());
    assert_eq!(r.eng.stats().drop_syn_backlog_full, 1);

    // A RST outside the receive window is not acceptable (3.10.7.4): ignored.
    r.send(p.rst(40002, PORT, 101 + 1_000_000, None));
    let got = r.pump();
    assert!(got.iter().all(|g| !g.seg.rst), "{got:?}");
    assert_eq!(r.eng.flow_count(), 1, "out-of-window RST ignored");

    r.send(p.rst(40002, PORT, 101, None));
    assert!(r.pump().is_empty(), "a RST is never answered");
    assert_eq!(r.eng.flow_count(), 0);
    assert_eq!(r.eng.stats().handshakes_failed, 1);
    assert_eq!(r.eng.app().accepted, 0);
    assert!(r.eng.app().closed.is_empty(), "the app never saw it");
    // The SYN-ACK is not retransmitted for a flow that is gone.
    assert!(to(&r.advance(3_000), &p, 40002).is_empty());

    // The slot is free: a new SYN gets its SYN-ACK and completes.
    let mut c = r.connect(p, 40003, 300);
    r.echo(&mut c, b"slot reused");
}

/// 4. The same 4-tuple SYNs again after its flow was recycled, both after a failed
///    handshake and after an orderly close: a fresh connection is created (3.5, 3.6) and
///    works. The socket comes from the engine's pool, so stale state would show here.
#[test]
fn same_four_tuple_after_recycling() {
    let mut r = Rig::new(4, |_| {});
    let p = r.peer;
    // Failed handshake: SYN, RST.
    r.send(p.syn(40004, PORT, 1_000));
    let sa1 = only(to(&r.pump(), &p, 40004)).seg;
    assert!(sa1.syn && sa1.ack);
    r.send(p.rst(40004, PORT, 1_001, None));
    r.pump();
    assert_eq!(r.eng.flow_count(), 0);

    // Same tuple, retransmitted SYN (same ISN): a fresh handshake.
    let mut c = r.connect(p, 40004, 1_000);
    assert_eq!(r.eng.flow_count(), 1);
    r.echo(&mut c, b"second life");

    // Orderly close, peer first (engine passes through CLOSE-WAIT/LAST-ACK, no TIME-WAIT).
    r.send(p.fin(40004, PORT, c.snd_nxt, c.rcv_nxt));
    c.snd_nxt += 1;
    let fin = r
        .pump()
        .into_iter()
        .find(|g| g.seg.fin)
        .expect("engine's FIN");
    r.send(p.ack(40004, PORT, c.snd_nxt, fin.seg.seq.wrapping_add(1)));
    r.pump();
    assert_eq!(r.eng.flow_count(), 0);

    // Same tuple once more with a new ISN, and with the old (retransmitted) one.
    let mut c = r.connect(p, 40004, 9_000_000);
    r.echo(&mut c, b"third life");
    r.send(p.rst(40004, PORT, c.snd_nxt, None));
    r.pump();
    assert_eq!(r.eng.flow_count(), 0);
    assert_eq!(r.eng.app().closed.last(), Some(&CloseReason::Reset));
    let mut c = r.connect(p, 40004, 1_000);
    r.echo(&mut c, b"fourth life");
    assert_eq!(r.eng.app().accepted, 3);
}

/// 5. Segments for no flow (3.10.7.1 CLOSED / 3.10.7.2 LISTEN): an ACK is answered by
///    <SEQ=SEG.ACK><CTL=RST>; a RST is dropped silently. No state either way.
#[test]
fn stray_ack_gets_rst_stray_rst_gets_nothing() {
    let mut r = Rig::new(8, |_| {});
    let p = r.peer;
    for port in [PORT, 9] {
        r.send(p.ack(41000, port, 5_000, 777_777));
        let rst = only(to(&r.pump(), &p, 41000)).seg;
        assert!(rst.rst && !rst.syn && !rst.fin, "{rst:?}");
        assert_eq!(rst.seq, 777_777, "RST seq = SEG.ACK");
        assert_eq!(rst.src.port, port);
        assert_eq!(r.eng.flow_count(), 0);

        // Data with ACK on no flow: the same.
        r.send(p.data(41001, port, 5_000, 123_456, b"orphan"));
        let rst = only(to(&r.pump(), &p, 41001)).seg;
        assert!(rst.rst);
        assert_eq!(rst.seq, 123_456);

        r.send(p.rst(41002, port, 5_000, None));
        r.send(p.rst(41002, port, 5_000, Some(1)));
        assert!(r.pump().is_empty(), "a RST is never answered with a RST");
        assert_eq!(r.eng.flow_count(), 0);
    }
    assert_eq!(r.eng.stats().tcp_no_flow, 8);
    assert_eq!(r.eng.stats().syn_accepted, 0);
    assert_eq!(r.eng.app().accepted, 0);
}

/// 6. SYN to a closed port (3.10.7.1): <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, no state.
///    A SYN for an address that is not the engine's is dropped.
#[test]
fn syn_to_closed_port_gets_rst_ack() {
    let mut r = Rig::new(8, |_| {});
    let p = r.peer;
    r.send(p.syn(42000, 9, 0x1234_5678));
    let rst = only(to(&r.pump(), &p, 42000)).seg;
    assert!(rst.rst && rst.ack && !rst.syn, "{rst:?}");
    assert_eq!(rst.seq, 0);
    assert_eq!(rst.ack_no, 0x1234_5679);
    assert_eq!(rst.src.port, 9);
    assert_eq!(r.eng.flow_count(), 0);
    assert_eq!(r.eng.stats().tcp_no_flow, 1);

    // Right MAC, wrong IP, listening port: not ours.
    let stranger = RawPeer::new(
        PEER_MAC,
        peer_ip(),
        SERVER_MAC,
        IpAddress::v4(198, 18, 0, 99),
    );
    r.send(stranger.syn(42001, PORT, 1));
    assert!(r.pump().is_empty());
    assert_eq!(r.eng.flow_count(), 0);
    assert_eq!(r.eng.stats().drop_not_our_addr, 1);
}

/// 7. Backlog N: N + k SYNs that never complete get exactly N SYN-ACKs, k are dropped and
///    counted; established flows do not count against the backlog and keep echoing.
#[test]
fn backlog_overflow() {
    const N: usize = 4;
    const K: usize = 3;
    let mut r = Rig::new(N, |_| {});
    let p = r.peer;
    let mut est = r.connect(p, 1000, 42);
    for i in 0..(N + K) as u16 {
        r.send(p.syn(2000 + i, PORT, 7_000 + i as u32));
    }
    let got = r.pump();
    let synacks: Vec<_> = got.iter().filter(|g| g.seg.syn && g.seg.ack).collect();
    assert_eq!(synacks.len(), N, "{got:?}");
    for (i, g) in synacks.iter().enumerate() {
        assert_eq!(g.seg.dst.port, 2000 + i as u16, "first come, first served");
    }
    assert_eq!(got.len(), N, "dropped SYNs are not answered: {got:?}");
    assert_eq!(r.eng.stats().drop_syn_backlog_full, K as u64);
    assert_eq!(r.eng.flow_count(), 1 + N);
    r.echo(&mut est, b"still here");

    // Completing one half-open connection frees one slot.
    let sa = synacks[0].seg;
    r.send(p.ack(2000, PORT, 7_001, sa.seq.wrapping_add(1)));
    r.pump();
    assert_eq!(r.eng.app().accepted, 2);
    r.send(p.syn(3000, PORT, 1));
    assert_eq!(only(to(&r.pump(), &p, 3000)).seg.ack_no, 2);
    r.send(p.syn(3001, PORT, 1));
    assert!(r.pump().is_empty());
    assert_eq!(r.eng.stats().drop_syn_backlog_full, K as u64 + 1);
    r.echo(&mut est, b"and still");
}

/// 8. Flow table full (`max_flows`): new SYNs are dropped and counted, established flows
///    carry on.
#[test]
fn flow_table_full() {
    let mut r = Rig::new(100, |c| c.max_flows = 3);
    let p = r.peer;
    let mut a = r.connect(p, 1000, 1);
    let mut b = r.connect(p, 1001, 1);
    r.send(p.syn(2000, PORT, 1));
    assert_eq!(only(to(&r.pump(), &p, 2000)).seg.ack_no, 2);
    for i in 0..5 {
        r.send(p.syn(3000 + i, PORT, 1));
    }
    assert!(
        r.pump().is_empty(),
        "no SYN-ACK, no RST when the table is full"
    );
    assert_eq!(r.eng.flow_count(), 3);
    assert_eq!(r.eng.stats().drop_syn_flow_table_full, 5);
    assert_eq!(r.eng.stats().drop_syn_backlog_full, 0);
    r.echo(&mut a, b"a");
    r.echo(&mut b, b"b");

    // A flow leaving makes room again.
    r.send(p.rst(1001, PORT, b.snd_nxt, None));
    r.pump();
    assert_eq!(r.eng.flow_count(), 2);
    let mut c = r.connect(p, 3000, 77);
    r.echo(&mut c, b"room again");
    r.echo(&mut a, b"a again");
}

const FLOOD: u32 = 10_000;
const FLOOD_BACKLOG: usize = 64;

/// A spoofed source for the flood: 10.x.y.z, off-link, reached through the peer (the
/// engine's gateway), so one neighbour entry serves every source.
fn spoofed(peer: &RawPeer, i: u32) -> RawPeer {
    peer.with_ip(IpAddress::v4(
        10,
        (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8 | 1,
    ))
}

/// Floods `FLOOD` SYNs from distinct spoofed sources in chunks, checking after each chunk
/// that half-open state is bounded and `est` is still served.
fn flood(r: &mut Rig, est: &mut Tcb) {
    let p = r.peer;
    let mut synacks = 0;
    for chunk in 0..10u32 {
        for i in chunk * FLOOD / 10..(chunk + 1) * FLOOD / 10 {
            r.send(spoofed(&p, i).syn(1024 + (i % 50_000) as u16, PORT, i.wrapping_mul(7919)));
        }
        let got = r.pump();
        synacks += got.iter().filter(|g| g.seg.syn && g.seg.ack).count();
        assert!(got.iter().all(|g| g.seg.dst_mac.0 == PEER_MAC));
        assert!(r.eng.flow_count() <= 1 + FLOOD_BACKLOG);
        r.echo(est, format!("chunk {chunk}").as_bytes());
        r.advance(100);
    }
    assert_eq!(synacks, FLOOD_BACKLOG);
    assert_eq!(r.eng.stats().syn_accepted, 1 + FLOOD_BACKLOG as u64);
    assert_eq!(
        r.eng.stats().drop_syn_backlog_full,
        (FLOOD as usize - FLOOD_BACKLOG) as u64
    );
    assert_eq!(r.eng.flow_count(), 1 + FLOOD_BACKLOG);
}

/// 9a. SYN flood from 10 000 spoofed sources that never complete: half-open state stays
///     bounded by the backlog and an established flow is served throughout.
#[test]
fn syn_flood_is_bounded_and_established_flow_served() {
    let mut r = Rig::new(FLOOD_BACKLOG, |_| {});
    let p = r.peer;
    let mut est = r.connect(p, 1000, 1);
    flood(&mut r, &mut est);
    // SYN-ACKs are retransmitted with backoff (3.8.1) to the spoofed sources.
    let re = r.advance(5_000);
    assert!(re.iter().filter(|g| g.seg.syn && g.seg.ack).count() >= FLOOD_BACKLOG);
    r.echo(&mut est, b"after the flood");
}

/// 9b. Half-open flows that never complete must be abandoned within a bounded time (Linux:
///     5 SYN-ACK retransmissions, about 63 s), freeing the backlog for real clients.
#[test]
fn syn_flood_half_open_flows_expire() {
    let mut r = Rig::new(FLOOD_BACKLOG, |_| {});
    let p = r.peer;
    let mut est = r.connect(p, 1000, 1);
    flood(&mut r, &mut est);
    // Three minutes: far beyond any sane SYN-RECEIVED lifetime. The established flow is
    // idle, it stays.
    for _ in 0..18 {
        r.advance(10_000);
        r.echo(&mut est, b"tick");
    }
    assert_eq!(
        r.eng.flow_count(),
        1,
        "half-open flows still present after 180 s"
    );
    assert_eq!(r.eng.stats().handshakes_failed, FLOOD_BACKLOG as u64);
    // A legitimate client gets in again.
    let mut c = r.connect(p, 5000, 5);
    r.echo(&mut c, b"let me in");
}

/// 10. Malformed TCP is dropped without state, without a reply and without panicking;
///     header damage the classifier sees is counted (3.10.7: checksum failures are
///     discarded silently, as is anything that cannot be parsed).
#[test]
fn malformed_segments_are_dropped() {
    let mut r = Rig::new(8, |_| {});
    let p = r.peer;
    const TCP: usize = 14 + 20; // TCP header offset in an IPv4 frame without options

    // SYN with a bad TCP checksum.
    let mut f = p.syn(43000, PORT, 1);
    f[TCP + 16] ^= 0xff;
    r.send(f);
    // SYN with a bad IPv4 header checksum.
    let mut f = p.syn(43001, PORT, 1);
    f[14 + 10] ^= 0xff;
    r.send(f);
    // ACK with a bad checksum for no flow: no RST for garbage.
    let mut f = p.ack(43002, PORT, 1, 1);
    f[TCP + 16] ^= 0xff;
    r.send(f);
    assert!(r.pump().is_empty());
    assert_eq!(r.eng.flow_count(), 0);
    // The two bad SYNs were refused by smoltcp: counted, no flow kept, no handshake begun.
    assert_eq!(r.eng.stats().drop_syn_rejected, 2);
    assert_eq!(r.eng.stats().syn_accepted, 0);
    assert_eq!(r.eng.stats().handshakes_failed, 0);

    // Data offset beyond the segment (the SYN is 24 bytes: header and MSS option), and
    // below the minimum of 5 words.
    let malformed_before = r.eng.stats().drop_malformed_tcp;
    for off in [15u8, 7, 4, 0] {
        let mut f = p.syn(43003, PORT, 1);
        f[TCP + 12] = off << 4;
        r.send(f);
    }
    // IPv4 total length beyond the frame.
    let mut f = p.syn(43004, PORT, 1);
    f[14 + 2..14 + 4].copy_from_slice(&1500u16.to_be_bytes());
    r.send(f);
    assert!(r.pump().is_empty());
    assert_eq!(r.eng.stats().drop_malformed_tcp, malformed_before + 4);
    assert_eq!(r.eng.stats().drop_malformed_ipv4, 1);
    assert_eq!(r.eng.flow_count(), 0);

    // Every truncation of a valid SYN.
    let syn = p.syn(43005, PORT, 1);
    for n in 0..syn.len() {
        r.send(syn[..n].to_vec());
    }
    assert!(r.pump().is_empty());
    assert_eq!(r.eng.flow_count(), 0);

    // On an established flow: a corrupted data segment is ignored (no ACK, nothing
    // delivered), the flow carries on.
    let mut c = r.connect(p, 43006, 10);
    let mut f = p.data(43006, PORT, c.snd_nxt, c.rcv_nxt, b"corrupt");
    *f.last_mut().unwrap() ^= 0x01;
    r.send(f);
    assert!(r.pump().is_empty());
    r.echo(&mut c, b"clean");
    assert_eq!(r.eng.stats().app_bytes_in, 5);
}

/// The same handshake and echo over IPv6; the peer announces its MAC with an unsolicited
/// neighbour advertisement (RFC 4861 7.2.6).
#[test]
fn ipv6_handshake_echo_close() {
    let (wire, link) = MemLink::pair();
    let s6 = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    let cfg = EngineConfig {
        mac: SERVER_MAC,
        ipv6: Some((s6, 64)),
        seed: 6,
        ..Default::default()
    };
    let eng = Engine::new(link, cfg, Echo::default(), Instant::from_millis(0));
    let peer = RawPeer::new(
        PEER_MAC,
        IpAddress::v6(0xfd00, 0, 0, 0, 0, 0, 0, 1),
        SERVER_MAC,
        IpAddress::Ipv6(s6),
    );
    let mut r = Rig {
        eng,
        wire,
        peer,
        t: 0,
        arp_unanswered: Vec::new(),
    };
    r.eng.listen(PORT, 4).unwrap();
    r.send(peer.neighbor_advert());
    assert!(r.pump().is_empty());
    let mut c = r.connect(peer, 44000, 0xdead_beef);
    r.echo(&mut c, b"over IPv6");
    r.send(peer.rst(44000, PORT, c.snd_nxt, None));
    assert!(r.pump().is_empty());
    assert_eq!(r.eng.flow_count(), 0);
    assert_eq!(r.eng.app().closed, vec![CloseReason::Reset]);
    assert!(r.arp_unanswered.is_empty());
}

/// 11. A peer that vanishes with our data unacknowledged: retransmission must give up
///     eventually (3.8.3: R2 "SHOULD correspond to at least 100 seconds"), the flow leave
///     the table and the app hear `TimedOut`.
#[test]
fn unacknowledged_data_times_out() {
    let mut r = Rig::new(8, |_| {});
    let p = r.peer;
    let c = r.connect(p, 45000, 1);
    r.send(p.data(45000, PORT, c.snd_nxt, c.rcv_nxt, b"echo me, then I vanish"));
    let got = r.pump();
    assert!(!to(&got, &p, 45000).is_empty(), "echoed");
    // Never acknowledged: retransmissions back off up to 60 s each.
    let re = r.advance(600_000);
    assert!(to(&re, &p, 45000).iter().any(|g| !g.data.is_empty()));
    assert_eq!(
        r.eng.flow_count(),
        0,
        "dead peer's flow still present after 600 s"
    );
    assert_eq!(r.eng.app().closed, vec![CloseReason::TimedOut]);
}

/// Buffers are per listener: each port's SYN-ACK advertises its own receive buffer, and
/// sockets of different sizes are recycled into their own pools.
#[test]
fn listeners_have_their_own_buffer_sizes() {
    let mut r = Rig::new(8, |_| {});
    r.eng
        .listen_with(
            8080,
            ListenOptions {
                backlog: 8,
                rx_buf: 2048,
                tx_buf: 2048,
                serve_first: false,
            },
        )
        .unwrap();
    assert!(r
        .eng
        .listen_with(
            8081,
            ListenOptions {
                backlog: 8,
                rx_buf: 10,
                tx_buf: 2048,
                serve_first: false,
            },
        )
        .is_err());
    let p = r.peer;
    for round in 0..2u32 {
        for (port, want) in [(PORT, 16 * 1024u16), (8080, 2048)] {
            r.send(p.syn(40000 + round as u16, port, 1000));
            let got = r.pump();
            let synack = got
                .iter()
                .find(|g| g.seg.syn && g.seg.ack)
                .expect("SYN-ACK");
            assert_eq!(synack.seg.window, want, "port {port}");
            // Abandon the handshake with a RST so the socket returns to its pool.
            r.send(p.rst(40000 + round as u16, port, 1001, None));
            r.pump();
        }
    }
    assert_eq!(r.eng.flow_count(), 0);
}

/// ARP that answers nothing the engine asked for (a broadcast for another host, a
/// gratuitous ARP) must not wake every flow that has a timer: only an answer from a
/// neighbour smoltcp is resolving may. And echo traffic keeps about one wheel entry per
/// flow, however many segments go by (each ACK restarts the RTO).
#[test]
fn stray_arp_wakes_no_flows_and_wheel_stays_small() {
    let mut r = Rig::new(64, |_| {});
    let p = r.peer;
    let mut flows: Vec<Tcb> = (0..20)
        .map(|i| r.connect(p, 42000 + i, 1000 * i as u32))
        .collect();
    for round in 0..50 {
        for c in flows.iter_mut() {
            r.echo(c, format!("round {round}").as_bytes());
        }
    }
    assert!(
        r.eng.timer_entries() <= 2 * flows.len() + 4,
        "{} wheel entries for {} flows after 1000 echoes",
        r.eng.timer_entries(),
        flows.len()
    );
    let before = r.eng.stats().neighbor_wakeups;
    // Another host on the segment asks for a third host's address.
    let other = p.with_ip(IpAddress::v4(198, 18, 0, 77));
    let mut f = other.arp_request();
    f[38..42].copy_from_slice(&[198, 18, 0, 99]); // target protocol address: not ours
    r.send(f);
    // And the peer re-announces itself (gratuitous).
    r.send(p.arp_request());
    r.pump();
    assert_eq!(r.eng.stats().neighbor_wakeups, before);
    // The flows still echo.
    r.echo(&mut flows[0], b"still here");
}

/// The server closes first, so its side of the 4-tuple sits in TIME-WAIT; the client
/// reconnects from the same port at once (HTTP with `Connection: close` does this). The
/// new SYN must open a new connection (RFC 9293 3.10.7.4, RFC 6191), not be answered by
/// the old one with an ACK while the client waits out the 10 s timer.
#[test]
fn syn_reopens_a_four_tuple_in_time_wait() {
    let mut r = Rig::new(8, |_| {});
    let p = r.peer;
    let mut c = r.connect(p, 45100, 7000);
    r.echo(&mut c, b"hello");
    let id = r.eng.app().ids[0];
    let now = r.now();
    r.eng.with_conn(id, now, |conn| conn.close()).unwrap();
    let got = r.pump();
    let fin = got.iter().find(|g| g.seg.fin).expect("server FIN");
    assert_eq!(fin.seg.seq, c.rcv_nxt);
    c.rcv_nxt = c.rcv_nxt.wrapping_add(1);
    // The client ACKs the FIN and sends its own; the server ACKs and enters TIME-WAIT.
    r.send(p.fin(45100, PORT, c.snd_nxt, c.rcv_nxt));
    c.snd_nxt = c.snd_nxt.wrapping_add(1);
    let got = r.pump();
    assert!(got.iter().any(|g| g.seg.ack && g.seg.ack_no == c.snd_nxt));
    assert_eq!(
        r.eng.flow_count(),
        1,
        "the server's side lingers in TIME-WAIT"
    );
    // Reconnect from the same port with a higher ISN.
    let c2 = r.connect(p, 45100, c.snd_nxt.wrapping_add(100_000));
    assert_eq!(r.eng.stats().time_wait_reused, 1);
    let mut c2 = c2;
    r.echo(&mut c2, b"again");
    assert_eq!(r.eng.app().accepted, 2);
}

/// A `serve_first` listener's flows are serviced before the others: with data for an
/// ordinary flow and then for a serve_first flow in one receive batch, the serve_first
/// flow's reply leaves first. Two ordinary flows in the same order answer in arrival
/// order (the control).
#[test]
fn serve_first_flows_are_answered_first_within_a_batch() {
    let mut r = Rig::new(8, |_| {});
    r.eng
        .listen_with(
            8080,
            ListenOptions {
                backlog: 8,
                rx_buf: 16 * 1024,
                tx_buf: 16 * 1024,
                serve_first: true,
            },
        )
        .unwrap();
    let p = r.peer;
    let rounds = [
        // Control: two ordinary flows answer in arrival order.
        (r.connect(p, 41000, 1), r.connect(p, 41001, 1), false),
        // An ordinary flow, then a serve_first one: the serve_first one answers first.
        (
            r.connect(p, 41002, 1),
            r.connect_to(p, 41003, 8080, 1),
            true,
        ),
    ];
    for (a, b, b_first) in rounds {
        for c in [&a, &b] {
            r.send(c.peer.data(c.sport, c.dport, c.snd_nxt, c.rcv_nxt, b"ping"));
        }
        let got = r.pump();
        let replies: Vec<u16> = got
            .iter()
            .filter(|g| !g.data.is_empty())
            .map(|g| g.seg.dst.port)
            .collect();
        let want = if b_first { b.sport } else { a.sport };
        assert_eq!(replies.len(), 2, "{got:?}");
        assert_eq!(replies[0], want, "reply order {replies:?}");
    }
}

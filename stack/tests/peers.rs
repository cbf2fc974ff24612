//! Callbacks that reach other connections of their engine over the in-memory link:
//! `Conn::connect` from inside callbacks (fan-out, reconnect from `on_closed`, errors)
//! and `Conn::peer` (what it refuses: itself, a dead id, a closed connection).

use c10m_stack::smoltcp::time::Instant;
use c10m_stack::smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
use c10m_stack::testkit::run_pair as run;
use c10m_stack::{App, CloseReason, Conn, ConnId, ConnectError, Engine, EngineConfig, MemLink};

fn cfg(last: u8) -> EngineConfig {
    EngineConfig {
        mac: [0x02, 0, 0, 0, 0, last],
        ipv4: Some((Ipv4Address::new(198, 18, 0, last), 24)),
        tcp_rx_buf: 4096,
        tcp_tx_buf: 4096,
        seed: last as u64,
        ..Default::default()
    }
}

fn ep(last: u8, port: u16) -> IpEndpoint {
    IpEndpoint::new(IpAddress::v4(198, 18, 0, last), port)
}

/// Hub on .1: each accepted connection opens `fan` connections to .2:7 and keeps their
/// ids; when the accepted connection sends a byte, the hub checks what `peer` gives.
#[derive(Default)]
struct Hub {
    fan: usize,
    opened: Vec<ConnId>,
    connected: Vec<ConnId>,
    errors: Vec<ConnectError>,
    /// (peer(own id), peer(dead id), peer(live fan-out id)) as seen from on_data.
    peer_checks: Vec<(bool, bool, bool)>,
    /// Reconnect from `on_closed` this many times.
    reconnects: usize,
    closed: Vec<(ConnId, CloseReason)>,
}

#[derive(Default)]
struct HubConn {
    fanned: Vec<ConnId>,
}

impl App for Hub {
    type ConnState = HubConn;
    type Done = ();

    fn on_accept(&mut self, c: &mut Conn<'_, Self>) -> bool {
        for _ in 0..self.fan {
            match c.connect(ep(2, 7), HubConn::default()) {
                Ok(id) => {
                    self.opened.push(id);
                    c.state().fanned.push(id);
                }
                Err(e) => self.errors.push(e),
            }
        }
        // Errors come back at once, not as a later close.
        for bad in [
            ep(2, 0),
            IpEndpoint::new(IpAddress::v6(0x2001, 2, 0, 0, 0, 0, 0, 2), 7),
        ] {
            if let Err(e) = c.connect(bad, HubConn::default()) {
                self.errors.push(e);
            }
        }
        true
    }
    fn on_connected(&mut self, c: &mut Conn<'_, Self>) {
        self.connected.push(c.id());
    }
    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        let own = c.id();
        let fanned = c.state().fanned.clone();
        let me = c.peer(own).is_some();
        let stale = self
            .closed
            .first()
            .map(|&(id, _)| c.peer(id).is_some())
            .unwrap_or(false);
        let live = fanned.first().is_some_and(|&f| c.peer(f).is_some());
        self.peer_checks.push((me, stale, live));
        c.send(data);
        data.len()
    }
    fn on_closed(&mut self, c: &mut Conn<'_, Self>, r: CloseReason) {
        self.closed.push((c.id(), r));
        if self.reconnects > 0 {
            self.reconnects -= 1;
            match c.connect(ep(2, 7), HubConn::default()) {
                Ok(id) => self.opened.push(id),
                Err(e) => self.errors.push(e),
            }
        }
    }
}

/// The far side on .2: accepts on 7 (the hub's fan-out) and consumes what arrives; the
/// test drives its own connection to the hub through `Engine::send`.
#[derive(Default)]
struct Far {
    accepted: Vec<ConnId>,
    echoed: usize,
}

impl App for Far {
    type ConnState = ();
    type Done = ();
    fn on_accept(&mut self, c: &mut Conn<'_, Self>) -> bool {
        self.accepted.push(c.id());
        true
    }
    fn on_data(&mut self, _c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        self.echoed += data.len();
        data.len()
    }
}

fn setup(hub: Hub) -> (Engine<MemLink, Hub>, Engine<MemLink, Far>) {
    let (la, lb) = MemLink::pair();
    let t0 = Instant::from_millis(0);
    let mut h = Engine::new(la, cfg(1), hub, t0);
    h.listen(1, 16).unwrap();
    let mut f = Engine::new(lb, cfg(2), Far::default(), t0);
    f.listen(7, 16).unwrap();
    (h, f)
}

#[test]
fn fan_out_from_on_accept_gets_distinct_ids_that_all_connect() {
    let (mut h, mut f) = setup(Hub {
        fan: 3,
        ..Hub::default()
    });
    let first = f.connect(ep(1, 1), Instant::from_millis(0)).unwrap();
    let mut t = 0;
    run(&mut h, &mut f, &mut t, 2_000, |h, _| {
        h.app().connected.len() == 3
    });
    let app = h.app();
    assert_eq!(app.opened.len(), 3);
    let mut ids = app.opened.clone();
    ids.sort_by_key(|i| format!("{i}"));
    ids.dedup();
    assert_eq!(ids.len(), 3, "ids handed out in one callback must differ");
    let mut got = app.connected.clone();
    let mut want = app.opened.clone();
    got.sort_by_key(|i| format!("{i}"));
    want.sort_by_key(|i| format!("{i}"));
    assert_eq!(
        got, want,
        "each reserved id is the connection that connected"
    );
    assert_eq!(f.app().accepted.len(), 3);
    assert_eq!(
        app.errors,
        vec![ConnectError::Unaddressable, ConnectError::NoSourceAddress],
        "port 0 and a family the engine has no address of fail at once"
    );

    // From on_data of the accepted connection: peer(itself) is None, a live fan-out
    // connection is reachable.
    f.send(first, b"x", Instant::from_millis(t));
    run(&mut h, &mut f, &mut t, 1_000, |h, _| {
        !h.app().peer_checks.is_empty()
    });
    assert_eq!(h.app().peer_checks, vec![(false, false, true)]);
}

#[test]
fn reconnect_from_on_closed_and_dead_ids_are_unreachable() {
    let (mut h, mut f) = setup(Hub {
        fan: 1,
        reconnects: 1,
        ..Hub::default()
    });
    let first = f.connect(ep(1, 1), Instant::from_millis(0)).unwrap();
    let mut t = 0;
    run(&mut h, &mut f, &mut t, 2_000, |h, _| {
        h.app().connected.len() == 1
    });
    // The far side resets the fan-out connection: the hub hears on_closed and opens a
    // new one from there.
    let far_id = f.app().accepted[0];
    f.with_conn(far_id, Instant::from_millis(t), |c| c.abort());
    run(&mut h, &mut f, &mut t, 2_000, |h, _| {
        h.app().connected.len() == 2
    });
    let app = h.app();
    assert_eq!(app.closed.len(), 1);
    assert_eq!(app.closed[0].1, CloseReason::Reset);
    assert_eq!(
        app.connected.len(),
        2,
        "the reconnect from on_closed connected"
    );
    assert_ne!(app.connected[0], app.connected[1]);
    assert_eq!(f.app().accepted.len(), 2);

    // A dead id (the reset connection, even if its slot is reused) is unreachable.
    f.send(first, b"y", Instant::from_millis(t));
    run(&mut h, &mut f, &mut t, 1_000, |h, _| {
        !h.app().peer_checks.is_empty()
    });
    let (me, stale, _) = h.app().peer_checks[0];
    assert!(!me);
    assert!(!stale, "peer() reached a closed connection's id");
}

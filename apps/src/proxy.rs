//! L4 TCP proxy: every accepted connection gets its own connection to the backend, and
//! bytes are relayed both ways by the engine's two sockets alone.
//!
//! Relay: `on_data` of one leg sends straight into the other leg's send buffer
//! (`Conn::peer`) and consumes only what fit. What did not fit stays in this leg's
//! receive buffer, so its advertised window shrinks and a fast sender is held back by a
//! slow receiver on the other side: memory per pair is bounded by the four socket
//! buffers. When the other leg's send space comes back (`on_writable`), it wakes this leg,
//! whose waiting bytes are offered again. Bytes that arrive before the backend has
//! answered the SYN wait the same way.
//!
//! Closing: a FIN is passed on once every byte before it was relayed (`on_peer_fin`), so
//! each direction closes on its own (half-close works); a reset, a timeout or a refused
//! backend connection aborts the other leg (`on_closed`).

use c10m_stack::smoltcp::wire::IpEndpoint;
use c10m_stack::{App, CloseReason, Conn, ConnId};

/// Proxy to one backend.
#[derive(Debug)]
pub struct Proxy {
    backend: IpEndpoint,
    pub stats: ProxyStats,
}

#[derive(Debug, Default, Clone)]
pub struct ProxyStats {
    /// Client connections accepted (each opened a backend connection).
    pub accepted: u64,
    /// Client connections refused because no backend connection could be opened
    /// (ports or flow table exhausted).
    pub backend_open_errors: u64,
    /// Backend connections that completed their handshake.
    pub backend_connected: u64,
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
    /// FINs passed from one leg to the other.
    pub fins_relayed: u64,
    /// Legs aborted because the other one was reset, timed out or refused.
    pub resets_relayed: u64,
}

/// One leg of a proxied pair.
#[derive(Debug, Default, Clone, Copy)]
pub struct Leg {
    /// The other leg; None once it is gone.
    peer: Option<ConnId>,
    /// This leg is the connection to the backend.
    is_backend: bool,
    /// Backend leg: its handshake completed.
    connected: bool,
    /// Backend leg: the client sent FIN before the backend answered; pass it on once it
    /// does (closing a connection in SYN-SENT would drop it).
    fin_waiting: bool,
}

impl Proxy {
    pub fn new(backend: IpEndpoint) -> Proxy {
        Proxy {
            backend,
            stats: ProxyStats::default(),
        }
    }

    /// Count `n` bytes that arrived on a leg (`from_backend`: the backend's leg) and
    /// went to the other one.
    fn count_relayed(&mut self, from_backend: bool, n: usize) {
        if !from_backend {
            self.stats.bytes_to_backend += n as u64;
        } else {
            self.stats.bytes_to_client += n as u64;
        }
    }
}

impl App for Proxy {
    type ConnState = Leg;
    type Done = ();

    fn name(&self) -> &'static str {
        "proxy"
    }

    fn on_accept(&mut self, c: &mut Conn<'_, Self>) -> bool {
        let leg = Leg {
            peer: Some(c.id()),
            is_backend: true,
            ..Leg::default()
        };
        match c.connect(self.backend, leg) {
            Ok(b) => {
                c.state().peer = Some(b);
                self.stats.accepted += 1;
                true
            }
            Err(e) => {
                self.stats.backend_open_errors += 1;
                if self.stats.backend_open_errors.is_power_of_two() {
                    log::warn!(
                        "proxy: no connection to backend {} for {}: {e} ({} so far)",
                        self.backend,
                        c.id(),
                        self.stats.backend_open_errors
                    );
                }
                false // reset the client: it sees the failure at once
            }
        }
    }

    fn on_connected(&mut self, c: &mut Conn<'_, Self>) {
        self.stats.backend_connected += 1;
        let leg = c.state();
        leg.connected = true;
        if leg.fin_waiting {
            c.close();
            self.stats.fins_relayed += 1;
        }
    }

    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        let Leg {
            peer, is_backend, ..
        } = *c.state();
        let sent = match peer.and_then(|p| c.peer(p)) {
            // Only what fits the other leg's send buffer; the rest waits here.
            Some(mut other) => other.send(data),
            None => {
                // The other leg is gone: nobody will read this.
                c.abort();
                return data.len();
            }
        };
        self.count_relayed(is_backend, sent);
        sent
    }

    fn on_writable(&mut self, c: &mut Conn<'_, Self>) {
        // Send space came back: wake the other leg so its waiting bytes are offered again.
        if let Some(p) = c.state().peer {
            let _ = c.peer(p);
        }
    }

    fn on_peer_fin(&mut self, c: &mut Conn<'_, Self>) {
        // Every byte before the FIN was relayed: pass the FIN on and keep relaying the
        // other direction until its FIN comes back.
        match c.state().peer {
            Some(p) => {
                if let Some(mut other) = c.peer(p) {
                    let o = other.state();
                    if o.is_backend && !o.connected {
                        o.fin_waiting = true;
                    } else {
                        other.close();
                        self.stats.fins_relayed += 1;
                    }
                } else {
                    c.close();
                }
            }
            None => c.close(),
        }
    }

    fn on_closed(&mut self, c: &mut Conn<'_, Self>, reason: CloseReason) {
        let Some(p) = c.state().peer.take() else {
            return;
        };
        if reason != CloseReason::Normal {
            if let Some(mut other) = c.peer(p) {
                other.state().peer = None;
                other.abort();
                self.stats.resets_relayed += 1;
            }
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        vec![
            ("app_proxy_accepted", s.accepted),
            ("app_proxy_backend_open_errors", s.backend_open_errors),
            ("app_proxy_backend_connected", s.backend_connected),
            ("app_proxy_bytes_to_backend", s.bytes_to_backend),
            ("app_proxy_bytes_to_client", s.bytes_to_client),
            ("app_proxy_fins_relayed", s.fins_relayed),
            ("app_proxy_resets_relayed", s.resets_relayed),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use c10m_stack::smoltcp::time::Instant;
    use c10m_stack::smoltcp::wire::{IpAddress, Ipv4Address};
    use c10m_stack::testkit::{payload, run_pair as run};
    use c10m_stack::{Engine, EngineConfig, MemLink};
    use sha2::{Digest, Sha256};

    /// The world around the proxy, on one engine: echo servers (accepted connections) and
    /// clients (opened with `connect_with`) that send a payload, half-close, and hash what
    /// comes back.
    #[derive(Default)]
    struct World {
        payload: Vec<u8>,
        /// Clients stop reading while set (a slow client).
        stall: bool,
        /// Clients abort once this much came back (the pair is established by then).
        abort_after: Option<usize>,
        done: Vec<(usize, [u8; 32])>,
        client_closed: Vec<CloseReason>,
        server_closed: Vec<CloseReason>,
        sent_total: usize,
    }

    #[derive(Default)]
    enum Role {
        #[default]
        Server,
        Client {
            sent: usize,
            got: usize,
            hash: Sha256,
        },
    }

    impl World {
        fn push(&mut self, c: &mut Conn<'_, Self>) {
            let Role::Client { sent, .. } = c.state() else {
                return;
            };
            let mut at = *sent;
            while at < self.payload.len() {
                let n = c.send(&self.payload[at..]);
                if n == 0 {
                    break;
                }
                at += n;
                self.sent_total += n;
            }
            if let Role::Client { sent, .. } = c.state() {
                *sent = at;
            }
            if at == self.payload.len() {
                c.close(); // half-close: the echo keeps coming back
            }
        }
    }

    impl App for World {
        type ConnState = Role;
        type Done = ();

        fn on_connected(&mut self, c: &mut Conn<'_, Self>) {
            self.push(c);
        }
        fn on_writable(&mut self, c: &mut Conn<'_, Self>) {
            self.push(c);
        }
        fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
            match c.state() {
                Role::Server => c.send(data),
                Role::Client { .. } if self.stall => 0,
                Role::Client { got, hash, .. } => {
                    *got += data.len();
                    hash.update(data);
                    if self.abort_after.is_some_and(|a| *got >= a) {
                        c.abort();
                    }
                    data.len()
                }
            }
        }
        fn on_closed(&mut self, c: &mut Conn<'_, Self>, r: CloseReason) {
            match std::mem::take(c.state()) {
                Role::Server => self.server_closed.push(r),
                Role::Client { got, hash, .. } => {
                    self.client_closed.push(r);
                    if r == CloseReason::Normal {
                        self.done.push((got, hash.finalize().into()));
                    }
                }
            }
        }
    }

    fn cfg(last: u8, buf: usize) -> EngineConfig {
        EngineConfig {
            mac: [0x02, 0, 0, 0, 0, last],
            ipv4: Some((Ipv4Address::new(198, 18, 0, last), 24)),
            tcp_rx_buf: buf,
            tcp_tx_buf: buf,
            seed: last as u64,
            ..Default::default()
        }
    }

    const PROXY_PORT: u16 = 8080;

    /// World on .1 (echo on port 7), proxy on .2 (port 8080 -> .1:`backend_port`).
    fn setup(
        world: World,
        world_buf: usize,
        proxy_buf: usize,
        backend_port: u16,
    ) -> (Engine<MemLink, World>, Engine<MemLink, Proxy>) {
        let (la, lb) = MemLink::pair();
        let t0 = Instant::from_millis(0);
        let mut w = Engine::new(la, cfg(1, world_buf), world, t0);
        w.listen(7, 64).unwrap();
        let backend = IpEndpoint::new(IpAddress::v4(198, 18, 0, 1), backend_port);
        let mut p = Engine::new(lb, cfg(2, proxy_buf), Proxy::new(backend), t0);
        p.listen(PROXY_PORT, 64).unwrap();
        (w, p)
    }

    fn open_clients(w: &mut Engine<MemLink, World>, n: usize) {
        let to = IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), PROXY_PORT);
        for _ in 0..n {
            let st = Role::Client {
                sent: 0,
                got: 0,
                hash: Sha256::new(),
            };
            w.connect_with(to, st, Instant::from_millis(0)).unwrap();
        }
    }

    #[test]
    fn relays_both_ways_with_half_close_and_leaves_nothing() {
        let data = payload(1 << 20, 7);
        let want: [u8; 32] = Sha256::digest(&data).into();
        let world = World {
            payload: data,
            ..World::default()
        };
        let (mut w, mut p) = setup(world, 16 * 1024, 16 * 1024, 7);
        open_clients(&mut w, 3);
        let mut t = 0;
        run(&mut w, &mut p, &mut t, 60_000, |w, _| {
            w.app().client_closed.len() == 3
        });
        let app = w.app();
        assert_eq!(app.client_closed, vec![CloseReason::Normal; 3]);
        for (got, h) in &app.done {
            assert_eq!(*got, 1 << 20);
            assert_eq!(*h, want, "relayed bytes differ");
        }
        let s = &p.app().stats;
        assert_eq!(s.accepted, 3);
        assert_eq!(s.backend_connected, 3);
        assert_eq!(s.bytes_to_backend, 3 << 20);
        assert_eq!(s.bytes_to_client, 3 << 20);
        assert_eq!(s.fins_relayed, 6, "each direction's FIN passed on");
        // TIME-WAIT (10 s in smoltcp) ends, then the proxy holds no flow.
        run(&mut w, &mut p, &mut t, 30_000, |w, p| {
            p.flow_count() == 0 && w.flow_count() == 0
        });
        assert_eq!(p.flow_count(), 0, "proxy flows left behind");
        assert_eq!(w.app().server_closed, vec![CloseReason::Normal; 3]);
    }

    #[test]
    fn slow_client_holds_back_the_backend_within_the_buffers() {
        let buf = 8 * 1024;
        let world = World {
            payload: payload(1 << 20, 7),
            stall: true,
            ..World::default()
        };
        let (mut w, mut p) = setup(world, buf, buf, 7);
        open_clients(&mut w, 1);
        let mut t = 0;
        run(&mut w, &mut p, &mut t, 3_000, |_, _| false);
        // Client (not reading) <- proxy <- echo server <- proxy <- client (sending): every
        // buffer on the way is full and nothing more moves. Eight socket buffers of `buf`.
        let sent = w.app().sent_total;
        assert!(sent > 0);
        assert!(
            sent <= 8 * buf + 4096,
            "client could send {sent} bytes with its reader stalled: relay not bounded"
        );
        let s = p.app().stats.clone();
        assert!(s.bytes_to_backend as usize <= sent);
        run(&mut w, &mut p, &mut t, 1_000, |_, _| false);
        assert_eq!(w.app().sent_total, sent, "stalled transfer moved");
        // The reader wakes up: everything arrives, intact.
        w.app_mut().stall = false;
        let want: [u8; 32] = Sha256::digest(&w.app().payload).into();
        run(&mut w, &mut p, &mut t, 60_000, |w, _| {
            !w.app().client_closed.is_empty()
        });
        assert_eq!(w.app().done, vec![(1 << 20, want)]);
    }

    #[test]
    fn fin_before_the_backend_answers_is_passed_on_after() {
        // Clients with nothing to say half-close at once: the FIN reaches the proxy while
        // its backend connection is still in SYN-SENT.
        let (mut w, mut p) = setup(World::default(), 4096, 4096, 7);
        open_clients(&mut w, 2);
        let mut t = 0;
        run(&mut w, &mut p, &mut t, 5_000, |w, _| {
            w.app().client_closed.len() == 2 && w.app().server_closed.len() == 2
        });
        assert_eq!(w.app().client_closed, vec![CloseReason::Normal; 2]);
        assert_eq!(w.app().server_closed, vec![CloseReason::Normal; 2]);
        assert_eq!(w.app().done, vec![(0, Sha256::digest(b"").into()); 2]);
        assert_eq!(p.app().stats.fins_relayed, 4);
    }

    #[test]
    fn refused_backend_resets_the_client() {
        let world = World {
            payload: b"hello".to_vec(),
            ..World::default()
        };
        // Nothing listens on port 9 of the world: the backend answers RST.
        let (mut w, mut p) = setup(world, 4096, 4096, 9);
        open_clients(&mut w, 2);
        let mut t = 0;
        run(&mut w, &mut p, &mut t, 5_000, |w, p| {
            w.app().client_closed.len() == 2 && p.flow_count() == 0
        });
        assert_eq!(w.app().client_closed, vec![CloseReason::Reset; 2]);
        assert_eq!(p.app().stats.resets_relayed, 2);
        assert_eq!(p.flow_count(), 0);
    }

    #[test]
    fn client_reset_aborts_the_backend_leg() {
        let world = World {
            payload: payload(256 * 1024, 7),
            abort_after: Some(32 * 1024),
            ..World::default()
        };
        let (mut w, mut p) = setup(world, 16 * 1024, 16 * 1024, 7);
        open_clients(&mut w, 1);
        let mut t = 0;
        run(&mut w, &mut p, &mut t, 5_000, |w, p| {
            !w.app().server_closed.is_empty() && p.flow_count() == 0
        });
        assert_eq!(w.app().client_closed, vec![CloseReason::Aborted]);
        assert_eq!(w.app().server_closed, vec![CloseReason::Reset]);
        assert_eq!(p.app().stats.resets_relayed, 1);
        assert_eq!(p.flow_count(), 0);
    }
}

//! The flow-scaling scenario (benches/benches/flow_scale.rs; design in shared/DESIGN.md,
//! "smoltcp at a million connections"): one server engine running an echo app over a
//! [`MemLink`], `N` flows established by a raw peer through crafted handshakes, then one
//! 16-byte data segment at a time for a uniformly random flow, each followed by one
//! `Engine::poll` that delivers it to the app and emits the echo.
//!
//! The peer's own per-flow work (choosing the flow, its sequence numbers, building the
//! frame, checking the echo) is done in chunks *outside* the timed region: the timed
//! region is `inject` + `poll` + `drain_sent` per segment, i.e. the engine plus the
//! in-memory link's queue operations. Every echo is checked (flow, sequence number,
//! acknowledgment, payload) after each chunk, so a broken engine cannot look fast.
//!
//! Clients live in 198.19.0.0/16, off-link from the engine's 198.18.0.2/24: every reply
//! goes through the one gateway (198.18.0.1) whose MAC the engine learns from one ARP
//! request, so the neighbour cache holds one entry however many clients there are.
//!
//! [`Floor`] is the memory floor next to it: a `FxHashMap` from the same 4-tuple type to
//! a boxed per-flow state of comparable size, one lookup of a random key plus a touch of
//! the state per iteration.

use crate::frames::{self, Seg};
use c10m_stack::smoltcp::time::Instant;
use c10m_stack::smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, TcpControl};
use c10m_stack::wire::FourTuple;
use c10m_stack::{App, Conn, Engine, EngineConfig, MemLink};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::time::Duration;

pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
pub const SERVER_IP: Ipv4Address = Ipv4Address::new(198, 18, 0, 2);
pub const GATEWAY_IP: Ipv4Address = Ipv4Address::new(198, 18, 0, 1);
pub const ECHO_PORT: u16 = 7;
/// The data segment every iteration sends (and expects back).
pub const PAYLOAD: [u8; 16] = *b"c10m-flow-scale!";
/// Per-flow TCP buffers, as in the issue.
pub const TCP_BUF: usize = 2048;
/// Segments prepared (and then timed) at once.
pub const CHUNK: usize = 4096;

const PORTS_PER_IP: u32 = 64_000;
const BASE_PORT: u16 = 1024;
/// Handshakes in flight at once while establishing flows (also the listener's backlog).
const HANDSHAKE_BATCH: usize = 2048;

/// The engine's (fixed) clock during a bench: timers armed by the echo (RTO) never come
/// due, so the only work per segment is the segment.
pub fn bench_now() -> Instant {
    Instant::from_millis(1_000)
}

/// Echo server app: every byte back.
#[derive(Default)]
pub struct Echo;

impl App for Echo {
    type ConnState = ();
    type Done = ();

    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        c.send(data)
    }
}

/// Client address of flow `i` (ports 1024.. on 198.19.x.y, 64 000 ports per address).
pub fn client_addr(i: u32) -> (Ipv4Address, u16) {
    let k = i / PORTS_PER_IP + 1;
    (
        Ipv4Address::new(198, 19, (k >> 8) as u8, k as u8),
        BASE_PORT + (i % PORTS_PER_IP) as u16,
    )
}

/// Inverse of [`client_addr`].
pub fn client_index(ip: Ipv4Address, port: u16) -> Option<u32> {
    let o = ip.octets();
    if o[0] != 198 || o[1] != 19 || port < BASE_PORT {
        return None;
    }
    let k = ((o[2] as u32) << 8 | o[3] as u32).checked_sub(1)?;
    let p = (port - BASE_PORT) as u32;
    (p < PORTS_PER_IP).then_some(k * PORTS_PER_IP + p)
}

/// The 4-tuple of flow `i` as the engine keys it.
pub fn four_tuple(i: u32) -> FourTuple {
    let (ip, port) = client_addr(i);
    FourTuple {
        local: IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), ECHO_PORT),
        remote: IpEndpoint::new(IpAddress::Ipv4(ip), port),
    }
}

/// xorshift64*: a uniform flow index in `0..n`.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (((x >> 32) * n as u64) >> 32) as usize
    }
}

/// The peer's view of one flow.
#[derive(Clone, Copy, Default)]
struct PeerFlow {
    /// Our next sequence number.
    snd_nxt: u32,
    /// The engine's next sequence number (what we acknowledge).
    rcv_nxt: u32,
}

/// What one prepared segment must produce.
#[derive(Clone, Copy)]
struct Expect {
    flow: u32,
    echo_seq: u32,
    echo_ack: u32,
}

fn isn(i: u32) -> u32 {
    i.wrapping_mul(2_654_435_761).wrapping_add(12_345)
}

/// The engine config of the bench: 2 KiB + 2 KiB buffers, room for `flows`.
pub fn engine_config(flows: usize) -> EngineConfig {
    EngineConfig {
        mac: SERVER_MAC,
        ipv4: Some((SERVER_IP, 24)),
        gateway4: Some(GATEWAY_IP),
        tcp_rx_buf: TCP_BUF,
        tcp_tx_buf: TCP_BUF,
        max_flows: flows + 1024,
        seed: 0xc10,
        ..Default::default()
    }
}

/// A server engine with `n` established echo flows and the peer that drives them.
pub struct EchoBench {
    pub engine: Engine<MemLink, Echo>,
    /// The peer's end of the link (kept for symmetry; frames go through the engine's end).
    _peer: MemLink,
    flows: Vec<PeerFlow>,
    now: Instant,
    rng: Rng,
    prepared: Vec<Vec<u8>>,
    expect: Vec<Expect>,
    sent: Vec<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    /// Segments sent and echoes checked.
    pub segments: u64,
    /// Segments per `poll` (distinct random flows each): 1 measures one segment's latency
    /// through the loop; more is a loaded engine's receive batch (its lookups overlap).
    pub batch: usize,
    /// The longest `poll` while the flows were established (each carries up to a receive
    /// batch of SYNs or ACKs): where growing tables would stall the loop.
    pub setup_worst_poll: Duration,
}

impl EchoBench {
    /// Build the engine and establish `n` flows (panics if any handshake fails).
    pub fn new(n: usize) -> EchoBench {
        assert!(n >= 1 && n as u64 <= PORTS_PER_IP as u64 * 65_000);
        let now = bench_now();
        let (server_end, peer) = MemLink::pair();
        let mut engine = Engine::new(server_end, engine_config(n), Echo, now);
        engine
            .listen(ECHO_PORT, HANDSHAKE_BATCH)
            .expect("listen on the echo port");

        // The gateway introduces itself: the engine learns its MAC from the request.
        engine
            .link()
            .inject(frames::arp_request(GATEWAY_MAC, GATEWAY_IP, SERVER_IP));
        engine.poll(now);
        let out = engine.link().drain_sent();
        assert!(
            out.len() == 1 && frames::is_arp_reply(&out[0]),
            "the engine must answer the gateway's ARP request"
        );

        let mut flows = vec![PeerFlow::default(); n];
        let mut buf = Vec::new();
        let mut worst_poll = Duration::ZERO;
        let mut start = 0usize;
        while start < n {
            let end = (start + HANDSHAKE_BATCH).min(n);
            for i in start..end {
                let (ip, port) = client_addr(i as u32);
                frames::tcp_frame(
                    &mut buf,
                    &Seg {
                        src_mac: GATEWAY_MAC,
                        dst_mac: SERVER_MAC,
                        src: (ip, port),
                        dst: (SERVER_IP, ECHO_PORT),
                        control: TcpControl::Syn,
                        seq: isn(i as u32),
                        ack: None,
                        window: 65_535,
                        mss: Some(1460),
                        payload: &[],
                    },
                );
                engine.link().inject(std::mem::take(&mut buf));
            }
            worst_poll = worst_poll.max(poll_until_drained(&mut engine, now));
            let synacks = engine.link().drain_sent();
            assert_eq!(synacks.len(), end - start, "one SYN-ACK per SYN");
            for f in &synacks {
                let p = frames::parse_tcp(f).expect("SYN-ACK is TCP");
                assert_eq!(p.dst_mac, GATEWAY_MAC, "replies go to the gateway");
                let i = client_index(p.dst.0, p.dst.1).expect("SYN-ACK to a client") as usize;
                assert!(p.syn && p.ack_flag, "flow {i}: expected SYN-ACK, got {p:?}");
                assert_eq!(p.ack, isn(i as u32).wrapping_add(1));
                flows[i] = PeerFlow {
                    snd_nxt: isn(i as u32).wrapping_add(1),
                    rcv_nxt: p.seq.wrapping_add(1),
                };
            }
            for (i, fl) in flows.iter().enumerate().take(end).skip(start) {
                let (ip, port) = client_addr(i as u32);
                frames::tcp_frame(
                    &mut buf,
                    &Seg {
                        src_mac: GATEWAY_MAC,
                        dst_mac: SERVER_MAC,
                        src: (ip, port),
                        dst: (SERVER_IP, ECHO_PORT),
                        control: TcpControl::None,
                        seq: fl.snd_nxt,
                        ack: Some(fl.rcv_nxt),
                        window: 65_535,
                        mss: None,
                        payload: &[],
                    },
                );
                engine.link().inject(std::mem::take(&mut buf));
            }
            worst_poll = worst_poll.max(poll_until_drained(&mut engine, now));
            let extra = engine.link().drain_sent();
            assert!(extra.is_empty(), "the final ACK needs no answer");
            start = end;
        }
        assert_eq!(engine.flow_count(), n, "every handshake completed");
        assert_eq!(engine.stats().accepted, n as u64);

        EchoBench {
            engine,
            _peer: peer,
            flows,
            now,
            rng: Rng::new(0x5eed_f10e ^ n as u64),
            prepared: Vec::with_capacity(CHUNK),
            expect: Vec::with_capacity(CHUNK),
            sent: Vec::with_capacity(CHUNK),
            spare: Vec::new(),
            segments: 0,
            batch: 1,
            setup_worst_poll: worst_poll,
        }
    }

    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Build the next `k` data segments (uniformly random flows) without sending them.
    pub fn prepare(&mut self, k: usize) {
        assert!(self.prepared.is_empty(), "run the prepared chunk first");
        self.expect.clear();
        let n = self.flows.len();
        let batch = self.batch.clamp(1, n);
        for j in 0..k {
            // Distinct flows within one batch: two segments of one flow in a batch would be
            // answered by one combined echo.
            let group = &self.expect[self.expect.len() - j % batch..];
            let mut i = self.rng.below(n);
            while group.iter().any(|e| e.flow == i as u32) {
                i = self.rng.below(n);
            }
            let fl = &mut self.flows[i];
            let (ip, port) = client_addr(i as u32);
            let mut buf = self.spare.pop().unwrap_or_default();
            frames::tcp_frame(
                &mut buf,
                &Seg {
                    src_mac: GATEWAY_MAC,
                    dst_mac: SERVER_MAC,
                    src: (ip, port),
                    dst: (SERVER_IP, ECHO_PORT),
                    control: TcpControl::Psh,
                    seq: fl.snd_nxt,
                    ack: Some(fl.rcv_nxt),
                    window: 65_535,
                    mss: None,
                    payload: &PAYLOAD,
                },
            );
            fl.snd_nxt = fl.snd_nxt.wrapping_add(PAYLOAD.len() as u32);
            self.expect.push(Expect {
                flow: i as u32,
                echo_seq: fl.rcv_nxt,
                echo_ack: fl.snd_nxt,
            });
            fl.rcv_nxt = fl.rcv_nxt.wrapping_add(PAYLOAD.len() as u32);
            self.prepared.push(buf);
        }
    }

    /// Send the prepared segments one at a time, each followed by one `poll` and a drain
    /// of what the engine sent. Returns the time this took (the measured region).
    pub fn run_prepared(&mut self) -> Duration {
        let batch = self.batch.clamp(1, self.flows.len());
        let mut frames = std::mem::take(&mut self.prepared).into_iter().peekable();
        let t0 = std::time::Instant::now();
        while frames.peek().is_some() {
            for f in frames.by_ref().take(batch) {
                self.engine.link().inject(f);
            }
            self.engine.poll(self.now);
            self.sent.extend(self.engine.link().drain_sent());
        }
        t0.elapsed()
    }

    /// Check every echo of the last chunk against what the peer expects; recycle buffers.
    pub fn verify(&mut self) {
        assert_eq!(
            self.sent.len(),
            self.expect.len(),
            "exactly one echo segment per data segment"
        );
        for (f, e) in self.sent.iter().zip(&self.expect) {
            let p = frames::parse_tcp(f).expect("echo is TCP");
            let i = client_index(p.dst.0, p.dst.1);
            assert_eq!(i, Some(e.flow), "echo for the wrong flow: {p:?}");
            assert!(p.ack_flag && !p.syn && !p.rst && !p.fin, "flags: {p:?}");
            assert_eq!(p.seq, e.echo_seq, "flow {}: echo seq", e.flow);
            assert_eq!(p.ack, e.echo_ack, "flow {}: echo ack", e.flow);
            assert_eq!(&f[p.payload.0..p.payload.1], &PAYLOAD);
        }
        self.segments += self.expect.len() as u64;
        self.expect.clear();
        self.spare.append(&mut self.sent);
    }

    /// One `poll` with one ARP request in it (from `sender` asking for `target`), as the
    /// broadcasts of a LAN arrive. Returns its duration and the frames the engine sent.
    pub fn poll_with_arp(
        &mut self,
        sender: ([u8; 6], Ipv4Address),
        target: Ipv4Address,
    ) -> (Duration, usize) {
        self.engine
            .link()
            .inject(frames::arp_request(sender.0, sender.1, target));
        let t0 = std::time::Instant::now();
        self.engine.poll(self.now);
        let dt = t0.elapsed();
        (dt, self.engine.link().drain_sent().len())
    }

    /// `iters` segments in chunks: prepare (untimed), run (timed), verify (untimed).
    /// Calls `each(segments, elapsed)` per chunk and returns the total timed duration.
    pub fn run(&mut self, iters: u64, mut each: impl FnMut(u64, Duration)) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let k = left.min(CHUNK as u64);
            self.prepare(k as usize);
            let dt = self.run_prepared();
            self.verify();
            each(k, dt);
            total += dt;
            left -= k;
        }
        total
    }
}

/// Poll until the link's receive queue is empty; returns the longest single `poll`.
fn poll_until_drained(engine: &mut Engine<MemLink, Echo>, now: Instant) -> Duration {
    let mut worst = Duration::ZERO;
    let mut timed = |engine: &mut Engine<MemLink, Echo>| {
        let t0 = std::time::Instant::now();
        engine.poll(now);
        worst = worst.max(t0.elapsed());
    };
    while engine.link().rx_pending() > 0 {
        timed(engine);
    }
    // One more for egress that became due while the last batch was handled.
    timed(engine);
    worst
}

type FxBuild = BuildHasherDefault<rustc_hash::FxHasher>;

/// Per-flow state of the memory floor: about the size of a `tcp::Socket` (408-480 B),
/// optionally with 2 KiB receive and transmit buffers in their own allocations, as the
/// engine has.
pub struct FloorFlow {
    sock: [u64; 60],
    bufs: Option<RxTx>,
}

/// Receive and transmit buffer of a [`FloorFlow`].
type RxTx = (Box<[u8]>, Box<[u8]>);

/// The memory floor: `FxHashMap<FourTuple, Box<FloorFlow>>` with `n` entries; per
/// iteration one lookup of a random key and a touch of the state (three cache lines of the
/// socket-sized part; with buffers, 16 bytes copied into the receive buffer and from there
/// into the transmit buffer at a moving offset, as an echo does).
pub struct Floor {
    map: HashMap<FourTuple, Box<FloorFlow>, FxBuild>,
    n: usize,
    rng: Rng,
    keys: Vec<FourTuple>,
    serial: bool,
    pub sink: u64,
}

impl Floor {
    /// `serial`: each lookup's address depends on the previous touch's result, so the CPU
    /// cannot overlap the cache misses of consecutive iterations. That is the engine's
    /// situation when it handles one segment at a time (hundreds of instructions per
    /// segment, beyond the reach of out-of-order execution); `false` gives the lower bound
    /// with the misses of several lookups in flight at once.
    pub fn new(n: usize, with_buffers: bool, serial: bool) -> Floor {
        let mut map = HashMap::with_capacity_and_hasher(0, FxBuild::default());
        for i in 0..n {
            let bufs = with_buffers.then(|| {
                (
                    vec![0u8; TCP_BUF].into_boxed_slice(),
                    vec![0u8; TCP_BUF].into_boxed_slice(),
                )
            });
            map.insert(
                four_tuple(i as u32),
                Box::new(FloorFlow {
                    sock: [i as u64; 60],
                    bufs,
                }),
            );
        }
        Floor {
            map,
            n,
            rng: Rng::new(0xf100 ^ n as u64),
            keys: Vec::with_capacity(CHUNK),
            serial,
            sink: 0,
        }
    }

    fn touch(f: &mut FloorFlow) -> u64 {
        f.sock[0] = f.sock[0].wrapping_add(1);
        f.sock[17] ^= f.sock[0];
        f.sock[45] = f.sock[45].wrapping_add(f.sock[17]);
        if let Some((rx, tx)) = f.bufs.as_mut() {
            let off = (f.sock[0] as usize * PAYLOAD.len()) % TCP_BUF;
            rx[off..off + PAYLOAD.len()].copy_from_slice(&PAYLOAD);
            tx[off..off + PAYLOAD.len()].copy_from_slice(&rx[off..off + PAYLOAD.len()]);
            f.sock[45] ^= tx[off] as u64;
        }
        f.sock[45]
    }

    /// Same chunking as [`EchoBench::run`]: random keys drawn untimed, lookups timed.
    pub fn run(&mut self, iters: u64, mut each: impl FnMut(u64, Duration)) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let k = left.min(CHUNK as u64);
            self.keys.clear();
            for _ in 0..k {
                let i = self.rng.below(self.n);
                self.keys.push(four_tuple(i as u32));
            }
            // Zero, but opaque to the compiler: `acc & zero` makes the next key's address
            // depend on the last touch without changing which key it is.
            let zero = std::hint::black_box(if self.serial { 0 } else { u64::MAX });
            let t0 = std::time::Instant::now();
            let mut acc = 0u64;
            if self.serial {
                for j in 0..self.keys.len() {
                    let key = &self.keys[j + (acc & zero) as usize];
                    let f = self.map.get_mut(key).expect("every key is present");
                    acc = acc.wrapping_add(Self::touch(f));
                }
            } else {
                for key in &self.keys {
                    let f = self.map.get_mut(key).expect("every key is present");
                    acc = acc.wrapping_add(Self::touch(f));
                }
            }
            let dt = t0.elapsed();
            self.sink = self.sink.wrapping_add(std::hint::black_box(acc));
            each(k, dt);
            total += dt;
            left -= k;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addressing_round_trips() {
        for i in [0u32, 1, 63_999, 64_000, 999_999, 4_000_000] {
            let (ip, port) = client_addr(i);
            assert_eq!(client_index(ip, port), Some(i));
        }
    }

    #[test]
    fn echo_bench_establishes_and_echoes() {
        let mut b = EchoBench::new(300);
        assert_eq!(b.engine.flow_count(), 300);
        // Enough segments that most flows see several, with the acks piggybacked.
        b.run(3 * CHUNK as u64 / 2, |_, _| {});
        assert_eq!(b.segments, 3 * CHUNK as u64 / 2);
        assert_eq!(b.engine.flow_count(), 300);
        assert_eq!(b.engine.stats().tcp_no_flow, 0);
    }

    #[test]
    fn floor_runs() {
        for (bufs, serial) in [(true, true), (true, false), (false, true)] {
            let mut f = Floor::new(100, bufs, serial);
            f.run(1000, |_, _| {});
        }
    }
}

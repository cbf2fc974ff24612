//! One engine: one link (one NIC queue), one smoltcp `Interface`, its own flow table,
//! timers and application instance. Nothing here is shared with other engines.
//!
//! smoltcp scans its whole `SocketSet` for every segment, every egress and every
//! `poll_at`. The engine therefore gives each TCP flow a one-socket set of its own and
//! demultiplexes by 4-tuple in its own hash table: a call into smoltcp only ever sees
//! the flow at hand (or the small shared set of UDP sockets). See ../shared/DESIGN.md.

use crate::app::{App, CloseReason, Conn, ConnFlags, ConnId, Datagram};
use crate::device::{LinkDevice, TxDrops};
use crate::link::{Link, TxSink};
use crate::neigh;
use crate::offload::{OffloadPort, Pool};
use crate::peer::{plan_connect, Net, PendingConnect, EPHEMERAL};
use crate::stats::Stats;
use crate::table::FlowTable;
use crate::timer::TimerWheel;
use crate::wire::{classify, Class, FourTuple};
use rustc_hash::FxHashMap;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address, Ipv6Address};
use std::sync::atomic::{AtomicBool, Ordering};

/// Engine settings. Sizes are per flow unless noted.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub mac: [u8; 6],
    pub ipv4: Option<(Ipv4Address, u8)>,
    pub ipv6: Option<(Ipv6Address, u8)>,
    pub gateway4: Option<Ipv4Address>,
    pub gateway6: Option<Ipv6Address>,
    pub tcp_rx_buf: usize,
    pub tcp_tx_buf: usize,
    /// Flows (any state) the engine holds at most; SYNs beyond are dropped and counted.
    pub max_flows: usize,
    /// Seed for ISNs and ephemeral choices; give every engine its own.
    pub seed: u64,
    pub rx_batch: usize,
    /// Segments one flow may emit per loop iteration before others get their turn.
    pub egress_quota: usize,
    /// Adaptive idle: keep spinning this long after the last work before sleeping.
    pub idle_spin_us: u64,
    /// How long a passive open may sit in SYN-RECEIVED without hearing from the peer.
    /// smoltcp retransmits the SYN-ACK forever, so without this `backlog` spoofed SYNs
    /// would close a listener for good (Linux gives up after ~63 s).
    pub half_open_timeout: Duration,
    /// A flow that hears nothing from its peer this long is aborted (`TimedOut`). smoltcp
    /// has no retransmission limit, so this is what frees flows of dead peers and black
    /// holes (RFC 9293 3.8.3: R2 at least 100 s). It should span several keep-alive
    /// intervals, so one lost probe reply does not end a live connection. None: never.
    pub user_timeout: Option<Duration>,
    /// Keep-alive probe interval for idle flows, so a live but quiet peer answers within
    /// `user_timeout`. None: no probes (then `user_timeout` also ends idle flows).
    pub keep_alive: Option<Duration>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            mac: [0x02, 0, 0, 0, 0, 1],
            ipv4: None,
            ipv6: None,
            gateway4: None,
            gateway6: None,
            tcp_rx_buf: 64 * 1024,
            tcp_tx_buf: 64 * 1024,
            max_flows: 100_000,
            seed: 0x5eed,
            rx_batch: 64,
            egress_quota: 64,
            idle_spin_us: 200,
            half_open_timeout: Duration::from_secs(30),
            user_timeout: Some(Duration::from_secs(300)),
            keep_alive: Some(Duration::from_secs(60)),
        }
    }
}

/// How the loop behaves when there is no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Busy-poll forever: lowest latency, one full core.
    Spin,
    /// Spin while traffic flows, then block in the link's `wait` until a frame or the
    /// next timer.
    Adaptive,
}

/// Errors of the listener/binding API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindError {
    PortInUse(u16),
    /// Backlog must be at least 1.
    BadBacklog,
    /// Buffers must be at least 64 bytes.
    BadBuffer,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::PortInUse(p) => write!(f, "port {p} is already bound on this engine"),
            BindError::BadBacklog => write!(f, "backlog must be at least 1"),
            BindError::BadBuffer => write!(f, "TCP buffers must be at least 64 bytes"),
        }
    }
}
impl std::error::Error for BindError {}

/// Errors of [`Engine::connect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// The engine has no address of the remote's family.
    NoSourceAddress,
    /// Every ephemeral port towards this remote is in use (TIME-WAIT included).
    PortsExhausted,
    FlowTableFull,
    /// smoltcp refused the endpoint (unspecified address or port 0).
    Unaddressable,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::NoSourceAddress => write!(f, "no local address of the remote's family"),
            ConnectError::PortsExhausted => {
                write!(f, "all ephemeral ports towards this remote are in use")
            }
            ConnectError::FlowTableFull => write!(f, "flow table full (raise max_flows)"),
            ConnectError::Unaddressable => write!(f, "remote endpoint is not addressable"),
        }
    }
}
impl std::error::Error for ConnectError {}

/// No flow for this frame (first-pass lookup result).
const NO_FLOW: u32 = u32::MAX;

pub(crate) struct Listener {
    backlog: usize,
    half_open: usize,
    rx_buf: usize,
    tx_buf: usize,
    serve_first: bool,
}

/// Settings of one listening port.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// Connections in the handshake at once; further SYNs are dropped and counted.
    pub backlog: usize,
    /// Receive buffer per connection, bytes (the window it can advertise).
    pub rx_buf: usize,
    /// Send buffer per connection, bytes.
    pub tx_buf: usize,
    /// Service this listener's connections before the others in every loop iteration:
    /// for small latency-sensitive requests next to bulk transfers on the same core, so
    /// their replies are not queued behind the bulk flows' callbacks and ACKs.
    pub serve_first: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Passive open in progress; counts against the listener's backlog.
    HalfOpen,
    /// Active open in progress (SYN-SENT).
    Connecting,
    /// Handed to the app.
    Open,
    /// The app was told it closed; the socket may linger in TIME-WAIT.
    Done,
}

pub(crate) struct Flow<S> {
    key: FourTuple,
    set: SocketSet<'static>,
    handle: SocketHandle,
    pub(crate) phase: Phase,
    pub(crate) dirty: bool,
    /// Serviced before other flows (its listener's `serve_first`).
    first: bool,
    pub(crate) flags: ConnFlags,
    rst_seen: bool,
    fin_told: bool,
    timer_seq: u32,
    /// Deadline (ms) of this flow's live wheel entry; u64::MAX when it has none.
    timer_at: u64,
    /// The app's timer (`Conn::set_timer`).
    app_timer: Option<Instant>,
    state: S,
}

impl<S> Flow<S> {
    /// The app's view of this flow, lent to one callback; `net` reaches the engine's
    /// other flows (None for a handle obtained through `Conn::peer`).
    pub(crate) fn conn<'a, A: App<ConnState = S>>(
        &'a mut self,
        id: ConnId,
        now: Instant,
        offload: Option<&'a mut OffloadPort<A::Done>>,
        offloads: &'a mut u32,
        net: Option<Net<'a, S>>,
    ) -> Conn<'a, A> {
        Conn {
            id,
            sock: self.set.get_mut::<tcp::Socket>(self.handle),
            flags: &mut self.flags,
            state: &mut self.state,
            timer: &mut self.app_timer,
            now,
            offload,
            offloads,
            net,
        }
    }
}

/// A Closed TCP socket in its own one-socket set, buffers kept, ready for reuse.
type PooledSocket = (SocketSet<'static>, SocketHandle);

pub(crate) struct Slot<S> {
    pub(crate) gen: u32,
    pub(crate) flow: Option<Flow<S>>,
}

/// The slab split around `idx`: the slots before it, its own, the slots after it. A
/// callback's handle borrows the flow at `idx` and reaches the others through the two
/// slices (`Conn::peer`).
fn split_slots<S>(
    slots: &mut [Slot<S>],
    idx: u32,
) -> (&mut [Slot<S>], &mut Slot<S>, &mut [Slot<S>]) {
    let (before, rest) = slots.split_at_mut(idx as usize);
    let (cur, after) = rest.split_first_mut().expect("slot index in range");
    (before, cur, after)
}

struct Core<A: App> {
    cfg: EngineConfig,
    iface: Interface,
    misc: SocketSet<'static>,
    udp: Vec<SocketHandle>,
    misc_dirty: bool,
    misc_deadline: Option<Instant>,
    listeners: FxHashMap<u16, Listener>,
    table: FlowTable,
    slots: Vec<Slot<A::ConnState>>,
    free_slots: Vec<u32>,
    /// Recycled one-socket sets (socket Closed, buffers kept): no allocation per connection.
    /// Keyed by (receive, send) buffer size: listeners may differ.
    pools: Vec<((usize, usize), Vec<PooledSocket>)>,
    timers: TimerWheel,
    timer_seq: u32,
    /// Scratch list of flows a timer event made runnable (kept to avoid allocation).
    fired: Vec<(u32, u32)>,
    /// Scratch for a receive batch's first pass (kept to avoid allocation).
    batch: Vec<(Class, u32)>,
    next_gw_refresh: Instant,
    /// xorshift state for keep-alive jitter (seeded from the engine's seed).
    jitter: u64,
    next_port: u16,
    dirty: Vec<(u32, u32)>,
    /// Dirty flows of `serve_first` listeners, serviced before `dirty`.
    dirty_first: Vec<(u32, u32)>,
    /// Connections opened from callbacks (`Conn::connect`), started when the callback
    /// returns.
    pending: Vec<PendingConnect<A::ConnState>>,
    scratch: Vec<u8>,
    drops: TxDrops,
    max_frame: usize,
    stats: Stats,
    /// This engine's end of the processor pool, if one is attached.
    offload: Option<OffloadPort<A::Done>>,
    /// Jobs submitted through `Conn::offload` (a u32 lent to callbacks).
    offloads: u32,
    /// Callbacks longer than this are counted and logged (None: not measured).
    budget: Option<std::time::Duration>,
    /// Time every callback, not only after a slow poll (`time_every_callback`).
    time_always: bool,
    /// Polls left in which callbacks are timed, armed by a slow poll (`report_poll_time`).
    diagnose: u32,
    /// Callbacks are timed in this `poll`.
    timing: bool,
    /// End of the last timed callback in this `poll` (None at the start of each poll).
    tick: Option<std::time::Instant>,
    app: A,
}

/// Run one app callback, measuring it against the budget when callbacks are timed in this
/// poll (`Core::timing`): a callback that runs long stalls every connection of this
/// engine, so it is counted and logged with the app and connection to find it.
///
/// By default callbacks are not timed at all: `Engine::run` times whole polls from the
/// clock read it does anyway, and only a poll over the budget turns callback timing on,
/// for the next `DIAGNOSE_POLLS` polls, to name the callback (the clock read per callback
/// was ~8 % of a small echo's segment: 477 -> 430 ns at 10 flows without it, flow_scale).
///
/// One clock read per timed callback: it runs from the previous callback's end in this `poll`
/// (`Core::tick`; the first callback of a `poll` reads its own start). So a callback's
/// measured time also holds the engine's work on the flow serviced just before it (one
/// flow's egress, bounded by the per-flow quota: microseconds), far below any useful
/// budget. Two reads per callback cost ~40 ns per segment, 8 % of a small echo.
macro_rules! timed {
    ($core:expr, $id:expr, $what:literal, $call:expr) => {{
        match $core.budget {
            Some(budget) if $core.timing => {
                let t0 = $core.tick.unwrap_or_else(std::time::Instant::now);
                let r = $call;
                let t1 = std::time::Instant::now();
                $core.tick = Some(t1);
                let took = t1.saturating_duration_since(t0);
                if took > budget {
                    $core.stats.slow_callbacks += 1;
                    if $core.stats.slow_callbacks.is_power_of_two() {
                        log::warn!(
                            "slow callback: {}::{} on {} took {:?} (budget {:?}; {} so far)",
                            $core.app.name(),
                            $what,
                            $id,
                            took,
                            budget,
                            $core.stats.slow_callbacks
                        );
                    }
                }
                r
            }
            _ => $call,
        }
    }};
}

/// Slab slots reserved up front at most (`max_flows` beyond it: the slab grows by doubling).
const MAX_PRESIZED_SLOTS: usize = 1 << 24;

/// Polls in which callbacks are timed after a poll over the callback budget.
const DIAGNOSE_POLLS: u32 = 1024;

/// The engine's side of a callback's handle: the other slots (around the flow at hand)
/// and what `Conn::connect` needs. `$core` is the `Core`, `$before`/`$after` the slices
/// from `split_slots`.
macro_rules! net {
    ($core:expr, $before:expr, $after:expr) => {
        Some(Net {
            before: &mut *$before,
            after: &mut *$after,
            dirty: &mut $core.dirty,
            iface: &$core.iface,
            table: &$core.table,
            listeners: &$core.listeners,
            next_port: &mut $core.next_port,
            free_slots: &mut $core.free_slots,
            max_flows: $core.cfg.max_flows,
            pending: &mut $core.pending,
        })
    };
}

/// A callback's handle for flow `$f` (id `$id`) of `$core`, reaching the other flows
/// through the slices around it (`$before`, `$after` from `split_slots`).
macro_rules! conn {
    ($core:expr, $f:expr, $id:expr, $now:expr, $before:expr, $after:expr) => {
        $f.conn(
            $id,
            $now,
            $core.offload.as_mut(),
            &mut $core.offloads,
            net!($core, $before, $after),
        )
    };
}

/// A per-core engine over link `L` running application `A`.
pub struct Engine<L: Link, A: App> {
    link: L,
    core: Core<A>,
}

fn ms(t: Instant) -> u64 {
    t.total_millis().max(0) as u64
}

impl<L: Link, A: App> Engine<L, A> {
    pub fn new(mut link: L, cfg: EngineConfig, app: A, now: Instant) -> Engine<L, A> {
        let max_frame = link.caps().max_frame;
        let mut drops = TxDrops::default();
        let mut icfg = Config::new(EthernetAddress(cfg.mac).into());
        icfg.random_seed = cfg.seed;
        let mut iface = {
            let mut sink = link.sink();
            let mut dev = LinkDevice {
                frame: None,
                sink: &mut sink,
                drops: &mut drops,
                max_frame,
            };
            Interface::new(icfg, &mut dev, now)
        };
        iface.update_ip_addrs(|addrs| {
            if let Some((a, p)) = cfg.ipv4 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(a), p));
            }
            if let Some((a, p)) = cfg.ipv6 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(a), p));
            }
        });
        if let Some(gw) = cfg.gateway4 {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        if let Some(gw) = cfg.gateway6 {
            let _ = iface.routes_mut().add_default_ipv6_route(gw);
        }
        let core = Core {
            iface,
            misc: SocketSet::new(Vec::new()),
            udp: Vec::new(),
            misc_dirty: false,
            misc_deadline: None,
            listeners: FxHashMap::default(),
            // Keyed per engine by the OS's randomness, not only the configured seed (which
            // may be fixed for reproducible ISNs): probe sequences cannot be predicted.
            table: FlowTable::with_seed(std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                cfg.seed,
            )),
            // Reserved, not touched: the OS maps pages as flows first use them, and the
            // slab never moves. Growing it by doubling copied it inside the packet path
            // (glibc serves reallocations below its mmap threshold, up to 32 MiB, from
            // the heap: 9 ms for 16 MiB, 131 k slots, measured).
            slots: Vec::with_capacity(cfg.max_flows.min(MAX_PRESIZED_SLOTS)),
            free_slots: Vec::new(),
            pools: Vec::new(),
            timers: TimerWheel::new(ms(now)),
            timer_seq: 0,
            fired: Vec::new(),
            batch: Vec::new(),
            next_gw_refresh: now + smoltcp::time::Duration::from_millis(neigh::REFRESH_MS as u64),
            jitter: cfg.seed | 1,
            next_port: *EPHEMERAL.start() + (cfg.seed % 16384) as u16,
            dirty: Vec::new(),
            dirty_first: Vec::new(),
            pending: Vec::new(),
            scratch: vec![0; cfg.tcp_rx_buf.max(2048)],
            drops,
            max_frame,
            stats: Stats::default(),
            offload: None,
            offloads: 0,
            budget: Some(std::time::Duration::from_millis(1)),
            time_always: false,
            diagnose: 0,
            timing: false,
            tick: None,
            app,
            cfg,
        };
        Engine { link, core }
    }

    /// Accept TCP connections on `port` (any of the engine's addresses), with at most
    /// `backlog` connections in the handshake at once and the engine's default buffers.
    pub fn listen(&mut self, port: u16, backlog: usize) -> Result<(), BindError> {
        let (rx_buf, tx_buf) = (self.core.cfg.tcp_rx_buf, self.core.cfg.tcp_tx_buf);
        self.listen_with(
            port,
            ListenOptions {
                backlog,
                rx_buf,
                tx_buf,
                serve_first: false,
            },
        )
    }

    /// Accept TCP connections on `port` with settings of this listener's own.
    pub fn listen_with(&mut self, port: u16, o: ListenOptions) -> Result<(), BindError> {
        if o.backlog == 0 {
            return Err(BindError::BadBacklog);
        }
        if o.rx_buf < 64 || o.tx_buf < 64 {
            return Err(BindError::BadBuffer);
        }
        if self.core.listeners.contains_key(&port) {
            return Err(BindError::PortInUse(port));
        }
        self.core.listeners.insert(
            port,
            Listener {
                backlog: o.backlog,
                half_open: 0,
                rx_buf: o.rx_buf,
                tx_buf: o.tx_buf,
                serve_first: o.serve_first,
            },
        );
        Ok(())
    }

    /// Receive UDP datagrams on `port`; they reach `App::on_datagram`.
    pub fn udp_bind(&mut self, port: u16) -> Result<(), BindError> {
        let c = &mut self.core;
        let meta = 256;
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; meta], vec![0; 256 * 1024]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; meta], vec![0; 256 * 1024]),
        );
        s.bind(port).map_err(|_| BindError::PortInUse(port))?;
        let h = c.misc.add(s);
        c.udp.push(h);
        Ok(())
    }

    /// Open a connection to `remote` from an ephemeral port. The app hears
    /// `on_connected` when the handshake completes, or `on_closed` if it fails.
    pub fn connect(&mut self, remote: IpEndpoint, now: Instant) -> Result<ConnId, ConnectError> {
        self.connect_with(remote, A::ConnState::default(), now)
    }

    /// `connect` with the new connection's state given up front (a client that knows
    /// what the connection is for before it opens).
    pub fn connect_with(
        &mut self,
        remote: IpEndpoint,
        state: A::ConnState,
        now: Instant,
    ) -> Result<ConnId, ConnectError> {
        let c = &mut self.core;
        let key = plan_connect(
            &c.iface,
            &c.table,
            &c.listeners,
            &mut c.next_port,
            &c.pending,
            c.cfg.max_flows,
            remote,
        )?;
        let idx = match c.free_slots.pop() {
            Some(i) => i,
            None => {
                c.slots.push(Slot { gen: 0, flow: None });
                (c.slots.len() - 1) as u32
            }
        };
        let gen = c.slots[idx as usize].gen;
        c.pending.push(PendingConnect {
            idx,
            gen,
            key,
            state,
        });
        c.start_connects();
        let _ = now;
        Ok(ConnId { idx, gen })
    }

    /// Add another address the engine answers for (at most 4 in all). Returns false when
    /// the table is full or the address is not a unicast host address.
    pub fn add_address(&mut self, addr: IpAddress, prefix: u8) -> bool {
        let cidr = IpCidr::new(addr, prefix);
        if !addr.is_unicast() {
            return false;
        }
        let mut ok = false;
        self.core
            .iface
            .update_ip_addrs(|a| ok = a.push(cidr).is_ok());
        ok
    }

    /// Run `f` on a live connection (established, or still connecting) from outside a
    /// callback (e.g. a client that sends on a timer of its own). None if it is gone. Work it queues is sent in the
    /// next `poll`.
    pub fn with_conn<R>(
        &mut self,
        id: ConnId,
        now: Instant,
        f: impl FnOnce(&mut Conn<'_, A>) -> R,
    ) -> Option<R> {
        let c = &mut self.core;
        if c.slots.get(id.idx as usize)?.gen != id.gen {
            return None;
        }
        let (before, slot, after) = split_slots(&mut c.slots, id.idx);
        let fl = slot.flow.as_mut()?;
        // A connection still in its handshake (after `connect`) may be aborted or given
        // data to send once established.
        if !matches!(fl.phase, Phase::Open | Phase::Connecting) || fl.flags.aborted {
            return None;
        }
        let mut conn = conn!(c, fl, id, now, before, after);
        let r = f(&mut conn);
        c.mark_dirty(id.idx, id.gen);
        c.start_connects();
        Some(r)
    }

    /// Queue bytes on a connection from outside a callback; how many were queued (0 if the
    /// connection is gone).
    pub fn send(&mut self, id: ConnId, data: &[u8], now: Instant) -> usize {
        self.with_conn(id, now, |c| c.send(data)).unwrap_or(0)
    }

    /// Attach a processor pool: connections may `offload` jobs (at most `in_flight` of this
    /// engine's at once) and their results come back to `App::on_done` from this loop.
    pub fn attach_pool(&mut self, pool: &Pool, in_flight: usize) {
        let port = pool.port::<A::Done>(in_flight);
        if let Some(notify) = self.link.notifier() {
            port.wake.set_notify(notify);
        }
        self.core.offload = Some(port);
    }

    /// Callbacks longer than `budget` (None: no limit) are counted (`slow_callbacks`) and
    /// logged. They are timed only in the polls after a poll that took longer than
    /// `budget` (`report_poll_time`, which `run` calls for every poll that did work), or
    /// always with `time_every_callback(true)`.
    pub fn set_callback_budget(&mut self, budget: Option<std::time::Duration>) {
        self.core.budget = budget;
    }

    /// Time every callback against the budget (one clock read per callback), not only
    /// after a slow poll.
    pub fn time_every_callback(&mut self, on: bool) {
        self.core.time_always = on;
    }

    /// How long the last `poll` took, for a caller that times its polls (`run` does). A
    /// poll over the callback budget is counted (`slow_polls`) and turns callback timing on
    /// for the next polls, so a callback that keeps running long is named in the log.
    pub fn report_poll_time(&mut self, took: std::time::Duration) {
        let c = &mut self.core;
        let Some(budget) = c.budget else { return };
        if took <= budget {
            return;
        }
        c.stats.slow_polls += 1;
        if c.stats.slow_polls.is_power_of_two() {
            log::warn!(
                "slow poll: took {took:?} (callback budget {budget:?}; {} so far); timing {}'s callbacks for the next {DIAGNOSE_POLLS} polls",
                c.stats.slow_polls,
                c.app.name(),
            );
        }
        c.diagnose = DIAGNOSE_POLLS;
    }

    pub fn app(&self) -> &A {
        &self.core.app
    }
    pub fn app_mut(&mut self) -> &mut A {
        &mut self.core.app
    }
    pub fn link(&self) -> &L {
        &self.link
    }
    /// The link, for a caller that runs its own loop around `poll` (e.g. to block in
    /// `Link::wait` until `next_deadline`).
    pub fn link_mut(&mut self) -> &mut L {
        &mut self.link
    }
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }
    /// Entries in the timer wheel (live and superseded), for tests and benches: stays near
    /// the number of flows with a deadline.
    pub fn timer_entries(&self) -> usize {
        self.core.timers.len()
    }

    /// Flows in the table (any state).
    pub fn flow_count(&self) -> usize {
        self.core.table.len()
    }

    /// Every counter of the engine and its link, by name.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.core.stats.counters();
        v.push(("tx_no_buffer", self.core.drops.no_buffer));
        v.push(("tx_deferred", self.core.drops.deferred));
        v.push(("flows_active", self.core.table.len() as u64));
        v.push(("offloads", self.core.offloads as u64));
        v.extend(self.link.counters());
        v.extend(self.core.app.counters());
        v
    }

    /// One loop iteration at time `now`: a receive batch, app callbacks, egress of flows
    /// with work, due timers, one transmit flush. Returns whether anything happened.
    pub fn poll(&mut self, now: Instant) -> bool {
        let core = &mut self.core;
        core.stats.loops += 1;
        core.tick = None;
        core.timing = core.budget.is_some() && (core.time_always || core.diagnose > 0);
        core.diagnose = core.diagnose.saturating_sub(1);
        let batch = core.cfg.rx_batch;
        let n = self
            .link
            .receive(batch, |frames, sink| core.handle_batch(now, frames, sink));
        let mut work = n > 0;
        let mut sink = self.link.sink();
        core.refresh_gateways(now, &mut sink);
        work |= core.drain_offload(now);
        work |= core.run_timers(now);
        work |= core.service_dirty(now, &mut sink);
        work |= core.service_misc(now, &mut sink);
        drop(sink);
        self.link.flush();
        if work {
            core.stats.busy_loops += 1;
        }
        // A callback run outside `poll` (none is chained to this one) reads its own start.
        core.tick = None;
        core.timing = core.budget.is_some() && core.time_always;
        work
    }

    /// Run until `stop` is set. The clock is read here, once per iteration.
    pub fn run(&mut self, stop: &AtomicBool, idle: Idle) {
        let clock = std::time::Instant::now();
        let now = || Instant::from_micros(clock.elapsed().as_micros() as i64);
        let spin_us = self.core.cfg.idle_spin_us as i64;
        let mut last_work = now();
        // Start of the last poll if it did work (so no sleep follows it before the next
        // clock read): the next read times it, without a read of its own.
        let mut worked: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            let t = now();
            if let Some(t0) = worked.take() {
                self.report_poll_time(std::time::Duration::from_micros((t - t0).total_micros()));
            }
            if self.poll(t) {
                last_work = t;
                worked = Some(t);
                continue;
            }
            if idle == Idle::Adaptive && (t - last_work).total_micros() as i64 > spin_us {
                // Sleep until a frame arrives or the next timer, at most 10 ms so `stop`
                // is noticed promptly.
                let next = self.next_deadline(t);
                let cap = std::time::Duration::from_millis(10);
                let wait = next.map_or(cap, |d| {
                    std::time::Duration::from_micros(
                        (d - t).total_micros().min(cap.as_micros() as u64),
                    )
                });
                if !wait.is_zero() {
                    // Tell pool workers we sleep, then look once more (a result pushed
                    // before the flag was visible would otherwise wait for the timeout).
                    let wake = self.core.offload.as_ref().map(|p| p.wake.clone());
                    if let Some(w) = &wake {
                        w.sleeping.store(true, Ordering::SeqCst);
                    }
                    let pending = self.core.offload.as_ref().is_some_and(|p| p.has_results());
                    if !pending {
                        self.core.stats.idle_sleeps += 1;
                        self.link.wait(Some(wait));
                    }
                    if let Some(w) = &wake {
                        w.sleeping.store(false, Ordering::SeqCst);
                    }
                }
            }
        }
    }

    /// Earliest time any work may be due (`now` if some is pending), for a caller that
    /// sleeps between `poll`s.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let c = &self.core;
        if !c.dirty.is_empty() || !c.dirty_first.is_empty() || c.misc_dirty {
            return Some(now);
        }
        let w = c.timers.next_hint().map(|m| Instant::from_millis(m as i64));
        match (w, c.misc_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|d| d.max(now))
    }
}

impl<A: App> Core<A> {
    /// A receive batch in two passes. First every frame is parsed and its flow looked up,
    /// and the flow's socket touched: these lookups are independent, so the CPU overlaps
    /// their cache misses (at a million flows each one is a chain of several misses).
    /// Then each frame is handled in order with its flow already in cache.
    fn handle_batch<S: TxSink + ?Sized>(&mut self, now: Instant, frames: &[&[u8]], sink: &mut S) {
        let mut pre = std::mem::take(&mut self.batch);
        pre.clear();
        // Flows are likely out of cache only when there are many of them (thousands at
        // ~5 KB each outgrow the L2/L3); below that, touching them first is pure cost.
        let cold = self.table.len() >= TOUCH_MIN_FLOWS;
        for frame in frames {
            let class = classify(frame);
            let mut hint = NO_FLOW;
            if let Class::Tcp { key, .. } = class {
                if let Some(idx) = self.table.get(&key) {
                    hint = idx;
                    if cold {
                        if let Some(f) = self.slots[idx as usize].flow.as_ref() {
                            touch(f.set.get::<tcp::Socket>(f.handle));
                        }
                    }
                }
            }
            pre.push((class, hint));
        }
        for (frame, &(class, hint)) in frames.iter().zip(pre.iter()) {
            self.handle_frame(now, frame, class, hint, sink);
        }
        self.batch = pre;
    }

    /// One frame, already classified; `hint` is its flow's slot as looked up in the first
    /// pass (NO_FLOW if none), re-checked because an earlier frame of the batch may have
    /// added or removed flows.
    fn handle_frame<S: TxSink + ?Sized>(
        &mut self,
        now: Instant,
        frame: &[u8],
        class: Class,
        hint: u32,
        sink: &mut S,
    ) {
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += frame.len() as u64;
        match class {
            Class::Malformed(why) => self.stats.count_malformed(why),
            Class::Other => {
                self.ingress_misc(now, frame, sink);
            }
            Class::Neighbor { sender } => {
                self.ingress_misc(now, frame, sink);
                if let Some((ip, p)) = self.cfg.ipv4 {
                    let ours = [(ip, p)];
                    if let Some(req) = neigh::off_subnet_request(frame, &ours) {
                        match sink.frame(neigh::ARP_FRAME_LEN) {
                            Some(buf) => {
                                neigh::arp_reply(buf, EthernetAddress(self.cfg.mac), &req);
                                self.stats.arp_off_subnet_replies += 1;
                            }
                            None => self.drops.no_buffer += 1,
                        }
                    }
                }
                // Only an answer from a neighbour smoltcp asked for can unblock flows;
                // gratuitous ARP, broadcasts for other hosts, our gateway refresh: no.
                if let Some(i) =
                    sender.and_then(|ip| self.drops.resolving.iter().position(|r| *r == ip))
                {
                    self.drops.resolving.swap_remove(i);
                    self.wake_neighbor_waiters(now);
                }
            }
            Class::Tcp { key, syn, ack, rst } => {
                let valid = hint != NO_FLOW
                    && self.slots[hint as usize]
                        .flow
                        .as_ref()
                        .is_some_and(|f| f.key == key);
                let found = if valid {
                    Some(hint)
                } else {
                    self.table.get(&key)
                };
                if let Some(idx) = found {
                    if syn && !ack && !rst && self.in_time_wait(idx) {
                        // A new connection on a 4-tuple in TIME-WAIT: smoltcp would only
                        // re-ACK and restart its 10 s timer, so the client hangs. RFC 9293
                        // 3.10.7.4 (and RFC 6191) let a SYN reopen it: drop the old flow.
                        self.stats.time_wait_reused += 1;
                        self.stats.flows_closed += 1;
                        self.remove_flow(idx);
                        if self.listeners.contains_key(&key.local.port) {
                            self.passive_open(now, key, frame, sink);
                        } else {
                            self.ingress_misc(now, frame, sink);
                        }
                        return;
                    }
                    let flow = self.slots[idx as usize]
                        .flow
                        .as_mut()
                        .expect("table/slab agree");
                    if rst {
                        flow.rst_seen = true;
                    }
                    ingress(
                        &mut self.iface,
                        &mut self.drops,
                        self.max_frame,
                        now,
                        frame,
                        sink,
                        &mut flow.set,
                    );
                    self.stats.tcp_segments_in += 1;
                    let gen = self.slots[idx as usize].gen;
                    self.mark_dirty(idx, gen);
                } else if syn && !ack && !rst && self.listeners.contains_key(&key.local.port) {
                    self.passive_open(now, key, frame, sink);
                } else {
                    // Stray segment: smoltcp answers from the shared set (RST for a SYN to
                    // a closed port or a stray ACK, nothing to a RST). No state allocated.
                    self.stats.tcp_no_flow += 1;
                    self.ingress_misc(now, frame, sink);
                }
            }
        }
    }

    fn in_time_wait(&self, idx: u32) -> bool {
        self.slots[idx as usize]
            .flow
            .as_ref()
            .is_some_and(|f| f.set.get::<tcp::Socket>(f.handle).state() == tcp::State::TimeWait)
    }

    fn ingress_misc<S: TxSink + ?Sized>(&mut self, now: Instant, frame: &[u8], sink: &mut S) {
        ingress(
            &mut self.iface,
            &mut self.drops,
            self.max_frame,
            now,
            frame,
            sink,
            &mut self.misc,
        );
        self.misc_dirty = true;
    }

    fn passive_open<S: TxSink + ?Sized>(
        &mut self,
        now: Instant,
        key: FourTuple,
        frame: &[u8],
        sink: &mut S,
    ) {
        if !self.iface.has_ip_addr(key.local.addr) {
            self.stats.drop_not_our_addr += 1;
            return;
        }
        if self.table.len() >= self.cfg.max_flows {
            self.stats.drop_syn_flow_table_full += 1;
            return;
        }
        let l = self.listeners.get_mut(&key.local.port).expect("checked");
        if l.half_open >= l.backlog {
            self.stats.drop_syn_backlog_full += 1;
            return;
        }
        l.half_open += 1;
        let bufs = (l.rx_buf, l.tx_buf);
        let first = l.serve_first;
        let (mut set, handle) = self.take_socket(bufs);
        let sock = set.get_mut::<tcp::Socket>(handle);
        sock.set_timeout(Some(self.cfg.half_open_timeout));
        if sock.listen(key.local).is_err() {
            // A pooled socket is always Closed; treat anything else as a bug we survive.
            self.stats.internal_errors += 1;
            self.listeners
                .get_mut(&key.local.port)
                .expect("checked")
                .half_open -= 1;
            return;
        }
        let idx = self.insert_flow(key, set, handle, Phase::HalfOpen, Default::default());
        let flow = self.slots[idx as usize]
            .flow
            .as_mut()
            .expect("just inserted");
        flow.first = first;
        ingress(
            &mut self.iface,
            &mut self.drops,
            self.max_frame,
            now,
            frame,
            sink,
            &mut flow.set,
        );
        self.stats.tcp_segments_in += 1;
        if flow.set.get::<tcp::Socket>(flow.handle).state() == tcp::State::Listen {
            // smoltcp did not take the SYN (bad checksum, options it refuses...): undo.
            self.listeners
                .get_mut(&key.local.port)
                .expect("checked")
                .half_open -= 1;
            self.stats.drop_syn_rejected += 1;
            self.remove_flow(idx);
            return;
        }
        self.stats.syn_accepted += 1;
        let gen = self.slots[idx as usize].gen;
        self.mark_dirty(idx, gen);
    }

    fn pool(&mut self, bufs: (usize, usize)) -> &mut Vec<PooledSocket> {
        let i = match self.pools.iter().position(|(k, _)| *k == bufs) {
            Some(i) => i,
            None => {
                self.pools.push((bufs, Vec::new()));
                self.pools.len() - 1
            }
        };
        &mut self.pools[i].1
    }

    /// Return a Closed socket (and its buffers) to the pool of its size.
    fn recycle(&mut self, mut set: SocketSet<'static>, handle: SocketHandle) {
        let sock = set.get_mut::<tcp::Socket>(handle);
        let bufs = (sock.recv_capacity(), sock.send_capacity());
        self.pool(bufs).push((set, handle));
    }

    /// A Closed one-socket set with buffers of `bufs` (receive, send) bytes: from the
    /// pool, or new.
    fn take_socket(&mut self, bufs: (usize, usize)) -> (SocketSet<'static>, SocketHandle) {
        let (mut set, handle) = self.pool(bufs).pop().unwrap_or_else(|| {
            let s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; bufs.0]),
                tcp::SocketBuffer::new(vec![0; bufs.1]),
            );
            let mut set = SocketSet::new(Vec::with_capacity(1));
            let h = set.add(s);
            (set, h)
        });
        // Keep-alive interval with up to +50 % jitter per flow: flows opened together
        // (a load test, a reconnect storm) would otherwise probe in the same millisecond,
        // and a burst of N probes and N replies overflows the rings; flows whose replies
        // are dropped repeatedly would then reach the user timeout.
        let keep_alive = self.cfg.keep_alive.map(|d| {
            self.jitter ^= self.jitter << 13;
            self.jitter ^= self.jitter >> 7;
            self.jitter ^= self.jitter << 17;
            let extra = self.jitter % (d.total_millis() / 2 + 1);
            d + smoltcp::time::Duration::from_millis(extra)
        });
        let sock = set.get_mut::<tcp::Socket>(handle);
        sock.set_nagle_enabled(false);
        // Set while Closed: `listen`/`connect` reset the timer, so no keep-alive goes out
        // before the connection is idle for `keep_alive`.
        sock.set_keep_alive(keep_alive);
        sock.set_timeout(self.cfg.user_timeout);
        (set, handle)
    }

    fn insert_flow(
        &mut self,
        key: FourTuple,
        set: SocketSet<'static>,
        handle: SocketHandle,
        phase: Phase,
        state: A::ConnState,
    ) -> u32 {
        let idx = match self.free_slots.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { gen: 0, flow: None });
                (self.slots.len() - 1) as u32
            }
        };
        self.insert_flow_at(idx, key, set, handle, phase, state);
        idx
    }

    /// Fill slot `idx` (free, or reserved by `Conn::connect`) with a new flow.
    fn insert_flow_at(
        &mut self,
        idx: u32,
        key: FourTuple,
        set: SocketSet<'static>,
        handle: SocketHandle,
        phase: Phase,
        state: A::ConnState,
    ) {
        self.slots[idx as usize].flow = Some(Flow {
            key,
            set,
            handle,
            phase,
            dirty: false,
            first: false,
            flags: ConnFlags::default(),
            rst_seen: false,
            fin_told: false,
            timer_seq: 0,
            timer_at: u64::MAX,
            app_timer: None,
            state,
        });
        self.table.insert(key, idx);
    }

    /// Start the connections callbacks opened (`Conn::connect`), in the slots reserved
    /// for them. The checks that can fail ran in `connect`; if smoltcp still refuses, the
    /// flow is reported closed on its first service.
    fn start_connects(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut list = std::mem::take(&mut self.pending);
        for p in list.drain(..) {
            let bufs = (self.cfg.tcp_rx_buf, self.cfg.tcp_tx_buf);
            let (mut set, handle) = self.take_socket(bufs);
            let sock = set.get_mut::<tcp::Socket>(handle);
            if sock
                .connect(self.iface.context(), p.key.remote, p.key.local)
                .is_err()
            {
                self.stats.internal_errors += 1;
            }
            // Reserved new slots are numbered from the slab's end, in reservation order.
            while self.slots.len() <= p.idx as usize {
                self.slots.push(Slot { gen: 0, flow: None });
            }
            debug_assert_eq!(self.slots[p.idx as usize].gen, p.gen);
            self.insert_flow_at(p.idx, p.key, set, handle, Phase::Connecting, p.state);
            self.mark_dirty(p.idx, p.gen);
            self.stats.connects += 1;
        }
        if self.pending.is_empty() {
            self.pending = list; // keep the allocation
        }
    }

    fn mark_dirty(&mut self, idx: u32, gen: u32) {
        if let Some(f) = self.slots[idx as usize].flow.as_mut() {
            if !f.dirty {
                f.dirty = true;
                if f.first {
                    self.dirty_first.push((idx, gen));
                } else {
                    self.dirty.push((idx, gen));
                }
            }
        }
    }

    /// smoltcp may just have learned a neighbour. Flows that tried to send to it sit in
    /// the wheel until smoltcp's 1 s ARP/NDP silence ends; run every flow due within that
    /// window now (a spurious run is harmless). ARP/NDP is rare, so this is cheap.
    fn wake_neighbor_waiters(&mut self, now: Instant) {
        let slots = &self.slots;
        let fired = &mut self.fired;
        self.timers.fire_within(ms(now), 1_001, |idx, seq| {
            if let Some(Slot { gen, flow: Some(f) }) = slots.get(idx as usize) {
                if f.timer_seq == seq {
                    fired.push((idx, *gen));
                }
            }
        });
        self.stats.neighbor_wakeups += self.fired.len() as u64;
        let fired = std::mem::take(&mut self.fired);
        for &(idx, gen) in &fired {
            // Their wheel entries are gone: let the next re-arm place a new one.
            if let Some(f) = self.slots[idx as usize].flow.as_mut() {
                f.timer_at = u64::MAX;
            }
            self.mark_dirty(idx, gen);
        }
        self.fired = fired;
        self.fired.clear();
    }

    /// Ask for the gateways before smoltcp's 60 s neighbour entry lapses (see `neigh`).
    fn refresh_gateways<S: TxSink + ?Sized>(&mut self, now: Instant, sink: &mut S) {
        if now < self.next_gw_refresh {
            return;
        }
        self.next_gw_refresh = now + smoltcp::time::Duration::from_millis(neigh::REFRESH_MS as u64);
        let mac = EthernetAddress(self.cfg.mac);
        if let (Some(gw), Some((ip, _))) = (self.cfg.gateway4, self.cfg.ipv4) {
            match sink.frame(neigh::ARP_FRAME_LEN) {
                Some(buf) => {
                    neigh::arp_request(buf, mac, ip, gw);
                    self.stats.gateway_refreshes += 1;
                }
                None => self.drops.no_buffer += 1,
            }
        }
        if let (Some(gw), Some((ip, _))) = (self.cfg.gateway6, self.cfg.ipv6) {
            match sink.frame(neigh::NS_FRAME_LEN) {
                Some(buf) => {
                    neigh::neighbor_solicit(buf, mac, ip, gw);
                    self.stats.gateway_refreshes += 1;
                }
                None => self.drops.no_buffer += 1,
            }
        }
    }

    fn run_timers(&mut self, now: Instant) -> bool {
        let slots = &self.slots;
        let fired = &mut self.fired;
        self.timers.expire(ms(now), |idx, seq| {
            if let Some(Slot { gen, flow: Some(f) }) = slots.get(idx as usize) {
                if f.timer_seq == seq {
                    fired.push((idx, *gen));
                }
            }
        });
        let any = !self.fired.is_empty();
        self.stats.timers_fired += self.fired.len() as u64;
        let fired = std::mem::take(&mut self.fired);
        for &(idx, gen) in &fired {
            self.mark_dirty(idx, gen);
        }
        self.fired = fired;
        self.fired.clear();
        if let Some(d) = self.misc_deadline {
            if d <= now {
                self.misc_deadline = None;
                self.misc_dirty = true;
            }
        }
        any
    }

    /// Service the dirty flows: those of `serve_first` listeners, then the rest.
    fn service_dirty<S: TxSink + ?Sized>(&mut self, now: Instant, sink: &mut S) -> bool {
        let first = self.service_list(now, sink, true);
        self.service_list(now, sink, false) | first
    }

    fn dirty_list(&mut self, first: bool) -> &mut Vec<(u32, u32)> {
        if first {
            &mut self.dirty_first
        } else {
            &mut self.dirty
        }
    }

    /// Service one dirty list (`first`: the `serve_first` one) in order.
    fn service_list<S: TxSink + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
        first: bool,
    ) -> bool {
        if self.dirty_list(first).is_empty() {
            return false;
        }
        let mut list = std::mem::take(self.dirty_list(first));
        let mut served = 0;
        for &(idx, gen) in &list {
            // A full link: the rest wait, in order, for the next iteration (the flush in
            // between drains the ring). Servicing each of them only to find no room made
            // an iteration cost O(waiting flows) while it still sent one ring's worth: at
            // 300 k flows echoing at once the loop ran a few times a second.
            if !sink.has_room() {
                break;
            }
            served += 1;
            let slot = &mut self.slots[idx as usize];
            if slot.gen != gen {
                continue;
            }
            if let Some(f) = slot.flow.as_mut() {
                f.dirty = false;
                self.service_flow(now, idx, sink);
                self.start_connects();
            }
        }
        if served < list.len() {
            // Not yet serviced (still marked dirty) go first, then those queued meanwhile.
            list.drain(..served);
            let q = self.dirty_list(first);
            list.append(q);
            *q = list;
            return served > 0;
        }
        list.clear();
        let q = self.dirty_list(first);
        if q.is_empty() {
            *q = list; // keep the allocation
        }
        true
    }

    /// App callbacks, egress and timer re-arm for one flow.
    fn service_flow<S: TxSink + ?Sized>(&mut self, now: Instant, idx: u32, sink: &mut S) {
        let (before, cur, after) = split_slots(&mut self.slots, idx);
        let gen = cur.gen;
        let id = ConnId { idx, gen };
        let f = cur.flow.as_mut().expect("caller checked");
        use tcp::State::*;
        let state = f.set.get::<tcp::Socket>(f.handle).state();

        if f.phase == Phase::HalfOpen {
            match state {
                SynReceived => {}
                Listen | Closed => {
                    // RST in SYN-RECEIVED (RFC 9293 3.10.7.4) sends smoltcp back to Listen;
                    // a segment it did not accept leaves it there: the flow is gone.
                    if let Some(l) = self.listeners.get_mut(&f.key.local.port) {
                        l.half_open -= 1;
                    }
                    self.stats.handshakes_failed += 1;
                    self.stats.flows_closed += 1;
                    self.remove_flow(idx);
                    return;
                }
                _ => {
                    if let Some(l) = self.listeners.get_mut(&f.key.local.port) {
                        l.half_open -= 1;
                    }
                    f.phase = Phase::Open;
                    f.set
                        .get_mut::<tcp::Socket>(f.handle)
                        .set_timeout(self.cfg.user_timeout);
                    self.stats.accepted += 1;
                    let mut c = conn!(self, f, id, now, before, after);
                    if !timed!(self, id, "on_accept", self.app.on_accept(&mut c)) {
                        c.abort();
                        self.stats.refused_by_app += 1;
                    }
                }
            }
        } else if f.phase == Phase::Connecting && !matches!(state, SynSent | SynReceived | Closed) {
            // (Closed: the handshake failed; reported below as closed.)
            f.phase = Phase::Open;
            let mut c = conn!(self, f, id, now, before, after);
            timed!(self, id, "on_connected", self.app.on_connected(&mut c));
        }

        // A connection opened in `on_accept`/`on_connected` gets its socket when this
        // service ends; run the other callbacks in the next one, so they can reach it.
        let deferred = !self.pending.is_empty();
        if deferred && !f.dirty {
            f.dirty = true;
            self.dirty.push((idx, gen));
        }
        if f.phase == Phase::Open && !f.flags.aborted && !deferred {
            if f.app_timer.is_some_and(|t| t <= now) {
                f.app_timer = None;
                let mut c = conn!(self, f, id, now, before, after);
                timed!(self, id, "on_timer", self.app.on_timer(&mut c));
            }
            // Offer buffered bytes until the app stops consuming.
            while !f.flags.aborted && f.set.get::<tcp::Socket>(f.handle).can_recv() {
                let sock = f.set.get_mut::<tcp::Socket>(f.handle);
                let n = sock.peek_slice(&mut self.scratch).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let mut c = conn!(self, f, id, now, before, after);
                let used = timed!(
                    self,
                    id,
                    "on_data",
                    self.app.on_data(&mut c, &self.scratch[..n])
                )
                .min(n);
                if used > 0 {
                    // The receive buffer is a ring: `recv` sees one contiguous piece at
                    // a time, so dropping `used` bytes may take two calls.
                    let sock = f.set.get_mut::<tcp::Socket>(f.handle);
                    let mut left = used;
                    while left > 0 {
                        match sock.recv(|buf| {
                            let k = left.min(buf.len());
                            (k, k)
                        }) {
                            Ok(k) if k > 0 => left -= k,
                            _ => break,
                        }
                    }
                    self.stats.app_bytes_in += used as u64;
                }
                if used < n {
                    break;
                }
            }
            if f.flags.want_writable
                && !f.flags.aborted
                && f.set.get::<tcp::Socket>(f.handle).can_send()
            {
                f.flags.want_writable = false;
                let mut c = conn!(self, f, id, now, before, after);
                timed!(self, id, "on_writable", self.app.on_writable(&mut c));
            }
            let sock = f.set.get::<tcp::Socket>(f.handle);
            if !f.fin_told
                && !f.flags.aborted
                && !sock.may_recv()
                && sock.recv_queue() == 0
                && matches!(sock.state(), CloseWait | LastAck | Closing | TimeWait)
            {
                f.fin_told = true;
                let mut c = conn!(self, f, id, now, before, after);
                timed!(self, id, "on_peer_fin", self.app.on_peer_fin(&mut c));
            }
        }

        // Egress for this flow only, bounded so one bulk flow cannot starve the rest.
        let quota = self.cfg.egress_quota;
        let (emitted, smol_next) = egress(
            &mut self.iface,
            &mut self.drops,
            self.max_frame,
            now,
            sink,
            &mut f.set,
            quota,
        );
        let quota_left = quota - emitted;

        let state = f.set.get::<tcp::Socket>(f.handle).state();
        let live = matches!(f.phase, Phase::Open | Phase::Connecting);
        if live && matches!(state, Closed | TimeWait) {
            let reason = if f.flags.aborted {
                CloseReason::Aborted
            } else if state == TimeWait {
                CloseReason::Normal
            } else if f.rst_seen {
                CloseReason::Reset
            } else if f.fin_told {
                CloseReason::Normal
            } else {
                CloseReason::TimedOut
            };
            let was_connecting = f.phase == Phase::Connecting;
            f.phase = Phase::Done;
            f.app_timer = None;
            self.stats.count_close(reason);
            if was_connecting {
                self.stats.connects_failed += 1;
            }
            let mut c = conn!(self, f, id, now, before, after);
            timed!(self, id, "on_closed", self.app.on_closed(&mut c, reason));
            // The app has had its state; drop it now rather than after TIME-WAIT.
            f.state = Default::default();
        }
        if state == Closed {
            if f.phase == Phase::HalfOpen {
                // half_open_timeout expired during egress (smoltcp sent a RST).
                if let Some(l) = self.listeners.get_mut(&f.key.local.port) {
                    l.half_open -= 1;
                }
                self.stats.handshakes_failed += 1;
            }
            self.stats.flows_closed += 1;
            self.remove_flow(idx);
            return;
        }

        // Re-arm: the earlier of smoltcp's next deadline (retransmit, delayed ACK,
        // keep-alive, TIME-WAIT...) and the app's timer.
        let next = match (smol_next, f.app_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next {
            None => {}
            // Already queued to run again (deferred callbacks): it re-arms then.
            Some(_) if f.dirty => {}
            Some(t) if t <= now || quota_left == 0 => {
                f.dirty = true;
                self.dirty.push((idx, gen));
            }
            Some(t) => {
                // Most segments move the deadline later (each ACK restarts the RTO). A live
                // earlier entry still wakes the flow in time, and this re-arm runs again
                // then; so arm only when earlier, keeping one entry per flow in the wheel.
                let at = ms(t);
                if at < f.timer_at || f.timer_at <= ms(now) {
                    self.timer_seq = self.timer_seq.wrapping_add(1);
                    f.timer_seq = self.timer_seq;
                    f.timer_at = at;
                    self.timers.arm(at, idx, self.timer_seq);
                }
            }
        }
    }

    /// Hand finished pool jobs to `on_done` of their connections, on this loop.
    fn drain_offload(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some((id, done)) = self.offload.as_mut().and_then(|p| p.pop()) {
            any = true;
            let live = self
                .slots
                .get(id.idx as usize)
                .filter(|s| s.gen == id.gen)
                .and_then(|s| s.flow.as_ref())
                .is_some_and(|f| f.phase == Phase::Open && !f.flags.aborted);
            if !live {
                // The connection closed while its job ran: drop the result.
                self.stats.offload_results_dropped += 1;
                continue;
            }
            let (before, slot, after) = split_slots(&mut self.slots, id.idx);
            let f = slot.flow.as_mut().expect("checked live");
            self.stats.offload_results += 1;
            let mut c = conn!(self, f, id, now, before, after);
            timed!(self, id, "on_done", self.app.on_done(&mut c, done));
            // Egress for what it queued, and offer data it may have left waiting.
            self.mark_dirty(id.idx, id.gen);
            self.start_connects();
        }
        any
    }

    fn remove_flow(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        let Some(mut f) = slot.flow.take() else {
            return;
        };
        slot.gen = slot.gen.wrapping_add(1);
        self.table.remove(&f.key);
        self.free_slots.push(idx);
        let sock = f.set.get_mut::<tcp::Socket>(f.handle);
        if sock.state() != tcp::State::Closed {
            sock.abort();
        }
        // Only fully closed sockets go back to the pool (abort leaves them Closed).
        if sock.state() == tcp::State::Closed {
            self.recycle(f.set, f.handle);
        }
    }

    fn service_misc<S: TxSink + ?Sized>(&mut self, now: Instant, sink: &mut S) -> bool {
        if !self.misc_dirty {
            return false;
        }
        self.misc_dirty = false;
        for &h in &self.udp {
            let sock = self.misc.get_mut::<udp::Socket>(h);
            while let Ok((data, meta)) = sock.recv() {
                let n = data.len().min(self.scratch.len());
                self.scratch[..n].copy_from_slice(&data[..n]);
                self.stats.udp_in += 1;
                let mut d = Datagram {
                    sock,
                    meta,
                    dropped: &mut self.stats.udp_tx_full,
                };
                self.app.on_datagram(&mut d, &self.scratch[..n]);
                // Stop when the reply buffer fills: the rest waits for egress.
                if !sock.can_send() {
                    self.misc_dirty = true;
                    break;
                }
            }
        }
        let (_, next) = egress(
            &mut self.iface,
            &mut self.drops,
            self.max_frame,
            now,
            sink,
            &mut self.misc,
            self.cfg.egress_quota,
        );
        self.misc_deadline = match next {
            Some(t) if t <= now => {
                self.misc_dirty = true;
                None
            }
            other => other,
        };
        true
    }
}

/// Hand one received frame to smoltcp together with `set`: the flow's own one-socket set,
/// or the small shared set (so smoltcp's per-packet socket scan sees only those).
/// Start loading a socket's cache lines at once. smoltcp reads a segment's socket field
/// by field across ~400 bytes, each line a dependent miss when the flow is cold (a
/// random flow among a million); these reads are independent of each other, so the CPU
/// overlaps their misses. (Safe code has no prefetch instruction: plain reads kept alive
/// by `black_box` do the same job.)
#[inline(always)]
fn touch(s: &tcp::Socket) {
    std::hint::black_box((
        s.state(),
        s.remote_endpoint(),
        s.recv_queue(),
        s.send_queue(),
        s.timeout(),
        s.ack_delay(),
        s.keep_alive(),
    ));
}

/// Below this many flows [`touch`] is skipped (see `handle_batch`).
const TOUCH_MIN_FLOWS: usize = 2048;

fn ingress<S: TxSink + ?Sized>(
    iface: &mut Interface,
    drops: &mut TxDrops,
    max_frame: usize,
    now: Instant,
    frame: &[u8],
    sink: &mut S,
    set: &mut SocketSet<'static>,
) {
    let mut dev = LinkDevice {
        frame: Some(frame),
        sink,
        drops,
        max_frame,
    };
    iface.poll_ingress_single(now, &mut dev, set);
}

/// Let the sockets of `set` emit, at most `quota` times (bounded, so one bulk flow cannot
/// starve the rest). Returns how many calls emitted something, and smoltcp's next deadline
/// for the set afterwards (`poll_at`: None, a time, or at most `now` for "call again").
///
/// A flow usually has one segment to send (an echo, an ACK): after the first emission
/// `poll_at` tells whether more is due now, which is cheaper than a second `poll_egress`
/// that finds nothing, and its answer is the deadline the caller re-arms with anyway.
fn egress<S: TxSink + ?Sized>(
    iface: &mut Interface,
    drops: &mut TxDrops,
    max_frame: usize,
    now: Instant,
    sink: &mut S,
    set: &mut SocketSet<'static>,
    quota: usize,
) -> (usize, Option<Instant>) {
    let mut n = 0;
    while n < quota {
        let mut dev = LinkDevice {
            frame: None,
            sink: &mut *sink,
            drops: &mut *drops,
            max_frame,
        };
        if iface.poll_egress(now, &mut dev, set) == smoltcp::iface::PollResult::None {
            break;
        }
        n += 1;
        if n == 1 {
            let next = iface.poll_at(now, set);
            if next.is_none_or(|t| t > now) {
                return (n, next);
            }
        }
    }
    (n, iface.poll_at(now, set))
}

//! The application side: callbacks run straight from the engine's loop (no syscall, no
//! queue in between) and a connection handle that never blocks.
//!
//! One `App` value per engine (per core). Each connection carries a typed state of the
//! app's choosing (`App::ConnState`), handed to every callback through [`Conn::state`].
//! CPU-heavy work goes to the processor pool with [`Conn::offload`]; its result comes back
//! to `App::on_done` on the same engine, for the same connection.
//!
//! ```
//! use c10m_stack::{App, Conn};
//!
//! struct Upper;
//! impl App for Upper {
//!     type ConnState = u64; // typed per-connection state (bytes seen)
//!     type Done = Vec<u8>; // result type of pool jobs
//!     fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
//!         *c.state() += data.len() as u64;
//!         let v = data.to_vec();
//!         match c.offload(move || v.to_ascii_uppercase()) {
//!             Ok(()) => data.len(), // consumed
//!             Err(_) => 0,          // pool full: leave it buffered (the window closes)
//!         }
//!     }
//!     fn on_done(&mut self, c: &mut Conn<'_, Self>, out: Vec<u8>) {
//!         c.send(&out); // back on this connection's own loop
//!     }
//! }
//! ```

use crate::offload::{OffloadError, OffloadPort};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpEndpoint;

/// A connection's handle: slab index plus the slot's generation, so an id of a closed
/// connection never aliases a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(crate) idx: u32,
    pub(crate) gen: u32,
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}.{}", self.idx, self.gen)
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides sent FIN (orderly close).
    Normal,
    /// The peer reset the connection.
    Reset,
    /// Retransmissions, the handshake or the idle timeout gave up.
    TimedOut,
    /// The application aborted it (or refused it in `on_accept`).
    Aborted,
}

/// Callbacks of one application instance; one instance per engine (per core).
pub trait App: Sized {
    /// Per-connection state, created with `Default` when the connection is accepted or
    /// opened, handed back to `on_closed` at the end.
    type ConnState: Default;
    /// Result type of jobs offloaded to the processor pool.
    type Done: Send + 'static;

    /// A short name for logs (slow-callback reports).
    fn name(&self) -> &'static str {
        "app"
    }
    /// A connection finished its handshake on a listening port. Return false to refuse it
    /// (it is reset).
    fn on_accept(&mut self, _c: &mut Conn<'_, Self>) -> bool {
        true
    }
    /// A connection opened with `Engine::connect` completed its handshake.
    fn on_connected(&mut self, _c: &mut Conn<'_, Self>) {}
    /// Bytes arrived. Return how many were consumed; the rest stays buffered (shrinking the
    /// receive window) and is offered again on the next event of this connection.
    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize;
    /// The peer sent FIN and every byte before it was consumed. Default: close our side
    /// too once queued data is sent.
    fn on_peer_fin(&mut self, c: &mut Conn<'_, Self>) {
        c.close();
    }
    /// Send space came back after a `send` that could not queue everything.
    fn on_writable(&mut self, _c: &mut Conn<'_, Self>) {}
    /// The timer armed with [`Conn::set_timer`] fired.
    fn on_timer(&mut self, _c: &mut Conn<'_, Self>) {}
    /// A job this connection offloaded finished (results arrive in completion order).
    fn on_done(&mut self, _c: &mut Conn<'_, Self>, _result: Self::Done) {}
    /// The connection ended. The handle still reads its state (take it with
    /// `std::mem::take(c.state())`; it is dropped after this call) and addresses, and
    /// reaches peers (`Conn::peer`, e.g. to pass a reset on) and `Conn::connect`; sending
    /// on it queues nothing. After this its id is dead.
    fn on_closed(&mut self, _c: &mut Conn<'_, Self>, _reason: CloseReason) {}
    /// A UDP datagram arrived on a bound port.
    fn on_datagram(&mut self, _d: &mut Datagram<'_>, _data: &[u8]) {}
    /// The app's own counters, reported with the engine's.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// A live connection, lent to a callback.
pub struct Conn<'a, A: App> {
    pub(crate) id: ConnId,
    pub(crate) sock: &'a mut tcp::Socket<'static>,
    pub(crate) flags: &'a mut ConnFlags,
    pub(crate) state: &'a mut A::ConnState,
    pub(crate) timer: &'a mut Option<Instant>,
    pub(crate) now: Instant,
    pub(crate) offload: Option<&'a mut OffloadPort<A::Done>>,
    pub(crate) offloads: &'a mut u32,
    /// The engine's other flows (None on a handle from `Conn::peer`).
    pub(crate) net: Option<crate::peer::Net<'a, A::ConnState>>,
}

/// Per-connection booleans the engine tracks for callbacks.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ConnFlags {
    pub want_writable: bool,
    pub aborted: bool,
}

impl<A: App> Conn<'_, A> {
    pub fn id(&self) -> ConnId {
        self.id
    }
    /// This connection's typed state.
    pub fn state(&mut self) -> &mut A::ConnState {
        self.state
    }
    /// Queue bytes for sending; never blocks. Returns how many were queued: fewer than
    /// `data.len()` means the send buffer is full and `on_writable` follows.
    pub fn send(&mut self, data: &[u8]) -> usize {
        let n = self.sock.send_slice(data).unwrap_or(0);
        if n < data.len() {
            self.flags.want_writable = true;
        }
        n
    }
    /// Free space in the send buffer.
    pub fn send_space(&self) -> usize {
        self.sock.send_capacity() - self.sock.send_queue()
    }
    /// Bytes queued and not yet acknowledged by the peer.
    pub fn send_queued(&self) -> usize {
        self.sock.send_queue()
    }
    /// Half-close: FIN after the queued data; receiving continues.
    pub fn close(&mut self) {
        self.sock.close();
    }
    /// Reset the connection now, dropping queued data.
    pub fn abort(&mut self) {
        self.sock.abort();
        self.flags.aborted = true;
    }
    pub fn local(&self) -> Option<IpEndpoint> {
        self.sock.local_endpoint()
    }
    pub fn remote(&self) -> Option<IpEndpoint> {
        self.sock.remote_endpoint()
    }
    /// The loop's current time.
    pub fn now(&self) -> Instant {
        self.now
    }
    /// Call `on_timer` once, `after` from now (replaces an armed timer).
    pub fn set_timer(&mut self, after: Duration) {
        *self.timer = Some(self.now + after);
    }
    pub fn cancel_timer(&mut self) {
        *self.timer = None;
    }
    /// Abort the connection if nothing is heard from the peer for `timeout` (None: the
    /// engine's default). Keep-alives (`set_keep_alive`) keep a quiet live peer talking.
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.sock.set_timeout(timeout);
    }
    /// Send keep-alive probes after `interval` of silence (None: off).
    pub fn set_keep_alive(&mut self, interval: Option<Duration>) {
        self.sock.set_keep_alive(interval);
    }
    /// Run `job` on the processor pool; its result reaches `App::on_done` for this
    /// connection on this engine's loop (or is dropped if the connection is gone by then).
    pub fn offload(
        &mut self,
        job: impl FnOnce() -> A::Done + Send + 'static,
    ) -> Result<(), OffloadError> {
        let port = self.offload.as_deref_mut().ok_or(OffloadError::NoPool)?;
        port.submit(self.id, job)?;
        *self.offloads += 1;
        Ok(())
    }
}

/// A received datagram's context: who sent it and a way to answer.
pub struct Datagram<'a> {
    pub(crate) sock: &'a mut udp::Socket<'static>,
    pub(crate) meta: udp::UdpMetadata,
    pub(crate) dropped: &'a mut u64,
}

impl Datagram<'_> {
    pub fn from(&self) -> IpEndpoint {
        self.meta.endpoint
    }
    pub fn local_port(&self) -> u16 {
        self.sock.endpoint().port
    }
    /// Send a datagram back to the sender. Returns false (and counts) if the socket's
    /// transmit buffer is full.
    pub fn reply(&mut self, data: &[u8]) -> bool {
        let ok = self.sock.send_slice(data, self.meta).is_ok();
        if !ok {
            *self.dropped += 1;
        }
        ok
    }
}

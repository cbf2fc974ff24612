//! The application side: callbacks run straight from the engine's loop (no syscall, no
//! queue in between) and a connection handle that never blocks.

use smoltcp::socket::{tcp, udp};
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
    /// Retransmissions or the idle timeout gave up.
    TimedOut,
    /// The application aborted it (or refused it in `on_accept`).
    Aborted,
}

/// Callbacks of one application instance; one instance per engine (per core).
pub trait App {
    /// A connection finished its handshake on a listening port. Return false to refuse it
    /// (it is reset).
    fn on_accept(&mut self, _c: &mut Conn<'_>) -> bool {
        true
    }
    /// A connection opened with `Engine::connect` completed its handshake.
    fn on_connected(&mut self, _c: &mut Conn<'_>) {}
    /// Bytes arrived. Return how many were consumed; the rest stays buffered (shrinking the
    /// receive window) and is offered again on the next event of this connection.
    fn on_data(&mut self, c: &mut Conn<'_>, data: &[u8]) -> usize;
    /// The peer sent FIN and every byte before it was consumed. Default: close our side
    /// too once queued data is sent.
    fn on_peer_fin(&mut self, c: &mut Conn<'_>) {
        c.close();
    }
    /// Send space came back after a `send` that could not queue everything.
    fn on_writable(&mut self, _c: &mut Conn<'_>) {}
    /// The connection is gone (after this, its id is dead).
    fn on_closed(&mut self, _id: ConnId, _reason: CloseReason) {}
    /// A UDP datagram arrived on a bound port.
    fn on_datagram(&mut self, _d: &mut Datagram<'_>, _data: &[u8]) {}
}

/// A live connection, lent to a callback.
pub struct Conn<'a> {
    pub(crate) id: ConnId,
    pub(crate) sock: &'a mut tcp::Socket<'static>,
    pub(crate) want_writable: &'a mut bool,
    pub(crate) aborted: &'a mut bool,
}

impl Conn<'_> {
    pub fn id(&self) -> ConnId {
        self.id
    }
    /// Queue bytes for sending; never blocks. Returns how many were queued: fewer than
    /// `data.len()` means the send buffer is full and `on_writable` follows.
    pub fn send(&mut self, data: &[u8]) -> usize {
        let n = self.sock.send_slice(data).unwrap_or(0);
        if n < data.len() {
            *self.want_writable = true;
        }
        n
    }
    /// Free space in the send buffer.
    pub fn send_space(&self) -> usize {
        self.sock.send_capacity() - self.sock.send_queue()
    }
    /// Half-close: FIN after the queued data; receiving continues.
    pub fn close(&mut self) {
        self.sock.close();
    }
    /// Reset the connection now, dropping queued data.
    pub fn abort(&mut self) {
        self.sock.abort();
        *self.aborted = true;
    }
    pub fn local(&self) -> Option<IpEndpoint> {
        self.sock.local_endpoint()
    }
    pub fn remote(&self) -> Option<IpEndpoint> {
        self.sock.remote_endpoint()
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

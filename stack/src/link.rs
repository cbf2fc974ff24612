//! The link seam: the two-method contract between an engine and whatever moves frames
//! (an AF_XDP port, an in-memory pair in tests). The stack never names AF_XDP.

use std::time::Duration;

/// Where outgoing frames go while an engine builds them.
pub trait TxSink {
    /// Reserve a frame of `len` bytes that is transmitted at the next [`Link::flush`].
    /// `None` when no buffer or ring slot is free; the caller counts the drop.
    fn frame(&mut self, len: usize) -> Option<&mut [u8]>;
    /// Whether a `frame` call would succeed now. The engine asks before letting smoltcp
    /// emit, so a full link defers egress (the socket keeps its data and retries next
    /// iteration) instead of building a frame that gets dropped.
    fn has_room(&mut self) -> bool {
        true
    }
}

/// Static properties of a link.
#[derive(Debug, Clone, Copy)]
pub struct LinkCaps {
    /// Largest Ethernet frame (header included) the link carries, e.g. 1514.
    pub max_frame: usize,
    /// Largest number of frames worth handling in one receive batch.
    pub rx_batch: usize,
}

/// A frame-moving device driven by one engine.
pub trait Link {
    /// The transmit side while it is borrowed from the link.
    type Sink<'a>: TxSink
    where
        Self: 'a;
    /// Lend up to `max` received frames to `f` in one call, with the transmit side for
    /// immediate replies; they are recycled when `f` returns. Seeing the whole batch lets
    /// the engine start every frame's flow lookup before it processes any, so their cache
    /// misses overlap. Returns the number of frames handled.
    fn receive<F: FnOnce(&[&[u8]], &mut dyn TxSink)>(&mut self, max: usize, f: F) -> usize;
    /// The transmit side, for frames that are not replies to a received one.
    fn sink(&mut self) -> Self::Sink<'_>;
    /// Push queued frames to the wire (at most one wakeup syscall) and recycle completed ones.
    fn flush(&mut self);
    fn caps(&self) -> LinkCaps;
    /// Block until a frame may be ready or `timeout` passes (None: no limit). Links that
    /// cannot block return at once; the default does that.
    fn wait(&mut self, _timeout: Option<Duration>) {}
    /// Something a worker thread may call to make a blocked `wait` return early (e.g. to
    /// deliver a processor-pool result). None: `wait` only ends by frame or timeout.
    fn notifier(&self) -> Option<Box<dyn Fn() + Send + Sync>> {
        None
    }
    /// Link-level counters as (name, value) pairs, merged into the engine's report.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

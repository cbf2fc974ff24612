//! smoltcp `Device` adapters over the link seam. smoltcp reads the received frame in
//! place and writes replies straight into the link's transmit buffers: one copy on
//! receive (frame -> socket buffer), one on transmit (socket buffer -> frame).

use crate::link::TxSink;
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Counts frames smoltcp wanted to send but the link had no room for.
#[derive(Default)]
pub struct TxDrops {
    pub no_buffer: u64,
    /// Scratch space handed to smoltcp when the link is full: smoltcp's `TxToken`
    /// cannot fail, so the frame is built here and dropped.
    scratch: Vec<u8>,
}

fn caps(max_frame: usize) -> DeviceCapabilities {
    let mut c = DeviceCapabilities::default();
    c.medium = Medium::Ethernet;
    c.max_transmission_unit = max_frame;
    c.max_burst_size = None;
    let mut cs = ChecksumCapabilities::default();
    // Verify everything on receive (a bad checksum is dropped by smoltcp) and compute
    // everything on transmit: veth and AF_XDP copy mode offer no offload.
    cs.ipv4 = Checksum::Both;
    cs.tcp = Checksum::Both;
    cs.udp = Checksum::Both;
    cs.icmpv4 = Checksum::Both;
    cs.icmpv6 = Checksum::Both;
    c.checksum = cs;
    c
}

/// A device that yields exactly one already-received frame, then nothing.
pub struct OneFrame<'a, S: TxSink + ?Sized> {
    pub frame: Option<&'a [u8]>,
    pub sink: &'a mut S,
    pub drops: &'a mut TxDrops,
    pub max_frame: usize,
}

/// A device with nothing to receive: egress only.
pub struct TxOnly<'a, S: TxSink + ?Sized> {
    pub sink: &'a mut S,
    pub drops: &'a mut TxDrops,
    pub max_frame: usize,
}

pub struct Rx<'a>(&'a [u8]);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

pub struct Tx<'a, S: TxSink + ?Sized> {
    sink: &'a mut S,
    drops: &'a mut TxDrops,
}

impl<S: TxSink + ?Sized> phy::TxToken for Tx<'_, S> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self.sink.frame(len) {
            Some(buf) => f(buf),
            None => {
                self.drops.no_buffer += 1;
                self.drops.scratch.resize(len, 0);
                f(&mut self.drops.scratch[..len])
            }
        }
    }
}

impl<S: TxSink + ?Sized> phy::Device for OneFrame<'_, S> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b, S>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(Rx<'_>, Tx<'_, S>)> {
        let frame = self.frame.take()?;
        Some((
            Rx(frame),
            Tx {
                sink: self.sink,
                drops: self.drops,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_, S>> {
        Some(Tx {
            sink: self.sink,
            drops: self.drops,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        caps(self.max_frame)
    }
}

impl<S: TxSink + ?Sized> phy::Device for TxOnly<'_, S> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b, S>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(Rx<'_>, Tx<'_, S>)> {
        None
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_, S>> {
        Some(Tx {
            sink: self.sink,
            drops: self.drops,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        caps(self.max_frame)
    }
}

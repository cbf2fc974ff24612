//! smoltcp `Device` adapters over the link seam. smoltcp reads the received frame in
//! place and writes replies straight into the link's transmit buffers: one copy on
//! receive (frame -> socket buffer), one on transmit (socket buffer -> frame).

use crate::link::TxSink;
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol,
    Ipv6Packet,
};

/// Counts frames smoltcp wanted to send but the link had no room for.
#[derive(Default)]
pub struct TxDrops {
    pub no_buffer: u64,
    /// Egress attempts held back because the link had no room (retried later).
    pub deferred: u64,
    /// Scratch space handed to smoltcp when the link is full: smoltcp's `TxToken`
    /// cannot fail, so the frame is built here and dropped.
    scratch: Vec<u8>,
    /// Neighbours smoltcp is resolving: targets of the ARP requests and neighbour
    /// solicitations it sent. Flows wait on them; an answer from one of them is worth
    /// waking those flows for, anything else is not. Small and bounded.
    pub resolving: Vec<IpAddress>,
}

/// Most neighbours tracked as being resolved at once.
const MAX_RESOLVING: usize = 64;

/// If `frame` is an ARP request or an NDP neighbour solicitation, its target.
fn solicited_target(frame: &[u8]) -> Option<IpAddress> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    match eth.ethertype() {
        EthernetProtocol::Arp => {
            let arp = ArpPacket::new_checked(eth.payload()).ok()?;
            match ArpRepr::parse(&arp).ok()? {
                ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Request,
                    target_protocol_addr,
                    ..
                } => Some(IpAddress::Ipv4(target_protocol_addr)),
                _ => None,
            }
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Icmpv6 {
                return None;
            }
            let p = ip.payload();
            // ICMPv6 type 135 (NS): 4 bytes header, 4 reserved, then the target (RFC 4861 4.3).
            if p.len() >= 24 && p[0] == 135 {
                let t: [u8; 16] = p[8..24].try_into().ok()?;
                return Some(IpAddress::Ipv6(t.into()));
            }
            None
        }
        _ => None,
    }
}

impl TxDrops {
    fn note_sent(&mut self, frame: &[u8]) {
        // Cheap pre-filter: only ARP and IPv6 frames can be solicitations.
        if frame.len() < 14 || !(frame[12..14] == [0x08, 0x06] || frame[12..14] == [0x86, 0xdd]) {
            return;
        }
        if let Some(t) = solicited_target(frame) {
            if !self.resolving.contains(&t) && self.resolving.len() < MAX_RESOLVING {
                self.resolving.push(t);
            }
        }
    }
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

/// The link as smoltcp sees it for one call: at most one already-received frame to hand
/// over (`frame`, taken by the first `receive`), and the link's transmit side. With no
/// frame it is an egress-only device.
pub struct LinkDevice<'a, S: TxSink + ?Sized> {
    pub frame: Option<&'a [u8]>,
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
            Some(buf) => {
                let r = f(buf);
                self.drops.note_sent(buf);
                r
            }
            None => {
                self.drops.no_buffer += 1;
                self.drops.scratch.resize(len, 0);
                f(&mut self.drops.scratch[..len])
            }
        }
    }
}

impl<S: TxSink + ?Sized> phy::Device for LinkDevice<'_, S> {
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
        // No room on the link: tell smoltcp the device is exhausted, so the segment stays
        // queued in the socket (and goes next iteration) instead of being built and lost.
        if !self.sink.has_room() {
            self.drops.deferred += 1;
            return None;
        }
        Some(Tx {
            sink: self.sink,
            drops: self.drops,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        caps(self.max_frame)
    }
}

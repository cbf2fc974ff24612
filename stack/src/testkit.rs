//! A raw TCP peer for tests and benchmarks: it builds the Ethernet frames a remote host
//! would put on the wire (ARP, IPv6 neighbour adverts, TCP segments with any sequence
//! numbers, flags, window and payload, checksums filled) and parses the frames an engine
//! sends back. Pair it with [`MemLink`](crate::MemLink): `send_raw` the built frames from
//! the peer's end, `drain_sent` and [`parse`] what the engine answered.
//!
//! Everything goes through `smoltcp::wire`, so what is built is what a correct host sends;
//! break it afterwards (flip a byte) to test malformed input.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpAddress, IpEndpoint, IpProtocol, Ipv4Address,
    Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr, TcpControl,
    TcpPacket, TcpRepr, TcpSeqNumber,
};

/// Window the peer advertises unless a segment says otherwise.
pub const DEFAULT_WINDOW: u16 = 65_535;
/// MSS the peer announces in its SYN.
pub const DEFAULT_MSS: u16 = 1460;

/// One TCP segment to build. `Default` is an empty bare ACK-less segment from port 0 to 0;
/// set what matters. smoltcp's representation carries one control flag (SYN, FIN, RST or
/// PSH) plus ACK when `ack` is `Some`.
#[derive(Debug, Clone, Copy)]
pub struct Out<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub control: TcpControl,
    pub seq: u32,
    /// `Some` sets the ACK flag with this acknowledgment number.
    pub ack: Option<u32>,
    pub window: u16,
    /// MSS option (only meaningful on a SYN).
    pub mss: Option<u16>,
    pub payload: &'a [u8],
}

impl Default for Out<'_> {
    fn default() -> Self {
        Out {
            src_port: 0,
            dst_port: 0,
            control: TcpControl::None,
            seq: 0,
            ack: None,
            window: DEFAULT_WINDOW,
            mss: None,
            payload: &[],
        }
    }
}

/// A remote host on the engine's link. Addresses must be of one family: both IPv4 or
/// both IPv6. Clone it with another `ip` (see [`RawPeer::with_ip`]) to spoof sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPeer {
    pub mac: EthernetAddress,
    pub ip: IpAddress,
    pub engine_mac: EthernetAddress,
    pub engine_ip: IpAddress,
}

impl RawPeer {
    pub fn new(mac: [u8; 6], ip: IpAddress, engine_mac: [u8; 6], engine_ip: IpAddress) -> Self {
        assert_eq!(
            std::mem::discriminant(&ip),
            std::mem::discriminant(&engine_ip),
            "peer and engine addresses must be of one family"
        );
        RawPeer {
            mac: EthernetAddress(mac),
            ip,
            engine_mac: EthernetAddress(engine_mac),
            engine_ip,
        }
    }

    /// The same peer (same MAC) sending from another address of its family: an off-link
    /// source behind this peer acting as the router, or a spoofed one.
    pub fn with_ip(&self, ip: IpAddress) -> Self {
        RawPeer::new(self.mac.0, ip, self.engine_mac.0, self.engine_ip)
    }

    /// The frame carrying segment `o` from this peer to the engine.
    pub fn segment(&self, o: &Out<'_>) -> Vec<u8> {
        let repr = TcpRepr {
            src_port: o.src_port,
            dst_port: o.dst_port,
            control: o.control,
            seq_number: TcpSeqNumber(o.seq as i32),
            ack_number: o.ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: o.window,
            window_scale: None,
            max_seg_size: o.mss,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: o.payload,
        };
        let caps = ChecksumCapabilities::default();
        let (ethertype, ip_len) = match self.ip {
            IpAddress::Ipv4(_) => (EthernetProtocol::Ipv4, 20),
            IpAddress::Ipv6(_) => (EthernetProtocol::Ipv6, 40),
        };
        let mut frame = self.ethernet(ethertype, ip_len + repr.buffer_len());
        let l3 = &mut frame[14..];
        let tcp = match (self.ip, self.engine_ip) {
            (IpAddress::Ipv4(src), IpAddress::Ipv4(dst)) => {
                let ip = Ipv4Repr {
                    src_addr: src,
                    dst_addr: dst,
                    next_header: IpProtocol::Tcp,
                    payload_len: repr.buffer_len(),
                    hop_limit: 64,
                };
                ip.emit(&mut Ipv4Packet::new_unchecked(&mut *l3), &caps);
                &mut l3[20..]
            }
            (IpAddress::Ipv6(src), IpAddress::Ipv6(dst)) => {
                let ip = Ipv6Repr {
                    src_addr: src,
                    dst_addr: dst,
                    next_header: IpProtocol::Tcp,
                    payload_len: repr.buffer_len(),
                    hop_limit: 64,
                };
                ip.emit(&mut Ipv6Packet::new_unchecked(&mut *l3));
                &mut l3[40..]
            }
            _ => unreachable!("checked in new"),
        };
        repr.emit(
            &mut TcpPacket::new_unchecked(tcp),
            &self.ip,
            &self.engine_ip,
            &caps,
        );
        frame
    }

    /// SYN with sequence number `isn` and an MSS option (RFC 9293 3.5).
    pub fn syn(&self, src_port: u16, dst_port: u16, isn: u32) -> Vec<u8> {
        self.segment(&Out {
            src_port,
            dst_port,
            control: TcpControl::Syn,
            seq: isn,
            mss: Some(DEFAULT_MSS),
            ..Default::default()
        })
    }

    /// Bare ACK.
    pub fn ack(&self, src_port: u16, dst_port: u16, seq: u32, ack: u32) -> Vec<u8> {
        self.segment(&Out {
            src_port,
            dst_port,
            seq,
            ack: Some(ack),
            ..Default::default()
        })
    }

    /// Data with ACK and PSH.
    pub fn data(&self, src_port: u16, dst_port: u16, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
        self.segment(&Out {
            src_port,
            dst_port,
            control: TcpControl::Psh,
            seq,
            ack: Some(ack),
            payload: data,
            ..Default::default()
        })
    }

    /// FIN with ACK.
    pub fn fin(&self, src_port: u16, dst_port: u16, seq: u32, ack: u32) -> Vec<u8> {
        self.segment(&Out {
            src_port,
            dst_port,
            control: TcpControl::Fin,
            seq,
            ack: Some(ack),
            ..Default::default()
        })
    }

    /// RST; with `ack` it is RST|ACK.
    pub fn rst(&self, src_port: u16, dst_port: u16, seq: u32, ack: Option<u32>) -> Vec<u8> {
        self.segment(&Out {
            src_port,
            dst_port,
            control: TcpControl::Rst,
            seq,
            ack,
            window: 0,
            ..Default::default()
        })
    }

    /// ARP request "who has `engine_ip`, tell `ip`" (broadcast). Answering it also teaches
    /// the engine this peer's MAC, so no ARP round trip delays the engine's first reply.
    /// IPv4 only.
    pub fn arp_request(&self) -> Vec<u8> {
        let (IpAddress::Ipv4(sip), IpAddress::Ipv4(tip)) = (self.ip, self.engine_ip) else {
            panic!("ARP needs IPv4 addresses");
        };
        self.arp(ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: self.mac,
            source_protocol_addr: sip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: tip,
        })
    }

    /// The reply to an ARP request the engine sent, if it asks for this peer's address.
    pub fn arp_reply_to(&self, req: &Arp) -> Option<Vec<u8>> {
        if req.op != ArpOperation::Request || IpAddress::Ipv4(req.target_ip) != self.ip {
            return None;
        }
        Some(self.arp(ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: self.mac,
            source_protocol_addr: req.target_ip,
            target_hardware_addr: req.sender_mac,
            target_protocol_addr: req.sender_ip,
        }))
    }

    /// Unsolicited IPv6 neighbour advertisement (RFC 4861 7.2.6, override flag set) that
    /// teaches the engine this peer's MAC. IPv6 only.
    pub fn neighbor_advert(&self) -> Vec<u8> {
        let (IpAddress::Ipv6(src), IpAddress::Ipv6(dst)) = (self.ip, self.engine_ip) else {
            panic!("neighbour discovery needs IPv6 addresses");
        };
        let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags: NdiscNeighborFlags::OVERRIDE,
            target_addr: src,
            lladdr: Some(self.mac.into()),
        });
        let ip = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Icmpv6,
            payload_len: icmp.buffer_len(),
            hop_limit: 255,
        };
        let mut frame = self.ethernet(EthernetProtocol::Ipv6, 40 + icmp.buffer_len());
        let l3 = &mut frame[14..];
        ip.emit(&mut Ipv6Packet::new_unchecked(&mut *l3));
        icmp.emit(
            &src,
            &dst,
            &mut Icmpv6Packet::new_unchecked(&mut l3[40..]),
            &ChecksumCapabilities::default(),
        );
        frame
    }

    fn arp(&self, repr: ArpRepr) -> Vec<u8> {
        let dst = match repr {
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                ..
            } => EthernetAddress::BROADCAST,
            _ => self.engine_mac,
        };
        let mut frame = vec![0; 14 + repr.buffer_len()];
        EthernetRepr {
            src_addr: self.mac,
            dst_addr: dst,
            ethertype: EthernetProtocol::Arp,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
        repr.emit(&mut ArpPacket::new_unchecked(&mut frame[14..]));
        frame
    }

    fn ethernet(&self, ethertype: EthernetProtocol, l3_len: usize) -> Vec<u8> {
        let mut frame = vec![0; 14 + l3_len];
        EthernetRepr {
            src_addr: self.mac,
            dst_addr: self.engine_mac,
            ethertype,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
        frame
    }
}

/// An ARP packet seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: ArpOperation,
    pub sender_mac: EthernetAddress,
    pub sender_ip: Ipv4Address,
    pub target_mac: EthernetAddress,
    pub target_ip: Ipv4Address,
}

/// A TCP segment seen on the wire. Its payload is `frame[payload_at..][..payload_len]`
/// (see [`Seg::payload`]), so parsing never copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    pub src_mac: EthernetAddress,
    pub dst_mac: EthernetAddress,
    pub src: IpEndpoint,
    pub dst: IpEndpoint,
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
    pub seq: u32,
    /// Acknowledgment number as on the wire (meaningful only with `ack`).
    pub ack_no: u32,
    pub window: u16,
    /// MSS option, if present.
    pub mss: Option<u16>,
    pub payload_at: usize,
    pub payload_len: usize,
}

impl Seg {
    /// This segment's payload inside the frame it was parsed from.
    pub fn payload<'f>(&self, frame: &'f [u8]) -> &'f [u8] {
        &frame[self.payload_at..self.payload_at + self.payload_len]
    }

    /// Sequence space the segment occupies (RFC 9293 3.4: SYN and FIN count as one).
    pub fn seg_len(&self) -> u32 {
        self.payload_len as u32 + self.syn as u32 + self.fin as u32
    }
}

/// A parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    Arp(Arp),
    Tcp(Seg),
    /// Well-formed Ethernet carrying something else (ICMP, UDP, NDP...).
    Other(EthernetProtocol),
}

impl Parsed {
    pub fn tcp(self) -> Option<Seg> {
        match self {
            Parsed::Tcp(s) => Some(s),
            _ => None,
        }
    }
    pub fn arp(self) -> Option<Arp> {
        match self {
            Parsed::Arp(a) => Some(a),
            _ => None,
        }
    }
}

/// Parse a frame an engine sent: Ethernet, then ARP or IPv4/IPv6 (no extension headers)
/// and TCP. `None` if it is malformed or a checksum (IPv4 header, TCP) is wrong: an engine
/// must never send such a frame.
pub fn parse(frame: &[u8]) -> Option<Parsed> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (src_mac, dst_mac) = (eth.src_addr(), eth.dst_addr());
    let (src, dst, l4, l4_at) = match eth.ethertype() {
        EthernetProtocol::Arp => {
            let ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                target_hardware_addr,
                target_protocol_addr,
            } = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?
            else {
                return None;
            };
            return Some(Parsed::Arp(Arp {
                op: operation,
                sender_mac: source_hardware_addr,
                sender_ip: source_protocol_addr,
                target_mac: target_hardware_addr,
                target_ip: target_protocol_addr,
            }));
        }
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if !ip.verify_checksum() {
                return None;
            }
            if ip.next_header() != IpProtocol::Tcp {
                return Some(Parsed::Other(EthernetProtocol::Ipv4));
            }
            let at = 14 + ip.header_len() as usize;
            let (s, d) = (ip.src_addr().into(), ip.dst_addr().into());
            (s, d, ip.payload(), at)
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return Some(Parsed::Other(EthernetProtocol::Ipv6));
            }
            let (s, d) = (ip.src_addr().into(), ip.dst_addr().into());
            (s, d, ip.payload(), 14 + 40)
        }
        other => return Some(Parsed::Other(other)),
    };
    let t = TcpPacket::new_checked(l4).ok()?;
    if !t.verify_checksum(&src, &dst) {
        return None;
    }
    // The MSS option, via smoltcp's own parser (which also validates the options).
    let mss = TcpRepr::parse(&t, &src, &dst, &ChecksumCapabilities::ignored())
        .ok()?
        .max_seg_size;
    Some(Parsed::Tcp(Seg {
        src_mac,
        dst_mac,
        src: IpEndpoint::new(src, t.src_port()),
        dst: IpEndpoint::new(dst, t.dst_port()),
        syn: t.syn(),
        ack: t.ack(),
        fin: t.fin(),
        rst: t.rst(),
        psh: t.psh(),
        seq: t.seq_number().0 as u32,
        ack_no: t.ack_number().0 as u32,
        window: t.window_len(),
        mss,
        payload_at: l4_at + t.header_len() as usize,
        payload_len: t.payload().len(),
    }))
}

/// Poll two engines (typically the two ends of a [`MemLink`](crate::MemLink) pair) with a
/// manual clock: each polls 8 times per simulated millisecond, from `*t` on, until `done`,
/// `max_ms` simulated milliseconds or 30 s of real time (processor-pool jobs run on real
/// threads), whichever comes first. `*t` is left at the next millisecond.
pub fn run_pair<LA, LB, A, B>(
    a: &mut crate::Engine<LA, A>,
    b: &mut crate::Engine<LB, B>,
    t: &mut i64,
    max_ms: i64,
    mut done: impl FnMut(&crate::Engine<LA, A>, &crate::Engine<LB, B>) -> bool,
) where
    LA: crate::Link,
    LB: crate::Link,
    A: crate::App,
    B: crate::App,
{
    let end = t.saturating_add(max_ms);
    let wall = std::time::Instant::now();
    while *t < end && !done(a, b) && wall.elapsed() < std::time::Duration::from_secs(30) {
        for _ in 0..8 {
            a.poll(smoltcp::time::Instant::from_millis(*t));
            b.poll(smoltcp::time::Instant::from_millis(*t));
        }
        *t += 1;
    }
}

/// `n` deterministic pseudo-random bytes (xorshift64 from `seed`): payloads whose digest
/// a test compares, reproducible from the seed.
pub fn payload(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> RawPeer {
        RawPeer::new(
            [2, 0, 0, 0, 0, 1],
            IpAddress::v4(198, 18, 0, 1),
            [2, 0, 0, 0, 0, 2],
            IpAddress::v4(198, 18, 0, 2),
        )
    }

    #[test]
    fn built_segments_parse_back() {
        let p = peer();
        let f = p.data(40000, 7, 1000, 2000, b"hello");
        let s = parse(&f).unwrap().tcp().unwrap();
        assert_eq!(s.src, IpEndpoint::new(p.ip, 40000));
        assert_eq!(s.dst, IpEndpoint::new(p.engine_ip, 7));
        assert!(s.ack && s.psh && !s.syn && !s.fin && !s.rst);
        assert_eq!((s.seq, s.ack_no), (1000, 2000));
        assert_eq!(s.payload(&f), b"hello");
        let f = p.syn(40000, 7, u32::MAX);
        let s = parse(&f).unwrap().tcp().unwrap();
        assert!(s.syn && !s.ack);
        assert_eq!(
            (s.seq, s.seg_len(), s.mss),
            (u32::MAX, 1, Some(DEFAULT_MSS))
        );
        // A flipped payload bit breaks the checksum: parse refuses it.
        let mut f = p.data(1, 2, 3, 4, b"x");
        *f.last_mut().unwrap() ^= 1;
        assert_eq!(parse(&f), None);
    }

    #[test]
    fn ipv6_and_arp() {
        let p = RawPeer::new(
            [2, 0, 0, 0, 0, 1],
            IpAddress::v6(0xfd00, 0, 0, 0, 0, 0, 0, 1),
            [2, 0, 0, 0, 0, 2],
            IpAddress::v6(0xfd00, 0, 0, 0, 0, 0, 0, 2),
        );
        let f = p.fin(5, 6, 7, 8);
        let s = parse(&f).unwrap().tcp().unwrap();
        assert!(s.fin && s.ack);
        assert_eq!(s.src.addr, p.ip);
        assert!(matches!(
            parse(&p.neighbor_advert()),
            Some(Parsed::Other(EthernetProtocol::Ipv6))
        ));
        let a = parse(&peer().arp_request()).unwrap().arp().unwrap();
        assert_eq!(a.op, ArpOperation::Request);
        assert_eq!(a.target_ip, Ipv4Address::new(198, 18, 0, 2));
        // The engine asking for the peer gets a reply; asking for someone else does not.
        let engine_asks = Arp {
            op: ArpOperation::Request,
            sender_mac: peer().engine_mac,
            sender_ip: Ipv4Address::new(198, 18, 0, 2),
            target_mac: EthernetAddress([0; 6]),
            target_ip: Ipv4Address::new(198, 18, 0, 1),
        };
        let r = peer().arp_reply_to(&engine_asks).unwrap();
        let r = parse(&r).unwrap().arp().unwrap();
        assert_eq!(r.op, ArpOperation::Reply);
        assert_eq!(r.sender_mac, peer().mac);
        let other = Arp {
            target_ip: Ipv4Address::new(198, 18, 0, 9),
            ..engine_asks
        };
        assert_eq!(peer().arp_reply_to(&other), None);
    }
}

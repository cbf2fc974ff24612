//! A minimal raw peer for benches: builds the Ethernet/IPv4/TCP and ARP frames a remote
//! host sends into a caller's buffer (so a bench can recycle buffers and allocate nothing
//! per segment) and parses the TCP segments an engine sends back. Everything goes through
//! `smoltcp::wire`, checksums included.

use c10m_stack::smoltcp::phy::ChecksumCapabilities;
use c10m_stack::smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket,
    TcpRepr, TcpSeqNumber,
};

const ETH: usize = 14;
const IP4: usize = 20;

/// One TCP segment from a remote host to the engine.
#[derive(Debug, Clone, Copy)]
pub struct Seg<'a> {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: (Ipv4Address, u16),
    pub dst: (Ipv4Address, u16),
    pub control: TcpControl,
    pub seq: u32,
    /// `Some` sets ACK with this number.
    pub ack: Option<u32>,
    pub window: u16,
    pub mss: Option<u16>,
    pub payload: &'a [u8],
}

/// Build `s` into `buf` (cleared and resized to the frame's length).
pub fn tcp_frame(buf: &mut Vec<u8>, s: &Seg<'_>) {
    let tcp = TcpRepr {
        src_port: s.src.1,
        dst_port: s.dst.1,
        control: s.control,
        seq_number: TcpSeqNumber(s.seq as i32),
        ack_number: s.ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: s.window,
        window_scale: None,
        max_seg_size: s.mss,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: s.payload,
    };
    let ip = Ipv4Repr {
        src_addr: s.src.0,
        dst_addr: s.dst.0,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(s.src_mac),
        dst_addr: EthernetAddress(s.dst_mac),
        ethertype: EthernetProtocol::Ipv4,
    };
    let len = ETH + IP4 + tcp.buffer_len();
    buf.clear();
    buf.resize(len, 0);
    let caps = ChecksumCapabilities::default();
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
    ip.emit(&mut p, &caps);
    let mut t = TcpPacket::new_unchecked(p.payload_mut());
    tcp.emit(
        &mut t,
        &IpAddress::Ipv4(s.src.0),
        &IpAddress::Ipv4(s.dst.0),
        &caps,
    );
}

/// An ARP request from (`mac`, `ip`) asking for `target`: smoltcp answers it and learns
/// `mac` for `ip` from it.
pub fn arp_request(mac: [u8; 6], ip: Ipv4Address, target: Ipv4Address) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(mac),
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let mut buf = vec![0u8; ETH + arp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: EthernetAddress(mac),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
    buf
}

/// Whether `frame` is an ARP reply.
pub fn is_arp_reply(frame: &[u8]) -> bool {
    let Ok(f) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    if f.ethertype() != EthernetProtocol::Arp {
        return false;
    }
    let Ok(p) = ArpPacket::new_checked(f.payload()) else {
        return false;
    };
    matches!(
        ArpRepr::parse(&p),
        Ok(ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            ..
        })
    )
}

/// A TCP segment the engine sent, as far as the benches check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub dst_mac: [u8; 6],
    pub src: (Ipv4Address, u16),
    pub dst: (Ipv4Address, u16),
    pub syn: bool,
    pub ack_flag: bool,
    pub rst: bool,
    pub fin: bool,
    pub seq: u32,
    pub ack: u32,
    /// Range of the payload inside the frame.
    pub payload: (usize, usize),
}

/// Parse an IPv4/TCP frame (checksums are not verified); `None` for anything else.
pub fn parse_tcp(frame: &[u8]) -> Option<Parsed> {
    let f = EthernetFrame::new_checked(frame).ok()?;
    if f.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(f.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let t = TcpPacket::new_checked(ip.payload()).ok()?;
    let start = ETH + ip.header_len() as usize + t.header_len() as usize;
    let end = ETH + ip.total_len() as usize;
    if start > end || end > frame.len() {
        return None;
    }
    Some(Parsed {
        dst_mac: f.dst_addr().0,
        src: (ip.src_addr(), t.src_port()),
        dst: (ip.dst_addr(), t.dst_port()),
        syn: t.syn(),
        ack_flag: t.ack(),
        rst: t.rst(),
        fin: t.fin(),
        seq: t.seq_number().0 as u32,
        ack: t.ack_number().0 as u32,
        payload: (start, end),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse_round_trips() {
        let mut buf = Vec::new();
        let s = Seg {
            src_mac: [2, 0, 0, 0, 0, 9],
            dst_mac: [2, 0, 0, 0, 0, 1],
            src: (Ipv4Address::new(198, 19, 0, 1), 4000),
            dst: (Ipv4Address::new(198, 18, 0, 2), 7),
            control: TcpControl::Psh,
            seq: 0xffff_fff0,
            ack: Some(77),
            window: 65_535,
            mss: None,
            payload: b"0123456789abcdef",
        };
        tcp_frame(&mut buf, &s);
        let p = parse_tcp(&buf).unwrap();
        assert_eq!(p.src, s.src);
        assert_eq!(p.dst, s.dst);
        assert_eq!((p.seq, p.ack), (0xffff_fff0, 77));
        assert!(p.ack_flag && !p.syn);
        assert_eq!(&buf[p.payload.0..p.payload.1], s.payload);
        assert!(!is_arp_reply(&buf));
    }
}

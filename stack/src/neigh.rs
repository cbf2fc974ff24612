//! Neighbour upkeep smoltcp leaves to its user.
//!
//! smoltcp learns a neighbour only from ARP / NDP aimed at it and lets every entry expire
//! 60 s after learning it; traffic from *off-link* peers (behind a gateway) never renews
//! the gateway's entry, so every 60 s a flow would stall on a fresh resolution (and smoltcp
//! stays silent for 1 s after each request). The engine therefore asks for the gateway
//! itself, well before expiry, with these frames; the gateway's answer refreshes the
//! entry. Built with smoltcp's wire types, checksums included.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Address, Ipv6Address, Ipv6Packet,
    Ipv6Repr, NdiscRepr, RawHardwareAddress,
};

/// How often the gateway is asked for (smoltcp's entries live 60 s).
pub const REFRESH_MS: i64 = 15_000;

/// Length of [`arp_request`]'s frame.
pub const ARP_FRAME_LEN: usize = 14 + 28;

/// Write an ARP request "who has `target`? tell `ip`" into `buf` (at least
/// [`ARP_FRAME_LEN`] bytes).
pub fn arp_request(buf: &mut [u8], mac: EthernetAddress, ip: Ipv4Address, target: Ipv4Address) {
    let eth = EthernetRepr {
        src_addr: mac,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..ARP_FRAME_LEN]);
    eth.emit(&mut frame);
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
}

/// An ARP request smoltcp will not answer: for our address `target`, from a sender
/// outside all of `ours` subnets.
pub struct OffSubnetRequest {
    pub sender_mac: EthernetAddress,
    pub sender_ip: Ipv4Address,
    pub target: Ipv4Address,
}

/// smoltcp answers ARP only from senders on its own subnets; RFC 826 answers any request
/// for our address. Linux uses the outgoing packet's source address as the ARP sender, so
/// a host whose clients sit on another subnet (addresses on its `lo`, a router's far side)
/// would never resolve us. Returns the request if it is one of those.
pub fn off_subnet_request(frame: &[u8], ours: &[(Ipv4Address, u8)]) -> Option<OffSubnetRequest> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let arp = ArpPacket::new_checked(eth.payload()).ok()?;
    let ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = ArpRepr::parse(&arp).ok()?
    else {
        return None;
    };
    let ours_target = ours.iter().any(|(a, _)| *a == target_protocol_addr);
    let on_link = ours
        .iter()
        .any(|(a, p)| smoltcp::wire::Ipv4Cidr::new(*a, *p).contains_addr(&source_protocol_addr));
    let unicast_sender =
        source_hardware_addr.is_unicast() && !source_protocol_addr.is_unspecified();
    (ours_target && !on_link && unicast_sender).then_some(OffSubnetRequest {
        sender_mac: source_hardware_addr,
        sender_ip: source_protocol_addr,
        target: target_protocol_addr,
    })
}

/// Write the ARP reply to `req` (from `mac`) into `buf` (at least [`ARP_FRAME_LEN`] bytes).
pub fn arp_reply(buf: &mut [u8], mac: EthernetAddress, req: &OffSubnetRequest) {
    let eth = EthernetRepr {
        src_addr: mac,
        dst_addr: req.sender_mac,
        ethertype: EthernetProtocol::Arp,
    };
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..ARP_FRAME_LEN]);
    eth.emit(&mut frame);
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: mac,
        source_protocol_addr: req.target,
        target_hardware_addr: req.sender_mac,
        target_protocol_addr: req.sender_ip,
    }
    .emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
}

/// Length of [`neighbor_solicit`]'s frame.
pub const NS_FRAME_LEN: usize = 14 + 40 + 32;

/// Write an NDP neighbour solicitation for `target` (RFC 4861 7.2.2) from `ip` into `buf`
/// (at least [`NS_FRAME_LEN`] bytes), sent to the target's solicited-node group.
pub fn neighbor_solicit(
    buf: &mut [u8],
    mac: EthernetAddress,
    ip: Ipv6Address,
    target: Ipv6Address,
) {
    // RFC 4291 2.7.1: ff02::1:ffXX:XXXX with the target's low 24 bits.
    let t = target.octets();
    let dst = Ipv6Address::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | t[13] as u16,
        u16::from_be_bytes([t[14], t[15]]),
    );
    let o = dst.octets();
    let eth = EthernetRepr {
        src_addr: mac,
        dst_addr: EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]]),
        ethertype: EthernetProtocol::Ipv6,
    };
    let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: target,
        lladdr: Some(RawHardwareAddress::from(mac)),
    });
    let ip6 = Ipv6Repr {
        src_addr: ip,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..NS_FRAME_LEN]);
    eth.emit(&mut frame);
    let mut pkt = Ipv6Packet::new_unchecked(frame.payload_mut());
    ip6.emit(&mut pkt);
    icmp.emit(
        &ip,
        &dst,
        &mut Icmpv6Packet::new_unchecked(pkt.payload_mut()),
        &ChecksumCapabilities::default(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_request_parses_back() {
        let mut b = [0u8; ARP_FRAME_LEN];
        let mac = EthernetAddress([2, 0, 0, 0, 0, 9]);
        arp_request(
            &mut b,
            mac,
            Ipv4Address::new(198, 18, 0, 2),
            Ipv4Address::new(198, 18, 0, 1),
        );
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!(f.ethertype(), EthernetProtocol::Arp);
        let r = ArpRepr::parse(&ArpPacket::new_checked(f.payload()).unwrap()).unwrap();
        match r {
            ArpRepr::EthernetIpv4 {
                operation,
                target_protocol_addr,
                source_hardware_addr,
                ..
            } => {
                assert_eq!(operation, ArpOperation::Request);
                assert_eq!(target_protocol_addr, Ipv4Address::new(198, 18, 0, 1));
                assert_eq!(source_hardware_addr, mac);
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn off_subnet_request_is_answered_on_subnet_is_left_to_smoltcp() {
        let ours = [(Ipv4Address::new(198, 18, 0, 2), 24)];
        let peer = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let mut req = [0u8; ARP_FRAME_LEN];
        arp_request(
            &mut req,
            peer,
            Ipv4Address::new(198, 19, 0, 7),
            Ipv4Address::new(198, 18, 0, 2),
        );
        let r = off_subnet_request(&req, &ours).expect("off-subnet request for our address");
        assert_eq!(r.sender_ip, Ipv4Address::new(198, 19, 0, 7));
        let mut out = [0u8; ARP_FRAME_LEN];
        let me = EthernetAddress([2, 0, 0, 0, 0, 2]);
        arp_reply(&mut out, me, &r);
        let f = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!(f.dst_addr(), peer);
        match ArpRepr::parse(&ArpPacket::new_checked(f.payload()).unwrap()).unwrap() {
            ArpRepr::EthernetIpv4 {
                operation,
                source_protocol_addr,
                target_protocol_addr,
                source_hardware_addr,
                ..
            } => {
                assert_eq!(operation, ArpOperation::Reply);
                assert_eq!(source_protocol_addr, Ipv4Address::new(198, 18, 0, 2));
                assert_eq!(target_protocol_addr, Ipv4Address::new(198, 19, 0, 7));
                assert_eq!(source_hardware_addr, me);
            }
            _ => unreachable!(),
        }
        // On-link sender, or a request for another host: not ours to answer here.
        arp_request(
            &mut req,
            peer,
            Ipv4Address::new(198, 18, 0, 1),
            Ipv4Address::new(198, 18, 0, 2),
        );
        assert!(off_subnet_request(&req, &ours).is_none());
        arp_request(
            &mut req,
            peer,
            Ipv4Address::new(198, 19, 0, 7),
            Ipv4Address::new(198, 18, 0, 9),
        );
        assert!(off_subnet_request(&req, &ours).is_none());
    }

    #[test]
    fn neighbor_solicit_has_valid_checksum() {
        let mut b = [0u8; NS_FRAME_LEN];
        let mac = EthernetAddress([2, 0, 0, 0, 0, 9]);
        let ip: Ipv6Address = "2001:2::2".parse().unwrap();
        let gw: Ipv6Address = "2001:2::1".parse().unwrap();
        neighbor_solicit(&mut b, mac, ip, gw);
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        let p = Ipv6Packet::new_checked(f.payload()).unwrap();
        let r = Ipv6Repr::parse(&p).unwrap();
        let icmp = Icmpv6Packet::new_checked(p.payload()).unwrap();
        assert!(icmp.verify_checksum(&r.src_addr, &r.dst_addr));
        match Icmpv6Repr::parse(
            &r.src_addr,
            &r.dst_addr,
            &icmp,
            &ChecksumCapabilities::default(),
        )
        .unwrap()
        {
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, .. }) => {
                assert_eq!(target_addr, gw)
            }
            other => panic!("{other:?}"),
        }
    }
}

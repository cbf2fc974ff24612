//! Just enough header parsing to demultiplex a frame to its flow before smoltcp sees it.
//! Every length is checked once (smoltcp's `new_checked`), so untrusted bytes cannot
//! panic; anything odd is classified, counted by the caller and never allocates state.

use std::hash::{Hash, Hasher};

use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, IpAddress, IpEndpoint, IpProtocol,
    Ipv4Packet, Ipv6Packet, TcpPacket,
};

/// A TCP connection's identity as seen from the stack: (local, remote).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourTuple {
    pub local: IpEndpoint,
    pub remote: IpEndpoint,
}

impl FourTuple {
    /// The compact key of an IPv4 4-tuple; None for IPv6 (or mixed families).
    #[inline]
    pub fn ipv4_key(&self) -> Option<Ipv4Key> {
        match (self.local.addr, self.remote.addr) {
            (IpAddress::Ipv4(l), IpAddress::Ipv4(r)) => Some(Ipv4Key {
                local: l.to_bits(),
                remote: r.to_bits(),
                ports: (self.local.port as u32) << 16 | self.remote.port as u32,
            }),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

/// An IPv4 4-tuple packed into 12 bytes, the flow table's key for IPv4 flows.
///
/// A [`FourTuple`] has room for IPv6 addresses: 40 bytes, hashed in six steps and compared
/// field by field. This key hashes as one `u64` and one `u32`, and a table entry with a
/// `u32` value is 16 bytes, four to a cache line, which matters once the table outgrows
/// the caches (every segment starts with this lookup).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ipv4Key {
    local: u32,
    remote: u32,
    /// Local port in the high half, remote port in the low half.
    ports: u32,
}

impl Ipv4Key {
    /// The key as three words (local address, remote address, ports), as the flow table
    /// stores it.
    #[inline]
    pub(crate) fn parts(&self) -> [u32; 3] {
        [self.local, self.remote, self.ports]
    }

    #[inline]
    pub(crate) fn from_parts([local, remote, ports]: [u32; 3]) -> Ipv4Key {
        Ipv4Key {
            local,
            remote,
            ports,
        }
    }

    /// The key as two words, for the flow table's own hash.
    #[inline]
    pub(crate) fn words(&self) -> (u64, u64) {
        (
            (self.remote as u64) << 32 | self.ports as u64,
            self.local as u64,
        )
    }
}

impl Hash for Ipv4Key {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64((self.remote as u64) << 32 | self.ports as u64);
        h.write_u32(self.local);
    }
}

/// What a received frame is, as far as demultiplexing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A TCP segment; flags are those demux decisions need.
    Tcp {
        key: FourTuple,
        syn: bool,
        ack: bool,
        rst: bool,
    },
    /// ARP, or NDP neighbour solicitation/advertisement from `sender`: handled by the
    /// shared set, and may teach smoltcp a neighbour that flows are waiting for.
    Neighbor { sender: Option<IpAddress> },
    /// ICMP, UDP, IPv6 with extension headers...: handled by the shared socket set.
    Other,
    /// Cannot be parsed: too short, bad header length, unknown EtherType.
    Malformed(Malformed),
}

/// Why a frame was dropped before reaching smoltcp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Ethernet,
    EtherType,
    Ipv4,
    Ipv6,
    Tcp,
}

pub fn classify(frame: &[u8]) -> Class {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Class::Malformed(Malformed::Ethernet);
    };
    match eth.ethertype() {
        EthernetProtocol::Arp => Class::Neighbor {
            sender: ArpPacket::new_checked(eth.payload())
                .ok()
                .and_then(|a| ArpRepr::parse(&a).ok())
                .and_then(|r| match r {
                    ArpRepr::EthernetIpv4 {
                        source_protocol_addr,
                        ..
                    } => Some(IpAddress::Ipv4(source_protocol_addr)),
                    _ => None,
                }),
        },
        EthernetProtocol::Ipv4 => {
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                return Class::Malformed(Malformed::Ipv4);
            };
            if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
                return Class::Other;
            }
            tcp(
                IpAddress::Ipv4(ip.dst_addr()),
                IpAddress::Ipv4(ip.src_addr()),
                ip.payload(),
            )
        }
        EthernetProtocol::Ipv6 => {
            let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else {
                return Class::Malformed(Malformed::Ipv6);
            };
            if ip.next_header() == IpProtocol::Icmpv6 {
                // ICMPv6 type 135 (NS) or 136 (NA), RFC 4861 4.3/4.4.
                return match ip.payload().first() {
                    Some(135 | 136) => Class::Neighbor {
                        sender: Some(IpAddress::Ipv6(ip.src_addr())),
                    },
                    _ => Class::Other,
                };
            }
            if ip.next_header() != IpProtocol::Tcp {
                return Class::Other;
            }
            tcp(
                IpAddress::Ipv6(ip.dst_addr()),
                IpAddress::Ipv6(ip.src_addr()),
                ip.payload(),
            )
        }
        _ => Class::Malformed(Malformed::EtherType),
    }
}

fn tcp(local: IpAddress, remote: IpAddress, payload: &[u8]) -> Class {
    let Ok(t) = TcpPacket::new_checked(payload) else {
        return Class::Malformed(Malformed::Tcp);
    };
    Class::Tcp {
        key: FourTuple {
            local: IpEndpoint::new(local, t.dst_port()),
            remote: IpEndpoint::new(remote, t.src_port()),
        },
        syn: t.syn(),
        ack: t.ack(),
        rst: t.rst(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(syn: bool) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12] = 0x08; // IPv4
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6; // TCP
        ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
        ip[16..20].copy_from_slice(&[198, 18, 0, 2]);
        let t = &mut f[34..54];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&7u16.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = if syn { 0x02 } else { 0x10 };
        f
    }

    #[test]
    fn tcp_syn_four_tuple() {
        match classify(&tcp_frame(true)) {
            Class::Tcp { key, syn, ack, rst } => {
                assert_eq!(key.local.port, 7);
                assert_eq!(key.remote.port, 40000);
                assert_eq!(key.remote.addr.to_string(), "198.18.0.1");
                assert!(syn && !ack && !rst);
            }
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn truncated_and_garbage_never_panic() {
        let f = tcp_frame(false);
        for n in 0..f.len() {
            let c = classify(&f[..n]);
            assert!(matches!(c, Class::Malformed(_)), "len {n}: {c:?}");
        }
        // Every bit pattern of a short frame is classified without panicking.
        let mut x = 0x9e3779b97f4a7c15u64;
        for _ in 0..20_000 {
            let mut g = f.clone();
            for b in g.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            g[12] = 0x08;
            g[13] = 0;
            let _ = classify(&g);
        }
    }

    #[test]
    fn header_length_beyond_packet_is_malformed() {
        let mut f = tcp_frame(false);
        f[14] = 0x4f; // IHL 60 bytes, packet has 40
        assert_eq!(classify(&f), Class::Malformed(Malformed::Ipv4));
        let mut f = tcp_frame(false);
        f[34 + 12] = 15 << 4; // TCP data offset 60 bytes, segment has 20
        assert_eq!(classify(&f), Class::Malformed(Malformed::Tcp));
    }
}

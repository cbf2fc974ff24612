//! The engine's flow table: 4-tuple -> slab index. IPv4 flows, the bulk of any large
//! table, live under a 12-byte key ([`Ipv4Key`]); IPv6 flows under the full [`FourTuple`].

use crate::wire::{FourTuple, Ipv4Key};
use rustc_hash::FxHashMap;

#[derive(Default)]
pub(crate) struct FlowTable {
    v4: FxHashMap<Ipv4Key, u32>,
    v6: FxHashMap<FourTuple, u32>,
}

impl FlowTable {
    #[inline]
    pub fn get(&self, key: &FourTuple) -> Option<u32> {
        match key.ipv4_key() {
            Some(k) => self.v4.get(&k).copied(),
            None => self.v6.get(key).copied(),
        }
    }

    pub fn contains(&self, key: &FourTuple) -> bool {
        self.get(key).is_some()
    }

    pub fn insert(&mut self, key: FourTuple, idx: u32) {
        match key.ipv4_key() {
            Some(k) => self.v4.insert(k, idx),
            None => self.v6.insert(key, idx),
        };
    }

    pub fn remove(&mut self, key: &FourTuple) {
        match key.ipv4_key() {
            Some(k) => self.v4.remove(&k),
            None => self.v6.remove(key),
        };
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, Ipv6Address};

    fn v4(l: [u8; 4], lp: u16, r: [u8; 4], rp: u16) -> FourTuple {
        FourTuple {
            local: IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::from(l)), lp),
            remote: IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::from(r)), rp),
        }
    }

    #[test]
    fn every_field_of_the_tuple_tells_flows_apart() {
        let base = v4([10, 0, 0, 1], 80, [10, 0, 0, 2], 5000);
        let others = [
            v4([10, 0, 0, 3], 80, [10, 0, 0, 2], 5000),
            v4([10, 0, 0, 1], 81, [10, 0, 0, 2], 5000),
            v4([10, 0, 0, 1], 80, [10, 0, 0, 4], 5000),
            v4([10, 0, 0, 1], 80, [10, 0, 0, 2], 5001),
            // Ports swapped: a different flow.
            v4([10, 0, 0, 1], 5000, [10, 0, 0, 2], 80),
        ];
        let mut t = FlowTable::default();
        t.insert(base, 7);
        for (i, k) in others.iter().enumerate() {
            assert_eq!(t.get(k), None, "{k:?}");
            t.insert(*k, i as u32);
        }
        assert_eq!(t.get(&base), Some(7));
        assert_eq!(t.len(), 6);
        t.remove(&base);
        assert!(!t.contains(&base));
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn ipv6_flows_use_the_full_tuple() {
        let a = Ipv6Address::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let b = Ipv6Address::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
        let k = FourTuple {
            local: IpEndpoint::new(IpAddress::Ipv6(a), 80),
            remote: IpEndpoint::new(IpAddress::Ipv6(b), 5000),
        };
        assert!(k.ipv4_key().is_none());
        let mut t = FlowTable::default();
        t.insert(k, 3);
        t.insert(v4([10, 0, 0, 1], 80, [10, 0, 0, 2], 5000), 4);
        assert_eq!(t.get(&k), Some(3));
        t.remove(&k);
        assert_eq!(t.get(&k), None);
        assert_eq!(t.len(), 1);
    }
}

//! The engine's flow table: 4-tuple -> slab index.
//!
//! IPv4 flows, the bulk of any large table, live in [`V4Table`]: open addressing with
//! linear probing over 16-byte entries that hold the whole 12-byte key and the slab index,
//! four to a cache line. A lookup is one dependent memory access (the entry's line; a
//! probe rarely leaves it) where a SwissTable (hashbrown) takes two: its control bytes,
//! then the bucket. At a million flows every segment starts with this lookup and each
//! level is a cache and TLB miss. IPv6 flows, rare, live in a hashbrown map under the full
//! [`FourTuple`].
//!
//! The hash is seeded per engine (from `EngineConfig::seed`), so a peer cannot aim a flood
//! of SYNs at one probe sequence without knowing the seed; the load factor stays at most
//! 3/4 (doubling past it), so probe sequences stay short.

use crate::wire::{FourTuple, Ipv4Key};
use rustc_hash::FxHashMap;

pub(crate) struct FlowTable {
    v4: V4Table,
    v6: FxHashMap<FourTuple, u32>,
}

impl Default for FlowTable {
    fn default() -> Self {
        FlowTable::with_seed(0)
    }
}

impl FlowTable {
    pub fn with_seed(seed: u64) -> Self {
        FlowTable {
            v4: V4Table::new(seed),
            v6: FxHashMap::default(),
        }
    }

    #[inline]
    pub fn get(&self, key: &FourTuple) -> Option<u32> {
        match key.ipv4_key() {
            Some(k) => self.v4.get(&k),
            None => self.v6.get(key).copied(),
        }
    }

    pub fn contains(&self, key: &FourTuple) -> bool {
        self.get(key).is_some()
    }

    pub fn insert(&mut self, key: FourTuple, idx: u32) {
        match key.ipv4_key() {
            Some(k) => self.v4.insert(k, idx),
            None => {
                self.v6.insert(key, idx);
            }
        }
    }

    pub fn remove(&mut self, key: &FourTuple) {
        match key.ipv4_key() {
            Some(k) => {
                self.v4.remove(&k);
            }
            None => {
                self.v6.remove(key);
            }
        };
    }

    pub fn len(&self) -> usize {
        self.v4.len + self.v6.len()
    }
}

/// An entry: `idx == VACANT` marks a free one.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Entry {
    key: Ipv4Key,
    idx: u32,
}

const VACANT: u32 = u32::MAX;
const MIN_CAPACITY: usize = 16;

/// Open addressing, linear probing, backward-shift deletion (no tombstones, so a table
/// that churns through connections never degrades).
struct V4Table {
    entries: Vec<Entry>,
    /// log2(entries.len()).
    bits: u32,
    len: usize,
    seed: u64,
}

impl V4Table {
    fn new(seed: u64) -> Self {
        V4Table {
            entries: vec![Self::vacant(); MIN_CAPACITY],
            bits: MIN_CAPACITY.trailing_zeros(),
            len: 0,
            seed,
        }
    }

    fn vacant() -> Entry {
        Entry {
            key: Ipv4Key::default(),
            idx: VACANT,
        }
    }

    /// The home position of `key`: the top `bits` bits of two seeded multiplies over its
    /// two words (multiplicative hashing: the top bits mix every input bit).
    #[inline]
    fn home(&self, key: &Ipv4Key) -> usize {
        let (a, b) = key.words();
        let x = (a ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let h = (x ^ (x >> 32) ^ b).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        (h >> (64 - self.bits)) as usize
    }

    #[inline]
    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    /// The position holding `key`, if any.
    #[inline]
    fn find(&self, key: &Ipv4Key) -> Option<usize> {
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let e = &self.entries[i];
            if e.idx == VACANT {
                return None;
            }
            if e.key == *key {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn get(&self, key: &Ipv4Key) -> Option<u32> {
        self.find(key).map(|i| self.entries[i].idx)
    }

    /// Insert or replace.
    fn insert(&mut self, key: Ipv4Key, idx: u32) {
        debug_assert_ne!(idx, VACANT, "slab index out of range");
        if (self.len + 1) * 4 > self.entries.len() * 3 {
            self.grow();
        }
        let mask = self.mask();
        let mut i = self.home(&key);
        loop {
            let e = &mut self.entries[i];
            if e.idx == VACANT {
                *e = Entry { key, idx };
                self.len += 1;
                return;
            }
            if e.key == key {
                e.idx = idx;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let bigger = vec![Self::vacant(); self.entries.len() * 2];
        let old = std::mem::replace(&mut self.entries, bigger);
        self.bits += 1;
        self.len = 0;
        for e in old.into_iter().filter(|e| e.idx != VACANT) {
            self.insert(e.key, e.idx);
        }
    }

    /// Remove `key`; the entries after it in its probe run shift back over the hole, so
    /// every remaining key stays reachable from its home without tombstones.
    fn remove(&mut self, key: &Ipv4Key) -> Option<u32> {
        let mut hole = self.find(key)?;
        let idx = self.entries[hole].idx;
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let e = self.entries[j];
            if e.idx == VACANT {
                break;
            }
            let home = self.home(&e.key);
            // `e` may fill the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.entries[hole] = e;
                hole = j;
            }
        }
        self.entries[hole] = Self::vacant();
        self.len -= 1;
        Some(idx)
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

    /// Random inserts, replacements and removals against a std HashMap, in a table small
    /// enough that probe runs wrap around the end and collide; every key checked after
    /// every step of the last part.
    #[test]
    fn v4_table_agrees_with_a_hashmap_under_churn() {
        for seed in [0u64, 1, 0xdead_beef] {
            let mut t = FlowTable::with_seed(seed);
            let mut m = std::collections::HashMap::new();
            let mut x = 0x2545_f491_4f6c_dd1du64 ^ seed;
            let mut rnd = |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            for step in 0..40_000u32 {
                // 3000 distinct keys: the table grows, then lives at a steady size.
                let k = rnd(3000) as u16;
                let key = v4(
                    [10, 0, (k >> 8) as u8, k as u8],
                    80,
                    [10, 1, 0, 1],
                    1000 + k % 7,
                );
                match rnd(3) {
                    0 | 1 => {
                        t.insert(key, step);
                        m.insert(key, step);
                    }
                    _ => {
                        t.remove(&key);
                        m.remove(&key);
                    }
                }
                assert_eq!(t.len(), m.len());
                if step >= 39_000 || step % 1000 == 0 {
                    for (k, v) in &m {
                        assert_eq!(t.get(k), Some(*v), "step {step}: {k:?}");
                    }
                }
            }
            for k in m.keys() {
                t.remove(k);
            }
            assert_eq!(t.len(), 0);
        }
    }

    /// Entries whose home is the table's last position wrap to the start; removing one
    /// in the middle of such a run keeps the others reachable.
    #[test]
    fn removal_inside_a_wrapped_run_keeps_the_rest() {
        let mut t = V4Table::new(7);
        let mut at_end = Vec::new();
        let mut i = 0u32;
        while at_end.len() < 5 {
            let k = v4([10, 0, 0, 1], 80, [10, 0, (i >> 8) as u8, i as u8], 9)
                .ipv4_key()
                .unwrap();
            if t.home(&k) == MIN_CAPACITY - 1 {
                at_end.push(k);
            }
            i += 1;
        }
        for (n, k) in at_end.iter().enumerate() {
            t.insert(*k, n as u32);
        }
        assert_eq!(t.remove(&at_end[1]), Some(1));
        assert_eq!(t.get(&at_end[1]), None);
        for (n, k) in at_end.iter().enumerate().filter(|(n, _)| *n != 1) {
            assert_eq!(t.get(k), Some(n as u32));
        }
    }

    /// Keys as a load generator makes them (consecutive ports on a few client addresses,
    /// one server address and port) spread well: short probe runs at the table's
    /// fullest (just below 3/4 load).
    #[test]
    fn consecutive_ports_probe_briefly() {
        let mut t = V4Table::new(0x5eed);
        let n = 196_000u32; // 196 000 / 262 144 entries: 0.75 load
        let keys: Vec<Ipv4Key> = (0..n)
            .map(|i| {
                let ip = [198, 19, 0, (i / 64_000) as u8 + 1];
                v4([198, 18, 0, 2], 7, ip, 1024 + (i % 64_000) as u16)
                    .ipv4_key()
                    .unwrap()
            })
            .collect();
        for (i, k) in keys.iter().enumerate() {
            t.insert(*k, i as u32);
        }
        assert_eq!(t.entries.len(), 262_144);
        let mask = t.mask();
        let displacement: usize = keys
            .iter()
            .map(|k| (t.find(k).unwrap().wrapping_sub(t.home(k))) & mask)
            .sum();
        let mean = displacement as f64 / n as f64;
        // Uniform hashing at load 0.75 gives (1 / (1 - 0.75) - 1) / 2 = 1.5.
        assert!(mean < 2.0, "mean displacement {mean}");
    }
}

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
//! 3/4 (doubling past it), so probe sequences stay short. A doubling is spread over the
//! operations that follow it (at most 64 entries moved per insert or removal), so the
//! packet path never stops to rehash the table: inserting 1.5 M flows, the longest single
//! insert went from 21-22 ms (at 786 k, where the table doubled to 2 M entries) to at most
//! 0.1-1.4 ms (allocating or freeing a space), measured in three runs.

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

/// An entry: the key's three words and the slab index + 1, in an array of plain words so
/// a new space is one zeroed allocation (the OS maps its pages as probes first touch them;
/// filling 2 M entries with a marker first took 21 ms at 786 k flows). Index word 0 marks a
/// free entry, `GONE` (only in a space being drained) one whose key moved on or was removed.
type Entry = [u32; 4];

const GONE: u32 = u32::MAX;
const MIN_CAPACITY: usize = 16;
/// Positions of the old space moved per insert or removal while the table grows: a
/// doubling costs each later operation at most this many moves (a few hundred ns)
/// instead of one pause that rehashes every flow.
const MIGRATE_STEP: usize = 64;

#[inline]
fn live(e: &Entry) -> bool {
    e[3] != 0 && e[3] != GONE
}

/// One power-of-two array of entries.
struct Space {
    entries: Vec<Entry>,
    /// log2(entries.len()).
    bits: u32,
}

/// Open addressing, linear probing, backward-shift deletion (no tombstones, so a table
/// that churns through connections never degrades).
///
/// Growing is incremental: past 3/4 load a space twice the size takes new keys, and every
/// insert or removal moves the next `MIGRATE_STEP` positions of the old space into it,
/// leaving `GONE` behind (the old space takes no new keys, so its probe runs never
/// lengthen). A key is live in at most one of the two; lookups try the new space first.
/// The new space cannot fill before the old one drains: growth starts with 3/4 S keys for
/// a new space of 2 S, which fills at 3/2 S keys, while the old one (S positions) drains
/// within S / 64 operations.
struct V4Table {
    cur: Space,
    /// The space being drained and the next position of it to move.
    old: Option<(Space, usize)>,
    len: usize,
    seed: u64,
}

impl Space {
    fn new(size: usize) -> Space {
        Space {
            entries: vec![[0; 4]; size],
            bits: size.trailing_zeros(),
        }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    /// The home position of `key`: the top `bits` bits of two seeded multiplies over its
    /// two words (multiplicative hashing: the top bits mix every input bit).
    #[inline]
    fn home(&self, seed: u64, key: &Ipv4Key) -> usize {
        let (a, b) = key.words();
        let x = (a ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let h = (x ^ (x >> 32) ^ b).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        (h >> (64 - self.bits)) as usize
    }

    /// The position holding `key` live, if any (`GONE` entries are probed past).
    #[inline]
    fn find(&self, seed: u64, key: &Ipv4Key) -> Option<usize> {
        let mask = self.mask();
        let k = key.parts();
        let mut i = self.home(seed, key);
        loop {
            let e = &self.entries[i];
            if e[3] == 0 {
                return None;
            }
            if e[..3] == k && e[3] != GONE {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The slab index at a live position.
    #[inline]
    fn idx(&self, i: usize) -> u32 {
        self.entries[i][3] - 1
    }

    /// Insert or replace; true if `key` was new.
    fn put(&mut self, seed: u64, key: &Ipv4Key, idx: u32) -> bool {
        let mask = self.mask();
        let k = key.parts();
        let mut i = self.home(seed, key);
        loop {
            let e = &mut self.entries[i];
            if e[3] == 0 {
                *e = [k[0], k[1], k[2], idx + 1];
                return true;
            }
            if e[..3] == k {
                e[3] = idx + 1;
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    /// Remove the entry at `hole`; the entries after it in its probe run shift back over
    /// it, so every remaining key stays reachable from its home without tombstones.
    fn remove_at(&mut self, seed: u64, mut hole: usize) {
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let e = self.entries[j];
            if e[3] == 0 {
                break;
            }
            let home = self.home(seed, &Ipv4Key::from_parts([e[0], e[1], e[2]]));
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
        self.entries[hole] = [0; 4];
    }
}

impl V4Table {
    fn new(seed: u64) -> Self {
        V4Table {
            cur: Space::new(MIN_CAPACITY),
            old: None,
            len: 0,
            seed,
        }
    }

    #[inline]
    fn get(&self, key: &Ipv4Key) -> Option<u32> {
        match self.cur.find(self.seed, key) {
            Some(i) => Some(self.cur.idx(i)),
            None => {
                let (old, _) = self.old.as_ref()?;
                old.find(self.seed, key).map(|i| old.idx(i))
            }
        }
    }

    /// Insert or replace.
    fn insert(&mut self, key: Ipv4Key, idx: u32) {
        debug_assert!(idx < GONE - 1, "slab index out of range");
        let seed = self.seed;
        if self.old.is_none() && (self.len + 1) * 4 > self.cur.entries.len() * 3 {
            let bigger = Space::new(self.cur.entries.len() * 2);
            self.old = Some((std::mem::replace(&mut self.cur, bigger), 0));
        }
        if let Some((old, _)) = self.old.as_mut() {
            if let Some(i) = old.find(seed, &key) {
                old.entries[i][3] = idx + 1;
                return;
            }
        }
        if (self.len + 1) * 4 > self.cur.entries.len() * 3 {
            // Unreachable by the arithmetic above; if it were, finish the move first.
            debug_assert!(false, "new space filled before the old one drained");
            self.migrate(usize::MAX);
        }
        if self.cur.put(seed, &key, idx) {
            self.len += 1;
        }
        self.migrate(MIGRATE_STEP);
    }

    fn remove(&mut self, key: &Ipv4Key) -> Option<u32> {
        let seed = self.seed;
        let idx = if let Some(i) = self.cur.find(seed, key) {
            let idx = self.cur.idx(i);
            self.cur.remove_at(seed, i);
            idx
        } else {
            let (old, _) = self.old.as_mut()?;
            let i = old.find(seed, key)?;
            let idx = old.idx(i);
            old.entries[i][3] = GONE;
            idx
        };
        self.len -= 1;
        self.migrate(MIGRATE_STEP);
        Some(idx)
    }

    /// Move up to `step` positions of the old space into the new one; drop it when done.
    fn migrate(&mut self, step: usize) {
        let Some((old, next)) = self.old.as_mut() else {
            return;
        };
        let end = next.saturating_add(step).min(old.entries.len());
        for e in &mut old.entries[*next..end] {
            if live(e) {
                // Live in the old space means absent from the new one (see `insert`).
                let key = Ipv4Key::from_parts([e[0], e[1], e[2]]);
                self.cur.put(self.seed, &key, e[3] - 1);
                e[3] = GONE;
            }
        }
        *next = end;
        if end == old.entries.len() {
            self.old = None;
        }
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
            if t.cur.home(t.seed, &k) == MIN_CAPACITY - 1 {
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
        assert!(t.old.is_none(), "the last doubling has drained");
        let (sp, seed) = (&t.cur, t.seed);
        assert_eq!(sp.entries.len(), 262_144);
        let mask = sp.mask();
        let displacement: usize = keys
            .iter()
            .map(|k| (sp.find(seed, k).unwrap().wrapping_sub(sp.home(seed, k))) & mask)
            .sum();
        let mean = displacement as f64 / n as f64;
        // Uniform hashing at load 0.75 gives (1 / (1 - 0.75) - 1) / 2 = 1.5.
        assert!(mean < 2.0, "mean displacement {mean}");
    }

    /// A doubling moves at most `MIGRATE_STEP` old positions per operation, and every
    /// operation sees the right answer while keys sit in either space: lookups, removals
    /// and replacements of keys not yet moved and of keys already moved.
    #[test]
    fn growth_is_incremental_and_exact_meanwhile() {
        let key = |i: u32| {
            v4(
                [198, 18, 0, 2],
                80,
                [198, 19, (i >> 8) as u8, i as u8],
                1024,
            )
            .ipv4_key()
            .unwrap()
        };
        let mut t = V4Table::new(42);
        let mut m = std::collections::HashMap::new();
        let mut i = 0u32;
        // Fill until a doubling starts at a size where it takes many operations.
        while t.old.is_none() || t.cur.entries.len() < 8192 {
            t.insert(key(i), i);
            m.insert(key(i), i);
            i += 1;
        }
        let mut ops = 0;
        let mut moved_from_old = 0;
        let mut in_old_removed = 0;
        let mut in_old_replaced = 0;
        while let Some((old, next)) = t.old.as_ref() {
            let before = *next;
            let old_len = old.entries.len();
            // A key still in the old space (at or past the cursor), if any left.
            let pending = m
                .keys()
                .copied()
                .find(|k| old.find(t.seed, k).is_some_and(|p| p >= before));
            match (ops % 4, pending) {
                (0, Some(k)) => {
                    assert_eq!(t.remove(&k), m.remove(&k));
                    in_old_removed += 1;
                }
                (1, Some(k)) => {
                    t.insert(k, 1_000_000 + ops);
                    m.insert(k, 1_000_000 + ops);
                    in_old_replaced += 1;
                }
                (2, _) => {
                    // One that was moved (or inserted into the new space) goes away.
                    let k = *m.keys().find(|k| t.cur.find(t.seed, k).is_some()).unwrap();
                    assert_eq!(t.remove(&k), m.remove(&k));
                    moved_from_old += 1;
                }
                _ => {
                    t.insert(key(i), i);
                    m.insert(key(i), i);
                    i += 1;
                }
            }
            let after = t.old.as_ref().map_or(old_len, |(_, n)| *n);
            assert!(
                after - before <= MIGRATE_STEP,
                "moved {} positions",
                after - before
            );
            assert_eq!(t.len, m.len());
            for (k, v) in &m {
                assert_eq!(t.get(k), Some(*v), "op {ops}: {k:?}");
            }
            ops += 1;
        }
        assert!(
            ops >= 8192 / 2 / MIGRATE_STEP as u32,
            "drained in {ops} operations"
        );
        assert!(in_old_removed > 10 && in_old_replaced > 10 && moved_from_old > 10);
        for (k, v) in &m {
            assert_eq!(t.get(k), Some(*v));
        }
    }
}

//! The key space: strings only, with optional expiry (milliseconds on the engine's
//! monotonic clock). Expired keys go away lazily when touched, and `sweep` removes a
//! bounded number of due keys in deadline order (an index ordered by deadline, so it
//! finds them without sampling).
//!
//! Memory accounting: [`Store::used`] is an estimate of the bytes the key space holds,
//! kept up to date by every insert, replace, delete, expiry and `clear`, so a bound
//! (`maxmemory`) can be checked in O(1). It counts key and value lengths plus a fixed
//! cost per entry ([`ENTRY_OVERHEAD`]) and per key with a time to live
//! ([`DEADLINE_OVERHEAD`] plus the index's copy of the key). Not counted: connection
//! buffers, and value capacity beyond length (APPEND may leave up to 2x).

use std::collections::{BTreeMap, HashMap};

/// Estimated bytes per key beyond its key and value bytes: the hash table slot (key
/// `Vec` 24 + `Entry` 48 + 1 control byte = 73 bytes, at a load factor between 7/16
/// and 7/8 after growth: about 110 bytes per entry on average) plus the allocator's
/// header and rounding on the key's and the value's heap blocks (16 to 24 bytes each
/// with glibc malloc). Measured: the process's resident size grew by 142 (table 72%
/// full) to 193 (48% full) bytes per entry beyond the data for 1M and 1.5M entries of
/// 16-byte keys and 8-byte values; 160 is in between.
pub const ENTRY_OVERHEAD: usize = 160;

/// Estimated bytes per key with a time to live, beyond the index's copy of the key: a
/// B-tree element (16-byte deadline + 24-byte `Vec`) in nodes half to two-thirds full
/// (60 to 80 bytes), plus the copy's heap block header. Measured: 73 to 95 bytes per key
/// beyond the copy, for random and for ascending deadlines.
pub const DEADLINE_OVERHEAD: usize = 96;

/// A deadline index key: (expires at, ms; a sequence number making it unique).
type Due = (i64, u64);

#[derive(Debug)]
struct Entry {
    val: Vec<u8>,
    exp: Option<Due>,
}

fn entry_cost(key: &[u8], val: &[u8]) -> usize {
    key.len() + val.len() + ENTRY_OVERHEAD
}

fn deadline_cost(key: &[u8]) -> usize {
    key.len() + DEADLINE_OVERHEAD
}

/// A fresh deadline index entry for `key` expiring at `at`, accounted in `used`.
fn index(
    by_deadline: &mut BTreeMap<Due, Vec<u8>>,
    seq: &mut u64,
    used: &mut usize,
    key: &[u8],
    at: i64,
) -> Due {
    *seq += 1;
    let d = (at, *seq);
    by_deadline.insert(d, key.to_vec());
    *used += deadline_cost(key);
    d
}

/// Remove `key`'s index entry `d` (if it has one) and its accounting.
fn unindex(by_deadline: &mut BTreeMap<Due, Vec<u8>>, used: &mut usize, key: &[u8], d: Option<Due>) {
    if let Some(d) = d {
        by_deadline.remove(&d);
        *used -= deadline_cost(key);
    }
}

/// The store of one engine. std's `HashMap` (SipHash, randomly keyed): keys come from
/// the network, so a collision-flooding client must not be able to degrade lookups.
#[derive(Debug, Default)]
pub struct Store {
    map: HashMap<Vec<u8>, Entry>,
    by_deadline: BTreeMap<Due, Vec<u8>>,
    seq: u64,
    /// Accounted bytes (see the module docs).
    used: usize,
    /// Keys removed because their time was up (lazily or by the sweep).
    pub expired: u64,
}

impl Store {
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Keys with a time to live.
    pub fn volatile(&self) -> usize {
        self.by_deadline.len()
    }
    /// Accounted bytes: keys, values and the per-entry estimates (module docs).
    pub fn used(&self) -> usize {
        self.used
    }

    /// Remove `key` and its index entry, with their accounting.
    fn remove(&mut self, key: &[u8]) {
        if let Some(e) = self.map.remove(key) {
            self.used -= entry_cost(key, &e.val);
            unindex(&mut self.by_deadline, &mut self.used, key, e.exp);
        }
    }

    /// Drop `key` if its time is up.
    fn expire_if_due(&mut self, key: &[u8], now: i64) {
        if let Some(Entry { exp: Some(d), .. }) = self.map.get(key) {
            if d.0 <= now {
                self.remove(key);
                self.expired += 1;
            }
        }
    }

    /// Remove up to `max` keys whose time is up; returns how many.
    pub fn sweep(&mut self, now: i64, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(entry) = self.by_deadline.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.used -= deadline_cost(&key);
            if let Some(e) = self.map.remove(&key) {
                self.used -= entry_cost(&key, &e.val);
            }
            self.expired += 1;
            n += 1;
        }
        n
    }

    pub fn get(&mut self, key: &[u8], now: i64) -> Option<&[u8]> {
        self.expire_if_due(key, now);
        self.map.get(key).map(|e| e.val.as_slice())
    }

    pub fn contains(&mut self, key: &[u8], now: i64) -> bool {
        self.expire_if_due(key, now);
        self.map.contains_key(key)
    }

    /// Set `key` to `val`. `deadline`: Some sets it; None clears it, unless `keep_ttl`
    /// (which keeps an existing key's deadline).
    pub fn set(&mut self, key: &[u8], val: Vec<u8>, deadline: Option<i64>, keep_ttl: bool) {
        let Store {
            map,
            by_deadline,
            seq,
            used,
            ..
        } = self;
        let Some(e) = map.get_mut(key) else {
            let exp = deadline.map(|at| index(by_deadline, seq, used, key, at));
            *used += entry_cost(key, &val);
            map.insert(key.to_vec(), Entry { val, exp });
            return;
        };
        *used = *used - e.val.len() + val.len();
        e.val = val;
        if !keep_ttl {
            unindex(by_deadline, used, key, e.exp.take());
            e.exp = deadline.map(|at| index(by_deadline, seq, used, key, at));
        }
    }

    /// Append `data` to the value of `key` (created if absent, keeping an existing
    /// key's time to live); returns the new length (APPEND).
    pub fn append(&mut self, key: &[u8], data: &[u8], now: i64) -> usize {
        self.expire_if_due(key, now);
        match self.map.get_mut(key) {
            Some(e) => {
                e.val.extend_from_slice(data);
                self.used += data.len();
                e.val.len()
            }
            None => {
                self.set(key, data.to_vec(), None, false);
                data.len()
            }
        }
    }

    pub fn del(&mut self, key: &[u8], now: i64) -> bool {
        self.expire_if_due(key, now);
        let found = self.map.contains_key(key);
        self.remove(key);
        found
    }

    /// The deadline of a live key: Err(()) if there is no such key, Ok(None) if it has
    /// no time to live.
    #[allow(clippy::result_unit_err)]
    pub fn deadline(&mut self, key: &[u8], now: i64) -> Result<Option<i64>, ()> {
        self.expire_if_due(key, now);
        match self.map.get(key) {
            None => Err(()),
            Some(e) => Ok(e.exp.map(|d| d.0)),
        }
    }

    /// Set (Some) or clear (None) the deadline of an existing key; false if none.
    pub fn set_deadline(&mut self, key: &[u8], at: Option<i64>, now: i64) -> bool {
        self.expire_if_due(key, now);
        let Store {
            map,
            by_deadline,
            seq,
            used,
            ..
        } = self;
        let Some(e) = map.get_mut(key) else {
            return false;
        };
        unindex(by_deadline, used, key, e.exp.take());
        e.exp = at.map(|at| index(by_deadline, seq, used, key, at));
        true
    }

    pub fn clear(&mut self) {
        self.map = HashMap::new();
        self.by_deadline.clear();
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_lazy_and_swept() {
        let mut s = Store::default();
        s.set(b"a", b"1".to_vec(), Some(100), false);
        s.set(b"b", b"2".to_vec(), Some(200), false);
        s.set(b"c", b"3".to_vec(), None, false);
        assert_eq!(s.get(b"a", 99), Some(&b"1"[..]));
        assert_eq!(s.get(b"a", 100), None);
        assert_eq!(s.len(), 2);
        assert_eq!(s.sweep(150, 10), 0);
        assert_eq!(s.sweep(250, 10), 1);
        assert_eq!((s.len(), s.volatile(), s.expired), (1, 0, 2));
        // Overwrite clears the TTL (and its index entry); keep_ttl keeps it.
        s.set(b"d", b"x".to_vec(), Some(10), false);
        s.set(b"d", b"y".to_vec(), None, true);
        assert_eq!(s.deadline(b"d", 0), Ok(Some(10)));
        s.set(b"d", b"z".to_vec(), None, false);
        assert_eq!(s.deadline(b"d", 0), Ok(None));
        assert_eq!(s.volatile(), 0);
        assert!(s.set_deadline(b"d", Some(5), 0));
        assert!(s.del(b"d", 0));
        assert_eq!(s.volatile(), 0);
        assert_eq!(s.deadline(b"d", 0), Err(()));
    }

    /// Every path that adds or removes bytes keeps `used` equal to a recount.
    #[test]
    fn accounting_returns_to_the_same_figure() {
        let mut s = Store::default();
        assert_eq!(s.used(), 0);
        s.set(b"k", b"v".to_vec(), None, false);
        let one = 1 + 1 + ENTRY_OVERHEAD;
        assert_eq!(s.used(), one);
        // Replace: only the value's length changes.
        s.set(b"k", vec![b'x'; 100], None, false);
        assert_eq!(s.used(), one + 99);
        s.set(b"k", b"v".to_vec(), None, false);
        assert_eq!(s.used(), one);
        // A deadline adds the index entry (with its copy of the key), once.
        let ttl = 1 + DEADLINE_OVERHEAD;
        s.set(b"k", b"v".to_vec(), Some(100), false);
        assert_eq!(s.used(), one + ttl);
        s.set(b"k", b"v".to_vec(), Some(200), false);
        s.set(b"k", b"w".to_vec(), None, true);
        assert!(s.set_deadline(b"k", Some(300), 0));
        assert_eq!(s.used(), one + ttl);
        assert!(s.set_deadline(b"k", None, 0));
        assert_eq!(s.used(), one);
        s.set(b"k", b"v".to_vec(), None, false);
        // APPEND (new key, then growth).
        assert_eq!(s.append(b"app", b"abc", 0), 3);
        assert_eq!(s.append(b"app", b"de", 0), 5);
        assert_eq!(s.used(), one + 3 + 5 + ENTRY_OVERHEAD);
        // Delete, lazy expiry, sweep.
        assert!(s.del(b"app", 0));
        assert!(!s.del(b"app", 0));
        assert_eq!(s.used(), one);
        s.set(b"lazy", b"1".to_vec(), Some(10), false);
        s.set(b"swept", b"2".to_vec(), Some(10), false);
        assert_eq!(s.get(b"lazy", 10), None);
        assert_eq!(s.sweep(10, 16), 1);
        assert_eq!((s.used(), s.expired, s.volatile()), (one, 2, 0));
        // Overwriting a key with a deadline by a plain SET drops the index entry.
        s.set(b"k", b"v".to_vec(), Some(50), false);
        s.set(b"k", b"v".to_vec(), None, false);
        assert_eq!(s.used(), one);
        s.set(b"t", b"1".to_vec(), Some(50), false);
        s.clear();
        assert_eq!(s.used(), 0);
    }
}

//! The key space: strings only, with optional expiry (milliseconds on the engine's
//! monotonic clock). Expired keys go away lazily when touched, and `sweep` removes a
//! bounded number of due keys in deadline order (an index ordered by deadline, so it
//! finds them without sampling).

use std::collections::{BTreeMap, HashMap};

/// A deadline index key: (expires at, ms; a sequence number making it unique).
type Due = (i64, u64);

#[derive(Debug)]
struct Entry {
    val: Vec<u8>,
    exp: Option<Due>,
}

/// The store of one engine. std's `HashMap` (SipHash, randomly keyed): keys come from
/// the network, so a collision-flooding client must not be able to degrade lookups.
#[derive(Debug, Default)]
pub struct Store {
    map: HashMap<Vec<u8>, Entry>,
    by_deadline: BTreeMap<Due, Vec<u8>>,
    seq: u64,
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

    /// Drop `key` if its time is up.
    fn expire_if_due(&mut self, key: &[u8], now: i64) {
        if let Some(Entry { exp: Some(d), .. }) = self.map.get(key) {
            if d.0 <= now {
                let d = *d;
                self.map.remove(key);
                self.by_deadline.remove(&d);
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
            self.map.remove(&key);
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

    /// Set `key` to `val`. `ttl`: Some(deadline) sets it, None clears it unless
    /// `keep_ttl`.
    pub fn set(&mut self, key: &[u8], val: Vec<u8>, deadline: Option<i64>, keep_ttl: bool) {
        if let Some(e) = self.map.get_mut(key) {
            e.val = val;
            if keep_ttl {
                return;
            }
            if let Some(d) = e.exp.take() {
                self.by_deadline.remove(&d);
            }
            if let Some(at) = deadline {
                self.seq += 1;
                let d = (at, self.seq);
                e.exp = Some(d);
                self.by_deadline.insert(d, key.to_vec());
            }
            return;
        }
        let exp = deadline.map(|at| {
            self.seq += 1;
            let d = (at, self.seq);
            self.by_deadline.insert(d, key.to_vec());
            d
        });
        self.map.insert(key.to_vec(), Entry { val, exp });
    }

    /// Replace the value of an existing live key, keeping its time to live (INCR).
    pub fn value_mut(&mut self, key: &[u8], now: i64) -> Option<&mut Vec<u8>> {
        self.expire_if_due(key, now);
        self.map.get_mut(key).map(|e| &mut e.val)
    }

    pub fn del(&mut self, key: &[u8], now: i64) -> bool {
        self.expire_if_due(key, now);
        match self.map.remove(key) {
            Some(e) => {
                if let Some(d) = e.exp {
                    self.by_deadline.remove(&d);
                }
                true
            }
            None => false,
        }
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
        let Some(e) = self.map.get_mut(key) else {
            return false;
        };
        if let Some(d) = e.exp.take() {
            self.by_deadline.remove(&d);
        }
        if let Some(at) = at {
            self.seq += 1;
            let d = (at, self.seq);
            e.exp = Some(d);
            self.by_deadline.insert(d, key.to_vec());
        }
        true
    }

    pub fn clear(&mut self) {
        self.map = HashMap::new();
        self.by_deadline.clear();
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
}

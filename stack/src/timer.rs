//! A hashed timer wheel: O(1) arm, O(1) amortised expiry, no per-tick work for idle
//! flows. Entries are (deadline, id, generation); re-arming bumps the flow's generation
//! so stale entries are skipped when their slot comes up.

const SLOTS: usize = 4096; // 1 ms ticks: about 4 s per revolution

pub struct TimerWheel {
    slots: Vec<Vec<Entry>>,
    /// Tick (ms) whose slot is processed next.
    cursor: u64,
    len: usize,
}

#[derive(Clone, Copy)]
struct Entry {
    at: u64,
    id: u32,
    gen: u32,
}

impl Default for TimerWheel {
    fn default() -> Self {
        TimerWheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            cursor: 0,
            len: 0,
        }
    }
}

impl TimerWheel {
    /// Start the wheel at `now_ms`; deadlines before it fire at the next expiry.
    pub fn new(now_ms: u64) -> Self {
        TimerWheel {
            cursor: now_ms,
            ..Default::default()
        }
    }

    /// Arm a deadline for `id`; a later `arm` with a higher `gen` supersedes it.
    pub fn arm(&mut self, at_ms: u64, id: u32, gen: u32) {
        let at = at_ms.max(self.cursor);
        self.slots[(at as usize) % SLOTS].push(Entry { at, id, gen });
        self.len += 1;
    }

    /// Entries armed and not yet expired (stale ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Call `f(id, gen)` for every entry due at or before `now_ms`.
    pub fn expire(&mut self, now_ms: u64, mut f: impl FnMut(u32, u32)) {
        if self.len == 0 {
            self.cursor = self.cursor.max(now_ms + 1);
            return;
        }
        // Visiting more than one revolution's worth of slots is pointless.
        let end = now_ms.min(self.cursor + SLOTS as u64 - 1);
        while self.cursor <= end {
            self.drain_slot(self.cursor, now_ms, &mut f);
            self.cursor += 1;
        }
        if now_ms >= self.cursor {
            // We skipped ahead by a revolution or more: sweep every slot once.
            for t in 0..SLOTS as u64 {
                self.drain_slot(t, now_ms, &mut f);
            }
            self.cursor = now_ms + 1;
        }
    }

    /// Remove the entries of tick `t`'s slot that are due by `limit`, calling `f` for each.
    fn drain_slot(&mut self, t: u64, limit: u64, f: &mut impl FnMut(u32, u32)) {
        let slot = &mut self.slots[(t as usize) % SLOTS];
        let mut i = 0;
        while i < slot.len() {
            if slot[i].at <= limit {
                let e = slot.swap_remove(i);
                self.len -= 1;
                f(e.id, e.gen);
            } else {
                i += 1;
            }
        }
    }

    /// Call `f(id, gen)` for (and remove) every entry due within `horizon_ms` of `now_ms`,
    /// without advancing the wheel. For events that make waiting flows runnable early
    /// (a neighbour was learned); costs the entries in that window, not the whole wheel.
    pub fn fire_within(&mut self, now_ms: u64, horizon_ms: u64, mut f: impl FnMut(u32, u32)) {
        let end = (now_ms + horizon_ms).min(self.cursor + SLOTS as u64 - 1);
        for t in self.cursor..=end {
            self.drain_slot(t, now_ms + horizon_ms, &mut f);
        }
    }

    /// Earliest tick at which something may be due (a lower bound), for idle sleeping.
    pub fn next_hint(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        (self.cursor..self.cursor + SLOTS as u64)
            .find(|t| !self.slots[(*t as usize) % SLOTS].is_empty())
            .map(|t| {
                self.slots[(t as usize) % SLOTS]
                    .iter()
                    .map(|e| e.at)
                    .min()
                    .unwrap_or(t)
                    .max(self.cursor)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_and_only_when_due() {
        let mut w = TimerWheel::new(1000);
        w.arm(1005, 1, 0);
        w.arm(1002, 2, 0);
        w.arm(1000 + 10_000, 3, 0); // beyond one revolution
        let mut got = vec![];
        w.expire(1001, |id, _| got.push(id));
        assert!(got.is_empty());
        w.expire(1005, |id, _| got.push(id));
        assert_eq!(got, vec![2, 1]);
        w.expire(1000 + 4096 + 5, |id, _| got.push(id));
        assert_eq!(
            got,
            vec![2, 1],
            "far deadline must not fire a revolution early"
        );
        w.expire(1000 + 10_000, |id, _| got.push(id));
        assert_eq!(got, vec![2, 1, 3]);
        assert!(w.is_empty());
    }

    #[test]
    fn long_jump_sweeps_everything_due() {
        let mut w = TimerWheel::new(0);
        for i in 0..100 {
            w.arm(i * 37, i as u32, 7);
        }
        let mut n = 0;
        w.expire(1_000_000, |_, g| {
            assert_eq!(g, 7);
            n += 1
        });
        assert_eq!(n, 100);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn fire_within_takes_only_the_window() {
        let mut w = TimerWheel::new(100);
        w.arm(150, 1, 0);
        w.arm(1099, 2, 0);
        w.arm(1200, 3, 0);
        let mut got = vec![];
        w.fire_within(100, 1000, |id, _| got.push(id));
        got.sort();
        assert_eq!(got, vec![1, 2]);
        assert_eq!(w.len(), 1);
        w.expire(1200, |id, _| got.push(id));
        assert_eq!(got, vec![1, 2, 3]);
    }

    #[test]
    fn next_hint_is_a_lower_bound() {
        let mut w = TimerWheel::new(50);
        assert_eq!(w.next_hint(), None);
        w.arm(70, 1, 0);
        w.arm(60, 2, 0);
        assert_eq!(w.next_hint(), Some(60));
    }
}

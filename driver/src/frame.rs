//! UMEM frame bookkeeping: who owns each frame right now.
//!
//! Documentation/networking/af_xdp.rst: the rings "transfer ownership of UMEM frames".
//! Every frame is in exactly one [`FrameState`] at a time; the per-state counters are kept
//! in step with the per-frame state array, so [`FrameCounts`] always sums to the total.
//! This module is pure bookkeeping (no kernel, no unsafe) so it can be tested on its own.

/// Where a UMEM frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum FrameState {
    /// In the driver's free list.
    Free = 0,
    /// Given to the kernel through the FillRing, not yet back through the RxRing.
    Fill = 1,
    /// A received frame held by the caller (lent during `recv`, or a `Frame` from `rx_take`).
    RxHeld = 2,
    /// A frame from `alloc()` held by the caller.
    AllocHeld = 3,
    /// Written into a reserved TxRing slot, not yet published (next `flush`).
    TxPending = 4,
    /// Published on the TxRing, not yet back through the CompletionRing.
    InKernelTx = 5,
}

const NSTATES: usize = 6;

/// How many UMEM frames are in each place. `free + fill + rx_held + alloc_held + tx_pending
/// + in_kernel_tx == total` at every moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCounts {
    /// In the driver's free list.
    pub free: u32,
    /// Owned by the kernel for receiving (FillRing, or being filled).
    pub fill: u32,
    /// Received frames held by the caller.
    pub rx_held: u32,
    /// Frames from `alloc()` held by the caller, not yet submitted or released.
    pub alloc_held: u32,
    /// Queued for transmission, published at the next `flush()`.
    pub tx_pending: u32,
    /// Owned by the kernel for transmission (TxRing, or sent and not yet completed).
    pub in_kernel_tx: u32,
    /// UMEM frames in all.
    pub total: u32,
}

impl FrameCounts {
    /// Sum of all places; equals `total` when the books balance.
    pub fn sum(&self) -> u32 {
        self.free + self.fill + self.rx_held + self.alloc_held + self.tx_pending + self.in_kernel_tx
    }
}

/// Per-frame state plus the free list.
#[derive(Debug)]
pub(crate) struct FrameBook {
    state: Vec<FrameState>,
    counts: [u32; NSTATES],
    /// Free frame indices (LIFO: recently used frames are warm in cache).
    free: Vec<u32>,
}

impl FrameBook {
    pub(crate) fn new(total: u32) -> FrameBook {
        let mut counts = [0; NSTATES];
        counts[FrameState::Free as usize] = total;
        FrameBook {
            state: vec![FrameState::Free; total as usize],
            counts,
            free: (0..total).rev().collect(),
        }
    }

    pub(crate) fn total(&self) -> u32 {
        self.state.len() as u32
    }

    pub(crate) fn state(&self, idx: u32) -> Option<FrameState> {
        self.state.get(idx as usize).copied()
    }

    pub(crate) fn free_len(&self) -> u32 {
        self.free.len() as u32
    }

    pub(crate) fn count(&self, s: FrameState) -> u32 {
        self.counts[s as usize]
    }

    /// Move `idx` from `from` to `to`; false (and no change) if it is not in `from` or out
    /// of range. Never used for `Free` (see `take_free` / `put_free`).
    #[must_use]
    pub(crate) fn transition(&mut self, idx: u32, from: FrameState, to: FrameState) -> bool {
        debug_assert!(from != FrameState::Free && to != FrameState::Free);
        match self.state.get_mut(idx as usize) {
            Some(s) if *s == from => {
                *s = to;
                self.counts[from as usize] -= 1;
                self.counts[to as usize] += 1;
                true
            }
            _ => false,
        }
    }

    /// Pop a free frame into state `to`.
    pub(crate) fn take_free(&mut self, to: FrameState) -> Option<u32> {
        let idx = self.free.pop()?;
        debug_assert_eq!(self.state[idx as usize], FrameState::Free);
        self.state[idx as usize] = to;
        self.counts[FrameState::Free as usize] -= 1;
        self.counts[to as usize] += 1;
        Some(idx)
    }

    /// Return a frame in state `from` to the free list; false if it is not in `from`.
    #[must_use]
    pub(crate) fn put_free(&mut self, idx: u32, from: FrameState) -> bool {
        match self.state.get_mut(idx as usize) {
            Some(s) if *s == from && from != FrameState::Free => {
                *s = FrameState::Free;
                self.counts[from as usize] -= 1;
                self.counts[FrameState::Free as usize] += 1;
                self.free.push(idx);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn counts(&self) -> FrameCounts {
        let c = |s: FrameState| self.counts[s as usize];
        FrameCounts {
            free: c(FrameState::Free),
            fill: c(FrameState::Fill),
            rx_held: c(FrameState::RxHeld),
            alloc_held: c(FrameState::AllocHeld),
            tx_pending: c(FrameState::TxPending),
            in_kernel_tx: c(FrameState::InKernelTx),
            total: self.total(),
        }
    }

    /// Full consistency check (tests): counters match the state array, the free list
    /// holds exactly the Free frames, once each.
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let mut counts = [0u32; NSTATES];
        for s in &self.state {
            counts[*s as usize] += 1;
        }
        assert_eq!(counts, self.counts, "per-state counters drifted");
        let mut seen = vec![false; self.state.len()];
        for &i in &self.free {
            assert!(!seen[i as usize], "frame {i} twice in the free list");
            seen[i as usize] = true;
            assert_eq!(self.state[i as usize], FrameState::Free);
        }
        assert_eq!(self.free.len() as u32, counts[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_keep_counts() {
        let mut b = FrameBook::new(8);
        let a = b.take_free(FrameState::Fill).unwrap();
        assert!(b.transition(a, FrameState::Fill, FrameState::RxHeld));
        assert!(
            !b.transition(a, FrameState::Fill, FrameState::RxHeld),
            "double move"
        );
        assert!(!b.put_free(a, FrameState::TxPending), "wrong source state");
        assert!(b.put_free(a, FrameState::RxHeld));
        assert!(!b.put_free(a, FrameState::RxHeld), "double free");
        assert!(
            !b.transition(99, FrameState::Fill, FrameState::RxHeld),
            "out of range"
        );
        b.check();
        assert_eq!(b.counts().sum(), 8);
        assert_eq!(b.counts().free, 8);
    }
}

//! The single-producer/single-consumer rings shared with the kernel: FillRing and TxRing
//! (we produce), RxRing and CompletionRing (we consume).
//!
//! Index protocol as in the kernel's net/xdp/xsk_queue.h and libxdp's xsk.h: the side that
//! reads the other side's index does an Acquire load (so the descriptors written before it
//! are visible), and publishes its own index with a Release store (so the descriptors it
//! wrote, or finished reading, are ordered before it). Indices are free-running `u32`s,
//! masked by `size - 1` to address a slot.
//!
//! The same types serve the fake kernel of the tests, which runs the other side of each
//! ring over an anonymous mapping laid out like the kernel's.

use crate::sys::{Mmap, XdpRingOffset, XDP_RING_NEED_WAKEUP};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Pointers into one ring's mapping, validated against the mapping's length.
#[derive(Debug)]
struct RingPtrs<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    mask: u32,
    size: u32,
    _map: Arc<Mmap>,
    _t: PhantomData<T>,
}

// SAFETY: the raw pointers point into `_map`, which is kept alive by the Arc; the ring
// protocol (one producer, one consumer, atomics for indices) is what makes concurrent use
// with the other side sound, and a ring value is used by one thread at a time (&mut).
unsafe impl<T: Send> Send for RingPtrs<T> {}

impl<T: Copy> RingPtrs<T> {
    /// `None` if the offsets do not fit the mapping or are misaligned.
    fn new(map: Arc<Mmap>, off: &XdpRingOffset, size: u32) -> Option<Self> {
        if !size.is_power_of_two() {
            return None;
        }
        let len = map.len() as u64;
        let word_ok = |o: u64| o.is_multiple_of(4) && o.checked_add(4).is_some_and(|e| e <= len);
        let descs_end = off
            .desc
            .checked_add(u64::from(size) * std::mem::size_of::<T>() as u64)?;
        if !word_ok(off.producer)
            || !word_ok(off.consumer)
            || !word_ok(off.flags)
            || !off.desc.is_multiple_of(std::mem::align_of::<T>() as u64)
            || descs_end > len
        {
            return None;
        }
        let base = map.as_ptr();
        // SAFETY: every offset was checked above to lie inside the mapping of `len` bytes
        // starting at `base`, so the four `add`s stay in bounds.
        let (producer, consumer, flags, descs) = unsafe {
            (
                base.add(off.producer as usize).cast::<AtomicU32>(),
                base.add(off.consumer as usize).cast::<AtomicU32>(),
                base.add(off.flags as usize).cast::<AtomicU32>(),
                base.add(off.desc as usize).cast::<T>(),
            )
        };
        Some(RingPtrs {
            producer,
            consumer,
            flags,
            descs,
            mask: size - 1,
            size,
            _map: map,
            _t: PhantomData,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: in bounds and 4-aligned (checked in `new`), alive while `_map` is.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: in bounds and 4-aligned (checked in `new`), alive while `_map` is.
        unsafe { &*self.consumer }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: in bounds and 4-aligned (checked in `new`), alive while `_map` is.
        unsafe { &*self.flags }
    }

    fn write(&mut self, idx: u32, v: T) {
        // SAFETY: `idx & mask < size`, and `size` slots of T fit the mapping (checked in
        // `new`). The caller (the producer) only writes slots it reserved and has not yet
        // published, which the consumer does not read.
        unsafe { self.descs.add((idx & self.mask) as usize).write_volatile(v) }
    }

    fn read(&self, idx: u32) -> T {
        // SAFETY: in bounds as in `write`; the caller (the consumer) only reads slots the
        // producer published (observed through an Acquire load of `producer`).
        unsafe { self.descs.add((idx & self.mask) as usize).read_volatile() }
    }
}

/// The producer side of a ring (FillRing, TxRing; in tests also the fake kernel's RxRing
/// and CompletionRing).
#[derive(Debug)]
pub(crate) struct ProdRing<T> {
    r: RingPtrs<T>,
    /// Next index to reserve.
    cached_prod: u32,
    /// Consumer index + size: the first index we may not reserve (xsk.h `cached_cons`).
    cached_cons: u32,
    /// The producer index as last published.
    published: u32,
}

impl<T: Copy> ProdRing<T> {
    pub(crate) fn new(map: Arc<Mmap>, off: &XdpRingOffset, size: u32) -> Option<Self> {
        let r = RingPtrs::new(map, off, size)?;
        let prod = r.producer().load(Ordering::Relaxed);
        let cons = r.consumer().load(Ordering::Acquire);
        Some(ProdRing {
            cached_prod: prod,
            cached_cons: cons.wrapping_add(size),
            published: prod,
            r,
        })
    }

    pub(crate) fn size(&self) -> u32 {
        self.r.size
    }

    /// Free slots, refreshing the consumer index only when fewer than `want` are known
    /// free (xsk.h `xsk_prod_nb_free`).
    pub(crate) fn nb_free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        // Acquire: the consumer finished reading the slots before this index.
        self.cached_cons = self
            .r
            .consumer()
            .load(Ordering::Acquire)
            .wrapping_add(self.r.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Reserve up to `n` slots; returns (first index, count reserved).
    pub(crate) fn reserve(&mut self, n: u32) -> (u32, u32) {
        let got = self.nb_free(n).min(n);
        let idx = self.cached_prod;
        self.cached_prod = self.cached_prod.wrapping_add(got);
        (idx, got)
    }

    /// Fill a reserved, unpublished slot.
    pub(crate) fn write(&mut self, idx: u32, v: T) {
        debug_assert!(
            idx.wrapping_sub(self.published) < self.cached_prod.wrapping_sub(self.published),
            "write to a slot that is not reserved"
        );
        self.r.write(idx, v);
    }

    /// Read back a reserved, unpublished slot (ours until published).
    pub(crate) fn read_reserved(&self, idx: u32) -> T {
        self.r.read(idx)
    }

    /// Reserved but not yet published slots.
    pub(crate) fn pending(&self) -> u32 {
        self.cached_prod.wrapping_sub(self.published)
    }

    /// Index of the first unpublished slot.
    pub(crate) fn published(&self) -> u32 {
        self.published
    }

    /// Publish every reserved slot (Release: descriptor writes happen-before the index).
    pub(crate) fn submit(&mut self) -> u32 {
        let n = self.pending();
        if n > 0 {
            self.r.producer().store(self.cached_prod, Ordering::Release);
            self.published = self.cached_prod;
        }
        n
    }

    /// Slots published and not yet consumed by the other side.
    pub(crate) fn unconsumed(&self) -> u32 {
        self.published
            .wrapping_sub(self.r.consumer().load(Ordering::Acquire))
    }

    /// The kernel asks for a syscall to make progress on this ring.
    pub(crate) fn needs_wakeup(&self) -> bool {
        self.r.flags().load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0
    }
}

/// The consumer side of a ring (RxRing, CompletionRing; in tests also the fake kernel's
/// FillRing and TxRing).
#[derive(Debug)]
pub(crate) struct ConsRing<T> {
    r: RingPtrs<T>,
    /// Producer index as last seen.
    cached_prod: u32,
    /// Next index to peek.
    cached_cons: u32,
    /// Consumer index as last published.
    released: u32,
}

impl<T: Copy> ConsRing<T> {
    pub(crate) fn new(map: Arc<Mmap>, off: &XdpRingOffset, size: u32) -> Option<Self> {
        let r = RingPtrs::new(map, off, size)?;
        let cons = r.consumer().load(Ordering::Relaxed);
        Some(ConsRing {
            cached_prod: r.producer().load(Ordering::Acquire),
            cached_cons: cons,
            released: cons,
            r,
        })
    }

    /// Entries available, refreshing the producer index when none are known (xsk.h
    /// `xsk_cons_nb_avail`).
    pub(crate) fn nb_avail(&mut self, want: u32) -> u32 {
        let mut entries = self.cached_prod.wrapping_sub(self.cached_cons);
        if entries == 0 {
            // Acquire: the producer's descriptor writes are visible once we see its index.
            self.cached_prod = self.r.producer().load(Ordering::Acquire);
            entries = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        entries.min(want)
    }

    /// Take up to `n` entries; returns (first index, count). Read them with `read`, then
    /// `release`.
    pub(crate) fn peek(&mut self, n: u32) -> (u32, u32) {
        let got = self.nb_avail(n);
        let idx = self.cached_cons;
        self.cached_cons = self.cached_cons.wrapping_add(got);
        (idx, got)
    }

    pub(crate) fn read(&self, idx: u32) -> T {
        debug_assert!(
            idx.wrapping_sub(self.released) < self.cached_cons.wrapping_sub(self.released),
            "read of a slot that was not peeked"
        );
        self.r.read(idx)
    }

    /// Give every peeked slot back to the producer (Release: our reads happen-before).
    pub(crate) fn release(&mut self) {
        if self.cached_cons != self.released {
            self.r.consumer().store(self.cached_cons, Ordering::Release);
            self.released = self.cached_cons;
        }
    }

    /// Entries published by the producer and not yet released by us (fresh Acquire load).
    #[cfg(test)]
    pub(crate) fn occupancy(&self) -> u32 {
        self.r
            .producer()
            .load(Ordering::Acquire)
            .wrapping_sub(self.released)
    }

    /// Read any published, unreleased slot without consuming it (test inspection).
    #[cfg(test)]
    pub(crate) fn inspect(&self, i: u32) -> T {
        self.r.read(self.released.wrapping_add(i))
    }

    #[cfg(test)]
    pub(crate) fn set_flags(&self, v: u32) {
        self.r.flags().store(v, Ordering::Relaxed);
    }
}

/// Layout used for rings we map ourselves (fake kernel): producer, consumer and flags each
/// on their own cache line, then the descriptors.
#[cfg(test)]
pub(crate) fn fake_ring_layout<T>(size: u32) -> (XdpRingOffset, usize) {
    let off = XdpRingOffset {
        producer: 0,
        consumer: 64,
        flags: 128,
        desc: 192,
    };
    let len = 192 + size as usize * std::mem::size_of::<T>();
    (off, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(size: u32) -> (ProdRing<u64>, ConsRing<u64>) {
        let (off, len) = fake_ring_layout::<u64>(size);
        let map = Arc::new(Mmap::anon(len).unwrap());
        (
            ProdRing::new(map.clone(), &off, size).unwrap(),
            ConsRing::new(map, &off, size).unwrap(),
        )
    }

    #[test]
    fn wraps_and_respects_capacity() {
        let (mut p, mut c) = pair(8);
        let mut next = 0u64;
        let mut expect = 0u64;
        for round in 0..100u32 {
            let (idx, got) = p.reserve(5);
            for i in 0..got {
                p.write(idx.wrapping_add(i), next);
                next += 1;
            }
            p.submit();
            assert!(p.unconsumed() <= 8);
            let (ci, cgot) = c.peek(round % 7 + 1);
            for i in 0..cgot {
                assert_eq!(c.read(ci.wrapping_add(i)), expect);
                expect += 1;
            }
            c.release();
        }
        assert!(next > 100);
    }

    #[test]
    fn rejects_bad_offsets() {
        let (mut off, len) = fake_ring_layout::<u64>(8);
        let map = Arc::new(Mmap::anon(len).unwrap());
        assert!(ProdRing::<u64>::new(map.clone(), &off, 6).is_none());
        off.desc = 4096;
        assert!(ProdRing::<u64>::new(map.clone(), &off, 8).is_none());
        off.desc = 192;
        off.flags = 4095;
        assert!(ConsRing::<u64>::new(map, &off, 8).is_none());
    }
}

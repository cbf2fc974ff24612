//! A fake kernel for tests: runs the kernel's side of the four rings over anonymous
//! memory laid out like the kernel's, so the real ring and bookkeeping code is exercised
//! without a socket or privileges.

use crate::config::AttachMode;
use crate::port::{Port, PortInfo, RingSet};
use crate::ring::{fake_ring_layout, ConsRing, ProdRing};
use crate::sys::{Mmap, XdpDesc, XDP_RING_NEED_WAKEUP};
use std::collections::VecDeque;
use std::sync::Arc;

/// Headroom the fake kernel leaves before received data (like XDP_PACKET_HEADROOM).
pub(crate) const FAKE_HEADROOM: u64 = 256;

/// The kernel's side of a port's rings.
pub(crate) struct FakeKernel {
    umem: Arc<Mmap>,
    frame_size: u32,
    fill: ConsRing<u64>,
    rx: ProdRing<XdpDesc>,
    tx: ConsRing<XdpDesc>,
    comp: ProdRing<u64>,
    /// Frame base addresses taken from the FillRing, not yet delivered on the RxRing.
    pub filling: Vec<u64>,
    /// Frame base addresses taken from the TxRing, not yet completed.
    pub sending: Vec<u64>,
    /// Everything published on the RxRing, oldest first; trimmed to what is unconsumed.
    rx_log: VecDeque<u64>,
    /// Everything published on the CompletionRing, oldest first; trimmed likewise.
    comp_log: VecDeque<u64>,
    /// Bytes of TX frames seen, for checks.
    pub sent: Vec<Vec<u8>>,
}

fn ring_map<T>(size: u32) -> (Arc<Mmap>, crate::sys::XdpRingOffset) {
    let (off, len) = fake_ring_layout::<T>(size);
    (Arc::new(Mmap::anon(len).expect("mmap")), off)
}

/// A port wired to a fake kernel.
pub(crate) fn fake_port(
    frame_size: u32,
    frame_count: u32,
    ring_size: u32,
    need_wakeup: bool,
) -> (Port, FakeKernel) {
    let umem = Arc::new(Mmap::anon(frame_size as usize * frame_count as usize).expect("mmap"));
    let (fm, fo) = ring_map::<u64>(ring_size);
    let (cm, co) = ring_map::<u64>(ring_size);
    let (rm, ro) = ring_map::<XdpDesc>(ring_size);
    let (tm, to) = ring_map::<XdpDesc>(ring_size);
    let kernel = FakeKernel {
        umem: umem.clone(),
        frame_size,
        fill: ConsRing::new(fm.clone(), &fo, ring_size).unwrap(),
        rx: ProdRing::new(rm.clone(), &ro, ring_size).unwrap(),
        tx: ConsRing::new(tm.clone(), &to, ring_size).unwrap(),
        comp: ProdRing::new(cm.clone(), &co, ring_size).unwrap(),
        filling: Vec::new(),
        sending: Vec::new(),
        rx_log: VecDeque::new(),
        comp_log: VecDeque::new(),
        sent: Vec::new(),
    };
    let rings = RingSet {
        umem,
        fill: ProdRing::new(fm, &fo, ring_size).unwrap(),
        comp: ConsRing::new(cm, &co, ring_size).unwrap(),
        rx: ConsRing::new(rm, &ro, ring_size).unwrap(),
        tx: ProdRing::new(tm, &to, ring_size).unwrap(),
    };
    let info = PortInfo {
        ifname: "fake0".into(),
        ifindex: 0,
        queue: 0,
        mac: [2, 0, 0, 0, 0, 1],
        mtu: 1500,
        attach_mode: AttachMode::Skb,
        zero_copy: false,
        need_wakeup,
    };
    let port = Port::assemble(rings, None, None, frame_size, frame_count, info);
    (port, kernel)
}

impl FakeKernel {
    /// Set the TxRing's need-wakeup flag, as copy mode does.
    pub fn set_tx_need_wakeup(&self, on: bool) {
        self.tx.set_flags(if on { XDP_RING_NEED_WAKEUP } else { 0 });
    }

    /// Take up to `n` frames from the FillRing.
    pub fn take_fill(&mut self, n: u32) -> u32 {
        let (i, got) = self.fill.peek(n);
        for k in 0..got {
            let a = self.fill.read(i.wrapping_add(k));
            assert_eq!(
                a % u64::from(self.frame_size),
                0,
                "fill addr not frame aligned"
            );
            self.filling.push(a);
        }
        self.fill.release();
        got
    }

    /// Deliver up to `n` filled frames on the RxRing, with `len(i)` bytes each, writing a
    /// recognisable pattern (the frame address, then the length) into the data.
    pub fn deliver(&mut self, n: u32, mut len: impl FnMut() -> u32) -> u32 {
        let n = n.min(self.filling.len() as u32);
        let (i, got) = self.rx.reserve(n);
        for k in 0..got {
            let base = self.filling.pop().unwrap();
            let max = self.frame_size - FAKE_HEADROOM as u32;
            let l = len().clamp(16, max);
            let addr = base + FAKE_HEADROOM;
            // SAFETY: the fake kernel owns frame `base` (taken from the FillRing, not yet
            // delivered); addr + 16 <= base + frame_size lies inside the UMEM mapping.
            unsafe {
                let p = self.umem.as_ptr().add(addr as usize);
                p.cast::<[u8; 8]>().write_unaligned(addr.to_le_bytes());
                p.add(8)
                    .cast::<[u8; 8]>()
                    .write_unaligned(u64::from(l).to_le_bytes());
            }
            self.rx.write(
                i.wrapping_add(k),
                XdpDesc {
                    addr,
                    len: l,
                    options: 0,
                },
            );
            self.rx_log.push_back(base);
        }
        self.rx.submit();
        got
    }

    /// Take up to `n` descriptors from the TxRing ("transmit" them).
    pub fn take_tx(&mut self, n: u32) -> u32 {
        let (i, got) = self.tx.peek(n);
        for k in 0..got {
            let d = self.tx.read(i.wrapping_add(k));
            let off = d.addr % u64::from(self.frame_size);
            assert!(
                off + u64::from(d.len) <= u64::from(self.frame_size),
                "tx desc overruns frame"
            );
            // SAFETY: the descriptor was published to us; bounds checked just above, and
            // the address lies in the UMEM (asserted by the frame-index check in `locate`
            // on completion; here checked against the mapping length).
            let bytes = unsafe {
                assert!(d.addr as usize + d.len as usize <= self.umem.len());
                std::slice::from_raw_parts(self.umem.as_ptr().add(d.addr as usize), d.len as usize)
            };
            self.sent.push(bytes.to_vec());
            self.sending.push(d.addr - off);
        }
        self.tx.release();
        got
    }

    /// Complete up to `n` sent frames on the CompletionRing.
    pub fn complete(&mut self, n: u32) -> u32 {
        let n = n.min(self.sending.len() as u32);
        let (i, got) = self.comp.reserve(n);
        for k in 0..got {
            let a = self.sending.remove(0);
            self.comp.write(i.wrapping_add(k), a);
            self.comp_log.push_back(a);
        }
        self.comp.submit();
        got
    }

    /// Frame base addresses published on the FillRing and not yet taken.
    fn fill_ring_contents(&self) -> Vec<u64> {
        (0..self.fill.occupancy())
            .map(|i| self.fill.inspect(i))
            .collect()
    }

    /// Frame base addresses published on the TxRing and not yet taken.
    fn tx_ring_contents(&self) -> Vec<u64> {
        (0..self.tx.occupancy())
            .map(|i| {
                let a = self.tx.inspect(i).addr;
                a - a % u64::from(self.frame_size)
            })
            .collect()
    }

    fn trim_logs(&mut self) {
        let rx_left = self.rx.unconsumed() as usize;
        while self.rx_log.len() > rx_left {
            self.rx_log.pop_front();
        }
        let comp_left = self.comp.unconsumed() as usize;
        while self.comp_log.len() > comp_left {
            self.comp_log.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameState;
    use crate::port::Frame;

    /// xorshift64*: deterministic, seedable, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Every frame is in exactly one place, and that place agrees with the books.
    fn check_exclusive(port: &Port, k: &mut FakeKernel, held: &[Frame]) {
        k.trim_logs();
        port.check_books();
        let c = port.frame_counts();
        assert_eq!(c.sum(), c.total, "counts do not sum to total: {c:?}");
        let fs = port.frame_size() as u64;
        let total = c.total as usize;
        let mut place: Vec<Option<&'static str>> = vec![None; total];
        let mut put = |addr: u64, what: &'static str, want: &[FrameState]| {
            let idx = (addr / fs) as usize;
            assert!(idx < total, "{what}: address {addr:#x} outside UMEM");
            if let Some(prev) = place[idx] {
                panic!("frame {idx} is in two places: {prev} and {what}");
            }
            place[idx] = Some(what);
            let s = port.frame_state(idx as u32);
            assert!(
                want.contains(&s),
                "frame {idx} in {what} but booked as {s:?}"
            );
        };
        for i in 0..c.total {
            if port.frame_state(i) == FrameState::Free {
                put(port.frame_addr(i), "free list", &[FrameState::Free]);
            }
        }
        for a in k.fill_ring_contents() {
            put(a, "fill ring", &[FrameState::Fill]);
        }
        for &a in &k.filling {
            put(a, "kernel rx", &[FrameState::Fill]);
        }
        for &a in &k.rx_log {
            put(a, "rx ring", &[FrameState::Fill]);
        }
        for f in held {
            put(
                port.frame_addr(f.index()),
                "caller",
                &[FrameState::RxHeld, FrameState::AllocHeld],
            );
        }
        for a in port.tx_pending_addrs() {
            put(a - a % fs, "tx pending", &[FrameState::TxPending]);
        }
        for a in k.tx_ring_contents() {
            put(a, "tx ring", &[FrameState::InKernelTx]);
        }
        for &a in &k.sending {
            put(a, "kernel tx", &[FrameState::InKernelTx]);
        }
        for &a in &k.comp_log {
            put(a, "completion ring", &[FrameState::InKernelTx]);
        }
        if let Some(i) = place.iter().position(|p| p.is_none()) {
            panic!(
                "frame {i} is nowhere (booked {:?})",
                port.frame_state(i as u32)
            );
        }
    }

    fn run(seed: u64, steps: usize, frame_count: u32, ring: u32, need_wakeup: bool) {
        let mut rng = Rng(seed | 1);
        let (mut port, mut k) = fake_port(2048, frame_count, ring, need_wakeup);
        let mut held: Vec<Frame> = Vec::new();
        let mut rx_seen = 0u64;
        for step in 0..steps {
            let op = rng.below(14);
            match op {
                13 => {
                    // The batch form: every frame lent at once, with TX in between.
                    let max = rng.below(80) as usize;
                    let n = port.recv_batch(max, |frames, tx| {
                        assert!(frames.len() <= crate::RX_BATCH_MAX);
                        for data in frames {
                            let l = u64::from_le_bytes(data[8..16].try_into().unwrap());
                            assert_eq!(l as usize, data.len());
                        }
                        if let Some(b) = tx.frame(64) {
                            b.fill(0xAB);
                        }
                    });
                    rx_seen += n as u64;
                }
                0 => {
                    let max = rng.below(40) as usize;
                    let txp = rng.below(3);
                    let mut r2 = Rng(rng.next() | 1);
                    let n = port.recv(max, |data, tx| {
                        // The fake wrote its address and the length into the data.
                        let addr = u64::from_le_bytes(data[0..8].try_into().unwrap());
                        assert_eq!(addr % 2048, FAKE_HEADROOM);
                        let l = u64::from_le_bytes(data[8..16].try_into().unwrap());
                        assert_eq!(l as usize, data.len());
                        if r2.below(3) < txp {
                            if let Some(b) = tx.frame(64) {
                                b.fill(0xAB);
                                b[..16].copy_from_slice(&data[..16]);
                            }
                        }
                    });
                    rx_seen += n as u64;
                }
                1 => {
                    let len = 14 + rng.below(2100) as usize;
                    if let Some(b) = port.tx().frame(len) {
                        b.fill(0xCD);
                    }
                }
                2 => port.flush(),
                3 => {
                    port.rx_take(rng.below(20) as usize, &mut held);
                }
                4 if !held.is_empty() => {
                    let f = held.swap_remove(rng.below(held.len() as u64) as usize);
                    port.release(f);
                }
                5 => {
                    if let Some(mut f) = port.alloc() {
                        let len = rng.below(f.capacity() as u64 + 1) as usize;
                        port.data_mut(&mut f)[..len].fill(0xEE);
                        f.set_len(len);
                        held.push(f);
                    }
                }
                6 if !held.is_empty() => {
                    let f = held.swap_remove(rng.below(held.len() as u64) as usize);
                    if let Err(f) = port.submit(f) {
                        held.push(f);
                    }
                }
                7 => {
                    k.take_fill(rng.below(64) as u32);
                }
                8 => {
                    let mut r2 = Rng(rng.next() | 1);
                    k.deliver(rng.below(64) as u32, || r2.below(1800) as u32);
                }
                9 => {
                    k.take_tx(rng.below(64) as u32);
                }
                10 => {
                    k.complete(rng.below(64) as u32);
                }
                11 => k.set_tx_need_wakeup(rng.below(2) == 0),
                12 if !held.is_empty() => {
                    let f = &held[rng.below(held.len() as u64) as usize];
                    assert_eq!(port.data(f).len(), f.len());
                }
                _ => {}
            }
            check_exclusive(&port, &mut k, &held);
            let _ = step;
        }
        // Drain: give everything back and let the fake kernel finish; all frames return
        // to the free list or the fill ring.
        for f in held.drain(..) {
            port.release(f);
        }
        for _ in 0..1000 {
            port.flush();
            k.take_tx(u32::MAX);
            k.complete(u32::MAX);
        }
        port.flush();
        check_exclusive(&port, &mut k, &held);
        let c = port.frame_counts();
        assert_eq!(
            c.tx_pending + c.in_kernel_tx + c.rx_held + c.alloc_held,
            0,
            "{c:?}"
        );
        assert!(rx_seen > 0 || steps < 100, "seed {seed}: nothing received");
        let s = port.stats();
        assert_eq!(s.bad_descs, 0);
        if !need_wakeup {
            assert!(s.wakeups > 0 || s.tx_packets == 0);
        }
    }

    #[test]
    fn frames_are_conserved_under_random_operations() {
        for seed in 1..=40u64 {
            run(seed * 0x9E37_79B9, 2_000, 256, 64, seed % 2 == 0);
        }
    }

    #[test]
    fn frames_are_conserved_with_tiny_rings_and_scarce_frames() {
        // ring larger than half the frames: fill target limited by frame count.
        for seed in 1..=20u64 {
            run(seed * 7919, 3_000, 128, 128, true);
        }
    }

    #[test]
    fn recv_lends_frame_and_tx_reply_reaches_kernel() {
        let (mut port, mut k) = fake_port(2048, 256, 64, true);
        assert_eq!(
            k.take_fill(u32::MAX),
            64,
            "fill target = min(ring, frames/2)"
        );
        k.deliver(3, || 60);
        let n = port.recv(64, |data, tx| {
            let out = tx.frame(data.len()).expect("free frame");
            out.copy_from_slice(data);
            out[0] ^= 0xFF;
        });
        assert_eq!(n, 3);
        assert_eq!(port.frame_counts().tx_pending, 3);
        k.set_tx_need_wakeup(true);
        port.flush();
        let s = port.stats();
        assert_eq!((s.rx_packets, s.tx_packets, s.wakeups), (3, 3, 1));
        assert_eq!(k.take_tx(64), 3);
        assert!(k.sent.iter().all(|p| p.len() == 60));
        assert_eq!(port.frame_counts().in_kernel_tx, 3);
        k.complete(64);
        port.flush();
        let c = port.frame_counts();
        assert_eq!((c.in_kernel_tx, c.sum()), (0, 256));
        // No wakeup when the kernel does not ask for one.
        k.set_tx_need_wakeup(false);
        port.tx().frame(60).unwrap();
        port.flush();
        assert_eq!(port.stats().wakeups, 1);
    }

    #[test]
    fn tx_full_and_no_frame_are_counted() {
        let (mut port, _k) = fake_port(2048, 128, 64, true);
        // 64 frames in the fill ring, 64 free, TxRing 64 slots.
        let mut ok = 0;
        while port.tx().frame(100).is_some() {
            ok += 1;
        }
        assert_eq!(ok, 64);
        let s = port.stats();
        assert_eq!(s.tx_no_frame + s.tx_ring_full, 1);
        assert!(port.tx().frame(5000).is_none());
        assert_eq!(port.stats().tx_oversize, 1);
        assert!(port.alloc().is_none());
    }

    #[test]
    #[should_panic(expected = "another Port")]
    fn frame_of_another_port_is_refused() {
        let (mut a, _ka) = fake_port(2048, 128, 64, true);
        let (mut b, _kb) = fake_port(2048, 128, 64, true);
        let f = a.alloc().unwrap();
        b.release(f);
    }
}

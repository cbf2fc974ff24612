//! [`Port`]: one AF_XDP socket bound to (interface, queue), its UMEM and four rings, and the
//! frame ownership rules that make the safe API sound.

use crate::config::AttachMode;
use crate::frame::{FrameBook, FrameCounts, FrameState};
use crate::ring::{ConsRing, ProdRing};
use crate::sys::{self, Mmap, XdpDesc, XdpStatistics};
use crate::xdp::XdpAttachment;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Counters of one port. `k_*` come from the kernel (`XDP_STATISTICS`), read in
/// [`Port::stats`]; the others are the driver's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received (taken from the RxRing).
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames published on the TxRing.
    pub tx_packets: u64,
    /// Bytes published on the TxRing.
    pub tx_bytes: u64,
    /// The FillRing was below its target but the free list was empty.
    pub fill_starved: u64,
    /// A TX frame was refused because the TxRing had no free slot.
    pub tx_ring_full: u64,
    /// A TX frame was refused because no UMEM frame was free.
    pub tx_no_frame: u64,
    /// A TX frame was refused because it is larger than a UMEM frame.
    pub tx_oversize: u64,
    /// `sendto()` calls made to kick TX.
    pub wakeups: u64,
    /// Kicks that returned EAGAIN, EBUSY, ENOBUFS or ENETDOWN (harmless, retried later).
    pub wakeup_transient: u64,
    /// Kicks that failed with any other errno.
    pub wakeup_errors: u64,
    /// `recvfrom()` calls made because the FillRing asked for a wakeup.
    pub fill_wakeups: u64,
    /// RX or completion descriptors that named a frame the kernel did not own (dropped).
    pub bad_descs: u64,
    /// poll() calls made by [`Port::wait`] (the idle path, not the data path).
    pub idle_polls: u64,
    /// `flush()` calls that submitted at least one frame: the bound for `wakeups` (at
    /// most one TX kick per batch).
    pub tx_batches: u64,
    /// `wait()` calls ended early by the [`crate::Waker`].
    pub idle_wakes: u64,
    /// Kernel: frames dropped for other reasons than a full RxRing or empty FillRing.
    pub k_rx_dropped: u64,
    /// Kernel: invalid descriptors on the FillRing.
    pub k_rx_invalid_descs: u64,
    /// Kernel: invalid descriptors on the TxRing.
    pub k_tx_invalid_descs: u64,
    /// Kernel: frames dropped because the RxRing was full.
    pub k_rx_ring_full: u64,
    /// Kernel: frames dropped because the FillRing was empty.
    pub k_rx_fill_ring_empty: u64,
    /// Kernel: times the TxRing was found empty when woken.
    pub k_tx_ring_empty: u64,
}

static NEXT_PORT_ID: AtomicU32 = AtomicU32::new(1);

/// A UMEM frame held by the caller: a move-only ownership token.
///
/// Obtained from [`Port::rx_take`] or [`Port::alloc`]; it must go back through
/// [`Port::release`] or [`Port::submit`] on the same port. A `Frame` that is dropped
/// instead is leaked: it stays counted as held in [`FrameCounts`].
#[must_use = "a Frame must be released or submitted, or its UMEM frame leaks"]
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    idx: u32,
    off: u32,
    len: u32,
    cap: u32,
    port: u32,
}

impl Frame {
    /// Bytes of packet data.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// No packet data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes available from the start of the packet data to the end of the UMEM frame.
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// Set the packet length (e.g. before [`Port::submit`]).
    ///
    /// # Panics
    /// If `len > self.capacity()`.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.cap as usize,
            "Frame::set_len({len}) beyond capacity {}",
            self.cap
        );
        self.len = len as u32;
    }

    /// Index of the UMEM frame (diagnostics, tests).
    pub fn index(&self) -> u32 {
        self.idx
    }
}

/// The UMEM area: `count` frames of `frame_size` bytes.
#[derive(Debug)]
pub(crate) struct Umem {
    map: Arc<Mmap>,
    frame_size: u32,
    shift: u32,
    count: u32,
}

impl Umem {
    pub(crate) fn new(map: Arc<Mmap>, frame_size: u32, count: u32) -> Umem {
        assert!(frame_size.is_power_of_two());
        assert!(map.len() >= frame_size as usize * count as usize);
        Umem {
            map,
            frame_size,
            shift: frame_size.trailing_zeros(),
            count,
        }
    }

    /// Frame index and offset within the frame of a descriptor address (aligned mode).
    fn locate(&self, addr: u64) -> Option<(u32, u32)> {
        let idx = addr >> self.shift;
        if idx >= u64::from(self.count) {
            return None;
        }
        Some((idx as u32, (addr & u64::from(self.frame_size - 1)) as u32))
    }

    fn addr(&self, idx: u32) -> u64 {
        u64::from(idx) << self.shift
    }

    /// Pointer to byte `off` of frame `idx`.
    fn ptr(&self, idx: u32, off: u32) -> *mut u8 {
        assert!(idx < self.count && off <= self.frame_size);
        // SAFETY: idx < count and off <= frame_size, so the result is within (or one past
        // the end of) the mapping of at least count * frame_size bytes.
        unsafe {
            self.map
                .as_ptr()
                .add(idx as usize * self.frame_size as usize + off as usize)
        }
    }
}

/// The TX half of a port: what a [`Tx`] may touch while an RX frame is lent out.
#[derive(Debug)]
pub(crate) struct TxSide {
    umem: Umem,
    book: FrameBook,
    tx: ProdRing<XdpDesc>,
    comp: ConsRing<u64>,
    st: PortStats,
    port_id: u32,
}

impl TxSide {
    /// Move completed TX frames back to the free list.
    fn reap(&mut self) -> u32 {
        let (idx, n) = self.comp.peek(u32::MAX);
        for i in 0..n {
            let addr = self.comp.read(idx.wrapping_add(i));
            let ok = self
                .umem
                .locate(addr)
                .is_some_and(|(f, _)| self.book.put_free(f, FrameState::InKernelTx));
            if !ok {
                self.st.bad_descs += 1;
            }
        }
        self.comp.release();
        n
    }

    fn take_free(&mut self, to: FrameState) -> Option<u32> {
        if let Some(f) = self.book.take_free(to) {
            return Some(f);
        }
        self.reap();
        self.book.take_free(to)
    }

    fn tx_frame(&mut self, len: usize) -> Option<&mut [u8]> {
        if len > self.umem.frame_size as usize {
            self.st.tx_oversize += 1;
            return None;
        }
        let Some(f) = self.take_free(FrameState::TxPending) else {
            self.st.tx_no_frame += 1;
            return None;
        };
        let (slot, got) = self.tx.reserve(1);
        if got == 0 {
            self.st.tx_ring_full += 1;
            let back = self.book.put_free(f, FrameState::TxPending);
            debug_assert!(back);
            return None;
        }
        self.tx.write(
            slot,
            XdpDesc {
                addr: self.umem.addr(f),
                len: len as u32,
                options: 0,
            },
        );
        // SAFETY: frame `f` was just taken from the free list into TxPending: nobody else
        // (kernel, another Frame token, a lent RX slice) refers to it until the next flush
        // publishes it, and the returned borrow ends before that (it borrows `self`).
        // len <= frame_size was checked above.
        Some(unsafe { std::slice::from_raw_parts_mut(self.umem.ptr(f, 0), len) })
    }
}

/// Most frames one [`Port::recv_batch`] lends at once.
pub const RX_BATCH_MAX: usize = 64;

/// Access to TX while receiving: see [`Port::recv`] and [`Port::tx`].
#[derive(Debug)]
pub struct Tx<'a> {
    side: &'a mut TxSide,
}

impl Tx<'_> {
    /// Reserve a free frame for a packet of `len` bytes and return it to be written; it is
    /// queued for transmission at the next [`Port::flush`]. `None` when no frame or no TX
    /// ring slot is free, or `len` exceeds the frame size (each counted in [`PortStats`]).
    pub fn frame(&mut self, len: usize) -> Option<&mut [u8]> {
        self.side.tx_frame(len)
    }

    /// Whether `frame` can succeed now (a free frame and a TxRing slot). Lets a caller
    /// hold a packet back rather than build it and have it dropped.
    pub fn has_room(&mut self) -> bool {
        self.side.book.free_len() > 0 && self.side.tx.nb_free(1) > 0
    }
}

/// Facts about the bound port, fixed at open.
#[derive(Clone, Debug)]
pub(crate) struct PortInfo {
    pub ifname: String,
    pub ifindex: u32,
    pub queue: u32,
    pub mac: [u8; 6],
    pub mtu: usize,
    pub attach_mode: AttachMode,
    pub zero_copy: bool,
    pub need_wakeup: bool,
}

/// One AF_XDP socket bound to (interface, queue), with its UMEM, rings and the XDP
/// program that steers the stack's frames to it.
///
/// The port owns all UMEM frames; each is in exactly one place at a time (see
/// [`FrameCounts`]). Dropping the port detaches the XDP program (the bpf link closes),
/// closes the socket and unmaps the memory, in that order.
#[derive(Debug)]
pub struct Port {
    // Field order is drop order: detach XDP first, then close the socket, then unmap.
    pub(crate) xdp: Option<XdpAttachment>,
    pub(crate) sock: Option<OwnedFd>,
    rx: ConsRing<XdpDesc>,
    fill: ProdRing<u64>,
    side: TxSide,
    fill_target: u32,
    pub(crate) info: PortInfo,
    waker: Option<std::sync::Arc<crate::Waker>>,
}

/// The four rings and the UMEM of a socket (or of the fake kernel's memory).
pub(crate) struct RingSet {
    pub umem: Arc<Mmap>,
    pub fill: ProdRing<u64>,
    pub comp: ConsRing<u64>,
    pub rx: ConsRing<XdpDesc>,
    pub tx: ProdRing<XdpDesc>,
}

impl Port {
    /// Assemble a port from its parts (real socket or fake kernel).
    pub(crate) fn assemble(
        rings: RingSet,
        sock: Option<OwnedFd>,
        xdp: Option<XdpAttachment>,
        frame_size: u32,
        frame_count: u32,
        info: PortInfo,
    ) -> Port {
        let fill_target = rings.fill.size().min(frame_count / 2);
        let mut port = Port {
            xdp,
            sock,
            rx: rings.rx,
            fill: rings.fill,
            side: TxSide {
                umem: Umem::new(rings.umem, frame_size, frame_count),
                book: FrameBook::new(frame_count),
                tx: rings.tx,
                comp: rings.comp,
                st: PortStats::default(),
                port_id: NEXT_PORT_ID.fetch_add(1, Ordering::Relaxed),
            },
            fill_target,
            info,
            waker: None,
        };
        port.refill();
        port
    }

    /// Interface MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.info.mac
    }

    /// Interface MTU (L3 bytes).
    pub fn mtu(&self) -> usize {
        self.info.mtu
    }

    /// The mode the XDP program is attached in.
    pub fn attach_mode(&self) -> AttachMode {
        self.info.attach_mode
    }

    /// The socket is bound in zero-copy mode (the kernel tried zero-copy first and fell
    /// back to copy mode where the driver lacks it, e.g. veth).
    pub fn zero_copy(&self) -> bool {
        self.info.zero_copy
    }

    /// The XSK fd, e.g. for `poll()` by an idle loop (POLLIN: RX frames waiting). -1 for a
    /// port without a socket (tests).
    pub fn fd(&self) -> RawFd {
        self.sock.as_ref().map_or(-1, |s| s.as_raw_fd())
    }

    /// Block until the RxRing has frames or `timeout` passes (None: no limit), in one
    /// `poll()` on the socket; returns whether frames are waiting. This is the idle path of
    /// an adaptive loop, never the data path. A port without a socket returns at once.
    pub fn wait(&mut self, timeout: Option<std::time::Duration>) -> bool {
        let Some(s) = &self.sock else { return false };
        let ms = timeout.map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as i32);
        let mut pfds = [
            libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.waker.as_ref().map_or(-1, |w| w.raw()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        self.side.st.idle_polls += 1;
        let n = if self.waker.is_some() { 2 } else { 1 };
        // SAFETY: `pfds` is a valid array of at least `n` pollfds on our stack for the
        // duration of the call; the fds are a live socket and eventfd this port holds.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), n, ms) };
        if rc > 0 && pfds[1].revents & libc::POLLIN != 0 {
            if let Some(w) = &self.waker {
                w.drain();
            }
            self.side.st.idle_wakes += 1;
        }
        rc > 0 && pfds[0].revents & libc::POLLIN != 0
    }

    /// Let `waker` end this port's `wait()` early (from any thread).
    pub fn set_waker(&mut self, waker: std::sync::Arc<crate::Waker>) {
        self.waker = Some(waker);
    }

    /// UMEM frame size in bytes.
    pub fn frame_size(&self) -> usize {
        self.side.umem.frame_size as usize
    }

    /// Interface name.
    pub fn ifname(&self) -> &str {
        &self.info.ifname
    }

    /// Interface index (in the namespace the port was opened in).
    pub fn ifindex(&self) -> u32 {
        self.info.ifindex
    }

    /// Bound queue.
    pub fn queue(&self) -> u32 {
        self.info.queue
    }

    /// Id of the XDP program steering frames to this port (None for a test port).
    pub fn prog_id(&self) -> Option<u32> {
        self.xdp.as_ref().map(|x| x.prog_id())
    }

    /// Top the FillRing up to its target from the free list.
    fn refill(&mut self) {
        let want = self
            .fill_target
            .saturating_sub(self.side.book.count(FrameState::Fill));
        if want == 0 {
            return;
        }
        if self.side.book.free_len() == 0 {
            self.side.reap();
        }
        let n = want.min(self.side.book.free_len());
        if n == 0 {
            self.side.st.fill_starved += 1;
            return;
        }
        let (slot, got) = self.fill.reserve(n);
        for i in 0..got {
            let f = self
                .side
                .book
                .take_free(FrameState::Fill)
                .expect("free_len checked");
            self.fill
                .write(slot.wrapping_add(i), self.side.umem.addr(f));
        }
        self.fill.submit();
    }

    /// Validate an RX descriptor and move its frame Fill -> RxHeld; returns (idx, off, len).
    fn accept_rx(&mut self, d: XdpDesc) -> Option<(u32, u32, u32)> {
        let fs = self.side.umem.frame_size;
        match self.side.umem.locate(d.addr) {
            Some((f, off))
                if u64::from(off) + u64::from(d.len) <= u64::from(fs)
                    && self
                        .side
                        .book
                        .transition(f, FrameState::Fill, FrameState::RxHeld) =>
            {
                self.side.st.rx_packets += 1;
                self.side.st.rx_bytes += u64::from(d.len);
                Some((f, off, d.len))
            }
            _ => {
                self.side.st.bad_descs += 1;
                None
            }
        }
    }

    /// Ask the kernel to refill from the FillRing if it said it needs a syscall for that
    /// (zero-copy drivers; copy mode never sets the flag).
    fn wake_fill(&mut self) {
        if !self.info.need_wakeup || !self.fill.needs_wakeup() {
            return;
        }
        self.side.st.fill_wakeups += 1;
        if let Some(s) = &self.sock {
            // SAFETY: recvfrom with a null buffer of length 0 and no address: the kernel
            // writes nothing into our memory; the fd is a live socket we own.
            unsafe {
                libc::recvfrom(
                    s.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
            }
        }
    }

    /// Receive up to `max` frames: for each, call `f(frame_bytes, &mut tx)`; the frame is
    /// released (recycled to the FillRing) after `f` returns. Refills the FillRing first.
    /// Returns the number of frames handed to `f`.
    pub fn recv<F: FnMut(&[u8], &mut Tx<'_>)>(&mut self, max: usize, mut f: F) -> usize {
        self.refill();
        let (slot, n) = self.rx.peek(max.min(u32::MAX as usize) as u32);
        if n == 0 {
            self.wake_fill();
            return 0;
        }
        let mut handed = 0;
        for i in 0..n {
            let d = self.rx.read(slot.wrapping_add(i));
            let Some((idx, off, len)) = self.accept_rx(d) else {
                continue;
            };
            let ptr = self.side.umem.ptr(idx, off);
            // SAFETY: frame `idx` is now RxHeld: the kernel gave it up (it came through the
            // RxRing), it is not in the free list, so `Tx` cannot hand it out, and no `Frame`
            // token names it. off + len <= frame_size was checked in `accept_rx`. The slice
            // lives only for this call of `f`; the frame is freed after `f` returns.
            let data = unsafe { std::slice::from_raw_parts(ptr, len as usize) };
            let mut tx = Tx {
                side: &mut self.side,
            };
            f(data, &mut tx);
            let freed = self.side.book.put_free(idx, FrameState::RxHeld);
            debug_assert!(freed);
            handed += 1;
        }
        self.rx.release();
        self.refill();
        handed
    }

    /// Receive up to `max` (at most [`RX_BATCH_MAX`]) frames and lend them to `f` all at
    /// once, with the transmit side; every frame is recycled after `f` returns. A caller
    /// that sees the whole batch can start all its per-frame lookups before using any
    /// (their cache misses overlap), which one-frame-at-a-time `recv` cannot.
    pub fn recv_batch<F: FnOnce(&[&[u8]], &mut Tx<'_>)>(&mut self, max: usize, f: F) -> usize {
        self.refill();
        let want = max.min(RX_BATCH_MAX) as u32;
        let (slot, n) = self.rx.peek(want);
        if n == 0 {
            self.wake_fill();
            return 0;
        }
        let mut held = [0u32; RX_BATCH_MAX];
        let mut frames: [&[u8]; RX_BATCH_MAX] = [&[]; RX_BATCH_MAX];
        let mut k = 0;
        for i in 0..n {
            let d = self.rx.read(slot.wrapping_add(i));
            let Some((idx, off, len)) = self.accept_rx(d) else {
                continue;
            };
            let ptr = self.side.umem.ptr(idx, off);
            // SAFETY: frame `idx` is now RxHeld: the kernel gave it up (it came through the
            // RxRing), it is not in the free list, so `Tx` cannot hand it out, and no `Frame`
            // token names it. off + len <= frame_size was checked in `accept_rx`. The slices
            // live only for the call of `f` below; the frames are freed after it returns.
            frames[k] = unsafe { std::slice::from_raw_parts(ptr, len as usize) };
            held[k] = idx;
            k += 1;
        }
        let mut tx = Tx {
            side: &mut self.side,
        };
        f(&frames[..k], &mut tx);
        for &idx in &held[..k] {
            let freed = self.side.book.put_free(idx, FrameState::RxHeld);
            debug_assert!(freed);
        }
        self.rx.release();
        self.refill();
        k
    }

    /// TX access outside `recv`.
    pub fn tx(&mut self) -> Tx<'_> {
        Tx {
            side: &mut self.side,
        }
    }

    /// Submit pending TX descriptors, kick the kernel with `sendto(MSG_DONTWAIT)` only if
    /// it asks for it (copy mode transmits only inside that syscall), reap the
    /// CompletionRing into the free list and refill the FillRing.
    pub fn flush(&mut self) {
        let side = &mut self.side;
        let start = side.tx.published();
        let n = side.tx.pending();
        for i in 0..n {
            let d = side.tx.read_reserved(start.wrapping_add(i));
            let moved = side.umem.locate(d.addr).is_some_and(|(f, _)| {
                side.book
                    .transition(f, FrameState::TxPending, FrameState::InKernelTx)
            });
            debug_assert!(moved, "TxRing slot without a TxPending frame");
            side.st.tx_packets += 1;
            side.st.tx_bytes += u64::from(d.len);
        }
        if n > 0 {
            side.st.tx_batches += 1;
        }
        side.tx.submit();
        // Reap first: no kick is needed for frames the kernel has already completed.
        side.reap();
        // In copy mode the kernel sends at most 32 frames per kick and answers EAGAIN when
        // more are queued. Kick again while it does and takes frames, up to one ring's
        // worth: with one kick per flush, a full ring drained 32 frames per engine
        // iteration and its frames starved the FillRing (at 300 k connections echoing at
        // once, 400 k frames were dropped for an empty FillRing).
        let max_kicks = side.tx.size() / 32 + 1;
        for _ in 0..max_kicks {
            let side = &mut self.side;
            if side.book.count(FrameState::InKernelTx) == 0
                || (self.info.need_wakeup && !side.tx.needs_wakeup())
            {
                break;
            }
            let queued = side.tx.unconsumed();
            let more = self.kick_tx();
            let side = &mut self.side;
            side.reap();
            if !more || side.tx.unconsumed() == queued {
                break;
            }
        }
        self.refill();
    }

    /// One `sendto` kick; true when the kernel stopped with frames left (EAGAIN).
    fn kick_tx(&mut self) -> bool {
        let st = &mut self.side.st;
        st.wakeups += 1;
        let Some(s) = &self.sock else { return false };
        // SAFETY: sendto with a null buffer of length 0 and no address: the kernel reads
        // nothing from our memory; the fd is a live socket we own.
        let rc = unsafe {
            libc::sendto(
                s.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc < 0 {
            match sys::errno() {
                e @ (libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => {
                    st.wakeup_transient += 1;
                    return e == libc::EAGAIN;
                }
                e => {
                    st.wakeup_errors += 1;
                    if st.wakeup_errors.is_power_of_two() {
                        log::warn!(
                            "{} queue {}: TX kick failed: {} ({} so far)",
                            self.info.ifname,
                            self.info.queue,
                            sys::errno_str(e),
                            st.wakeup_errors
                        );
                    }
                }
            }
        }
        false
    }

    /// Counters; the `k_*` fields are read from the kernel now.
    pub fn stats(&self) -> PortStats {
        let mut s = self.side.st;
        if let Some(sock) = &self.sock {
            if let Ok((k, _)) =
                sys::getsockopt::<XdpStatistics>(sock.as_raw_fd(), sys::XDP_STATISTICS)
            {
                s.k_rx_dropped = k.rx_dropped;
                s.k_rx_invalid_descs = k.rx_invalid_descs;
                s.k_tx_invalid_descs = k.tx_invalid_descs;
                s.k_rx_ring_full = k.rx_ring_full;
                s.k_rx_fill_ring_empty = k.rx_fill_ring_empty_descs;
                s.k_tx_ring_empty = k.tx_ring_empty_descs;
            }
        }
        s
    }

    /// Where the UMEM frames are now; the fields sum to `total`.
    pub fn frame_counts(&self) -> FrameCounts {
        self.side.book.counts()
    }

    // ---- move-only token API ----

    /// Take up to `max` received frames as tokens (appended to `out`); each must come back
    /// through [`Port::release`] or [`Port::submit`]. Refills the FillRing first.
    pub fn rx_take(&mut self, max: usize, out: &mut Vec<Frame>) -> usize {
        self.refill();
        let (slot, n) = self.rx.peek(max.min(u32::MAX as usize) as u32);
        if n == 0 {
            self.wake_fill();
            return 0;
        }
        let mut got = 0;
        for i in 0..n {
            let d = self.rx.read(slot.wrapping_add(i));
            if let Some((idx, off, len)) = self.accept_rx(d) {
                out.push(Frame {
                    idx,
                    off,
                    len,
                    cap: self.side.umem.frame_size - off,
                    port: self.side.port_id,
                });
                got += 1;
            }
        }
        self.rx.release();
        got
    }

    fn check_token(&self, f: &Frame) {
        assert_eq!(
            f.port, self.side.port_id,
            "Frame from another Port (id {}) given to port {}",
            f.port, self.side.port_id
        );
    }

    /// Give a held frame back to the free list.
    ///
    /// # Panics
    /// If the frame belongs to another port.
    pub fn release(&mut self, f: Frame) {
        self.check_token(&f);
        let ok = self.side.book.put_free(f.idx, FrameState::RxHeld)
            || self.side.book.put_free(f.idx, FrameState::AllocHeld);
        assert!(
            ok,
            "Frame token out of step with the books (a bug in c10m-driver)"
        );
    }

    /// A free frame for building a packet (length 0, whole frame as capacity). Reaps the
    /// CompletionRing if the free list is empty; `None` (counted as `tx_no_frame`) if
    /// still none is free.
    pub fn alloc(&mut self) -> Option<Frame> {
        match self.side.take_free(FrameState::AllocHeld) {
            Some(idx) => Some(Frame {
                idx,
                off: 0,
                len: 0,
                cap: self.side.umem.frame_size,
                port: self.side.port_id,
            }),
            None => {
                self.side.st.tx_no_frame += 1;
                None
            }
        }
    }

    /// The packet bytes of a held frame.
    ///
    /// # Panics
    /// If the frame belongs to another port.
    pub fn data<'a>(&'a self, f: &'a Frame) -> &'a [u8] {
        self.check_token(f);
        // SAFETY: the token proves the frame is held by the caller (RxHeld or AllocHeld):
        // the kernel does not write it and no other token or Tx slice refers to it. The
        // shared borrow of `f` prevents `data_mut` on it meanwhile. off + len <= frame_size
        // (set_len checks against cap = frame_size - off).
        unsafe { std::slice::from_raw_parts(self.side.umem.ptr(f.idx, f.off), f.len as usize) }
    }

    /// The whole writable capacity of a held frame (from the packet start to the end of
    /// the UMEM frame); set the length with [`Frame::set_len`].
    ///
    /// # Panics
    /// If the frame belongs to another port.
    pub fn data_mut<'a>(&'a self, f: &'a mut Frame) -> &'a mut [u8] {
        self.check_token(f);
        // SAFETY: as in `data`; the exclusive borrow of the unique token `f` makes this the
        // only reference to the frame's bytes for 'a. off + cap == frame_size.
        unsafe { std::slice::from_raw_parts_mut(self.side.umem.ptr(f.idx, f.off), f.cap as usize) }
    }

    /// Queue a held frame for transmission (`len` bytes from its data start) at the next
    /// [`Port::flush`]. Gives the frame back as `Err` if the TxRing is full (counted).
    ///
    /// # Panics
    /// If the frame belongs to another port.
    pub fn submit(&mut self, f: Frame) -> Result<(), Frame> {
        self.check_token(&f);
        let side = &mut self.side;
        let from = match side.book.state(f.idx) {
            Some(s @ (FrameState::RxHeld | FrameState::AllocHeld)) => s,
            _ => panic!("Frame token out of step with the books (a bug in c10m-driver)"),
        };
        let (slot, got) = side.tx.reserve(1);
        if got == 0 {
            side.st.tx_ring_full += 1;
            return Err(f);
        }
        let moved = side.book.transition(f.idx, from, FrameState::TxPending);
        debug_assert!(moved);
        side.tx.write(
            slot,
            XdpDesc {
                addr: side.umem.addr(f.idx) + u64::from(f.off),
                len: f.len,
                options: 0,
            },
        );
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn check_books(&self) {
        self.side.book.check();
    }

    #[cfg(test)]
    pub(crate) fn frame_state(&self, idx: u32) -> FrameState {
        self.side.book.state(idx).unwrap()
    }
}

#[cfg(test)]
impl Port {
    /// Addresses in reserved, unpublished TxRing slots (test inspection).
    pub(crate) fn tx_pending_addrs(&self) -> Vec<u64> {
        let start = self.side.tx.published();
        (0..self.side.tx.pending())
            .map(|i| self.side.tx.read_reserved(start.wrapping_add(i)).addr)
            .collect()
    }

    pub(crate) fn frame_addr(&self, idx: u32) -> u64 {
        self.side.umem.addr(idx)
    }
}

//! Creating the AF_XDP socket: UMEM registration, ring sizes, ring mmaps, bind.
//! Follows Documentation/networking/af_xdp.rst and libxdp's xsk_socket__create.

use crate::config::PortConfig;
use crate::error::DriverError;
use crate::port::RingSet;
use crate::ring::{ConsRing, ProdRing};
use crate::sys::{self, Mmap, SockaddrXdp, XdpDesc, XdpMmapOffsets, XdpRingOffset, XdpUmemReg};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// A bound socket and its rings.
pub(crate) struct Xsk {
    pub fd: OwnedFd,
    pub rings: RingSet,
    pub zero_copy: bool,
}

fn ring_map(
    fd: &OwnedFd,
    off: &XdpRingOffset,
    size: u32,
    elem: usize,
    pgoff: i64,
    what: &'static str,
) -> Result<Arc<Mmap>, DriverError> {
    let len = off.desc as usize + size as usize * elem;
    Mmap::ring(fd, len, pgoff)
        .map(Arc::new)
        .map_err(|e| DriverError::sys(what, e))
}

fn bad_offsets(what: &'static str) -> DriverError {
    DriverError::Sys {
        what,
        errno: libc::EPROTO,
    }
}

/// Create, configure and bind an AF_XDP socket on (ifindex, queue).
pub(crate) fn create(cfg: &PortConfig, ifindex: u32, queues: u32) -> Result<Xsk, DriverError> {
    let (ifname, queue) = (cfg.ifname.as_str(), cfg.queue);
    let (frame_size, frame_count, ring_size) = (cfg.frame_size, cfg.frame_count, cfg.ring_size);
    let need_wakeup = cfg.need_wakeup;
    // SAFETY: plain socket(2) call with constant arguments.
    let raw = unsafe { libc::socket(sys::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(DriverError::sys("socket(AF_XDP)", sys::errno()));
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    let umem = Arc::new(
        Mmap::anon(frame_size as usize * frame_count as usize)
            .map_err(|e| DriverError::sys("mmap of the UMEM", e))?,
    );
    let reg = XdpUmemReg {
        addr: umem.as_ptr() as u64,
        len: umem.len() as u64,
        chunk_size: frame_size,
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    sys::setsockopt(&fd, sys::XDP_UMEM_REG, &reg)
        .map_err(|e| DriverError::sys("setsockopt(XDP_UMEM_REG)", e))?;
    for (opt, what) in [
        (sys::XDP_UMEM_FILL_RING, "setsockopt(XDP_UMEM_FILL_RING)"),
        (
            sys::XDP_UMEM_COMPLETION_RING,
            "setsockopt(XDP_UMEM_COMPLETION_RING)",
        ),
        (sys::XDP_RX_RING, "setsockopt(XDP_RX_RING)"),
        (sys::XDP_TX_RING, "setsockopt(XDP_TX_RING)"),
    ] {
        sys::setsockopt(&fd, opt, &ring_size).map_err(|e| DriverError::sys(what, e))?;
    }
    let (off, len) = sys::getsockopt::<XdpMmapOffsets>(fd.as_raw_fd(), sys::XDP_MMAP_OFFSETS)
        .map_err(|e| DriverError::sys("getsockopt(XDP_MMAP_OFFSETS)", e))?;
    if len != std::mem::size_of::<XdpMmapOffsets>() {
        return Err(bad_offsets(
            "getsockopt(XDP_MMAP_OFFSETS) returned a pre-5.4 layout",
        ));
    }
    let u64s = std::mem::size_of::<u64>();
    let descs = std::mem::size_of::<XdpDesc>();
    let fm = ring_map(
        &fd,
        &off.fr,
        ring_size,
        u64s,
        sys::XDP_UMEM_PGOFF_FILL_RING,
        "mmap of the FillRing",
    )?;
    let cm = ring_map(
        &fd,
        &off.cr,
        ring_size,
        u64s,
        sys::XDP_UMEM_PGOFF_COMPLETION_RING,
        "mmap of the CompletionRing",
    )?;
    let rm = ring_map(
        &fd,
        &off.rx,
        ring_size,
        descs,
        sys::XDP_PGOFF_RX_RING,
        "mmap of the RxRing",
    )?;
    let tm = ring_map(
        &fd,
        &off.tx,
        ring_size,
        descs,
        sys::XDP_PGOFF_TX_RING,
        "mmap of the TxRing",
    )?;
    let rings = RingSet {
        umem,
        fill: ProdRing::new(fm, &off.fr, ring_size)
            .ok_or_else(|| bad_offsets("FillRing offsets"))?,
        comp: ConsRing::new(cm, &off.cr, ring_size)
            .ok_or_else(|| bad_offsets("CompletionRing offsets"))?,
        rx: ConsRing::new(rm, &off.rx, ring_size).ok_or_else(|| bad_offsets("RxRing offsets"))?,
        tx: ProdRing::new(tm, &off.tx, ring_size).ok_or_else(|| bad_offsets("TxRing offsets"))?,
    };

    // Flags without XDP_COPY / XDP_ZEROCOPY: the kernel tries zero-copy first and falls
    // back to copy mode where the driver lacks it (xp_assign_dev); XDP_OPTIONS says which.
    let sa = SockaddrXdp {
        family: sys::AF_XDP as u16,
        flags: if need_wakeup {
            sys::XDP_USE_NEED_WAKEUP
        } else {
            0
        },
        ifindex,
        queue_id: queue,
        shared_umem_fd: 0,
    };
    let mut tries = 0;
    loop {
        // SAFETY: `sa` is a live sockaddr_xdp of the size passed; the kernel only reads it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const SockaddrXdp).cast(),
                std::mem::size_of::<SockaddrXdp>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            break;
        }
        let e = sys::errno();
        // Re-binding a queue right after the previous socket closed gives EBUSY for a few
        // tens of milliseconds (FACTS.md); a queue held by a live socket stays EBUSY.
        if e == libc::EBUSY && tries < 20 {
            tries += 1;
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        return Err(match e {
            libc::EBUSY => DriverError::QueueBusy {
                ifname: ifname.to_string(),
                queue,
            },
            libc::EINVAL if queue >= queues => DriverError::NoSuchQueue {
                ifname: ifname.to_string(),
                queues,
                queue,
            },
            _ => DriverError::sys("bind(AF_XDP socket)", e),
        });
    }
    let zero_copy = sys::getsockopt::<u32>(fd.as_raw_fd(), sys::XDP_OPTIONS)
        .is_ok_and(|(o, _)| o & sys::XDP_OPTIONS_ZEROCOPY != 0);
    Ok(Xsk {
        fd,
        rings,
        zero_copy,
    })
}

//! Raw kernel ABI: AF_XDP socket options and structs (include/uapi/linux/if_xdp.h),
//! anonymous and ring mmaps, errno helpers.
//!
//! The structs are defined here rather than taken from `libc` so that their layout is
//! pinned to the uapi header the code was written against.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;

pub(crate) const AF_XDP: libc::c_int = 44;
pub(crate) const SOL_XDP: libc::c_int = 283;

pub(crate) const XDP_MMAP_OFFSETS: libc::c_int = 1;
pub(crate) const XDP_RX_RING: libc::c_int = 2;
pub(crate) const XDP_TX_RING: libc::c_int = 3;
pub(crate) const XDP_UMEM_REG: libc::c_int = 4;
pub(crate) const XDP_UMEM_FILL_RING: libc::c_int = 5;
pub(crate) const XDP_UMEM_COMPLETION_RING: libc::c_int = 6;
pub(crate) const XDP_STATISTICS: libc::c_int = 7;
pub(crate) const XDP_OPTIONS: libc::c_int = 8;

/// `XDP_OPTIONS` bit: the socket is bound in zero-copy mode.
pub(crate) const XDP_OPTIONS_ZEROCOPY: u32 = 1;

/// Bind flag: let the kernel tell us when it needs a syscall to make progress.
pub(crate) const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;

/// Ring `flags` word bit (if_xdp.h `XDP_RING_NEED_WAKEUP`).
pub(crate) const XDP_RING_NEED_WAKEUP: u32 = 1;

pub(crate) const XDP_PGOFF_RX_RING: i64 = 0;
pub(crate) const XDP_PGOFF_TX_RING: i64 = 0x8000_0000;
pub(crate) const XDP_UMEM_PGOFF_FILL_RING: i64 = 0x1_0000_0000;
pub(crate) const XDP_UMEM_PGOFF_COMPLETION_RING: i64 = 0x1_8000_0000;

/// `struct xdp_ring_offset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct XdpRingOffset {
    pub producer: u64,
    pub consumer: u64,
    pub desc: u64,
    pub flags: u64,
}

/// `struct xdp_mmap_offsets`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct XdpMmapOffsets {
    pub rx: XdpRingOffset,
    pub tx: XdpRingOffset,
    pub fr: XdpRingOffset,
    pub cr: XdpRingOffset,
}

/// `struct xdp_umem_reg` (with `tx_metadata_len`, 32 bytes: also the size of the v2 layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct XdpUmemReg {
    pub addr: u64,
    pub len: u64,
    pub chunk_size: u32,
    pub headroom: u32,
    pub flags: u32,
    pub tx_metadata_len: u32,
}

/// `struct sockaddr_xdp`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SockaddrXdp {
    pub family: u16,
    pub flags: u16,
    pub ifindex: u32,
    pub queue_id: u32,
    pub shared_umem_fd: u32,
}

/// `struct xdp_desc`: one RX or TX ring entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct XdpDesc {
    pub addr: u64,
    pub len: u32,
    pub options: u32,
}

/// `struct xdp_statistics`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct XdpStatistics {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// The calling thread's errno.
pub(crate) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `setsockopt(fd, SOL_XDP, opt, val)`.
pub(crate) fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, val: &T) -> Result<(), i32> {
    // SAFETY: `val` points to a live, initialised `T` of exactly `size_of::<T>()` bytes,
    // which the kernel only reads.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            opt,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// `getsockopt(fd, SOL_XDP, opt)` into a zeroed `T`; returns the value and the length the
/// kernel wrote.
pub(crate) fn getsockopt<T: Default>(fd: libc::c_int, opt: libc::c_int) -> Result<(T, usize), i32> {
    let mut val = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` is a live `T` of `len` bytes; the kernel writes at most `len` bytes and
    // stores the written length in `len`. T is plain old data (integers only).
    let rc = unsafe { libc::getsockopt(fd, SOL_XDP, opt, (&mut val as *mut T).cast(), &mut len) };
    if rc == 0 {
        Ok((val, len as usize))
    } else {
        Err(errno())
    }
}

/// An owned memory mapping, unmapped on drop. Used for the UMEM (anonymous) and for the
/// four rings (mapped from the XSK fd at the kernel's page offsets).
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mmap` is just an address range; every access to its contents goes through
// the ring protocol or through frame ownership, which the owners of the `Mmap` enforce.
unsafe impl Send for Mmap {}
// SAFETY: as above; `Mmap` itself has no interior state besides the immutable range.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// A zeroed, private, anonymous mapping of `len` bytes (rounded up to pages by the kernel).
    pub(crate) fn anon(len: usize) -> Result<Mmap, i32> {
        // SAFETY: anonymous mapping with a null hint: creates a fresh range that aliases
        // nothing in this process.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        Self::from_result(p, len)
    }

    /// Map one of the socket's rings (`pgoff` is one of the `XDP_*PGOFF*` constants).
    pub(crate) fn ring(fd: &OwnedFd, len: usize, pgoff: i64) -> Result<Mmap, i32> {
        // SAFETY: shared mapping of a kernel object with a null hint: a fresh range.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff,
            )
        };
        Self::from_result(p, len)
    }

    fn from_result(p: *mut libc::c_void, len: usize) -> Result<Mmap, i32> {
        if p == libc::MAP_FAILED {
            return Err(errno());
        }
        match NonNull::new(p.cast::<u8>()) {
            Some(ptr) => Ok(Mmap { ptr, len }),
            None => Err(libc::ENOMEM),
        }
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and still owns; all
        // pointers derived from it are owned by structs that hold this `Mmap` (Arc) and are
        // dropped with it.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Human-readable errno, e.g. "EPERM (Operation not permitted)".
pub(crate) fn errno_str(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::EBUSY => "EBUSY",
        libc::ENOMEM => "ENOMEM",
        libc::ENODEV => "ENODEV",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOSPC => "ENOSPC",
        libc::EEXIST => "EEXIST",
        libc::ENOENT => "ENOENT",
        libc::E2BIG => "E2BIG",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        _ => "errno",
    };
    format!("{name} ({})", io::Error::from_raw_os_error(e))
}

//! Raw `bpf()` system calls: the XSKMAP, program load, XDP bpf links and link lookup.
//! Attribute structs follow `union bpf_attr` in include/uapi/linux/bpf.h; only the
//! leading fields each command needs are passed (the kernel zero-extends).

use crate::prog::Insn;
use crate::sys::errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_LINK_TYPE_XDP: u32 = 6;

/// `XDP_FLAGS_SKB_MODE`.
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`.
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

#[repr(C)]
#[derive(Default)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `bpf(cmd, attr, sizeof attr)`; returns the non-negative result or errno.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> Result<i32, i32> {
    // SAFETY: `attr` is a live, initialised repr(C) struct of `size_of::<T>()` bytes laid
    // out as the leading fields of `union bpf_attr` for `cmd`; any pointers inside it were
    // set by the caller to buffers that outlive this call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc as i32)
    }
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful bpf() call that creates a new fd;
    // nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    for (d, c) in n.iter_mut().zip(s.bytes().take(15)) {
        *d = c;
    }
    n
}

/// Create an XSKMAP with `entries` slots (one per queue).
pub(crate) fn xskmap_create(entries: u32) -> Result<OwnedFd, i32> {
    let mut a = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_name: name16("c10m_xsks"),
        ..Default::default()
    };
    bpf(BPF_MAP_CREATE, &mut a).map(owned)
}

/// `map[key] = value` (for an XSKMAP: value is an AF_XDP socket fd).
pub(crate) fn map_update(map: &OwnedFd, key: u32, value: u32) -> Result<(), i32> {
    let mut a = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
}

/// Load an XDP program; on failure returns errno and the verifier log.
pub(crate) fn prog_load_xdp(insns: &[Insn], name: &str) -> Result<OwnedFd, (i32, String)> {
    let license = b"Dual MIT/GPL\0";
    let mut a = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name16(name),
        expected_attach_type: BPF_XDP,
        ..Default::default()
    };
    if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut a) {
        return Ok(owned(fd));
    }
    // Load again with the verifier log on, to say why.
    let mut log = vec![0u8; 1 << 20];
    a.log_level = 1;
    a.log_size = log.len() as u32;
    a.log_buf = log.as_mut_ptr() as u64;
    match bpf(BPF_PROG_LOAD, &mut a) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err((e, String::from_utf8_lossy(&log[..end]).into_owned()))
        }
    }
}

/// Attach `prog` to `ifindex` with a bpf link (`flags`: XDP_FLAGS_DRV_MODE or _SKB_MODE).
/// The link, and so the attachment, lives as long as the returned fd.
pub(crate) fn link_create_xdp(prog: &OwnedFd, ifindex: u32, flags: u32) -> Result<OwnedFd, i32> {
    let mut a = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
    };
    bpf(BPF_LINK_CREATE, &mut a).map(owned)
}

/// First words of `bpf_prog_info` / `bpf_link_info` for `fd`.
fn info_words(fd: RawFd) -> Result<[u32; 64], i32> {
    let mut info = [0u32; 64];
    let mut a = InfoAttr {
        bpf_fd: fd as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(info)
}

/// The id of a loaded program (`bpf_prog_info.id`).
pub(crate) fn prog_id(prog: &OwnedFd) -> Result<u32, i32> {
    Ok(info_words(prog.as_raw_fd())?[1])
}

/// The id of a link (`bpf_link_info.id`).
pub(crate) fn link_id(link: &OwnedFd) -> Result<u32, i32> {
    Ok(info_words(link.as_raw_fd())?[1])
}

/// The id of the XDP bpf link on `ifindex` running `prog_id`, if any (walks all links:
/// needs CAP_SYS_ADMIN). Matching the program id as well guards against equal ifindexes
/// in other network namespaces.
pub(crate) fn find_xdp_link(ifindex: u32, prog_id: u32) -> Option<u32> {
    let mut id = 0u32;
    loop {
        let mut a = IdAttr {
            id,
            ..Default::default()
        };
        bpf(BPF_LINK_GET_NEXT_ID, &mut a).ok()?;
        id = a.next_id;
        let mut g = IdAttr {
            id,
            ..Default::default()
        };
        let Ok(fd) = bpf(BPF_LINK_GET_FD_BY_ID, &mut g) else {
            continue; // went away meanwhile
        };
        let fd = owned(fd);
        // bpf_link_info: type, id, prog_id, then the union (8-aligned) with xdp.ifindex.
        if let Ok(w) = info_words(fd.as_raw_fd()) {
            if w[0] == BPF_LINK_TYPE_XDP && w[2] == prog_id && w[4] == ifindex {
                return Some(w[1]);
            }
        }
    }
}

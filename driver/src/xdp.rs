//! Attaching c10m's XDP program: foreign-program check, XSKMAP, load, bpf link.
//!
//! The program is attached with BPF_LINK_CREATE, so the attachment is a bpf link owned by
//! this process: it disappears when the process exits, even by SIGKILL (a netlink
//! attachment would stay behind and be silently reused by the next run).
//!
//! One `XdpAttachment` holds the program, its XSKMAP (one slot per queue) and the link;
//! several ports on one interface are meant to share it (insert each socket into the map),
//! which is why the map is sized for every queue. Today each `Port` creates its own.

use crate::bpf;
use crate::config::{AttachMode, PortConfig, XdpMode};
use crate::error::{DriverError, ForeignAttach};
use crate::netlink::{self, LinkAttrs};
use crate::prog;
use crate::sys::errno_str;
use std::os::fd::{AsRawFd, OwnedFd};

/// The program, its XSKMAP and the bpf link attaching it. Dropping it detaches.
#[derive(Debug)]
pub(crate) struct XdpAttachment {
    // Drop order: the link first (detach), then program and map.
    _link: OwnedFd,
    _prog: OwnedFd,
    map: OwnedFd,
    prog_id: u32,
    link_id: u32,
    mode: AttachMode,
}

impl XdpAttachment {
    pub(crate) fn prog_id(&self) -> u32 {
        self.prog_id
    }

    pub(crate) fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Put the socket `xsk` into the map slot of `queue`.
    pub(crate) fn insert(&self, queue: u32, xsk: &OwnedFd) -> Result<(), DriverError> {
        bpf::map_update(&self.map, queue, xsk.as_raw_fd() as u32)
            .map_err(|e| DriverError::sys("bpf(BPF_MAP_UPDATE_ELEM) on the XSKMAP", e))
    }
}

/// Refuse (or with `force`, remove) an XDP program something else attached.
pub(crate) fn check_foreign(
    cfg: &PortConfig,
    ifindex: u32,
    attrs: &LinkAttrs,
) -> Result<(), DriverError> {
    for (prog_id, mode) in attrs.xdp_progs() {
        if let Some(link) = bpf::find_xdp_link(ifindex, prog_id) {
            return Err(DriverError::ForeignProgram {
                ifname: cfg.ifname.clone(),
                prog_id,
                by: ForeignAttach::Link(link),
            });
        }
        if !cfg.force {
            return Err(DriverError::ForeignProgram {
                ifname: cfg.ifname.clone(),
                prog_id,
                by: ForeignAttach::Netlink,
            });
        }
        log::warn!(
            "{}: detaching XDP program id {prog_id} (attached by netlink) because of --force",
            cfg.ifname
        );
        netlink::set_xdp_fd(ifindex, -1, mode)
            .map_err(|e| DriverError::sys("netlink RTM_SETLINK (detach foreign XDP program)", e))?;
    }
    Ok(())
}

/// Create the XSKMAP (`queues` slots), generate and load the program, attach it to
/// `ifindex` in the configured mode.
pub(crate) fn attach(
    cfg: &PortConfig,
    ifindex: u32,
    queues: u32,
) -> Result<XdpAttachment, DriverError> {
    let map = bpf::xskmap_create(queues.max(1))
        .map_err(|e| DriverError::sys("bpf(BPF_MAP_CREATE) of the XSKMAP", e))?;
    let insns = prog::generate(&cfg.steer, map.as_raw_fd())
        .map_err(|m| DriverError::InvalidConfig(format!("XDP program generation: {m}")))?;
    let prog = bpf::prog_load_xdp(&insns, "c10m_steer").map_err(|(errno, log)| {
        if errno == libc::EPERM || errno == libc::EACCES {
            DriverError::NotRoot {
                what: "bpf(BPF_PROG_LOAD)",
            }
        } else {
            DriverError::Verifier { errno, log }
        }
    })?;
    let prog_id = bpf::prog_id(&prog).unwrap_or(0);
    let try_mode = |mode: AttachMode| {
        let flags = match mode {
            AttachMode::Native => bpf::XDP_FLAGS_DRV_MODE,
            AttachMode::Skb => bpf::XDP_FLAGS_SKB_MODE,
        };
        bpf::link_create_xdp(&prog, ifindex, flags)
    };
    let (link, mode) = match cfg.xdp_mode {
        XdpMode::Native => match try_mode(AttachMode::Native) {
            Ok(l) => (l, AttachMode::Native),
            Err(e) => return Err(link_error(cfg, e, true)),
        },
        XdpMode::Skb => match try_mode(AttachMode::Skb) {
            Ok(l) => (l, AttachMode::Skb),
            Err(e) => return Err(link_error(cfg, e, false)),
        },
        XdpMode::Auto => match try_mode(AttachMode::Native) {
            Ok(l) => (l, AttachMode::Native),
            Err(e) if e == libc::EPERM || e == libc::EBUSY || e == libc::EEXIST => {
                return Err(link_error(cfg, e, false))
            }
            Err(e) => {
                log::warn!(
                    "{}: native XDP attach failed ({}); falling back to generic (skb) mode, \
                     which is slower",
                    cfg.ifname,
                    errno_str(e)
                );
                match try_mode(AttachMode::Skb) {
                    Ok(l) => (l, AttachMode::Skb),
                    Err(e) => return Err(link_error(cfg, e, false)),
                }
            }
        },
    };
    let link_id = bpf::link_id(&link).unwrap_or(0);
    log::info!(
        "{}: c10m XDP program id {prog_id} attached in {mode:?} mode by bpf link id {link_id}",
        cfg.ifname
    );
    Ok(XdpAttachment {
        _link: link,
        _prog: prog,
        map,
        prog_id,
        link_id,
        mode,
    })
}

fn link_error(cfg: &PortConfig, e: i32, native: bool) -> DriverError {
    match e {
        libc::EPERM | libc::EACCES => DriverError::NotRoot {
            what: "bpf(BPF_LINK_CREATE)",
        },
        libc::EBUSY | libc::EEXIST => DriverError::ForeignProgram {
            ifname: cfg.ifname.clone(),
            prog_id: 0,
            by: ForeignAttach::Netlink,
        },
        _ if native => DriverError::NativeUnsupported {
            ifname: cfg.ifname.clone(),
            errno: e,
        },
        _ => DriverError::sys("bpf(BPF_LINK_CREATE) of the XDP program", e),
    }
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        log::debug!(
            "detaching c10m XDP program id {} (bpf link id {})",
            self.prog_id,
            self.link_id
        );
    }
}

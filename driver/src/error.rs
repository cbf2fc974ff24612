//! Setup errors. Each message says what failed and what to do about it.

use crate::sys::errno_str;
use std::fmt;

/// How a foreign XDP program is attached to an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForeignAttach {
    /// Attached through netlink (`ip link set dev X xdp ...`, libxdp without bpffs).
    Netlink,
    /// Held by a bpf link with this id (some process owns it, or it is pinned).
    Link(u32),
}

/// Why [`crate::Port::open`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverError {
    /// A [`crate::PortConfig`] field is out of range.
    InvalidConfig(String),
    /// The caller lacks the privileges AF_XDP and bpf() need.
    NotRoot {
        /// The operation that was refused.
        what: &'static str,
    },
    /// No interface with this name in the calling thread's network namespace.
    NoSuchInterface {
        /// The name asked for.
        ifname: String,
    },
    /// The queue index is out of range.
    NoSuchQueue {
        /// The interface.
        ifname: String,
        /// Its RX queue count.
        queues: u32,
        /// The queue asked for.
        queue: u32,
    },
    /// Native XDP was requested explicitly and the driver refused it.
    NativeUnsupported {
        /// The interface.
        ifname: String,
        /// errno of BPF_LINK_CREATE.
        errno: i32,
    },
    /// Another XDP program is attached to the interface.
    ForeignProgram {
        /// The interface.
        ifname: String,
        /// The program's id.
        prog_id: u32,
        /// How it is attached (decides how to remove it).
        by: ForeignAttach,
    },
    /// Another AF_XDP socket is bound to this (interface, queue).
    QueueBusy {
        /// The interface.
        ifname: String,
        /// The queue.
        queue: u32,
    },
    /// The kernel verifier rejected the generated XDP program (a c10m bug).
    Verifier {
        /// errno of BPF_PROG_LOAD.
        errno: i32,
        /// The verifier's log.
        log: String,
    },
    /// Any other system call failure.
    Sys {
        /// What was being done, e.g. "setsockopt(XDP_UMEM_REG)".
        what: &'static str,
        /// errno.
        errno: i32,
    },
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::InvalidConfig(m) => write!(f, "invalid port configuration: {m}"),
            DriverError::NotRoot { what } => write!(
                f,
                "{what} was refused: opening an AF_XDP socket needs root \
                 (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW): run with sudo"
            ),
            DriverError::NoSuchInterface { ifname } => write!(
                f,
                "no interface named {ifname} in this network namespace (see `ip link`)"
            ),
            DriverError::NoSuchQueue {
                ifname,
                queues,
                queue,
            } => write!(
                f,
                "interface {ifname} has {queues} rx queues; queue {queue} does not exist \
                 (use --queue 0..{})",
                queues.saturating_sub(1)
            ),
            DriverError::NativeUnsupported { ifname, errno } => write!(
                f,
                "attaching the XDP program to {ifname} in native (driver) mode failed: {}; \
                 the driver does not support native XDP in this configuration, \
                 retry with --xdp-mode skb",
                errno_str(*errno)
            ),
            DriverError::ForeignProgram {
                ifname,
                prog_id,
                by: ForeignAttach::Netlink,
            } => write!(
                f,
                "interface {ifname} already has XDP program id {prog_id} attached (by netlink); \
                 remove it with `ip link set dev {ifname} xdp off` \
                 (and `xdpgeneric off`), or pass --force to replace it"
            ),
            DriverError::ForeignProgram {
                ifname,
                prog_id,
                by: ForeignAttach::Link(l),
            } => write!(
                f,
                "interface {ifname} already has XDP program id {prog_id} attached (by a bpf link \
                 id {l}); a link cannot be replaced, even with --force: stop the process that \
                 owns it or remove it with `bpftool link detach id {l}`"
            ),
            DriverError::QueueBusy { ifname, queue } => write!(
                f,
                "queue {queue} of {ifname} is already bound by another AF_XDP socket \
                 (another c10m process?); stop it or use another --queue"
            ),
            DriverError::Verifier { errno, log } => write!(
                f,
                "the kernel verifier rejected c10m's XDP program ({}); this is a c10m bug, \
                 please report it with this log:\n{log}",
                errno_str(*errno)
            ),
            DriverError::Sys { what, errno } => write!(f, "{what} failed: {}", errno_str(*errno)),
        }
    }
}

impl std::error::Error for DriverError {}

impl DriverError {
    /// Map a syscall errno: EPERM/EACCES become [`DriverError::NotRoot`].
    pub(crate) fn sys(what: &'static str, errno: i32) -> DriverError {
        if errno == libc::EPERM || errno == libc::EACCES {
            DriverError::NotRoot { what }
        } else {
            DriverError::Sys { what, errno }
        }
    }
}

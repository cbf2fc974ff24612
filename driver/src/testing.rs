//! Helpers for tests and diagnostics that need a *foreign* XDP program, the kind another
//! tool leaves behind. Not used by c10m itself.

use crate::bpf;
use crate::error::DriverError;
use crate::netlink;
use crate::open::ifindex;
use crate::prog::{Insn, BPF_EXIT, BPF_MOV64_IMM, XDP_PASS};

/// Attach a trivial `return XDP_PASS` program to `ifname` through netlink (as
/// `ip link set dev X xdpgeneric ...` or libxdp without bpffs would), generic mode if
/// `skb`, else native. It stays attached after this process exits. Returns its id.
pub fn attach_pass_program_netlink(ifname: &str, skb: bool) -> Result<u32, DriverError> {
    let ifindex = ifindex(ifname)?;
    let insns = [
        Insn {
            code: BPF_MOV64_IMM,
            regs: 0,
            off: 0,
            imm: XDP_PASS,
        },
        Insn {
            code: BPF_EXIT,
            ..Insn::default()
        },
    ];
    let prog = bpf::prog_load_xdp(&insns, "foreign_pass")
        .map_err(|(e, _)| DriverError::sys("bpf(BPF_PROG_LOAD)", e))?;
    let id = bpf::prog_id(&prog).map_err(|e| DriverError::sys("bpf(BPF_OBJ_GET_INFO_BY_FD)", e))?;
    let mode = if skb {
        bpf::XDP_FLAGS_SKB_MODE
    } else {
        bpf::XDP_FLAGS_DRV_MODE
    };
    use std::os::fd::AsRawFd;
    netlink::set_xdp_fd(ifindex, prog.as_raw_fd(), mode)
        .map_err(|e| DriverError::sys("netlink RTM_SETLINK (attach XDP)", e))?;
    Ok(id)
}

/// The id of the XDP program attached to `ifname` (any mode), as netlink reports it.
pub fn attached_prog_id(ifname: &str) -> Result<Option<u32>, DriverError> {
    let ifindex = ifindex(ifname)?;
    let a = netlink::get_link(ifindex).map_err(|e| DriverError::sys("netlink RTM_GETLINK", e))?;
    Ok(a.xdp_progs().first().map(|p| p.0))
}

//! rtnetlink: read an interface's attributes (MAC, MTU, queue count, attached XDP
//! program) and attach/detach an XDP program the netlink way (only to replace a foreign
//! one with --force, and for tests). Works in the calling thread's network namespace.

use crate::sys::errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;

const IFLA_ADDRESS: u16 = 1;
const IFLA_MTU: u16 = 4;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;

/// What RTM_GETLINK says about an interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkAttrs {
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub num_rx_queues: u32,
    /// XDP_ATTACHED_* (0 none, 1 drv, 2 skb, 3 hw, 4 multi).
    pub xdp_attached: u8,
    pub xdp_prog_id: u32,
    pub xdp_drv_prog_id: u32,
    pub xdp_skb_prog_id: u32,
    pub xdp_hw_prog_id: u32,
}

impl LinkAttrs {
    /// (prog id, XDP_FLAGS_*_MODE) of every attached program.
    pub(crate) fn xdp_progs(&self) -> Vec<(u32, u32)> {
        use crate::bpf::{XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};
        let mut v = Vec::new();
        if self.xdp_drv_prog_id != 0 {
            v.push((self.xdp_drv_prog_id, XDP_FLAGS_DRV_MODE));
        }
        if self.xdp_skb_prog_id != 0 {
            v.push((self.xdp_skb_prog_id, XDP_FLAGS_SKB_MODE));
        }
        if self.xdp_hw_prog_id != 0 {
            v.push((self.xdp_hw_prog_id, 1 << 3));
        }
        if v.is_empty() && self.xdp_prog_id != 0 {
            let mode = match self.xdp_attached {
                1 => XDP_FLAGS_DRV_MODE,
                3 => 1 << 3,
                _ => XDP_FLAGS_SKB_MODE,
            };
            v.push((self.xdp_prog_id, mode));
        }
        v
    }
}

fn socket() -> Result<OwnedFd, i32> {
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// nlmsghdr + ifinfomsg for `ifindex`, followed by `attrs`.
fn request(ty: u16, flags: u16, ifindex: u32, attrs: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 + attrs.len());
    let len = 16 + 16 + attrs.len();
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: kernel
    m.push(libc::AF_UNSPEC as u8);
    m.push(0);
    m.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    m.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // ifi_flags
    m.extend_from_slice(&0u32.to_ne_bytes()); // ifi_change
    m.extend_from_slice(attrs);
    m
}

/// Send `req`, return the first reply message (header type, payload after nlmsghdr).
fn transact(req: &[u8]) -> Result<(u16, Vec<u8>), i32> {
    let s = socket()?;
    // SAFETY: `req` is a live buffer of req.len() bytes; the kernel only reads it.
    let rc = unsafe { libc::send(s.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if rc < 0 {
        return Err(errno());
    }
    let mut buf = vec![0u8; 1 << 16];
    // SAFETY: `buf` is a live, writable buffer of buf.len() bytes.
    let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 16 {
        return Err(if n < 0 { errno() } else { libc::EPROTO });
    }
    let n = n as usize;
    let len = (u32::from_ne_bytes(buf[0..4].try_into().expect("4")) as usize).min(n);
    let ty = u16::from_ne_bytes(buf[4..6].try_into().expect("2"));
    if len < 16 {
        return Err(libc::EPROTO);
    }
    Ok((ty, buf[16..len].to_vec()))
}

/// Parse rtattrs in `b`, calling `f(type without flags, payload)`.
fn attrs(mut b: &[u8], mut f: impl FnMut(u16, &[u8])) {
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & !NLA_F_NESTED & 0x3fff;
        if len < 4 || len > b.len() {
            return;
        }
        f(ty, &b[4..len]);
        let adv = (len + 3) & !3;
        b = if adv >= b.len() { &[] } else { &b[adv..] };
    }
}

fn u32_of(p: &[u8]) -> u32 {
    p.get(..4)
        .map_or(0, |w| u32::from_ne_bytes(w.try_into().expect("4")))
}

/// RTM_GETLINK for `ifindex`.
pub(crate) fn get_link(ifindex: u32) -> Result<LinkAttrs, i32> {
    let (ty, payload) = transact(&request(RTM_GETLINK, 0, ifindex, &[]))?;
    if ty == NLMSG_ERROR {
        let e = payload.get(..4).map_or(libc::EPROTO, |w| {
            -i32::from_ne_bytes(w.try_into().expect("4"))
        });
        return Err(e);
    }
    if ty != RTM_NEWLINK || payload.len() < 16 {
        return Err(libc::EPROTO);
    }
    let mut la = LinkAttrs::default();
    attrs(&payload[16..], |t, p| match t {
        IFLA_ADDRESS if p.len() == 6 => la.mac = Some(p.try_into().expect("6")),
        IFLA_MTU => la.mtu = u32_of(p),
        IFLA_NUM_RX_QUEUES => la.num_rx_queues = u32_of(p),
        IFLA_XDP => attrs(p, |t, p| match t {
            IFLA_XDP_ATTACHED => la.xdp_attached = p.first().copied().unwrap_or(0),
            IFLA_XDP_PROG_ID => la.xdp_prog_id = u32_of(p),
            IFLA_XDP_DRV_PROG_ID => la.xdp_drv_prog_id = u32_of(p),
            IFLA_XDP_SKB_PROG_ID => la.xdp_skb_prog_id = u32_of(p),
            IFLA_XDP_HW_PROG_ID => la.xdp_hw_prog_id = u32_of(p),
            _ => {}
        }),
        _ => {}
    });
    Ok(la)
}

/// RTM_SETLINK IFLA_XDP {FD = fd, FLAGS = flags}: attach `fd`, or detach with fd = -1.
pub(crate) fn set_xdp_fd(ifindex: u32, fd: i32, flags: u32) -> Result<(), i32> {
    let mut inner = Vec::new();
    push_attr(&mut inner, IFLA_XDP_FD, &fd.to_ne_bytes());
    push_attr(&mut inner, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    let mut outer = Vec::new();
    push_attr(&mut outer, IFLA_XDP | NLA_F_NESTED, &inner);
    let (ty, payload) = transact(&request(RTM_SETLINK, NLM_F_ACK, ifindex, &outer))?;
    if ty != NLMSG_ERROR {
        return Err(libc::EPROTO);
    }
    let code = payload.get(..4).map_or(-libc::EPROTO, |w| {
        i32::from_ne_bytes(w.try_into().expect("4"))
    });
    if code == 0 {
        Ok(())
    } else {
        Err(-code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_attributes_without_root() {
        let la = get_link(1).expect("RTM_GETLINK lo");
        assert_eq!(la.mac, Some([0; 6]));
        assert!(la.mtu >= 1500);
        assert!(la.num_rx_queues >= 1);
    }

    #[test]
    fn attr_parser_survives_garbage() {
        attrs(&[0xff, 0xff, 1, 0, 9], |_, _| panic!("no attr fits"));
        attrs(&[2, 0, 1, 0], |_, _| panic!("len < 4"));
        let mut b = Vec::new();
        push_attr(&mut b, 4, &1500u32.to_ne_bytes());
        let mut seen = 0;
        attrs(&b, |t, p| {
            assert_eq!((t, u32_of(p)), (4, 1500));
            seen += 1;
        });
        assert_eq!(seen, 1);
    }
}

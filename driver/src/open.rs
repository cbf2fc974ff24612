//! [`Port::open`]: the setup sequence.

use crate::config::PortConfig;
use crate::error::DriverError;
use crate::port::{Port, PortInfo};
use crate::{netlink, xdp, xsk};
use std::ffi::CString;

/// The interface index of `ifname` in the calling thread's network namespace.
pub(crate) fn ifindex(ifname: &str) -> Result<u32, DriverError> {
    let no = || DriverError::NoSuchInterface {
        ifname: ifname.to_string(),
    };
    let c = CString::new(ifname).map_err(|_| no())?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(no())
    } else {
        Ok(idx)
    }
}

impl Port {
    /// Open an AF_XDP port on (`cfg.ifname`, `cfg.queue`) in the calling thread's network
    /// namespace: check the interface and any XDP program already on it, create and bind
    /// the socket (zero-copy if the driver can, else copy), load c10m's XDP program and
    /// attach it with a bpf link owned by this process.
    pub fn open(cfg: &PortConfig) -> Result<Port, DriverError> {
        cfg.validate()?;
        let ifindex = ifindex(&cfg.ifname)?;
        let attrs = netlink::get_link(ifindex).map_err(|e| match e {
            libc::ENODEV => DriverError::NoSuchInterface {
                ifname: cfg.ifname.clone(),
            },
            e => DriverError::sys("netlink RTM_GETLINK", e),
        })?;
        let queues = attrs.num_rx_queues.max(1);
        if cfg.queue >= queues {
            return Err(DriverError::NoSuchQueue {
                ifname: cfg.ifname.clone(),
                queues,
                queue: cfg.queue,
            });
        }
        xdp::check_foreign(cfg, ifindex, &attrs)?;
        let sock = xsk::create(cfg, ifindex, queues)?;
        let attachment = xdp::attach(cfg, ifindex, queues)?;
        attachment.insert(cfg.queue, &sock.fd)?;
        let info = PortInfo {
            ifname: cfg.ifname.clone(),
            ifindex,
            queue: cfg.queue,
            mac: attrs.mac.unwrap_or([0; 6]),
            mtu: attrs.mtu as usize,
            attach_mode: attachment.mode(),
            zero_copy: sock.zero_copy,
            need_wakeup: cfg.need_wakeup,
        };
        log::info!(
            "{} queue {}: AF_XDP port open ({} mode, {}, need_wakeup {}, {} frames of {} B, rings {})",
            cfg.ifname,
            cfg.queue,
            match info.attach_mode {
                crate::AttachMode::Native => "native",
                crate::AttachMode::Skb => "skb",
            },
            if info.zero_copy { "zero-copy" } else { "copy" },
            cfg.need_wakeup,
            cfg.frame_count,
            cfg.frame_size,
            cfg.ring_size
        );
        Ok(Port::assemble(
            sock.rings,
            Some(sock.fd),
            Some(attachment),
            cfg.frame_size,
            cfg.frame_count,
            info,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_interface_is_reported_without_root() {
        let cfg = PortConfig {
            ifname: "c10m-nope0".into(),
            ..PortConfig::default()
        };
        let e = Port::open(&cfg).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no interface named c10m-nope0 in this network namespace (see `ip link`)"
        );
    }

    #[test]
    fn missing_queue_is_reported_without_root() {
        let cfg = PortConfig {
            ifname: "lo".into(),
            queue: 4096,
            ..PortConfig::default()
        };
        let e = Port::open(&cfg).unwrap_err().to_string();
        assert!(e.starts_with("interface lo has "), "{e}");
        assert!(
            e.contains("queue 4096 does not exist (use --queue 0.."),
            "{e}"
        );
    }

    #[test]
    fn unprivileged_open_says_run_with_sudo() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // As root this would really attach to lo; tests/root.rs covers the root path.
            return;
        }
        let cfg = PortConfig {
            ifname: "lo".into(),
            ..PortConfig::default()
        };
        let e = Port::open(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("needs root (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW): run with sudo"),
            "{e}"
        );
    }
}

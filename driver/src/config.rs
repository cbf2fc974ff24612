//! Port configuration and its validation.

use crate::error::DriverError;
use std::net::IpAddr;

/// How to attach c10m's XDP program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Try native (driver) mode, fall back to generic (skb) mode with a `log::warn!`.
    #[default]
    Auto,
    /// Native (driver) mode only: fail if the driver does not support XDP.
    Native,
    /// Generic (skb) mode: works on every interface, slower.
    Skb,
}

/// The mode the XDP program actually got attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) XDP, `XDP_FLAGS_DRV_MODE`.
    Native,
    /// Generic XDP, `XDP_FLAGS_SKB_MODE`.
    Skb,
}

/// Most addresses per family that the generated XDP program compares against.
pub const MAX_STEER_ADDRS: usize = 64;

/// What [`crate::Port::open`] binds to and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// Interface name in the calling thread's network namespace.
    pub ifname: String,
    /// RX queue to bind (0..queue count).
    pub queue: u32,
    /// UMEM frame size: 2048 or 4096.
    pub frame_size: u32,
    /// Number of UMEM frames.
    pub frame_count: u32,
    /// Size of each of the fill, completion, RX and TX rings (power of two).
    pub ring_size: u32,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Replace an XDP program that something else attached through netlink.
    pub force: bool,
    /// The stack's own addresses: only frames for them are redirected to the socket (ARP
    /// for its IPv4 addresses, IPv4/IPv6 to them, IPv6 to their solicited-node groups);
    /// everything else goes to the kernel. Empty: every frame of the queue is redirected
    /// (raw mode, e.g. for a receive/drop ceiling measurement).
    pub steer: Vec<IpAddr>,
    /// Bind with `XDP_USE_NEED_WAKEUP` and make syscalls only when the kernel asks.
    pub need_wakeup: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            ifname: String::new(),
            queue: 0,
            frame_size: 2048,
            frame_count: 4096,
            ring_size: 2048,
            xdp_mode: XdpMode::Auto,
            force: false,
            steer: Vec::new(),
            need_wakeup: true,
        }
    }
}

impl PortConfig {
    /// Check everything that can be checked without touching the system.
    pub fn validate(&self) -> Result<(), DriverError> {
        let bad = |msg: String| Err(DriverError::InvalidConfig(msg));
        if self.ifname.is_empty() || self.ifname.len() >= libc::IFNAMSIZ {
            return bad(format!(
                "interface name {:?} must be 1..{} bytes",
                self.ifname,
                libc::IFNAMSIZ - 1
            ));
        }
        if self.ifname.contains(['\0', '/']) || self.ifname.contains(char::is_whitespace) {
            return bad(format!(
                "interface name {:?} has invalid characters",
                self.ifname
            ));
        }
        if self.frame_size != 2048 && self.frame_size != 4096 {
            return bad(format!(
                "frame_size {} must be 2048 or 4096",
                self.frame_size
            ));
        }
        if !self.ring_size.is_power_of_two() || !(64..=32768).contains(&self.ring_size) {
            return bad(format!(
                "ring_size {} must be a power of two in 64..=32768",
                self.ring_size
            ));
        }
        if self.frame_count < 2 * 64 || self.frame_count > (1 << 20) {
            return bad(format!(
                "frame_count {} must be in 128..=1048576",
                self.frame_count
            ));
        }
        let v4 = self.steer.iter().filter(|a| a.is_ipv4()).count();
        let v6 = self.steer.len() - v4;
        if v4 > MAX_STEER_ADDRS || v6 > MAX_STEER_ADDRS {
            return bad(format!(
                "at most {MAX_STEER_ADDRS} steer addresses per family ({v4} IPv4, {v6} IPv6 given)"
            ));
        }
        if let Some(a) = self
            .steer
            .iter()
            .find(|a| a.is_unspecified() || a.is_multicast())
        {
            return bad(format!("steer address {a} must be a unicast address"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> PortConfig {
        PortConfig {
            ifname: "veth0".into(),
            steer: vec!["198.18.0.2".parse().unwrap()],
            ..PortConfig::default()
        }
    }

    #[test]
    fn defaults() {
        let c = PortConfig::default();
        assert_eq!(
            (c.frame_size, c.frame_count, c.ring_size),
            (2048, 4096, 2048)
        );
        assert!(c.need_wakeup && !c.force && c.xdp_mode == XdpMode::Auto);
        ok().validate().unwrap();
    }

    #[test]
    fn rejects_bad_values() {
        let cases: Vec<(PortConfig, &str)> = vec![
            (
                PortConfig {
                    ifname: String::new(),
                    ..ok()
                },
                "interface name",
            ),
            (
                PortConfig {
                    ifname: "a".repeat(16),
                    ..ok()
                },
                "interface name",
            ),
            (
                PortConfig {
                    ifname: "a b".into(),
                    ..ok()
                },
                "invalid characters",
            ),
            (
                PortConfig {
                    frame_size: 1024,
                    ..ok()
                },
                "frame_size",
            ),
            (
                PortConfig {
                    ring_size: 1000,
                    ..ok()
                },
                "ring_size",
            ),
            (
                PortConfig {
                    ring_size: 32,
                    ..ok()
                },
                "ring_size",
            ),
            (
                PortConfig {
                    frame_count: 10,
                    ..ok()
                },
                "frame_count",
            ),
            (
                PortConfig {
                    steer: vec!["0.0.0.0".parse().unwrap()],
                    ..ok()
                },
                "unicast",
            ),
            (
                PortConfig {
                    steer: vec!["ff02::1".parse().unwrap()],
                    ..ok()
                },
                "unicast",
            ),
            (
                PortConfig {
                    steer: (0..65u8).map(|i| IpAddr::from([198, 18, 0, i])).collect(),
                    ..ok()
                },
                "at most 64",
            ),
        ];
        for (c, want) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        }
    }
}

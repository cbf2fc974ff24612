//! c10m's driver layer: AF_XDP.
//!
//! This crate owns everything kernel-facing on the packet path: the UMEM (the frame
//! memory shared with the kernel), the four rings (FillRing, CompletionRing, RxRing,
//! TxRing), c10m's own XDP program (which steers only the stack's frames to the socket
//! and leaves the rest to the kernel), and the [`Port`] that binds one AF_XDP socket to
//! (interface, queue). It moves Ethernet frames; it knows nothing about TCP, IP or the
//! stack above it (the stack defines the seam, the CLI adapts a `Port` to it).
//!
//! All `unsafe` code of the project lives here. The public API is safe: a UMEM frame is
//! owned by exactly one side at a time (the kernel, the free list, or the caller through
//! a move-only [`Frame`] token or a borrow lent by [`Port::recv`] / [`Tx::frame`]), which
//! turns the ownership rule of Documentation/networking/af_xdp.rst into a type rule.
//!
//! ```no_run
//! use c10m_driver::{Port, PortConfig};
//! let cfg = PortConfig {
//!     ifname: "veth0".into(),
//!     steer: vec!["198.18.0.2".parse().unwrap()],
//!     ..PortConfig::default()
//! };
//! let mut port = Port::open(&cfg)?;
//! loop {
//!     port.recv(64, |frame, tx| {
//!         // Echo every frame back (a real stack parses it).
//!         if let Some(out) = tx.frame(frame.len()) {
//!             out.copy_from_slice(frame);
//!         }
//!     });
//!     port.flush();
//! #   break;
//! }
//! # Ok::<(), c10m_driver::DriverError>(())
//! ```

mod bpf;
mod config;
mod error;
#[cfg(test)]
mod fake;
mod frame;
mod netlink;
mod open;
mod port;
pub mod prog;
mod ring;
mod sys;
pub mod testing;
mod waker;
mod xdp;
mod xsk;

pub use config::{AttachMode, PortConfig, XdpMode, MAX_STEER_ADDRS};
pub use error::{DriverError, ForeignAttach};
pub use frame::FrameCounts;
pub use port::{Frame, Port, PortStats, Tx, RX_BATCH_MAX};
pub use waker::Waker;

#[cfg(test)]
mod tests {
    #[test]
    fn port_is_send() {
        fn send<T: Send>() {}
        send::<crate::Port>();
        send::<crate::Frame>();
    }
}

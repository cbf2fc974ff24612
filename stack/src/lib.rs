//! c10m's per-core engine: a smoltcp TCP/IP stack behind the project's own O(1) flow
//! table, fed by a [`Link`] (one NIC queue), with applications as callbacks run straight
//! from a busy-polled loop.
//!
//! This crate knows nothing of AF_XDP: it sees frames through the two-method [`Link`]
//! seam, so its tests and benches run over [`MemLink`] without privileges. It is safe Rust
//! only (`forbid(unsafe_code)`); the driver crate holds all of the project's raw memory
//! and system-call code.
#![forbid(unsafe_code)]

pub mod app;
mod device;
pub mod engine;
pub mod link;
pub mod memlink;
pub mod neigh;
pub mod offload;
mod peer;
pub mod stats;
mod table;
/// A raw TCP peer (frame builder and parser) for tests and benchmarks.
pub mod testkit;
pub mod timer;
pub mod wire;

pub use app::{App, CloseReason, Conn, ConnId, Datagram};
pub use engine::{BindError, ConnectError, Engine, EngineConfig, Idle, ListenOptions};
pub use link::{Link, LinkCaps, TxSink};
pub use memlink::MemLink;
pub use offload::{OffloadError, Pool};
pub use smoltcp;
pub use stats::Stats;

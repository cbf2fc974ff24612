//! c10m's applications, written against the stack's callback API only, and the adapter
//! that lets an AF_XDP port from the driver serve as the stack's link. This crate (and
//! its `c10m` binary) is the one place that names both the driver and the stack.

pub mod echo;
pub mod hash;
pub mod http;
pub mod kv;
pub mod loadgen;
pub mod proxy;
pub mod raw;
pub mod xdp_link;

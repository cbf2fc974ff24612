//! Benchmarks and kernel baseline servers for c10m (see README).
//!
//! `flow_scale` (benches/flow_scale.rs) measures the per-segment cost of the engine as the
//! number of established flows grows, next to a memory floor; the scenario lives in
//! [`flow_scale`] so its correctness is unit-tested.

pub mod flow_scale;
pub mod frames;
pub mod mem;
pub mod net;

//! The task domain: what a user asks for (targets, sizes, resources), the states a task moves
//! through, and where and when it runs (placement and the queue).
//!
//! Architecture invariant: no I/O, no runtime, no clock reads. The host feeds it snapshots of the
//! cluster and of the queue and applies the decisions it returns; every rule is unit-tested here.

pub mod fair;
pub mod lifecycle;
pub mod place;
pub mod size;
pub mod state;
pub mod target;
pub mod workload;

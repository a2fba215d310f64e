//! Reprise runs deployment pipelines durably and resumes failed executions
//! from any stage they reached.
//!
//! - [`proto`]: the generated gRPC code (the public contract in `proto/`).
//! - [`worker`]: the reference worker that runs shell tasks.

pub mod proto;
pub mod worker;
pub mod domain;
pub mod store;
pub mod engine;

//! Reprise runs deployment pipelines durably and resumes failed executions
//! from any stage they reached. Dependencies point one way:
//! api → engine → {domain, store}; scheduler → engine; store → domain.
//!
//! - [`proto`]: the generated gRPC code (the public contract in `proto/`).
//! - [`api`]: tonic handlers, thin adapters between proto and the engine.
//! - [`engine`]: use cases, one transaction each.
//! - [`domain`]: pure rules: validation, state machine, stage planning.
//! - [`store`]: sea-orm entities, migrations and repository functions.
//! - [`scheduler`]: the timer loop (lease expiry, timeouts).
//! - [`auth`]: caller identity (JWT bearer tokens, client certificates) and TLS.
//! - [`credentials`]: where secrets of the configuration may come from, and keeping them out of `/proc` and logs.
//! - [`worker`]: the reference worker that runs shell tasks.
//! - [`client`]: the command-line client (`reprise apply`, `start`, `watch`, `resume`, …).
//! - [`metrics`]: Prometheus metrics; [`panic`]: the one-line panic hook.
//! - [`server`]: wiring and graceful shutdown; [`cli`], [`telemetry`]: the binary's setup.

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod credentials;
pub mod domain;
pub mod engine;
pub mod memory;
pub mod metrics;
pub mod panic;
pub mod proto;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod web;
pub mod worker;

//! Integration tests: the real server over gRPC, on SQLite and PostgreSQL.

#[allow(dead_code)]
mod helpers;

mod auth;
mod lifecycle;
mod control;
mod workers;
mod requests;
mod durability;
mod resume;
mod replicas;
mod scale_out;
mod metrics;
mod cli;

//! Integration tests: the real server over gRPC, on SQLite and PostgreSQL.

#[allow(dead_code)]
mod helpers;

mod at_once;
mod auth;
mod cli;
mod commit;
mod consistency;
mod control;
mod durability;
mod errors;
mod fuzz;
mod fuzz_gen;
mod http;
mod identity;
mod isolation;
mod jwks;
mod lifecycle;
mod limits;
mod metrics;
mod operations;
mod outage;
mod outputs;
mod reference_worker;
mod replicas;
mod requests;
mod resume;
mod resume_story;
mod retention;
mod retry;
mod scale;
mod scale_out;
mod secrets;
mod workers;

//! Pure rules of the product: what a valid pipeline is, which state changes
//! are allowed, and what an execution does next. No I/O, no generated
//! protobuf or database types: callers convert at their edges.

pub mod access;
pub mod condition;
pub mod control;
pub mod error;
pub mod execution;
pub mod inputs;
pub mod limits;
pub mod machine;
pub mod pipeline;
pub mod progress;
pub mod resume;
pub mod retention;
pub mod status;

pub use error::{Reason, Refusal, Violation};

pub use limits::quote;

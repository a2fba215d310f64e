//! Pure rules of the product: what a valid pipeline is, which state changes
//! are allowed, and what an execution does next. No I/O, no generated
//! protobuf or database types: callers convert at their edges.

pub mod access;
pub mod condition;
pub mod control;
pub mod error;
pub mod execution;
pub mod inputs;
pub mod machine;
pub mod pipeline;
pub mod progress;
pub mod resume;
pub mod status;

pub use error::{Refusal, Violation};

/// The longest piece of caller input a message repeats.
const QUOTED: usize = 64;

/// Caller input quoted for a message, cut to a short prefix so an error never
/// grows with what the caller sent.
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTED) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
    }
}

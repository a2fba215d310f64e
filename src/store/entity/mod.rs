//! sea-orm entities, one per table. Only the store sees them.

pub mod execution;
pub mod pipeline;
pub mod pipeline_version;
pub mod stage;
pub mod task;

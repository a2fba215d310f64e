//! sea-orm entities, one per table. Only the store sees them.

pub mod audit_event;
pub mod execution;
pub mod grant;
pub mod group_member;
pub mod pipeline;
pub mod pipeline_version;
pub mod stage;
pub mod task;
pub mod user_group;

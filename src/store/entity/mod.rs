//! sea-orm entities of the tables not on the transition path (executions,
//! stages and tasks are read and written with raw SQL in their modules).

pub mod audit_event;
pub mod grant;
pub mod group_member;
pub mod pipeline;
pub mod pipeline_version;
pub mod user_group;

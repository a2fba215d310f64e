use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "executions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub pipeline_id: String,
    pub pipeline_version: i64,
    pub application: String,
    pub status: String,
    pub status_message: String,
    /// JSON object of string to string.
    pub variables: String,
    /// JSON object of string to string.
    pub artifacts: String,
    pub request_id: String,
    /// Digest of the start request, to tell a retry from a reused request id.
    pub request_fingerprint: String,
    pub triggered_by: String,
    pub chain_id: String,
    pub attempt: i32,
    /// Bumped by every change; the first write of each transaction, so it
    /// also serialises writers of one execution.
    pub revision: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub resumed_from_execution_id: Option<String>,
    pub resume_stage_index: Option<i32>,
    pub resume_stage_name: Option<String>,
    pub resumed_by_execution_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

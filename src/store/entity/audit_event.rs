use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub application: Option<String>,
    pub execution_id: Option<String>,
    pub chain_id: Option<String>,
    /// Another execution the action concerns (the one a resume resumed).
    pub related_execution_id: Option<String>,
    /// A JSON object.
    pub details: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

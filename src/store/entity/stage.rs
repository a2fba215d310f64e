use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub execution_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub stage_index: i32,
    pub name: String,
    pub status: String,
    pub status_message: String,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub deadline_at: Option<i64>,
    pub decided_by: String,
    pub decision_comment: String,
    pub carried_from_execution_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

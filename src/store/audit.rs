//! The audit trail: one row per action, written in the transaction of the
//! action itself, so a change and its record commit or vanish together.

use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{Result, entity::audit_event};
use crate::domain::execution::Millis;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: String,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub application: Option<String>,
    pub execution_id: Option<String>,
    /// A JSON object.
    pub details: String,
}

pub async fn record(c: &impl ConnectionTrait, e: &AuditEvent) -> Result<()> {
    audit_event::Entity::insert(audit_event::ActiveModel {
        id: Set(e.id.clone()),
        at: Set(e.at),
        actor: Set(e.actor.clone()),
        action: Set(e.action.clone()),
        application: Set(e.application.clone()),
        execution_id: Set(e.execution_id.clone()),
        details: Set(e.details.clone()),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// A page of events, newest first, strictly before the `before` id.
pub async fn list(
    c: &impl ConnectionTrait,
    application: Option<&str>,
    execution_id: Option<&str>,
    before: Option<&str>,
    limit: u64,
) -> Result<Vec<AuditEvent>> {
    let mut q = audit_event::Entity::find().order_by_desc(audit_event::Column::Id).limit(limit);
    if let Some(a) = application {
        q = q.filter(audit_event::Column::Application.eq(a));
    }
    if let Some(e) = execution_id {
        q = q.filter(audit_event::Column::ExecutionId.eq(e));
    }
    if let Some(b) = before {
        q = q.filter(audit_event::Column::Id.lt(b));
    }
    Ok(q.all(c)
        .await?
        .into_iter()
        .map(|m| AuditEvent {
            id: m.id,
            at: m.at,
            actor: m.actor,
            action: m.action,
            application: m.application,
            execution_id: m.execution_id,
            details: m.details,
        })
        .collect())
}

//! The audit trail: one row per action, written in the transaction of the
//! action itself, so a change and its record commit or vanish together.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

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
    pub chain_id: Option<String>,
    /// Another execution the action concerns (the one a resume resumed).
    pub related_execution_id: Option<String>,
    /// A JSON object.
    pub details: String,
}

/// Which events a page lists.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub application: Option<String>,
    /// Events about this execution, as the subject or the related one.
    pub execution_id: Option<String>,
    pub chain_id: Option<String>,
}

/// The statement that records an event, for a batch.
pub fn record_part(e: &AuditEvent) -> super::Part {
    super::Part {
        sql: "INSERT INTO audit_events (id, at, actor, action, application, execution_id, chain_id, \
              related_execution_id, details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            .into(),
        values: vec![
            e.id.clone().into(),
            e.at.into(),
            e.actor.clone().into(),
            e.action.clone().into(),
            e.application.clone().into(),
            e.execution_id.clone().into(),
            e.chain_id.clone().into(),
            e.related_execution_id.clone().into(),
            e.details.clone().into(),
        ],
    }
}

pub async fn record(c: &impl ConnectionTrait, e: &AuditEvent) -> Result<()> {
    audit_event::Entity::insert(audit_event::ActiveModel {
        id: Set(e.id.clone()),
        at: Set(e.at),
        actor: Set(e.actor.clone()),
        action: Set(e.action.clone()),
        application: Set(e.application.clone()),
        execution_id: Set(e.execution_id.clone()),
        chain_id: Set(e.chain_id.clone()),
        related_execution_id: Set(e.related_execution_id.clone()),
        details: Set(e.details.clone()),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// A page of events, newest first, strictly before the `before` id.
pub async fn list(
    c: &impl ConnectionTrait,
    filter: &AuditFilter,
    before: Option<&str>,
    limit: u64,
) -> Result<Vec<AuditEvent>> {
    let mut q = audit_event::Entity::find().order_by_desc(audit_event::Column::Id).limit(limit);
    if let Some(a) = &filter.application {
        q = q.filter(audit_event::Column::Application.eq(a.as_str()));
    }
    if let Some(e) = &filter.execution_id {
        q = q.filter(
            Condition::any()
                .add(audit_event::Column::ExecutionId.eq(e.as_str()))
                .add(audit_event::Column::RelatedExecutionId.eq(e.as_str())),
        );
    }
    if let Some(chain) = &filter.chain_id {
        q = q.filter(audit_event::Column::ChainId.eq(chain.as_str()));
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
            chain_id: m.chain_id,
            related_execution_id: m.related_execution_id,
            details: m.details,
        })
        .collect())
}

//! Audit records, written inside the transaction of the change they describe.

use sea_orm::ConnectionTrait;

use super::{new_id, now};
use crate::{
    domain::access::Caller,
    store::{
        self,
        audit::{self, AuditEvent},
    },
};

/// Who did what, to be recorded with a change.
#[derive(Debug, Clone)]
pub struct Audit {
    pub actor: String,
    pub action: &'static str,
    pub details: serde_json::Value,
}

impl Audit {
    pub fn new(caller: &Caller, action: &'static str, details: serde_json::Value) -> Self {
        Audit { actor: caller.subject.clone(), action, details }
    }

    pub(super) async fn record(
        self,
        c: &impl ConnectionTrait,
        application: Option<&str>,
        execution_id: Option<&str>,
    ) -> store::Result<()> {
        let event = AuditEvent {
            id: new_id(),
            at: now(),
            actor: self.actor,
            action: self.action.to_owned(),
            application: application.map(Into::into),
            execution_id: execution_id.map(Into::into),
            details: self.details.to_string(),
        };
        audit::record(c, &event).await
    }
}

//! Audit records, written inside the transaction of the change they describe.

use sea_orm::ConnectionTrait;

use super::{new_id, now};
use crate::{
    domain::{access::Caller, execution::Execution},
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
    application: Option<String>,
    execution_id: Option<String>,
    chain_id: Option<String>,
    related_execution_id: Option<String>,
}

impl Audit {
    pub fn new(caller: &Caller, action: &'static str, details: serde_json::Value) -> Self {
        Audit {
            actor: caller.subject.clone(),
            action,
            details,
            application: None,
            execution_id: None,
            chain_id: None,
            related_execution_id: None,
        }
    }

    /// About this execution (and its chain and application).
    pub fn on(mut self, e: &Execution) -> Self {
        self.application = Some(e.application.clone());
        self.execution_id = Some(e.id.clone());
        self.chain_id = Some(e.chain_id.clone());
        self
    }

    /// About this application (a pipeline, say).
    pub fn in_application(mut self, application: &str) -> Self {
        self.application = Some(application.to_owned());
        self
    }

    /// Also about another execution (the one a resume resumed).
    pub fn related(mut self, execution_id: &str) -> Self {
        self.related_execution_id = Some(execution_id.to_owned());
        self
    }

    pub(super) async fn record(self, c: &impl ConnectionTrait) -> store::Result<()> {
        audit::record(c, &self.event()).await
    }

    /// The statement that records it, for the unit's batch of writes.
    pub(super) fn part(self) -> store::Part {
        audit::record_part(&self.event())
    }

    fn event(self) -> AuditEvent {
        AuditEvent {
            id: new_id(),
            at: now(),
            actor: self.actor,
            action: self.action.to_owned(),
            application: self.application,
            execution_id: self.execution_id,
            chain_id: self.chain_id,
            related_execution_id: self.related_execution_id,
            details: self.details.to_string(),
        }
    }
}

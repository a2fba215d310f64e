//! Audit records, written inside the transaction of the change they describe.

use sea_orm::ConnectionTrait;

use super::{Engine, new_id, now};
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

/// A change a caller attempted and was refused for want of permission.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// What was attempted, e.g. `execution.resume.denied`.
    pub action: &'static str,
    /// The execution it aimed at, if any.
    pub execution_id: Option<String>,
    /// The pipeline it aimed at, if any (named in the details too).
    pub pipeline_id: Option<String>,
    /// The application it aimed at, when the request named it.
    pub application: Option<String>,
    /// What else identifies the target (a pipeline, a group, a stage).
    pub details: serde_json::Value,
}

impl Attempt {
    pub fn new(action: &'static str) -> Self {
        Attempt { action, execution_id: None, pipeline_id: None, application: None, details: serde_json::json!({}) }
    }

    pub fn execution(mut self, id: &str) -> Self {
        self.execution_id = Some(id.to_owned());
        self
    }

    pub fn pipeline(mut self, id: &str) -> Self {
        self.pipeline_id = Some(id.to_owned());
        self.detail("pipeline_id", id)
    }

    pub fn application(mut self, application: &str) -> Self {
        self.application = Some(application.to_owned());
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details[key] = value.into();
        self
    }
}

impl Engine {
    /// Writes a refused attempt at a change to the audit trail — who, what,
    /// which target, why refused — in a short transaction of its own (the
    /// change itself was rolled back or never begun). The target's
    /// application is looked up from its execution when the request did not
    /// name one, so the event is listed with the application's trail.
    pub async fn record_denied(&self, caller: &Caller, attempt: Attempt, why: &str) -> super::Result<()> {
        let application = match (&attempt.application, &attempt.execution_id, &attempt.pipeline_id) {
            (Some(app), ..) => Some(app.clone()),
            (None, Some(id), _) => store::executions::get(self.db(), id).await?.map(|e| e.application),
            (None, None, Some(id)) => store::pipelines::get(self.db(), id, None).await?.map(|p| p.application),
            (None, None, None) => None,
        };
        let mut details = attempt.details;
        details["refused"] = serde_json::Value::String(crate::domain::limits::truncate_marked(why, 1024));
        let audit = Audit { actor: caller.subject.clone(), action: attempt.action, details };
        let (turn, txn) = self.begin().await?;
        audit.record(&txn, application.as_deref(), attempt.execution_id.as_deref()).await?;
        txn.commit().await.map_err(store::StoreError::from)?;
        drop(turn);
        tracing::info!(actor = %caller.subject, action = attempt.action, "refused attempt recorded");
        Ok(())
    }
}

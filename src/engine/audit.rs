//! Audit records, written inside the transaction of the change they describe.

use sea_orm::ConnectionTrait;

use super::{Engine, new_id, now};
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
    pub(super) execution_id: Option<String>,
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
        let reader = self.store().reader();
        let execution = match &attempt.execution_id {
            Some(id) => store::executions::get(&reader, id).await?,
            None => None,
        };
        let application = match (&attempt.application, &execution, &attempt.pipeline_id) {
            (Some(app), ..) => Some(app.clone()),
            (None, Some(e), _) => Some(e.application.clone()),
            (None, None, Some(id)) => store::pipelines::get(&reader, id, None).await?.map(|p| p.application),
            (None, None, None) => None,
        };
        let mut details = attempt.details;
        details["refused"] = serde_json::Value::String(crate::domain::limits::truncate_marked(why, 1024));
        let mut audit = Audit::new(caller, attempt.action, details);
        match (&execution, &application) {
            (Some(e), _) => audit = audit.on(e),
            (None, Some(app)) => audit = audit.in_application(app),
            (None, None) => {}
        }
        if execution.is_none()
            && let Some(id) = &attempt.execution_id
        {
            audit.execution_id = Some(id.clone());
        }
        let mut unit = self.unit(None).await?;
        unit.batch.push(audit.part());
        self.finish(unit, Ok(())).await?;
        tracing::info!(actor = %caller.subject, action = attempt.action, "refused attempt recorded");
        Ok(())
    }
}

//! Retention: deletes what the policy names, a small batch of whole chains
//! per transaction, so no lock is held long and transitions go on between
//! batches. Each batch records one audit event saying what went and why.

use std::time::Duration;

use super::{Engine, Result, new_id, now};
use crate::{
    domain::{
        execution::Millis,
        retention::{ChainHead, Policy, Reason, verdict},
    },
    store::{
        audit::{self, AuditEvent},
        retention as rows,
    },
};

/// Who the audit trail names for what retention deletes.
pub const ACTOR: &str = "system:retention";
/// The audit action of a batch of deleted chains.
pub const DELETE_CHAINS: &str = "retention.delete_chains";

/// How a sweep runs.
#[derive(Debug, Clone, Copy)]
pub struct SweepOptions {
    /// Chains per transaction.
    pub batch: u64,
    /// Rest between batches, for the writers waiting behind one.
    pub pause: Duration,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions { batch: 50, pause: Duration::from_millis(5) }
    }
}

/// What a sweep deleted (or, in a dry run, would delete: chains and audit
/// events only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub chains: u64,
    pub executions: u64,
    pub stages: u64,
    pub tasks: u64,
    pub audit_events: u64,
}

impl Engine {
    /// One pass of the policy over the whole database.
    pub async fn sweep(&self, policy: &Policy, options: SweepOptions) -> Result<Swept> {
        if policy.dry_run {
            return self.preview(policy).await;
        }
        let mut swept = Swept::default();
        let window = self.resume_window_start();
        let batch = options.batch.max(1);
        if let Some(cutoff) = policy.ended_cutoff(now()) {
            loop {
                let heads = rows::aged_heads(&self.store().reader(), cutoff, window, batch).await?;
                if !self.delete_batch(&heads, Reason::Age, policy, &mut swept).await? {
                    break;
                }
                tokio::time::sleep(options.pause).await;
            }
        }
        if let Some(keep) = policy.chains_per_pipeline {
            for pipeline in rows::pipelines(&self.store().reader()).await? {
                loop {
                    let heads = rows::surplus_heads(&self.store().reader(), &pipeline, keep, window, batch).await?;
                    if !self.delete_batch(&heads, Reason::Count, policy, &mut swept).await? {
                        break;
                    }
                    tokio::time::sleep(options.pause).await;
                }
            }
        }
        if let Some(before) = policy.audit_cutoff(now()) {
            loop {
                let unit = self.unit(None).await?;
                let deleted = rows::delete_audit(&unit.tx, before, batch * 20).await.map_err(Into::into);
                let n = self.finish(unit, deleted).await?;
                swept.audit_events += n;
                metrics::counter!(crate::metrics::RETENTION_DELETED, "table" => "audit_events").increment(n);
                if n < batch * 20 {
                    break;
                }
                tokio::time::sleep(options.pause).await;
            }
        }
        if swept != Swept::default() {
            tracing::info!(
                chains = swept.chains,
                executions = swept.executions,
                stages = swept.stages,
                tasks = swept.tasks,
                audit_events = swept.audit_events,
                "retention deleted what the policy names"
            );
        }
        Ok(swept)
    }

    /// What a sweep would delete now, counted and logged.
    async fn preview(&self, policy: &Policy) -> Result<Swept> {
        let reader = self.store().reader();
        let window = self.resume_window_start();
        let mut would = Swept::default();
        if let Some(cutoff) = policy.ended_cutoff(now()) {
            would.chains += rows::count_aged(&reader, cutoff, window).await?;
        }
        if let Some(keep) = policy.chains_per_pipeline {
            for pipeline in rows::pipelines(&reader).await? {
                would.chains += rows::count_surplus(&reader, &pipeline, keep, window).await?;
            }
        }
        if let Some(before) = policy.audit_cutoff(now()) {
            would.audit_events = rows::count_audit(&reader, before).await?;
        }
        tracing::info!(
            chains = would.chains,
            audit_events = would.audit_events,
            "retention dry run: this is what would be deleted (chains by age and by count may overlap); nothing was"
        );
        Ok(would)
    }

    /// Chains that began before this may no longer be resumed (None: any may be).
    fn resume_window_start(&self) -> Option<Millis> {
        self.settings().chain_limits.max_age_ms.map(|age| now() - age)
    }

    /// Deletes the chains of `heads` that the policy still names once they
    /// are locked. False when there was nothing left to delete.
    async fn delete_batch(&self, heads: &[ChainHead], why: Reason, policy: &Policy, swept: &mut Swept) -> Result<bool> {
        if heads.is_empty() {
            return Ok(false);
        }
        let chains: Vec<String> = heads.iter().map(|h| h.chain_id.clone()).collect();
        let limits = self.settings().chain_limits;
        let mut unit = self.unit(None).await?;
        let done: Result<_> = async {
            let at = now();
            let confirmed: Vec<String> = rows::lock_heads(&unit.tx, &chains)
                .await?
                .into_iter()
                .filter(|h| verdict(h, policy, limits, at, why == Reason::Count).is_some())
                .map(|h| h.chain_id)
                .collect();
            let deleted = rows::delete_chains(&unit.tx, &confirmed).await?;
            if !confirmed.is_empty() {
                let details = serde_json::json!({
                    "reason": why.as_str(),
                    "chains": confirmed,
                    "executions": deleted.executions.len(),
                    "stages": deleted.stages,
                    "tasks": deleted.tasks,
                });
                unit.batch.push(audit::record_part(&AuditEvent {
                    id: new_id(),
                    at,
                    actor: ACTOR.into(),
                    action: DELETE_CHAINS.into(),
                    application: None,
                    execution_id: None,
                    chain_id: None,
                    related_execution_id: None,
                    details: details.to_string(),
                }));
            }
            for id in &deleted.executions {
                unit.after.changed(id);
            }
            Ok((confirmed.len() as u64, deleted))
        }
        .await;
        let (n, deleted) = self.finish(unit, done).await?;
        for id in &deleted.executions {
            self.inner.views.forget(id);
        }
        let executions = deleted.executions.len() as u64;
        swept.chains += n;
        swept.executions += executions;
        swept.stages += deleted.stages;
        swept.tasks += deleted.tasks;
        for (table, count) in [("executions", executions), ("stages", deleted.stages), ("tasks", deleted.tasks)] {
            metrics::counter!(crate::metrics::RETENTION_DELETED, "table" => table).increment(count);
        }
        tracing::debug!(chains = n, executions, reason = why.as_str(), "retention batch deleted");
        // A batch whose every chain was resumed meanwhile deleted nothing:
        // stop rather than find the same heads again.
        Ok(n > 0)
    }
}

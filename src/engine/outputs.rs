//! Task output as its own resource: a page of what a task's attempt
//! produced, and the workflows of an execution page by page.

use super::{Engine, Error, Result, authorize, query::Page};
use crate::{
    domain::{access::Caller, execution::WorkflowRun, status::WorkflowStatus},
    store::tasks,
};

/// A page of a task's output.
#[derive(Debug, Clone)]
pub struct OutputPage {
    pub output: String,
    /// Where `output` starts, in characters from the start of the attempt's output.
    pub first_offset: i64,
    pub next_offset: i64,
    /// Characters the attempt produced so far.
    pub total_chars: i64,
    pub status: WorkflowStatus,
    /// The task ended and nothing follows `next_offset`.
    pub complete: bool,
}

/// Most characters one page returns.
pub const MAX_PAGE_CHARS: usize = 65_536;

impl Engine {
    /// A page of task `task_id`'s output from `offset`, if `caller` may read
    /// its execution.
    pub async fn task_output(&self, caller: &Caller, task_id: &str, offset: i64, max: usize) -> Result<OutputPage> {
        let (kept, total, status, execution_id) = tasks::output_of(&self.store().reader(), task_id)
            .await?
            .ok_or_else(|| Error::not_found("task", task_id))?;
        let inputs = self.inputs(&execution_id).await?;
        authorize::read_or_hide(caller, &inputs.application, "task", task_id)?;
        let kept_chars = kept.chars().count() as i64;
        let kept_from = total - kept_chars;
        let first = offset.max(kept_from).min(total);
        let take = max.clamp(1, MAX_PAGE_CHARS);
        let output: String = kept.chars().skip((first - kept_from) as usize).take(take).collect();
        let next = first + output.chars().count() as i64;
        Ok(OutputPage {
            output,
            first_offset: first,
            next_offset: next,
            total_chars: total,
            complete: status.is_final() && next >= total,
            status,
        })
    }

    /// A page of the workflows of an execution (of one stage when given), in
    /// stage and workflow order, after the `after` position.
    pub async fn workflows(
        &self,
        caller: &Caller,
        execution_id: &str,
        stage: Option<usize>,
        after: Option<(usize, usize)>,
        size: u64,
    ) -> Result<Page<(String, WorkflowRun)>> {
        let d = self.execution_for(caller, execution_id).await?;
        let mut items: Vec<(String, WorkflowRun)> = d
            .workflows
            .iter()
            .filter(|w| stage.is_none_or(|s| w.stage_index == s))
            .filter(|w| after.is_none_or(|a| (w.stage_index, w.workflow_index) > a))
            .take(size as usize + 1)
            .map(|w| (d.stages.get(w.stage_index).map(|s| s.name.to_string()).unwrap_or_default(), w.clone()))
            .collect();
        Ok(Page::cut(&mut items, size, |(_, w)| format!("{}.{}", w.stage_index, w.workflow_index)))
    }
}

//! `reprise logs EXECUTION [--stage S] [--workflow W] [-f]`: the output the
//! workers stored for an execution's workflows, as `kubectl logs` and
//! `gh run view --log` show a job's.
//!
//! Without `-f` each selected workflow's kept output is paged through
//! GetTaskOutput, under a `==> stage/workflow <==` header when there are
//! several (as `tail` does). With `-f` the execution is followed and every
//! selected workflow's output is streamed (WatchTaskOutput) as it arrives,
//! each line prefixed with `stage/workflow | ` when there are several, until
//! the execution and those workflows have ended. Streams that break are
//! opened again from the last offset received, so nothing repeats.

use std::{collections::HashSet, time::Duration};

use clap::Args;
use tokio::task::JoinSet;

use super::{
    ClientOptions,
    connect::Client,
    error::{Exit, Failure, Result},
    output, style,
    watch::{self, FollowOptions},
};
use crate::proto as pb;

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    /// The execution id.
    pub execution: String,
    /// Only the workflows of this stage (its name, or its index from 0).
    #[arg(long, short = 's')]
    pub stage: Option<String>,
    /// Only workflows of this name.
    #[arg(long, short = 'w')]
    pub workflow: Option<String>,
    /// Follow: stream output as it is produced, until the execution ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub patience: FollowOptions,
}

/// One workflow whose output is shown.
#[derive(Debug, Clone)]
struct Selected {
    stage: String,
    workflow: String,
    task_id: String,
}

impl Selected {
    fn label(&self) -> String {
        format!("{}/{}", self.stage, self.workflow)
    }
}

/// What `--stage` and `--workflow` pick.
#[derive(Debug, Clone, Default)]
struct Filter {
    stage: Option<String>,
    workflow: Option<String>,
}

impl Filter {
    fn matches(&self, stage_index: i32, stage_name: &str, workflow: &str) -> bool {
        let stage_ok = self.stage.as_deref().is_none_or(|s| s == stage_name || s == stage_index.to_string());
        stage_ok && self.workflow.as_deref().is_none_or(|w| w == workflow)
    }

    /// One workflow at most: its lines need no prefix.
    fn is_single(&self) -> bool {
        self.stage.is_some() && self.workflow.is_some()
    }
}

pub async fn logs(args: LogsArgs) -> Result<Exit> {
    if args.client.output.is_document() {
        return Err(Failure::usage(
            "logs prints the workflows' output as it was written, not as JSON or YAML; \
             `reprise get EXECUTION -o json` carries the end of each workflow's output",
        ));
    }
    let filter = Filter { stage: args.stage.clone(), workflow: args.workflow.clone() };
    let mut client = Client::connect(&args.client).await?;
    if args.follow {
        return follow(&mut client, &args.execution, filter, args.patience).await;
    }
    let selected = select(&mut client, &args.execution, &filter).await?;
    let several = selected.len() > 1;
    for (i, workflow) in selected.iter().enumerate() {
        if several {
            let gap = if i == 0 { "" } else { "\n" };
            output::print(&style::dim(&format!("{gap}==> {} <==\n", workflow.label())));
        }
        print_kept(&mut client, workflow).await?;
    }
    Ok(Exit::Success)
}

/// The workflows of the execution that the filter picks, in stage and
/// workflow order; an error naming what exists when it picks none.
async fn select(client: &mut Client, execution: &str, filter: &Filter) -> Result<Vec<Selected>> {
    let mut selected = vec![];
    let mut seen = vec![];
    let mut page_token = String::new();
    loop {
        let request = pb::ListWorkflowsRequest {
            execution_id: execution.to_owned(),
            page_size: 1000,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = client.executions.list_workflows(request).await?.into_inner();
        for item in page.workflows {
            let Some(w) = item.workflow else { continue };
            seen.push(format!("{}/{}", item.stage_name, w.name));
            if filter.matches(item.stage_index, &item.stage_name, &w.name) && !w.task_id.is_empty() {
                selected.push(Selected { stage: item.stage_name, workflow: w.name, task_id: w.task_id });
            }
        }
        if page.next_page_token.is_empty() || page.next_page_token == page_token {
            break;
        }
        page_token = page.next_page_token;
    }
    if selected.is_empty() {
        let known = if seen.is_empty() { "it has no workflow that started".to_owned() } else { seen.join(", ") };
        return Err(Failure::usage(format!("no workflow of execution {execution} matches ({known})")));
    }
    Ok(selected)
}

/// Pages through what the server keeps of one task's output.
async fn print_kept(client: &mut Client, workflow: &Selected) -> Result<()> {
    let mut offset = 0;
    loop {
        let request = pb::GetTaskOutputRequest { task_id: workflow.task_id.clone(), offset, max_chars: 0 };
        let page = client.executions.get_task_output(request).await?.into_inner();
        if offset == 0 && page.first_offset > 0 {
            eprintln!(
                "{}",
                style::dim(&format!(
                    "({}: the first {} characters are no longer kept)",
                    workflow.label(),
                    page.first_offset
                ))
            );
        }
        output::print(&page.output);
        if page.output.is_empty() || page.next_offset >= page.total_chars {
            if !page.output.is_empty() && !page.output.ends_with('\n') {
                output::print("\n");
            }
            return Ok(());
        }
        offset = page.next_offset;
    }
}

/// `-f`: follows the execution, and each selected workflow's output from the
/// moment its task exists. Exits like `watch`: 0 if the execution succeeded.
async fn follow(client: &mut Client, execution: &str, filter: Filter, options: FollowOptions) -> Result<Exit> {
    let prefix = !filter.is_single();
    let mut followed = HashSet::new();
    let mut streams = JoinSet::new();
    let spare = client.clone();
    let last = watch::follow(client, execution, options, |message| {
        let Some(e) = &message.execution else { return Ok(()) };
        for s in &e.stages {
            for w in &s.workflows {
                if w.task_id.is_empty() || !filter.matches(s.index, &s.name, &w.name) {
                    continue;
                }
                if followed.insert(w.task_id.clone()) {
                    let workflow =
                        Selected { stage: s.name.clone(), workflow: w.name.clone(), task_id: w.task_id.clone() };
                    streams.spawn(stream_task(spare.clone(), workflow, prefix, options));
                }
            }
        }
        Ok(())
    })
    .await?;
    while let Some(done) = streams.join_next().await {
        done.map_err(|e| Failure::failed(format!("following output failed: {e}")))??;
    }
    if followed.is_empty() {
        eprintln!("{}", style::dim("(no workflow matched, or none of them started)"));
    }
    Ok(if last.status == pb::ExecutionStatus::Succeeded as i32 { Exit::Success } else { Exit::Failed })
}

/// Streams one task's output to stdout, line by line, until its task ends.
async fn stream_task(mut client: Client, workflow: Selected, prefix: bool, options: FollowOptions) -> Result<()> {
    let label = workflow.label();
    let mut lines = Lines { pending: String::new(), prefix: prefix.then(|| style::dim(&format!("{label} | "))) };
    let mut offset = 0;
    let mut delays = watch::reconnect_backoff();
    let mut lost_since: Option<std::time::Instant> = None;
    loop {
        let request = pb::WatchTaskOutputRequest { task_id: workflow.task_id.clone(), offset };
        let why = match client.executions.watch_task_output(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(m)) => {
                            lost_since = None;
                            delays = watch::reconnect_backoff();
                            // A message may repeat what was shown when a stream starts over.
                            let skip = (offset - m.offset).max(0) as usize;
                            let fresh: String = m.output.chars().skip(skip).collect();
                            offset = offset.max(m.offset) + fresh.chars().count() as i64;
                            output::print(&lines.push(&fresh));
                            if is_final_workflow(m.status) {
                                output::print(&lines.flush());
                                return Ok(());
                            }
                        }
                        Ok(None) => break "the output stream ended early".to_owned(),
                        Err(status) if watch::retryable(&status) => break status.message().to_owned(),
                        Err(status) => return Err(status.into()),
                    }
                }
            }
            Err(status) if watch::retryable(&status) => status.message().to_owned(),
            Err(status) => return Err(status.into()),
        };
        let since = *lost_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() >= options.reconnect_for {
            output::print(&lines.flush());
            return Err(Failure::failed(format!("lost the output of {label}: {why}")));
        }
        tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(10))).await;
    }
}

fn is_final_workflow(status: i32) -> bool {
    use pb::WorkflowStatus as W;
    matches!(W::try_from(status), Ok(W::Succeeded | W::Failed | W::Expired | W::Cancelled))
}

/// Cuts a stream of text into whole lines, each with the prefix.
struct Lines {
    pending: String,
    prefix: Option<String>,
}

impl Lines {
    /// The whole lines `text` completes.
    fn push(&mut self, text: &str) -> String {
        self.pending.push_str(text);
        let Some(end) = self.pending.rfind('\n') else { return String::new() };
        let whole: String = self.pending.drain(..=end).collect();
        match &self.prefix {
            Some(prefix) => whole.lines().map(|l| format!("{prefix}{l}\n")).collect(),
            None => whole,
        }
    }

    /// What is left, as a last line.
    fn flush(&mut self) -> String {
        if self.pending.is_empty() {
            return String::new();
        }
        let rest = std::mem::take(&mut self.pending);
        format!("{}{rest}\n", self.prefix.as_deref().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_whole_and_prefixed() {
        let mut lines = Lines { pending: String::new(), prefix: Some("ship/b | ".into()) };
        assert_eq!(lines.push("conn"), "");
        assert_eq!(lines.push("ecting\nrefused\npart"), "ship/b | connecting\nship/b | refused\n");
        assert_eq!(lines.flush(), "ship/b | part\n");
        assert_eq!(lines.flush(), "");
        let mut bare = Lines { pending: String::new(), prefix: None };
        assert_eq!(bare.push("a\nb"), "a\n");
    }

    #[test]
    fn the_filter_takes_a_stage_by_name_or_index() {
        let filter = Filter { stage: Some("1".into()), workflow: None };
        assert!(filter.matches(1, "ship", "a"));
        assert!(!filter.matches(0, "build", "a"));
        let filter = Filter { stage: Some("ship".into()), workflow: Some("b".into()) };
        assert!(filter.matches(1, "ship", "b") && !filter.matches(1, "ship", "a"));
        assert!(filter.is_single());
        assert!(Filter::default().matches(0, "x", "y"));
    }
}

//! `start`, `get`, `list` and the controls: `abort`, `pause`, `continue`,
//! `approve`, `reject`.

use std::collections::{BTreeMap, HashMap};

use clap::Args;

use super::{
    ClientOptions, ExecutionArgs,
    connect::Client,
    error::{Exit, Failure, Result},
    output::{self, Format},
    parse_pair, pipelines, style,
    watch::{self, FollowOptions, WatchFlag},
};
use crate::proto as pb;

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    /// The pipeline to run: APPLICATION/NAME, or its id.
    #[arg(value_name = "PIPELINE")]
    pub pipeline_id: String,
    /// The pipeline version to run; the latest when unset.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub version: Option<i64>,
    /// Binds a variable of the pipeline; repeat for more.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_pair)]
    pub vars: Vec<(String, String)>,
    /// An artifact to deploy, by name and version or build; repeat for more.
    #[arg(long = "artifact", value_name = "NAME=VERSION", value_parser = parse_pair)]
    pub artifacts: Vec<(String, String)>,
    /// Makes a retry safe: starting again with the same id returns the same
    /// execution. A new UUID when unset (printed, to retry with).
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub watch: WatchFlag,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    /// Only executions of this application.
    #[arg(long)]
    pub application: Option<String>,
    /// Only executions of this pipeline: APPLICATION/NAME, or its id.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Only executions in this state: queued, running, paused, succeeded, failed, aborted, expired or rejected.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<pb::ExecutionStatus>,
    /// At most this many executions (pages are followed until then).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

#[derive(Debug, Clone, Args)]
pub struct AbortArgs {
    #[command(flatten)]
    pub target: ExecutionArgs,
    /// Why; recorded in the execution's status message.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DecisionArgs {
    #[command(flatten)]
    pub target: ExecutionArgs,
    /// Recorded with the decision.
    #[arg(long)]
    pub comment: Option<String>,
    /// The approval stage meant; refused if another one is waiting. The waiting one when unset.
    #[arg(long)]
    pub stage: Option<String>,
    #[command(flatten)]
    pub watch: WatchFlag,
}

/// `failed`, `FAILED` or `EXECUTION_STATUS_FAILED`.
fn parse_status(text: &str) -> std::result::Result<pb::ExecutionStatus, String> {
    let upper = text.trim().to_ascii_uppercase();
    let full = if upper.starts_with("EXECUTION_STATUS_") { upper } else { format!("EXECUTION_STATUS_{upper}") };
    match pb::ExecutionStatus::from_str_name(&full) {
        Some(status) if status != pb::ExecutionStatus::Unspecified => Ok(status),
        _ => Err(format!(
            "{text:?} is not a status; use queued, running, paused, succeeded, failed, aborted, expired or rejected"
        )),
    }
}

fn to_map(pairs: Vec<(String, String)>, what: &str) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (name, value) in pairs {
        if map.insert(name.clone(), value).is_some() {
            return Err(Failure::usage(format!("{what} {name:?} is given twice")));
        }
    }
    Ok(map)
}

pub async fn start(args: StartArgs) -> Result<Exit> {
    let mut client = Client::connect(&args.client).await?;
    let pipeline_id = pipelines::resolve(&mut client, &args.pipeline_id).await?;
    let request = pb::StartExecutionRequest {
        pipeline_id,
        pipeline_version: args.version.unwrap_or(0),
        variables: to_map(args.vars, "--var")?,
        artifacts: to_map(args.artifacts, "--artifact")?,
        request_id: args.request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
    };
    let response = client.executions.start_execution(request).await?.into_inner();
    let name = match (args.client.output, &response.execution) {
        (Format::Table, Some(e)) => pipeline_names(&mut client, [e.pipeline_id.as_str()]).await.remove(&e.pipeline_id),
        _ => None,
    };
    output::show(args.client.output, &response, |r| match &r.execution {
        Some(e) => output::execution_header(e, name.as_deref()),
        None => "started\n".into(),
    })?;
    then_watch(
        &mut client,
        response.execution.as_ref(),
        args.client.output,
        args.watch.watch.then_some(args.watch.follow),
    )
    .await
}

/// After a command that started or changed an execution: with `--watch`,
/// follow it and exit as `watch` does; otherwise the command worked.
pub async fn then_watch(
    client: &mut Client,
    execution: Option<&pb::Execution>,
    format: Format,
    follow: Option<FollowOptions>,
) -> Result<Exit> {
    match (follow, execution) {
        (Some(options), Some(e)) => {
            if format == Format::Table {
                output::print("\n");
            }
            watch::follow_and_report(client, &e.id, format, options).await
        }
        _ => Ok(Exit::Success),
    }
}

pub async fn get(args: ExecutionArgs) -> Result<Exit> {
    let mut client = Client::connect(&args.client).await?;
    let request = pb::GetExecutionRequest { execution_id: args.execution, ..Default::default() };
    let response = client.executions.get_execution(request).await?.into_inner();
    let name = match (args.client.output, &response.execution) {
        (Format::Table, Some(e)) => pipeline_names(&mut client, [e.pipeline_id.as_str()]).await.remove(&e.pipeline_id),
        _ => None,
    };
    output::show(args.client.output, &response, |r| match &r.execution {
        Some(e) => output::execution_view(e, name.as_deref()),
        None => String::new(),
    })?;
    Ok(Exit::Success)
}

pub async fn list(args: ListArgs) -> Result<Exit> {
    let mut client = Client::connect(&args.client).await?;
    let pipeline_id = match &args.pipeline {
        Some(reference) => pipelines::resolve(&mut client, reference).await?,
        None => String::new(),
    };
    let limit = args.limit as usize;
    let mut all = pb::ListExecutionsResponse::default();
    loop {
        let request = pb::ListExecutionsRequest {
            application: args.application.clone().unwrap_or_default(),
            pipeline_id: pipeline_id.clone(),
            status: args.status.map_or(0, |s| s as i32),
            page_size: (limit - all.executions.len()).min(500) as i32,
            page_token: all.next_page_token.clone(),
        };
        let page = client.executions.list_executions(request).await?.into_inner();
        let stalled = page.executions.is_empty() || page.next_page_token == all.next_page_token;
        all.executions.extend(page.executions);
        all.next_page_token = page.next_page_token;
        if all.executions.len() >= limit || all.next_page_token.is_empty() || stalled {
            break;
        }
    }
    all.executions.truncate(limit);
    let names = match args.client.output {
        Format::Table => pipeline_names(&mut client, all.executions.iter().map(|e| e.pipeline_id.as_str())).await,
        Format::Json | Format::Yaml => HashMap::new(),
    };
    output::show(args.client.output, &all, |r| output::executions_table(&r.executions, &names))?;
    Ok(Exit::Success)
}

/// `application/name` of each pipeline, for tables; pipelines that cannot be read are left out.
async fn pipeline_names<'a>(client: &mut Client, ids: impl IntoIterator<Item = &'a str>) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for id in ids {
        if names.contains_key(id) {
            continue;
        }
        let request = pb::GetPipelineRequest { pipeline_id: id.to_owned(), version: 0 };
        if let Ok(response) = client.pipelines.get_pipeline(request).await
            && let Some(p) = response.into_inner().pipeline
        {
            names.insert(id.to_owned(), format!("{}/{}", p.application, p.name));
        }
    }
    names
}

/// A change to an execution.
pub enum Control {
    Abort { reason: Option<String> },
    Pause,
    Continue,
    Approve { stage: Option<String>, comment: Option<String> },
    Reject { stage: Option<String>, comment: Option<String> },
}

pub async fn control(args: ExecutionArgs, control: Control) -> Result<Exit> {
    control_then(args, control, None).await
}

/// A change, then (with `--watch`) following the execution.
pub async fn control_then(args: ExecutionArgs, control: Control, follow: Option<FollowOptions>) -> Result<Exit> {
    let mut client = Client::connect(&args.client).await?;
    let changed = change(&mut client, &args, control).await?;
    then_watch(&mut client, changed.as_ref(), args.client.output, follow).await
}

/// Makes the change and prints the execution it returns.
async fn change(client: &mut Client, args: &ExecutionArgs, control: Control) -> Result<Option<pb::Execution>> {
    let (id, format, c) = (args.execution.clone(), args.client.output, &mut client.executions);
    let line = |e: &Option<pb::Execution>| match e {
        Some(e) => format!("execution {}: {}\n", e.id, style::status(&output::status_line(e))),
        None => String::new(),
    };
    let execution = match control {
        Control::Abort { reason } => {
            let request = pb::AbortRequest { execution_id: id, reason: reason.unwrap_or_default() };
            let response = c.abort(request).await?.into_inner();
            output::show(format, &response, |r| line(&r.execution))?;
            response.execution
        }
        Control::Pause => {
            let response = c.pause(pb::PauseRequest { execution_id: id }).await?.into_inner();
            output::show(format, &response, |r| line(&r.execution))?;
            response.execution
        }
        Control::Continue => {
            let response = c.r#continue(pb::ContinueRequest { execution_id: id }).await?.into_inner();
            output::show(format, &response, |r| line(&r.execution))?;
            response.execution
        }
        Control::Approve { stage, comment } => {
            let request = pb::ApproveRequest {
                execution_id: id,
                stage_name: stage.unwrap_or_default(),
                comment: comment.unwrap_or_default(),
            };
            let response = c.approve(request).await?.into_inner();
            output::show(format, &response, |r| line(&r.execution))?;
            response.execution
        }
        Control::Reject { stage, comment } => {
            let request = pb::RejectRequest {
                execution_id: id,
                stage_name: stage.unwrap_or_default(),
                comment: comment.unwrap_or_default(),
            };
            let response = c.reject(request).await?.into_inner();
            output::show(format, &response, |r| line(&r.execution))?;
            response.execution
        }
    };
    Ok(execution)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_by_short_or_full_name() {
        assert_eq!(parse_status("failed"), Ok(pb::ExecutionStatus::Failed));
        assert_eq!(parse_status("SUCCEEDED"), Ok(pb::ExecutionStatus::Succeeded));
        assert_eq!(parse_status("EXECUTION_STATUS_ABORTED"), Ok(pb::ExecutionStatus::Aborted));
        assert!(parse_status("unspecified").is_err());
        assert!(parse_status("done").is_err());
    }

    #[test]
    fn a_name_given_twice_is_refused() {
        let pairs = vec![("a".to_string(), "1".to_string()), ("a".to_string(), "2".to_string())];
        assert_eq!(to_map(pairs, "--var").unwrap_err().exit, Exit::Usage);
    }
}

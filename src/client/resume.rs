//! `reprise resume` (and its `--dry-run` plan) and `reprise history`.

use clap::Args;

use super::{
    ClientOptions, ExecutionArgs,
    connect::Client,
    error::{Exit, Result},
    output,
};
use crate::proto as pb;

#[derive(Debug, Clone, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    /// The execution to resume; it must be the latest of its chain.
    pub execution: String,
    /// The stage to resume from, by name: it and every later stage run again, earlier ones are carried over.
    #[arg(long, value_name = "NAME")]
    pub from_stage: String,
    /// Check everything and print the plan without creating anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Makes a retry safe: resuming again with the same id returns the same
    /// execution. A new UUID when unset (printed, to retry with).
    #[arg(long, conflicts_with = "dry_run")]
    pub request_id: Option<String>,
    /// Why; kept with the new execution and shown in its history.
    #[arg(long)]
    pub reason: Option<String>,
}

pub async fn resume(args: ResumeArgs) -> Result<Exit> {
    let request_id =
        if args.dry_run { String::new() } else { args.request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()) };
    let request = pb::ResumeRequest {
        execution_id: args.execution.clone(),
        from_stage: Some(pb::resume_request::FromStage::StageName(args.from_stage.clone())),
        request_id: request_id.clone(),
        validate_only: args.dry_run,
        reason: args.reason.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut client = Client::connect(&args.client).await?;
    let response = client.executions.resume(request).await?.into_inner();
    output::show(args.client.output, &response, |r| {
        let head = match &r.execution {
            Some(e) => format!(
                "Resumed {} from stage {} as {} (attempt {}, request id {request_id}).\n\n",
                args.execution, args.from_stage, e.id, e.attempt
            ),
            None => format!(
                "Dry run: resuming {} from stage {} would do this (nothing was created).\n\n",
                args.execution, args.from_stage
            ),
        };
        head + &output::plan_table(r)
    })?;
    Ok(Exit::Success)
}

pub async fn history(args: ExecutionArgs) -> Result<Exit> {
    let mut client = Client::connect(&args.client).await?;
    let mut all = pb::ListHistoryResponse::default();
    loop {
        let request = pb::ListHistoryRequest {
            execution_id: args.execution.clone(),
            page_size: 500,
            page_token: all.next_page_token.clone(),
        };
        let page = client.executions.list_history(request).await?.into_inner();
        let stalled = page.entries.is_empty() || page.next_page_token == all.next_page_token;
        all.entries.extend(page.entries);
        all.chain_id = page.chain_id;
        all.next_page_token = page.next_page_token;
        if all.next_page_token.is_empty() || stalled {
            break;
        }
    }
    all.next_page_token.clear();
    output::show(args.client.output, &all, output::history_table)?;
    Ok(Exit::Success)
}

//! `reprise apply -f pipeline.yaml`: create the pipeline, or, when its
//! application already has one of that name, write the file as its next
//! version, or nothing when the file is what the latest version holds
//! (`unchanged`, as `kubectl apply` says). `reprise pipelines list|get`.
//! And [`resolve`]: every command that takes a pipeline takes
//! `APPLICATION/NAME` as well as its id.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tonic::Code;

use super::{
    ClientOptions,
    connect::Client,
    error::{Exit, Failure, Result},
    output::{self, Format, Table},
    yaml,
};
use crate::proto as pb;

/// How often an update is retried when someone else wrote a version in between.
const UPDATE_TRIES: usize = 3;

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    /// The pipeline file (YAML shaped like a CreatePipelineRequest); `-` reads standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
}

pub async fn apply(args: ApplyArgs) -> Result<Exit> {
    let name = args.file.display().to_string();
    let text = if name == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Failure::usage(format!("cannot read standard input: {e}")))?
    } else {
        std::fs::read_to_string(&args.file).map_err(|e| Failure::usage(format!("cannot read {name}: {e}")))?
    };
    let request = yaml::parse_pipeline(&text).map_err(|e| Failure::usage(format!("{name}: {e}")))?;
    let mut client = Client::connect(&args.client).await?;
    let (application, pipeline_name) = (request.application.clone(), request.name.clone());
    let definition = request.definition.clone();
    // Look first: creating first would record a refused ALREADY_EXISTS call on every re-apply.
    if let Some(existing) = find(&mut client, &application, &pipeline_name).await? {
        let latest = get(&mut client, &existing.id, 0).await?;
        // The server fills in defaults (task queue, timeouts, attempts): compare as it would store the file.
        let wanted = definition.clone().and_then(crate::api::canonical_definition);
        if wanted.is_some() && latest.pipeline.as_ref().is_some_and(|p| p.definition == wanted) {
            output::show(args.client.output, &latest, |r| summary(r.pipeline.as_ref(), "unchanged"))?;
            return Ok(Exit::Success);
        }
        let response = update(&mut client, existing, definition).await?;
        output::show(args.client.output, &response, |r| summary(r.pipeline.as_ref(), "updated"))?;
        return Ok(Exit::Success);
    }
    match client.pipelines.create_pipeline(request).await {
        Ok(response) => {
            let response = response.into_inner();
            output::show(args.client.output, &response, |r| summary(r.pipeline.as_ref(), "created"))?;
        }
        // Someone created it between our look and our create.
        Err(status) if status.code() == Code::AlreadyExists => {
            let existing =
                find(&mut client, &application, &pipeline_name).await?.ok_or_else(|| Failure::from(status))?;
            let response = update(&mut client, existing, definition).await?;
            output::show(args.client.output, &response, |r| summary(r.pipeline.as_ref(), "updated"))?;
        }
        Err(status) => return Err(status.into()),
    }
    Ok(Exit::Success)
}

/// The pipeline of that application and name, at its latest version.
async fn find(client: &mut Client, application: &str, name: &str) -> Result<Option<pb::Pipeline>> {
    let mut page_token = String::new();
    loop {
        let request = pb::ListPipelinesRequest {
            application: application.to_owned(),
            page_size: 500,
            page_token: page_token.clone(),
            // Names and versions are enough to find it: no definitions.
            view: pb::PipelineView::Basic as i32,
        };
        let page = client.pipelines.list_pipelines(request).await?.into_inner();
        if let Some(found) = page.pipelines.into_iter().find(|p| p.name == name && p.application == application) {
            return Ok(Some(found));
        }
        if page.next_page_token.is_empty() || page.next_page_token == page_token {
            return Ok(None);
        }
        page_token = page.next_page_token;
    }
}

/// Writes `definition` as the next version; when another writer got there
/// first (ABORTED), reads the latest version again and retries.
async fn update(
    client: &mut Client,
    mut pipeline: pb::Pipeline,
    definition: Option<pb::PipelineDefinition>,
) -> Result<pb::UpdatePipelineResponse> {
    let mut tries = 0;
    loop {
        tries += 1;
        let request = pb::UpdatePipelineRequest {
            pipeline_id: pipeline.id.clone(),
            expected_version: pipeline.version,
            definition: definition.clone(),
        };
        match client.pipelines.update_pipeline(request).await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if status.code() == Code::Aborted && tries < UPDATE_TRIES => {
                let request = pb::GetPipelineRequest { pipeline_id: pipeline.id.clone(), version: 0 };
                let latest = client.pipelines.get_pipeline(request).await?.into_inner().pipeline;
                pipeline = latest.ok_or_else(|| Failure::failed("GetPipeline returned no pipeline"))?;
            }
            Err(status) => return Err(status.into()),
        }
    }
}

fn summary(pipeline: Option<&pb::Pipeline>, verb: &str) -> String {
    match pipeline {
        Some(p) => format!("pipeline {}/{} {verb}: id {}, version {}\n", p.application, p.name, p.id, p.version),
        None => format!("pipeline {verb}\n"),
    }
}

/// The pipeline at a version (0: the latest), with its definition.
async fn get(client: &mut Client, id: &str, version: i64) -> Result<pb::GetPipelineResponse> {
    let request = pb::GetPipelineRequest { pipeline_id: id.to_owned(), version };
    Ok(client.pipelines.get_pipeline(request).await?.into_inner())
}

/// The id of a pipeline given as `APPLICATION/NAME` or as its id. Anything
/// without a slash is passed on as an id, for the server to judge.
pub async fn resolve(client: &mut Client, reference: &str) -> Result<String> {
    let Some((application, name)) = reference.split_once('/') else { return Ok(reference.to_owned()) };
    if application.is_empty() || name.is_empty() || name.contains('/') {
        return Err(Failure::usage(format!("{reference:?} is not APPLICATION/NAME or a pipeline id")));
    }
    match find(client, application, name).await? {
        Some(pipeline) => Ok(pipeline.id),
        None => Err(Failure::failed(format!(
            "pipeline {reference} not found (NOT_FOUND); `reprise pipelines list --application {application}` lists them"
        ))),
    }
}

/// `reprise pipelines …`.
#[derive(Debug, Subcommand)]
pub enum PipelinesCommand {
    /// List pipelines at their latest versions.
    List(ListArgs),
    /// Show a pipeline: its versions, variables and stages.
    Get(GetArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    /// Only pipelines of this application.
    #[arg(long)]
    pub application: Option<String>,
    /// At most this many pipelines (pages are followed until then).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    /// APPLICATION/NAME, or the pipeline's id.
    pub pipeline: String,
    /// This version; the latest when unset.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub version: Option<i64>,
}

pub async fn pipelines(command: PipelinesCommand) -> Result<Exit> {
    match command {
        PipelinesCommand::List(args) => list(args).await,
        PipelinesCommand::Get(args) => {
            let mut client = Client::connect(&args.client).await?;
            let id = resolve(&mut client, &args.pipeline).await?;
            let response = get(&mut client, &id, args.version.unwrap_or(0)).await?;
            output::show(args.client.output, &response, |r| {
                r.pipeline.as_ref().map(pipeline_view).unwrap_or_default()
            })?;
            Ok(Exit::Success)
        }
    }
}

async fn list(args: ListArgs) -> Result<Exit> {
    let mut client = Client::connect(&args.client).await?;
    let limit = args.limit as usize;
    let mut all = pb::ListPipelinesResponse::default();
    loop {
        let request = pb::ListPipelinesRequest {
            application: args.application.clone().unwrap_or_default(),
            page_size: (limit - all.pipelines.len()).min(500) as i32,
            page_token: all.next_page_token.clone(),
            view: if args.client.output == Format::Table { pb::PipelineView::Basic } else { pb::PipelineView::Full }
                as i32,
        };
        let page = client.pipelines.list_pipelines(request).await?.into_inner();
        let stalled = page.pipelines.is_empty() || page.next_page_token == all.next_page_token;
        all.pipelines.extend(page.pipelines);
        all.next_page_token = page.next_page_token;
        if all.pipelines.len() >= limit || all.next_page_token.is_empty() || stalled {
            break;
        }
    }
    all.pipelines.truncate(limit);
    output::show(args.client.output, &all, |r| pipelines_table(&r.pipelines))?;
    Ok(Exit::Success)
}

/// `reprise pipelines list`.
fn pipelines_table(pipelines: &[pb::Pipeline]) -> String {
    let mut table = Table::new(&["PIPELINE", "VERSION", "ID", "UPDATED"]);
    for p in pipelines {
        table.row(vec![
            format!("{}/{}", p.application, p.name),
            p.version.to_string(),
            p.id.clone(),
            output::timestamp(p.update_time.as_ref()),
        ]);
    }
    table.render()
}

/// `reprise pipelines get`: the header, then a line per stage.
fn pipeline_view(p: &pb::Pipeline) -> String {
    let definition = p.definition.clone().unwrap_or_default();
    let version = if p.latest_version > p.version {
        format!("{} (the latest is {})", p.version, p.latest_version)
    } else {
        p.version.to_string()
    };
    let variables: Vec<String> = definition
        .variables
        .iter()
        .map(|v| match &v.default_value {
            Some(d) => format!("{}={d}", v.name),
            None => format!("{} (required)", v.name),
        })
        .collect();
    let mut out = output::fields(&[
        ("Pipeline", format!("{}/{}", p.application, p.name)),
        ("ID", p.id.clone()),
        ("Version", version),
        ("Description", definition.description.clone()),
        ("Variables", variables.join(", ")),
        ("Created", output::timestamp(p.create_time.as_ref())),
        ("Updated", output::timestamp(p.update_time.as_ref())),
    ]);
    let mut table = Table::new(&["STAGE", "ENVIRONMENT", "DOES", "SKIPPED WHEN"]);
    for s in &definition.stages {
        let environment = s
            .environment
            .as_ref()
            .map(|e| {
                let kind = pb::EnvironmentType::try_from(e.r#type)
                    .map(|t| t.as_str_name().trim_start_matches("ENVIRONMENT_TYPE_").to_owned())
                    .unwrap_or_default();
                format!("{} ({kind})", e.name)
            })
            .unwrap_or_default();
        let does = match &s.kind {
            Some(pb::stage::Kind::Workflows(w)) => {
                format!("workflows: {}", w.workflows.iter().map(|w| w.name.as_str()).collect::<Vec<_>>().join(", "))
            }
            Some(pb::stage::Kind::Approval(_)) => "approval".into(),
            None => String::new(),
        };
        let skip = match s.skip_condition.as_ref().and_then(|c| c.condition.as_ref()) {
            Some(pb::skip_condition::Condition::Always(true)) => "always".into(),
            Some(pb::skip_condition::Condition::Expression(e)) => e.clone(),
            _ => String::new(),
        };
        table.row(vec![s.name.clone(), environment, does, skip]);
    }
    out.push('\n');
    out.push_str(&table.render());
    out
}

//! `reprise apply -f pipeline.yaml`: create the pipeline, or, when its
//! application already has one of that name, write the file as its next version.

use std::path::PathBuf;

use clap::Args;
use tonic::Code;

use super::{
    ClientOptions,
    connect::Client,
    error::{Exit, Failure, Result},
    output, yaml,
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
    match client.pipelines.create_pipeline(request).await {
        Ok(response) => {
            let response = response.into_inner();
            output::show(args.client.output, &response, |r| summary(r.pipeline.as_ref(), "created"))?;
        }
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

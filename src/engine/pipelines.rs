//! Creating, versioning and reading pipelines.

use serde_json::json;

use sea_orm::ConnectionTrait;

use super::{Audit, Engine, Error, Result, authorize, new_id, now, query::Page};
use crate::{
    domain::{
        access::Caller,
        limits::{Text, check_text},
        pipeline::Definition,
        quote,
    },
    store::{StoreError, pipelines, pipelines::PipelineRecord},
};

#[derive(Debug, Clone)]
pub struct NewPipeline {
    pub application: String,
    pub name: String,
    pub definition: Definition,
}

#[derive(Debug, Clone)]
pub struct PipelineUpdate {
    pub pipeline_id: String,
    pub expected_version: i64,
    pub definition: Definition,
}

impl Engine {
    pub async fn create_pipeline(&self, caller: &Caller, new: NewPipeline) -> Result<PipelineRecord> {
        let limits = &self.settings().limits;
        let mut violations = Vec::new();
        for (field, value) in [("application", &new.application), ("name", &new.name)] {
            check_text(&mut violations, field, value, limits.max_name_bytes, Text::Name, true);
        }
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        // The cheap check first: compiling skip conditions is work a caller
        // without any right to write here must not be able to cause.
        authorize::execute_somewhere(caller, &new.application)?;
        new.definition.validate(limits).map_err(Error::Invalid)?;
        authorize::execute(caller, &new.application, &new.definition, 0)?;
        let id = new_id();
        let unit = self.unit(None).await?;
        let written = async {
            pipelines::insert(&unit.tx, &id, &new.application, &new.name, &new.definition, now()).await?;
            Audit::new(caller, "pipeline.create", json!({ "pipeline_id": id, "name": new.name }))
                .in_application(&new.application)
                .record(&unit.tx)
                .await
        };
        let written = match written.await {
            Err(StoreError::Duplicate(_)) => Err(Error::AlreadyExists(format!(
                "application {} already has a pipeline named {}; update it with UpdatePipeline or pick another name",
                quote(&new.application),
                quote(&new.name)
            ))),
            other => other.map_err(Error::from),
        };
        self.finish(unit, written).await?;
        tracing::info!(pipeline_id = %id, application = %new.application, name = %new.name, "pipeline created");
        self.pipeline(&id, None).await
    }

    pub async fn update_pipeline(&self, caller: &Caller, update: PipelineUpdate) -> Result<PipelineRecord> {
        if update.expected_version < 1 {
            return Err(Error::invalid(
                "expected_version",
                "the version you read, from 1; GetPipeline tells the latest",
            ));
        }
        let id = &update.pipeline_id;
        let current = self.pipeline_for(caller, id, None).await?;
        authorize::execute_somewhere(caller, &current.application)?;
        update.definition.validate(&self.settings().limits).map_err(Error::Invalid)?;
        authorize::execute(caller, &current.application, &update.definition, 0)?;
        let unit = self.unit(None).await?;
        let written = async {
            if !pipelines::add_version(&unit.tx, id, update.expected_version, &update.definition, now()).await? {
                let latest = pipelines::latest_version(&unit.tx, id).await?;
                return Err(match latest {
                    None => Error::not_found("pipeline", id),
                    Some(latest) => Error::Conflict(format!(
                        "pipeline {id} is at version {latest}, not {}: it changed since you read it; read it again and retry",
                        update.expected_version
                    )),
                });
            }
            Audit::new(caller, "pipeline.update", json!({ "pipeline_id": id, "version": update.expected_version + 1 }))
                .in_application(&current.application)
                .record(&unit.tx)
                .await?;
            Ok(())
        }
        .await;
        self.finish(unit, written).await?;
        tracing::info!(pipeline_id = %id, version = update.expected_version + 1, "pipeline updated");
        self.pipeline(id, None).await
    }

    /// The pipeline at `version` (or its latest), if `caller` may read it;
    /// one it may not read is not found, whatever the version asked for.
    pub async fn pipeline_for(&self, caller: &Caller, id: &str, version: Option<i64>) -> Result<PipelineRecord> {
        match self.pipeline(id, version).await {
            Ok(p) => {
                authorize::read_or_hide(caller, &p.application, "pipeline", id)?;
                Ok(p)
            }
            // "No such version" tells the pipeline exists: only to a reader.
            Err(Error::NotFound(versions)) if version.is_some() => {
                match pipelines::get(&self.store().reader(), id, None).await? {
                    Some(p) => {
                        authorize::read_or_hide(caller, &p.application, "pipeline", id)?;
                        Err(Error::NotFound(versions))
                    }
                    None => Err(Error::not_found("pipeline", id)),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The pipeline at `version`, or its latest version.
    pub async fn pipeline(&self, id: &str, version: Option<i64>) -> Result<PipelineRecord> {
        let reader = self.store().reader();
        match pipelines::get(&reader, id, version).await? {
            Some(p) => Ok(p),
            None => Err(self.missing_pipeline(&reader, id, version).await),
        }
    }

    /// Why pipeline `id` at `version` was not found, in words.
    pub(super) async fn missing_pipeline(&self, c: &impl ConnectionTrait, id: &str, version: Option<i64>) -> Error {
        match (pipelines::latest_version(c, id).await, version) {
            (Ok(Some(latest)), Some(v)) => {
                Error::NotFound(format!("pipeline {} has no version {v}; its versions are 1 to {latest}", quote(id)))
            }
            (Err(e), _) => e.into(),
            _ => Error::not_found("pipeline", id),
        }
    }

    /// A page of the pipelines `caller` may read; without `definitions`,
    /// each record's definition is left empty (and not read).
    pub async fn list_pipelines(
        &self,
        caller: &Caller,
        application: Option<&str>,
        after: Option<&str>,
        size: u64,
        definitions: bool,
    ) -> Result<Page<PipelineRecord>> {
        if let Some(app) = application {
            authorize::read(caller, app)?;
        }
        let readable = caller.readable_applications();
        let reader = self.store().reader();
        let mut items =
            pipelines::list(&reader, application, readable.as_deref(), after, size + 1, definitions).await?;
        Ok(Page::cut(&mut items, size, |p| p.id.clone()))
    }
}

//! Pipeline files: YAML of the same shape as a `CreatePipelineRequest` in
//! proto3 JSON (`application`, `name`, `definition: {variables, stages}`),
//! field names in camelCase or snake_case, durations like `600s`, enums by
//! name. The YAML is decoded straight into a dynamic message of the
//! descriptor, so unknown fields, bad enum values and malformed durations are
//! refused with the path of the field (and its line) before anything is sent.

use prost_reflect::{DeserializeOptions, DynamicMessage};

use super::output::message_descriptor;
use crate::proto as pb;

/// Why a pipeline file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError(pub String);

impl std::fmt::Display for YamlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses one pipeline document.
pub fn parse_pipeline(text: &str) -> Result<pb::CreatePipelineRequest, YamlError> {
    let desc = message_descriptor("reprise.v1.CreatePipelineRequest").map_err(|f| YamlError(f.message))?;
    let mut documents = serde_yaml_ng::Deserializer::from_str(text);
    let Some(document) = documents.next() else {
        return Err(YamlError("the file is empty: expected application, name and definition".into()));
    };
    // Scalars are read as the field wants them (`defaultValue: 8080` is the
    // string "8080"), since serde_yaml_ng hands a plain scalar to a string visitor.
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(document, &mut track);
    let message = DynamicMessage::deserialize_with_options(desc, tracked, &options).map_err(|e| {
        let path = track.path().to_string();
        let error = e.to_string();
        if path.is_empty() || path == "?" || error.starts_with(&path) {
            YamlError(error)
        } else {
            YamlError(format!("{path}: {error}"))
        }
    })?;
    if documents.next().is_some() {
        return Err(YamlError("the file holds several YAML documents; apply one pipeline per file".into()));
    }
    let request = message
        .transcode_to::<pb::CreatePipelineRequest>()
        .map_err(|e| YamlError(format!("cannot convert the pipeline: {e}")))?;
    if request == pb::CreatePipelineRequest::default() {
        return Err(YamlError("the file is empty: expected application, name and definition".into()));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPELINE: &str = r#"
application: shop
name: deploy
definition:
  description: the web shop
  variables:
    - name: region
      defaultValue: eu
    - name: port
      default_value: 8080
  stages:
    - name: build
      environment: {name: ci, type: ENVIRONMENT_TYPE_NON_PROD}
      workflows:
        workflows:
          - name: compile
            command: echo building $REPRISE_ARTIFACT_WEB
            taskQueue: builds
            timeout: 600s
            maxAttempts: 2
    - name: canary
      environment: {name: prod-eu, type: ENVIRONMENT_TYPE_PROD}
      skipCondition:
        expression: region == "us"
      workflows:
        workflows: [{name: a, command: sleep 1}, {name: b, command: sleep 1}]
    - name: gate
      environment: {name: prod, type: ENVIRONMENT_TYPE_PROD}
      approval: {timeout: 3600s, instructions: look at the canary}
"#;

    #[test]
    fn a_full_pipeline_converts() {
        let request = parse_pipeline(PIPELINE).unwrap();
        assert_eq!(request.application, "shop");
        assert_eq!(request.name, "deploy");
        let definition = request.definition.unwrap();
        assert_eq!(definition.description, "the web shop");
        assert_eq!(definition.variables.len(), 2);
        assert_eq!(definition.variables[0].default_value.as_deref(), Some("eu"));
        assert_eq!(definition.variables[1].default_value.as_deref(), Some("8080"), "a YAML number becomes the string");
        assert_eq!(definition.stages.len(), 3);
        let build = &definition.stages[0];
        assert_eq!(build.environment.as_ref().unwrap().r#type, pb::EnvironmentType::NonProd as i32);
        let Some(pb::stage::Kind::Workflows(w)) = &build.kind else { panic!("workflows: {build:?}") };
        assert_eq!(w.workflows[0].task_queue, "builds");
        assert_eq!(w.workflows[0].timeout, Some(prost_types::Duration { seconds: 600, nanos: 0 }));
        assert_eq!(w.workflows[0].max_attempts, 2);
        let canary = &definition.stages[1];
        assert_eq!(
            canary.skip_condition.as_ref().unwrap().condition,
            Some(pb::skip_condition::Condition::Expression("region == \"us\"".into()))
        );
        let Some(pb::stage::Kind::Approval(a)) = &definition.stages[2].kind else { panic!("approval") };
        assert_eq!(a.timeout, Some(prost_types::Duration { seconds: 3600, nanos: 0 }));
        assert_eq!(a.instructions, "look at the canary");
    }

    #[test]
    fn an_unset_default_stays_unset() {
        let request = parse_pipeline("application: a\nname: n\ndefinition:\n  variables: [{name: v}]\n").unwrap();
        assert_eq!(request.definition.unwrap().variables[0].default_value, None);
    }

    #[test]
    fn an_unknown_field_is_named_with_its_path() {
        let text = "application: a\nname: n\ndefinition:\n  stages:\n    - name: s\n      enviroment: {name: x}\n";
        let error = parse_pipeline(text).unwrap_err().0;
        assert!(error.contains("definition.stages[0]"), "{error}");
        assert!(error.contains("enviroment"), "{error}");
    }

    #[test]
    fn a_bad_enum_value_is_named_with_its_path() {
        let text = "application: a\nname: n\ndefinition:\n  stages:\n    - name: s\n      environment: {name: x, type: PRODUCTION}\n";
        let error = parse_pipeline(text).unwrap_err().0;
        assert!(error.contains("definition.stages[0].environment.type"), "{error}");
        assert!(error.contains("PRODUCTION"), "{error}");
    }

    #[test]
    fn a_bad_duration_is_named_with_its_path() {
        let text =
            "application: a\nname: n\ndefinition:\n  stages:\n    - name: s\n      approval: {timeout: 10 minutes}\n";
        let error = parse_pipeline(text).unwrap_err().0;
        assert!(error.contains("definition.stages[0].approval.timeout"), "{error}");
    }

    #[test]
    fn a_wrong_shape_is_named_with_its_path() {
        let error = parse_pipeline("application: a\nname: n\ndefinition:\n  stages: build\n").unwrap_err().0;
        assert!(error.contains("definition.stages"), "{error}");
    }

    #[test]
    fn broken_yaml_and_empty_files_are_refused() {
        let error = parse_pipeline("application: [a\n").unwrap_err().0;
        assert!(error.contains("line"), "{error}");
        assert!(parse_pipeline("").unwrap_err().0.contains("empty"));
        assert!(parse_pipeline("# nothing\n").unwrap_err().0.contains("empty"));
        assert!(parse_pipeline("application: a\n---\napplication: b\n").unwrap_err().0.contains("several"));
    }
}

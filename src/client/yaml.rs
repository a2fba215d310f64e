//! Pipeline files: YAML of the same shape as a `CreatePipelineRequest` in
//! proto3 JSON (`application`, `name`, `definition: {variables, stages}`),
//! field names in camelCase or snake_case, enums by name. The YAML is
//! decoded into a dynamic message of the descriptor, so unknown fields, bad
//! enum values and malformed durations are refused with the path of the
//! field before anything is sent.
//!
//! Before that, the shorthands people write by hand are expanded, guided by
//! the descriptor so they apply wherever such a field is (see [`expand`]):
//! - a stage's `workflows` may be the list itself instead of `{workflows: [...]}`;
//! - enum values may be short and in any case: `NON_PROD`, `non_prod`,
//!   `non-prod` for `ENVIRONMENT_TYPE_NON_PROD`, `fail_fast` for
//!   `FAILURE_POLICY_FAIL_FAST` — as `--status failed` is on the command line;
//! - durations may be written as the server's flags take them: `90s`, `10m`,
//!   `1h30m`, `7d` (humantime), not only proto3's `600s`.

use prost_reflect::{DeserializeOptions, DynamicMessage, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_yaml_ng::Value;

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
    if documents.next().is_some() {
        return Err(YamlError("the file holds several YAML documents; apply one pipeline per file".into()));
    }
    let mut value: Value = serde::Deserialize::deserialize(document).map_err(|e| YamlError(e.to_string()))?;
    if value.is_null() {
        return Err(YamlError("the file is empty: expected application, name and definition".into()));
    }
    expand(&mut value, &desc, "")?;
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(value, &mut track);
    let message = DynamicMessage::deserialize_with_options(desc, tracked, &options).map_err(|e| {
        let path = track.path().to_string();
        let error = e.to_string();
        if path.is_empty() || path == "?" || error.starts_with(&path) {
            YamlError(error)
        } else {
            YamlError(format!("{path}: {error}"))
        }
    })?;
    let request = message
        .transcode_to::<pb::CreatePipelineRequest>()
        .map_err(|e| YamlError(format!("cannot convert the pipeline: {e}")))?;
    if request == pb::CreatePipelineRequest::default() {
        return Err(YamlError("the file is empty: expected application, name and definition".into()));
    }
    Ok(request)
}

/// Expands the shorthands in `value`, a message of type `message` at `path`.
fn expand(value: &mut Value, message: &MessageDescriptor, path: &str) -> Result<(), YamlError> {
    let Value::Mapping(map) = value else { return Ok(()) };
    for (key, item) in map.iter_mut() {
        let Some(name) = key.as_str() else { continue };
        // Unknown names are left for the decoder, which names them.
        let Some(field) = message.get_field_by_name(name).or_else(|| message.get_field_by_json_name(name)) else {
            continue;
        };
        let path = if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
        if field.is_map() {
            continue;
        }
        if field.is_list() {
            if let Value::Sequence(items) = item {
                for (i, item) in items.iter_mut().enumerate() {
                    expand_field(item, &field, &format!("{path}[{i}]"))?;
                }
            }
        } else {
            expand_field(item, &field, &path)?;
        }
    }
    Ok(())
}

/// One value of `field`.
fn expand_field(value: &mut Value, field: &FieldDescriptor, path: &str) -> Result<(), YamlError> {
    match field.kind() {
        Kind::Message(m) if m.full_name() == "google.protobuf.Duration" => duration(value, path),
        Kind::Message(m) => {
            // `workflows: [...]`: a message whose only list is given as a list.
            if let Value::Sequence(_) = value
                && let Some(list) = only_list(&m)
            {
                let items = std::mem::take(value);
                let mut map = serde_yaml_ng::Mapping::new();
                map.insert(Value::String(list.name().to_owned()), items);
                *value = Value::Mapping(map);
            }
            expand(value, &m, path)
        }
        Kind::Enum(e) => {
            enum_value(value, &e);
            Ok(())
        }
        // `defaultValue: 8080` means the string "8080".
        Kind::String => {
            match value {
                Value::Number(n) => *value = Value::String(n.to_string()),
                Value::Bool(b) => *value = Value::String(b.to_string()),
                _ => {}
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The one repeated field of messages of a message that has one
/// (`WorkflowStage.workflows`): a list given for the message is that field.
fn only_list(message: &MessageDescriptor) -> Option<FieldDescriptor> {
    let mut lists = message.fields().filter(|f| f.is_list() && matches!(f.kind(), Kind::Message(_)));
    let list = lists.next()?;
    lists.next().is_none().then_some(list)
}

/// `non_prod` → `ENVIRONMENT_TYPE_NON_PROD` when that is a value of the
/// enum; anything else is left for the decoder to refuse with its path.
fn enum_value(value: &mut Value, e: &EnumDescriptor) {
    let Value::String(text) = value else { return };
    if e.get_value_by_name(text).is_some() {
        return;
    }
    let upper = text.trim().to_ascii_uppercase().replace('-', "_");
    // Values are prefixed by the enum's name, as `ENVIRONMENT_TYPE_UNSPECIFIED` shows.
    let prefix = e
        .values()
        .find(|v| v.number() == 0)
        .and_then(|v| v.name().strip_suffix("UNSPECIFIED").map(str::to_owned))
        .unwrap_or_default();
    for candidate in [upper.clone(), format!("{prefix}{upper}")] {
        if e.get_value_by_name(&candidate).is_some_and(|v| v.number() != 0) {
            *text = candidate;
            return;
        }
    }
}

/// A humantime duration (`1h30m`, `10m`, `7d`) as proto3 JSON (`5400s`).
fn duration(value: &mut Value, path: &str) -> Result<(), YamlError> {
    let Value::String(text) = value else { return Ok(()) };
    let trimmed = text.trim();
    // proto3 JSON already: seconds with up to nine decimals, then `s`.
    if trimmed.strip_suffix('s').is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok()) {
        return Ok(());
    }
    let parsed = humantime::parse_duration(trimmed).map_err(|e| {
        YamlError(format!("{path}: {trimmed:?} is not a duration ({e}); write it like 90s, 10m, 1h30m or 7d"))
    })?;
    *text = match parsed.subsec_nanos() {
        0 => format!("{}s", parsed.as_secs()),
        nanos => format!("{}.{nanos:09}s", parsed.as_secs()),
    };
    Ok(())
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
    fn shorthands_expand() {
        let text = r#"
application: shop
name: deploy
definition:
  stages:
    - name: build
      environment: {name: ci, type: non_prod}
      workflows:
        - {name: compile, command: make, timeout: 1h30m}
    - name: ship
      environment: {name: prod, type: PROD}
      workflows:
        failure_policy: fail-fast
        workflows: [{name: a, command: "true", timeout: 2.5s}]
    - name: gate
      environment: {name: prod, type: ENVIRONMENT_TYPE_PROD}
      approval: {timeout: 7d}
"#;
        let definition = parse_pipeline(text).unwrap().definition.unwrap();
        let build = &definition.stages[0];
        assert_eq!(build.environment.as_ref().unwrap().r#type, pb::EnvironmentType::NonProd as i32);
        let Some(pb::stage::Kind::Workflows(w)) = &build.kind else { panic!("workflows: {build:?}") };
        assert_eq!(w.workflows[0].timeout, Some(prost_types::Duration { seconds: 5400, nanos: 0 }));
        let Some(pb::stage::Kind::Workflows(w)) = &definition.stages[1].kind else { panic!("ship") };
        assert_eq!(w.failure_policy, pb::FailurePolicy::FailFast as i32);
        assert_eq!(w.workflows[0].timeout, Some(prost_types::Duration { seconds: 2, nanos: 500_000_000 }));
        let Some(pb::stage::Kind::Approval(a)) = &definition.stages[2].kind else { panic!("gate") };
        assert_eq!(a.timeout, Some(prost_types::Duration { seconds: 7 * 86400, nanos: 0 }));
    }

    #[test]
    fn a_short_enum_name_that_is_no_value_is_still_refused() {
        let text = "application: a\nname: n\ndefinition:\n  stages:\n    - name: s\n      environment: {name: x, type: unspecified}\n";
        let error = parse_pipeline(text).unwrap_err().0;
        assert!(error.contains("definition.stages[0].environment.type"), "{error}");
    }

    /// The README's example file is one people copy: it must stay valid.
    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../README.md");
        let cli = readme.split("\n## CLI\n").nth(1).expect("a CLI section");
        let block = cli.split("```yaml\n").nth(1).and_then(|b| b.split("```").next()).expect("a yaml block");
        let request = parse_pipeline(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        let definition = request.definition.unwrap();
        assert_eq!(definition.stages.len(), 4);
        let Some(pb::stage::Kind::Approval(gate)) = &definition.stages[2].kind else { panic!("gate") };
        assert_eq!(gate.timeout.unwrap().seconds, 3600);
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
            "application: a\nname: n\ndefinition:\n  stages:\n    - name: s\n      approval: {timeout: ten minutes}\n";
        let error = parse_pipeline(text).unwrap_err().0;
        assert!(error.contains("definition.stages[0].approval.timeout"), "{error}");
        assert!(error.contains("1h30m"), "the error shows how to write one: {error}");
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

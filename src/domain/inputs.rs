//! Binding a start's inputs to a pipeline's declared variables.

use std::collections::BTreeMap;

use super::{
    Violation,
    limits::{Limits, Text, artifact_env_name, check_text, key_path, quote, text},
    pipeline::Variable,
};

/// Resolves the variables of a new execution: every declared variable gets
/// the given value or its default; undeclared names and unbound variables
/// without default are refused, all at once.
pub fn bind_variables(
    declared: &[Variable],
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Vec<Violation>> {
    let mut out = Vec::new();
    for name in given.keys() {
        if !declared.iter().any(|v| &v.name == name) {
            let known: Vec<&str> = declared.iter().map(|v| v.name.as_str()).take(20).collect();
            out.push(Violation::new(
                key_path("variables", name),
                format!("the pipeline declares no variable {}; declared: [{}]", quote(name), known.join(", ")),
            ));
        }
    }
    let mut bound = BTreeMap::new();
    for var in declared {
        match given.get(&var.name).or(var.default_value.as_ref()) {
            Some(value) => {
                bound.insert(var.name.clone(), value.clone());
            }
            None => out.push(Violation::new(
                key_path("variables", &var.name),
                format!("variable {} has no default and must be bound", quote(&var.name)),
            )),
        }
    }
    if out.is_empty() { Ok(bound) } else { Err(out) }
}

/// The sizes of a start's variables: how many, and how long each name and
/// value. Names are checked against the pipeline by [`bind_variables`].
pub fn check_variables(variables: &BTreeMap<String, String>, limits: &Limits) -> Result<(), Vec<Violation>> {
    if variables.len() > limits.max_variables {
        return Err(vec![Violation::new(
            "variables",
            format!("at most {} variables, got {}", limits.max_variables, variables.len()),
        )]);
    }
    let mut out = Vec::new();
    for (name, value) in variables {
        let field = key_path("variables", name);
        check_text(&mut out, &field, name, limits.max_name_bytes, Text::Name, true);
        check_text(&mut out, &field, value, limits.max_variable_value_bytes, Text::Free, false);
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

/// Artifact names become environment variable suffixes, so they must be
/// plain, and two of them must not become the same variable (`web-1` and
/// `web_1` are both REPRISE_ARTIFACT_WEB_1).
pub fn check_artifacts(artifacts: &BTreeMap<String, String>, limits: &Limits) -> Result<(), Vec<Violation>> {
    if artifacts.len() > limits.max_artifacts {
        return Err(vec![Violation::new(
            "artifacts",
            format!("at most {} artifacts, got {}", limits.max_artifacts, artifacts.len()),
        )]);
    }
    let mut out = Vec::new();
    let mut exported: BTreeMap<String, &str> = BTreeMap::new();
    for (name, version) in artifacts {
        let field = key_path("artifacts", name);
        if name.is_empty()
            || name.len() > limits.max_name_bytes
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            out.push(Violation::new(
                field,
                format!(
                    "artifact names use letters, digits, '_', '-' and '.', at most {} of them",
                    limits.max_name_bytes
                ),
            ));
        } else if version.trim().is_empty() {
            out.push(Violation::new(field, "an artifact needs a version or build"));
        } else if let Err(v) = text(&field, version, limits.max_artifact_version_bytes, Text::Name, true) {
            out.push(v);
        } else if let Some(other) = exported.insert(artifact_env_name(name), name) {
            out.push(Violation::new(
                field,
                format!(
                    "artifacts {} and {} would both be exported as {}; rename one",
                    quote(other),
                    quote(name),
                    artifact_env_name(name)
                ),
            ));
        }
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, default: Option<&str>) -> Variable {
        Variable {
            name: name.into(),
            default_value: default.map(Into::into),
            description: String::new(),
            ..Default::default()
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_fill_unbound_variables_and_given_values_win() {
        let declared = [var("region", Some("eu")), var("tier", None)];
        let bound = bind_variables(&declared, &map(&[("tier", "gold")])).unwrap();
        assert_eq!(bound, map(&[("region", "eu"), ("tier", "gold")]));
        let bound = bind_variables(&declared, &map(&[("tier", "x"), ("region", "us")])).unwrap();
        assert_eq!(bound["region"], "us");
    }

    #[test]
    fn unknown_and_missing_variables_are_named() {
        let declared = [var("tier", None)];
        let errs = bind_variables(&declared, &map(&[("colour", "red")])).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["variables[colour]", "variables[tier]"]);
    }

    #[test]
    fn artifact_names_must_be_plain() {
        let l = Limits::default();
        assert!(check_artifacts(&map(&[("web", "1.2.3")]), &l).is_ok());
        assert!(check_artifacts(&map(&[("we b", "1")]), &l).is_err());
        assert!(check_artifacts(&map(&[("web", " ")]), &l).is_err());
        assert!(check_artifacts(&map(&[("web", "1\0")]), &l).is_err());
        assert!(check_artifacts(&map(&[(&"w".repeat(129), "1")]), &l).is_err());
        assert!(check_artifacts(&map(&[("web", &"1".repeat(257))]), &l).is_err());
    }

    #[test]
    fn artifacts_exported_as_the_same_variable_are_refused() {
        let l = Limits::default();
        let errs = check_artifacts(&map(&[("web-1", "1"), ("web_1", "2"), ("api", "3")]), &l).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].description.contains("REPRISE_ARTIFACT_WEB_1"), "{errs:?}");
        assert!(check_artifacts(&map(&[("web.1", "1"), ("WEB-1", "1")]), &l).is_err());
    }

    #[test]
    fn too_many_or_too_large_inputs_are_refused() {
        let l = Limits { max_variables: 2, max_artifacts: 2, ..Limits::default() };
        let three = map(&[("a", "1"), ("b", "1"), ("c", "1")]);
        assert_eq!(check_variables(&three, &l).unwrap_err()[0].field, "variables");
        assert_eq!(check_artifacts(&three, &l).unwrap_err()[0].field, "artifacts");
        let big = map(&[("a", &"v".repeat(4097))]);
        assert_eq!(check_variables(&big, &Limits::default()).unwrap_err()[0].field, "variables[a]");
        let nul = map(&[("a\0", "v")]);
        assert!(check_variables(&nul, &Limits::default()).unwrap_err()[0].field.starts_with("variables[\""));
    }
}

//! Binding a start's inputs to a pipeline's declared variables.

use std::collections::BTreeMap;

use super::{Violation, pipeline::Variable};

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
            let known: Vec<&str> = declared.iter().map(|v| v.name.as_str()).collect();
            out.push(Violation::new(
                format!("variables[{name}]"),
                format!("the pipeline declares no variable {name:?}; declared: [{}]", known.join(", ")),
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
                format!("variables[{}]", var.name),
                format!("variable {:?} has no default and must be bound", var.name),
            )),
        }
    }
    if out.is_empty() { Ok(bound) } else { Err(out) }
}

/// Artifact names become environment variable suffixes, so they must be plain.
pub fn check_artifacts(artifacts: &BTreeMap<String, String>) -> Result<(), Vec<Violation>> {
    let out: Vec<Violation> = artifacts
        .iter()
        .filter_map(|(name, version)| {
            let field = format!("artifacts[{name}]");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
                Some(Violation::new(field, "artifact names use letters, digits, '_', '-' and '.'"))
            } else if version.trim().is_empty() {
                Some(Violation::new(field, "an artifact needs a version or build"))
            } else {
                None
            }
        })
        .collect();
    if out.is_empty() { Ok(()) } else { Err(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, default: Option<&str>) -> Variable {
        Variable { name: name.into(), default_value: default.map(Into::into), description: String::new() }
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
        assert!(check_artifacts(&map(&[("web", "1.2.3")])).is_ok());
        assert!(check_artifacts(&map(&[("we b", "1")])).is_err());
        assert!(check_artifacts(&map(&[("web", " ")])).is_err());
    }
}

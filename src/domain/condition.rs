//! Skip conditions: CEL expressions over an execution's variables, checked
//! when a pipeline is written and evaluated when a stage is about to start.

use std::collections::BTreeMap;

use cel_interpreter::{Context, Program, Value};

/// Compiles `source` and checks it names only `declared` variables.
/// Returns a description of the problem, for a [`super::Violation`].
pub fn check(source: &str, declared: &[&str]) -> Result<(), String> {
    if source.trim().is_empty() {
        return Err("expression is empty; set `always` or write a CEL expression".into());
    }
    let program = compile(source)?;
    let references = program.references();
    let mut unknown: Vec<&str> = references.variables().into_iter().filter(|v| !declared.contains(v)).collect();
    unknown.sort_unstable();
    if !unknown.is_empty() {
        return Err(format!(
            "expression names undeclared variable(s) {}; declare them in definition.variables",
            unknown.join(", ")
        ));
    }
    // Evaluating with every variable bound to "" catches type errors such as
    // `region + 1` early; a non-bool result is refused too.
    let sample: BTreeMap<String, String> = declared.iter().map(|v| (v.to_string(), String::new())).collect();
    evaluate_program(&program, &sample).map(|_| ())
}

/// Evaluates a skip condition; `true` means skip the stage.
pub fn evaluate(source: &str, variables: &BTreeMap<String, String>) -> Result<bool, String> {
    evaluate_program(&compile(source)?, variables)
}

fn compile(source: &str) -> Result<Program, String> {
    // cel-parser 0.10 panics on some malformed input ("region =="); a panic
    // must not take a request down with it, so it counts as a parse error.
    match std::panic::catch_unwind(|| Program::compile(source)) {
        Ok(Ok(program)) => Ok(program),
        Ok(Err(e)) => Err(format!("expression does not parse: {e}")),
        Err(_) => Err("expression does not parse".into()),
    }
}

fn evaluate_program(program: &Program, variables: &BTreeMap<String, String>) -> Result<bool, String> {
    let mut context = Context::default();
    for (name, value) in variables {
        context.add_variable_from_value(name.clone(), value.clone());
    }
    match program.execute(&context) {
        Ok(Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("expression must evaluate to a bool, got {other:?}")),
        Err(e) => Err(format!("expression failed to evaluate: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn evaluates_comparisons_over_string_variables() {
        let v = vars(&[("region", "eu"), ("dry_run", "true")]);
        assert_eq!(evaluate(r#"region == "eu""#, &v), Ok(true));
        assert_eq!(evaluate(r#"region == "us" || dry_run == "false""#, &v), Ok(false));
        assert_eq!(evaluate(r#"region.startsWith("e") && size(region) == 2"#, &v), Ok(true));
    }

    #[test]
    fn accepts_expressions_over_declared_variables() {
        assert_eq!(check(r#"region == "eu""#, &["region"]), Ok(()));
        assert_eq!(check("true", &[]), Ok(()));
    }

    #[test]
    fn refuses_undeclared_variables_by_name() {
        let err = check(r#"region == "eu" && tier == "gold""#, &["region"]).unwrap_err();
        assert!(err.contains("undeclared variable(s) tier"), "{err}");
    }

    #[test]
    fn refuses_malformed_and_non_bool_expressions() {
        assert!(check(r#"region == "#, &["region"]).unwrap_err().contains("does not parse"));
        assert!(check(r#"region"#, &["region"]).unwrap_err().contains("must evaluate to a bool"));
        assert!(check("  ", &[]).unwrap_err().contains("empty"));
        assert!(check("region + 1 == 2", &["region"]).is_err());
    }
}

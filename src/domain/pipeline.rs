//! What a pipeline is, and the rules a definition must follow before it is
//! stored. Every rule is checked here, at write time, so a bad pipeline never
//! reaches a run.

use std::{collections::HashSet, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    Violation, condition,
    limits::{self, Limits, Text, quote, variable_env_name},
};

pub const DEFAULT_TASK_QUEUE: &str = "default";
pub const DEFAULT_WORKFLOW_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const MAX_MAX_ATTEMPTS: u32 = 20;

/// The caller-written part of a pipeline version. Stored as JSON, so fields
/// may only be added (with defaults), never renamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Definition {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub variables: Vec<Variable>,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Variable {
    pub name: String,
    pub default_value: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Its value is sealed at start, never shown, and given only to the
    /// workflows that list it.
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvironmentType {
    Prod,
    NonProd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// Shared by every run of the definition (see [`super::execution::StageRun::pending`]).
    pub name: Arc<str>,
    pub environment_name: String,
    pub environment_type: EnvironmentType,
    pub skip: Option<Skip>,
    pub kind: StageKind,
    /// What a workflow stage does when one of its workflows fails.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
}

/// When a failing workflow ends its stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailurePolicy {
    /// The stage ends when every workflow has ended (the default).
    #[default]
    WaitForAll,
    /// The first failure cancels the running siblings and ends the stage FAILED at once.
    FailFast,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Skip {
    Always,
    When(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StageKind {
    Workflows(Vec<Workflow>),
    Approval { timeout_ms: u64, instructions: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Workflow {
    pub name: String,
    pub task_queue: String,
    pub command: String,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    /// The secret variables this workflow's tasks receive.
    #[serde(default)]
    pub secrets: Vec<String>,
}

impl Stage {
    pub fn is_approval(&self) -> bool {
        matches!(self.kind, StageKind::Approval { .. })
    }
}

impl Definition {
    /// The cheap checks: sizes, counts and characters of every field, and the
    /// shape of skip conditions (see [`condition::scan`]). Linear in the size
    /// of the definition and free of recursion, so they run at the edge,
    /// before permissions are checked and before any parser sees the text.
    /// Collects at most [`MAX_VIOLATIONS`] violations.
    pub fn check_limits(&self, limits: &Limits) -> Vec<Violation> {
        let mut out = Violations::default();
        let o = &mut out;
        o.text("definition.description", &self.description, limits.max_description_bytes, Text::Free, false);
        if self.variables.len() > limits.max_variables {
            o.push(Violation::new(
                "definition.variables",
                format!("at most {} variables, got {}", limits.max_variables, self.variables.len()),
            ));
        }
        for (i, v) in self.variables.iter().enumerate().take(limits.max_variables) {
            let at = format!("definition.variables[{i}]");
            o.text(&format!("{at}.name"), &v.name, limits.max_name_bytes, Text::Name, true);
            if let Some(default) = &v.default_value {
                o.text(&format!("{at}.default_value"), default, limits.max_variable_value_bytes, Text::Free, false);
            }
            o.text(&format!("{at}.description"), &v.description, limits.max_description_bytes, Text::Free, false);
        }
        if self.stages.len() > limits.max_stages {
            o.push(Violation::new(
                "definition.stages",
                format!("at most {} stages, got {}", limits.max_stages, self.stages.len()),
            ));
            return out.0;
        }
        let total: usize = self.stages.iter().map(|s| s.workflows().len()).sum();
        if total > limits.max_workflows {
            o.push(Violation::new(
                "definition.stages",
                format!("at most {} workflows in all stages together, got {total}", limits.max_workflows),
            ));
        }
        for (i, stage) in self.stages.iter().enumerate() {
            if o.full() {
                break;
            }
            stage.check_limits(&format!("definition.stages[{i}]"), limits, o);
        }
        out.0
    }

    /// Checks every rule and returns all violations, so a caller fixes them
    /// in one go. The limits come first: a definition that breaks them is
    /// refused for that alone, before any skip condition is compiled.
    pub fn validate(&self, limits: &Limits) -> Result<(), Vec<Violation>> {
        let out = self.check_limits(limits);
        if !out.is_empty() {
            return Err(out);
        }
        let mut out = Violations::default();
        let declared = self.validate_variables(&mut out);
        let secrets = self.secret_names();
        if self.stages.is_empty() {
            out.push(Violation::new("definition.stages", "a pipeline needs at least one stage"));
        }
        let mut names = HashSet::new();
        for (i, stage) in self.stages.iter().enumerate() {
            if out.full() {
                break;
            }
            let at = format!("definition.stages[{i}]");
            if !names.insert(&*stage.name) {
                out.push(Violation::new(
                    format!("{at}.name"),
                    format!("duplicate stage name {}; stage names must be unique", quote(&stage.name)),
                ));
            }
            stage.validate(&at, &declared, &secrets, limits, &mut out);
        }
        if out.0.is_empty() { Ok(()) } else { Err(out.0) }
    }

    fn validate_variables(&self, out: &mut Violations) -> Vec<&str> {
        let mut seen = HashSet::new();
        let mut exported = HashSet::new();
        for (i, v) in self.variables.iter().enumerate() {
            let field = format!("definition.variables[{i}].name");
            if !is_identifier(&v.name) {
                out.push(Violation::new(
                    field,
                    format!("{} is not a valid variable name; use letters, digits and underscores, not starting with a digit", quote(&v.name)),
                ));
            } else if !seen.insert(v.name.as_str()) {
                out.push(Violation::new(field, format!("duplicate variable {}", quote(&v.name))));
            } else if !exported.insert(variable_env_name(&v.name)) {
                out.push(Violation::new(
                    field,
                    format!(
                        "variable {} is exported to workflows as {}, like another variable; names must differ in more than case",
                        quote(&v.name),
                        variable_env_name(&v.name)
                    ),
                ));
            }
            if v.secret && v.default_value.is_some() {
                out.push(Violation::new(
                    format!("definition.variables[{i}].default_value"),
                    format!(
                        "secret variable {} cannot have a default: it would be stored in the pipeline for every reader to see; bind it at start",
                        quote(&v.name)
                    ),
                ));
            }
        }
        self.variables.iter().filter(|v| !v.secret).map(|v| v.name.as_str()).collect()
    }

    /// The names of the secret variables.
    pub fn secret_names(&self) -> Vec<&str> {
        self.variables.iter().filter(|v| v.secret).map(|v| v.name.as_str()).collect()
    }
}

impl Stage {
    /// The workflows of a workflow stage; none for an approval.
    pub fn workflows(&self) -> &[Workflow] {
        match &self.kind {
            StageKind::Workflows(w) => w,
            StageKind::Approval { .. } => &[],
        }
    }

    fn check_limits(&self, at: &str, limits: &Limits, o: &mut Violations) {
        o.text(&format!("{at}.name"), &self.name, limits.max_name_bytes, Text::Name, true);
        o.text(&format!("{at}.environment.name"), &self.environment_name, limits.max_name_bytes, Text::Name, true);
        if let Some(Skip::When(expr)) = &self.skip {
            let field = format!("{at}.skip_condition.expression");
            if !o.text(&field, expr, limits.max_expression_bytes, Text::Free, false)
                && let Err(e) = condition::scan(expr, limits)
            {
                o.push(Violation::new(field, e));
            }
        }
        match &self.kind {
            StageKind::Workflows(workflows) => {
                if workflows.len() > limits.max_workflows_per_stage {
                    o.push(Violation::new(
                        format!("{at}.workflows.workflows"),
                        format!(
                            "at most {} workflows in a stage, got {}",
                            limits.max_workflows_per_stage,
                            workflows.len()
                        ),
                    ));
                    return;
                }
                for (j, w) in workflows.iter().enumerate() {
                    if o.full() {
                        return;
                    }
                    let wf = format!("{at}.workflows.workflows[{j}]");
                    o.text(&format!("{wf}.name"), &w.name, limits.max_name_bytes, Text::Name, true);
                    o.text(&format!("{wf}.task_queue"), &w.task_queue, limits.max_name_bytes, Text::Name, true);
                    o.text(&format!("{wf}.command"), &w.command, limits.max_command_bytes, Text::Free, true);
                    if w.secrets.len() > limits.max_variables {
                        o.push(Violation::new(
                            format!("{wf}.secrets"),
                            format!("at most {} secrets, got {}", limits.max_variables, w.secrets.len()),
                        ));
                    }
                    for (k, name) in w.secrets.iter().enumerate().take(limits.max_variables) {
                        o.text(&format!("{wf}.secrets[{k}]"), name, limits.max_name_bytes, Text::Name, true);
                    }
                    if w.timeout_ms > limits.max_workflow_timeout_ms {
                        o.push(Violation::new(
                            format!("{wf}.timeout"),
                            format!("at most {}s", limits.max_workflow_timeout_ms / 1000),
                        ));
                    }
                }
            }
            StageKind::Approval { timeout_ms, instructions } => {
                let field = format!("{at}.approval.instructions");
                o.text(&field, instructions, limits.max_description_bytes, Text::Free, false);
                if *timeout_ms > limits.max_approval_timeout_ms {
                    o.push(Violation::new(
                        format!("{at}.approval.timeout"),
                        format!("at most {}s", limits.max_approval_timeout_ms / 1000),
                    ));
                }
            }
        }
    }

    fn validate(&self, at: &str, declared: &[&str], secrets: &[&str], limits: &Limits, out: &mut Violations) {
        if let Some(Skip::When(expr)) = &self.skip
            && let Err(e) = condition::check(expr, declared, secrets, limits)
        {
            out.push(Violation::new(format!("{at}.skip_condition.expression"), e));
        }
        match &self.kind {
            StageKind::Workflows(workflows) => validate_workflows(at, workflows, secrets, out),
            StageKind::Approval { timeout_ms, .. } if *timeout_ms == 0 => {
                out.push(Violation::new(format!("{at}.approval.timeout"), "timeout must be positive"))
            }
            StageKind::Approval { .. } => {}
        }
    }
}

fn validate_workflows(at: &str, workflows: &[Workflow], secrets: &[&str], out: &mut Violations) {
    if workflows.is_empty() {
        out.push(Violation::new(format!("{at}.workflows.workflows"), "a workflow stage needs at least one workflow"));
    }
    let mut names = HashSet::new();
    for (j, w) in workflows.iter().enumerate() {
        if out.full() {
            return;
        }
        let wf = format!("{at}.workflows.workflows[{j}]");
        if !names.insert(w.name.as_str()) {
            out.push(Violation::new(
                format!("{wf}.name"),
                format!("duplicate workflow name {} in this stage", quote(&w.name)),
            ));
        }
        if w.timeout_ms == 0 {
            out.push(Violation::new(format!("{wf}.timeout"), "timeout must be positive"));
        }
        if w.max_attempts == 0 || w.max_attempts > MAX_MAX_ATTEMPTS {
            out.push(Violation::new(format!("{wf}.max_attempts"), format!("must be between 1 and {MAX_MAX_ATTEMPTS}")));
        }
        for (k, name) in w.secrets.iter().enumerate() {
            if !secrets.contains(&name.as_str()) {
                out.push(Violation::new(
                    format!("{wf}.secrets[{k}]"),
                    format!("{} is not a secret variable of this pipeline; declare it with secret: true", quote(name)),
                ));
            }
        }
    }
}

/// At most this many violations are collected: enough to fix a definition
/// in a few rounds, and a refusal stays small whatever the caller sent.
pub const MAX_VIOLATIONS: usize = 100;

/// Violations, collected up to [`MAX_VIOLATIONS`].
#[derive(Default)]
struct Violations(Vec<Violation>);

impl Violations {
    fn push(&mut self, v: Violation) {
        if !self.full() {
            self.0.push(v);
        }
    }

    fn full(&self) -> bool {
        self.0.len() >= MAX_VIOLATIONS
    }

    /// Checks one string; true if it broke a rule.
    fn text(&mut self, field: &str, value: &str, max: usize, kind: Text, required: bool) -> bool {
        match limits::text(field, value, max, kind, required) {
            Ok(()) => false,
            Err(v) => {
                self.push(v);
                true
            }
        }
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn workflow(name: &str) -> Workflow {
        Workflow {
            name: name.into(),
            task_queue: DEFAULT_TASK_QUEUE.into(),
            command: "true".into(),
            timeout_ms: 60_000,
            max_attempts: 3,
            secrets: vec![],
        }
    }

    pub fn stage(name: &str, workflows: &[&str]) -> Stage {
        Stage {
            name: name.into(),
            environment_name: "staging".into(),
            environment_type: EnvironmentType::NonProd,
            skip: None,
            kind: StageKind::Workflows(workflows.iter().map(|w| workflow(w)).collect()),
            failure_policy: FailurePolicy::WaitForAll,
        }
    }

    fn fields(def: &Definition) -> Vec<String> {
        def.validate(&Limits::default()).unwrap_err().into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_sound_definition_passes() {
        let def =
            Definition { stages: vec![stage("build", &["a"]), stage("deploy", &["x", "y"])], ..Default::default() };
        assert_eq!(def.validate(&Limits::default()), Ok(()));
    }

    /// Each limit, broken once: the violation names the field and the limit.
    #[test]
    fn each_limit_names_its_field_and_its_value() {
        let l = Limits::default();
        let one = |edit: &dyn Fn(&mut Definition)| {
            let mut def = Definition { stages: vec![stage("a", &["w"])], ..Default::default() };
            edit(&mut def);
            let out = def.check_limits(&l);
            assert_eq!(def.validate(&l).unwrap_err(), out, "validate refuses what check_limits refuses");
            assert_eq!(out.len(), 1, "{out:?}");
            (out[0].field.clone(), out[0].description.clone())
        };
        fn wf(d: &mut Definition) -> &mut Workflow {
            match &mut d.stages[0].kind {
                StageKind::Workflows(w) => &mut w[0],
                StageKind::Approval { .. } => unreachable!(),
            }
        }
        fn long(n: usize) -> String {
            "x".repeat(n)
        }
        type Edit = Box<dyn Fn(&mut Definition)>;
        let cases: Vec<(Edit, &str, &str)> = vec![
            (Box::new(|d| d.description = long(4097)), "definition.description", "4096"),
            (Box::new(|d| d.stages[0].name = long(129).into()), "definition.stages[0].name", "128"),
            (Box::new(|d| d.stages[0].name = "a\0".into()), "definition.stages[0].name", "NUL"),
            (Box::new(|d| d.stages[0].name = "a\u{7}".into()), "definition.stages[0].name", "control"),
            (Box::new(|d| d.stages[0].environment_name = long(129)), "definition.stages[0].environment.name", "128"),
            (Box::new(|d| wf(d).name = long(129)), "definition.stages[0].workflows.workflows[0].name", "128"),
            (
                Box::new(|d| wf(d).task_queue = long(129)),
                "definition.stages[0].workflows.workflows[0].task_queue",
                "128",
            ),
            (
                Box::new(|d| wf(d).command = long(32 * 1024 + 1)),
                "definition.stages[0].workflows.workflows[0].command",
                "32768",
            ),
            (
                Box::new(|d| wf(d).command = "echo \0".into()),
                "definition.stages[0].workflows.workflows[0].command",
                "NUL",
            ),
            (
                Box::new(|d| wf(d).timeout_ms = 8 * 24 * 3600 * 1000),
                "definition.stages[0].workflows.workflows[0].timeout",
                "604800s",
            ),
            (
                Box::new(|d| d.stages[0].skip = Some(Skip::When(format!("{}true{}", "(".repeat(17), ")".repeat(17))))),
                "definition.stages[0].skip_condition.expression",
                "16 deep",
            ),
            (
                Box::new(|d| d.stages[0].skip = Some(Skip::When(format!("a{}", ".b".repeat(65))))),
                "definition.stages[0].skip_condition.expression",
                "64",
            ),
            (
                Box::new(|d| d.stages[0].skip = Some(Skip::When(long(4097)))),
                "definition.stages[0].skip_condition.expression",
                "4096",
            ),
            (
                Box::new(|d| d.stages = (0..501).map(|i| stage(&format!("s{i}"), &["w"])).collect()),
                "definition.stages",
                "500 stages",
            ),
            (
                Box::new(|d| {
                    let names: Vec<String> = (0..1001).map(|j| format!("w{j}")).collect();
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    d.stages = vec![stage("a", &names)];
                }),
                "definition.stages[0].workflows.workflows",
                "1000 workflows",
            ),
            (
                Box::new(|d| {
                    let names: Vec<String> = (0..1000).map(|j| format!("w{j}")).collect();
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    d.stages = (0..21).map(|i| stage(&format!("s{i}"), &names)).collect();
                }),
                "definition.stages",
                "20000 workflows",
            ),
            (
                Box::new(|d| {
                    d.variables = (0..101)
                        .map(|i| Variable {
                            name: format!("v{i}"),
                            default_value: None,
                            description: String::new(),
                            ..Default::default()
                        })
                        .collect()
                }),
                "definition.variables",
                "100 variables",
            ),
            (
                Box::new(|d| {
                    d.variables = vec![Variable {
                        name: "v".into(),
                        default_value: Some(long(4097)),
                        description: String::new(),
                        ..Default::default()
                    }]
                }),
                "definition.variables[0].default_value",
                "4096",
            ),
        ];
        for (edit, field, says) in cases {
            let (got, description) = one(&*edit);
            assert_eq!(got, field);
            assert!(description.contains(says), "{field}: {description:?} should say {says:?}");
        }
    }

    #[test]
    fn violations_are_capped_and_stop_collecting() {
        let stages = (0..500).map(|i| stage(&format!("s{i}"), &["a\0", "b\0"])).collect();
        let def = Definition { stages, ..Default::default() };
        assert_eq!(def.check_limits(&Limits::default()).len(), MAX_VIOLATIONS);
    }

    #[test]
    fn variables_exported_as_the_same_name_are_refused() {
        let var = |n: &str| Variable {
            name: n.into(),
            default_value: None,
            description: String::new(),
            ..Default::default()
        };
        let def = Definition {
            stages: vec![stage("a", &["w"])],
            variables: vec![var("region"), var("REGION")],
            ..Default::default()
        };
        let out = def.validate(&Limits::default()).unwrap_err();
        assert_eq!(out[0].field, "definition.variables[1].name");
        assert!(out[0].description.contains("REPRISE_VAR_REGION"), "{out:?}");
    }

    #[test]
    fn each_broken_rule_names_its_field() {
        assert_eq!(fields(&Definition::default()), ["definition.stages"]);

        let dup = Definition { stages: vec![stage("a", &["w"]), stage("a", &["w"])], ..Default::default() };
        assert_eq!(fields(&dup), ["definition.stages[1].name"]);

        let empty = Definition { stages: vec![stage("a", &[])], ..Default::default() };
        assert_eq!(fields(&empty), ["definition.stages[0].workflows.workflows"]);

        let dup_wf = Definition { stages: vec![stage("a", &["w", "w"])], ..Default::default() };
        assert_eq!(fields(&dup_wf), ["definition.stages[0].workflows.workflows[1].name"]);

        let mut unknown = stage("a", &["w"]);
        unknown.skip = Some(Skip::When(r#"region == "eu""#.into()));
        let def = Definition { stages: vec![unknown.clone()], ..Default::default() };
        assert_eq!(fields(&def), ["definition.stages[0].skip_condition.expression"]);

        unknown.skip = Some(Skip::When("region ==".into()));
        let def = Definition {
            stages: vec![unknown],
            variables: vec![Variable {
                name: "region".into(),
                default_value: None,
                description: String::new(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(fields(&def), ["definition.stages[0].skip_condition.expression"]);

        let bad_var = Definition {
            stages: vec![stage("a", &["w"])],
            variables: vec![Variable {
                name: "1x".into(),
                default_value: None,
                description: String::new(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(fields(&bad_var), ["definition.variables[0].name"]);
    }
}

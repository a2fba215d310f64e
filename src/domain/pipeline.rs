//! What a pipeline is, and the rules a definition must follow before it is
//! stored. Every rule is checked here, at write time, so a bad pipeline never
//! reaches a run.

use std::{collections::HashSet, time::Duration};

use serde::{Deserialize, Serialize};

use super::{Violation, condition};

pub const DEFAULT_TASK_QUEUE: &str = "default";
pub const DEFAULT_WORKFLOW_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const MAX_MAX_ATTEMPTS: u32 = 20;
const MAX_STAGES: usize = 200;
const MAX_WORKFLOWS: usize = 100;
const MAX_NAME_LEN: usize = 128;

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variable {
    pub name: String,
    pub default_value: Option<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvironmentType {
    Prod,
    NonProd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub name: String,
    pub task_queue: String,
    pub command: String,
    pub timeout_ms: u64,
    pub max_attempts: u32,
}

impl Stage {
    pub fn is_approval(&self) -> bool {
        matches!(self.kind, StageKind::Approval { .. })
    }
}

impl Definition {
    /// Checks every rule and returns all violations, so a caller fixes them in one go.
    pub fn validate(&self) -> Result<(), Vec<Violation>> {
        let mut out = Vec::new();
        let declared = self.validate_variables(&mut out);
        if self.stages.is_empty() {
            out.push(Violation::new("definition.stages", "a pipeline needs at least one stage"));
        }
        if self.stages.len() > MAX_STAGES {
            out.push(Violation::new("definition.stages", format!("at most {MAX_STAGES} stages")));
        }
        let mut names = HashSet::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let at = format!("definition.stages[{i}]");
            check_name(&mut out, &format!("{at}.name"), &stage.name);
            if !names.insert(stage.name.as_str()) {
                out.push(Violation::new(
                    format!("{at}.name"),
                    format!("duplicate stage name {:?}; stage names must be unique", stage.name),
                ));
            }
            stage.validate(&at, &declared, &mut out);
        }
        if out.is_empty() { Ok(()) } else { Err(out) }
    }

    fn validate_variables(&self, out: &mut Vec<Violation>) -> Vec<&str> {
        let mut seen = HashSet::new();
        for (i, v) in self.variables.iter().enumerate() {
            let field = format!("definition.variables[{i}].name");
            if !is_identifier(&v.name) {
                out.push(Violation::new(
                    field,
                    format!("{:?} is not a valid variable name; use letters, digits and underscores, not starting with a digit", v.name),
                ));
            } else if !seen.insert(v.name.as_str()) {
                out.push(Violation::new(field, format!("duplicate variable {:?}", v.name)));
            }
        }
        self.variables.iter().map(|v| v.name.as_str()).collect()
    }
}

impl Stage {
    fn validate(&self, at: &str, declared: &[&str], out: &mut Vec<Violation>) {
        if self.environment_name.trim().is_empty() {
            out.push(Violation::new(format!("{at}.environment.name"), "an environment name is required"));
        }
        if let Some(Skip::When(expr)) = &self.skip
            && let Err(e) = condition::check(expr, declared)
        {
            out.push(Violation::new(format!("{at}.skip_condition.expression"), e));
        }
        match &self.kind {
            StageKind::Workflows(workflows) => validate_workflows(at, workflows, out),
            StageKind::Approval { timeout_ms, .. } if *timeout_ms == 0 => {
                out.push(Violation::new(format!("{at}.approval.timeout"), "timeout must be positive"))
            }
            StageKind::Approval { .. } => {}
        }
    }
}

fn validate_workflows(at: &str, workflows: &[Workflow], out: &mut Vec<Violation>) {
    if workflows.is_empty() {
        out.push(Violation::new(format!("{at}.workflows.workflows"), "a workflow stage needs at least one workflow"));
    }
    if workflows.len() > MAX_WORKFLOWS {
        out.push(Violation::new(format!("{at}.workflows.workflows"), format!("at most {MAX_WORKFLOWS} workflows")));
    }
    let mut names = HashSet::new();
    for (j, w) in workflows.iter().enumerate() {
        let wf = format!("{at}.workflows.workflows[{j}]");
        check_name(out, &format!("{wf}.name"), &w.name);
        if !names.insert(w.name.as_str()) {
            out.push(Violation::new(
                format!("{wf}.name"),
                format!("duplicate workflow name {:?} in this stage", w.name),
            ));
        }
        if w.command.trim().is_empty() {
            out.push(Violation::new(format!("{wf}.command"), "a command is required"));
        }
        if w.task_queue.trim().is_empty() || w.task_queue.len() > MAX_NAME_LEN {
            out.push(Violation::new(
                format!("{wf}.task_queue"),
                "a task queue name of 1 to 128 characters is required",
            ));
        }
        if w.timeout_ms == 0 {
            out.push(Violation::new(format!("{wf}.timeout"), "timeout must be positive"));
        }
        if w.max_attempts == 0 || w.max_attempts > MAX_MAX_ATTEMPTS {
            out.push(Violation::new(format!("{wf}.max_attempts"), format!("must be between 1 and {MAX_MAX_ATTEMPTS}")));
        }
    }
}

fn check_name(out: &mut Vec<Violation>, field: &str, name: &str) {
    if name.trim().is_empty() {
        out.push(Violation::new(field, "a name is required"));
    } else if name.len() > MAX_NAME_LEN {
        out.push(Violation::new(field, format!("names are at most {MAX_NAME_LEN} characters")));
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME_LEN
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
        def.validate().unwrap_err().into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_sound_definition_passes() {
        let def =
            Definition { stages: vec![stage("build", &["a"]), stage("deploy", &["x", "y"])], ..Default::default() };
        assert_eq!(def.validate(), Ok(()));
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
            variables: vec![Variable { name: "region".into(), default_value: None, description: String::new() }],
            ..Default::default()
        };
        assert_eq!(fields(&def), ["definition.stages[0].skip_condition.expression"]);

        let bad_var = Definition {
            stages: vec![stage("a", &["w"])],
            variables: vec![Variable { name: "1x".into(), default_value: None, description: String::new() }],
            ..Default::default()
        };
        assert_eq!(fields(&bad_var), ["definition.variables[0].name"]);
    }
}

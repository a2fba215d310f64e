//! Every conversion between generated protobuf types and domain types.
//! Proto → domain collects every problem, each naming its field path.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use prost_types::Timestamp;
use tonic::Status;

use super::error::{invalid, violation};
use crate::{
    domain::{
        Violation,
        access::{Grant, Permission, UserGroup},
        execution::{Execution, ExecutionDetail, Millis, ResumeOrigin, StageMark, StageRun, WorkflowRun},
        limits::{self, Limits, Text},
        pipeline::{self as dp, Definition, Skip, StageKind},
        resume::{Block, Planned},
        status::{ExecutionStatus, StageStatus, WorkflowStatus},
    },
    engine::{ClaimedTask, Error, PlannedStage, ResumeOutcome},
    proto as pb,
    store::{audit::AuditEvent, pipelines::PipelineRecord},
};

const DEFAULT_PAGE: i32 = 50;
const MAX_PAGE: i32 = 500;

/// A definition from a request, refused when it breaks a limit: its encoded
/// size and stage count are checked before it is converted, every other
/// limit (see [`Definition::check_limits`]) right after. Nothing here
/// recurses or compiles; the full validation comes after the permission check.
pub fn definition(d: Option<pb::PipelineDefinition>, limits: &Limits) -> Result<Definition, Status> {
    use prost::Message as _;
    let d = d.ok_or_else(|| invalid("definition", "a definition with at least one stage is required"))?;
    let size = d.encoded_len();
    if size > limits.max_definition_bytes {
        return Err(invalid(
            "definition",
            format!("at most {} bytes encoded, got {size}", limits.max_definition_bytes),
        ));
    }
    if d.stages.len() > limits.max_stages {
        return Err(invalid(
            "definition.stages",
            format!("at most {} stages, got {}", limits.max_stages, d.stages.len()),
        ));
    }
    let mut out = Vec::new();
    let stages = d.stages.into_iter().enumerate().filter_map(|(i, s)| stage(i, s, &mut out)).collect();
    let variables = d
        .variables
        .into_iter()
        .map(|v| dp::Variable {
            name: v.name,
            default_value: v.default_value,
            description: v.description,
            secret: v.secret,
        })
        .collect();
    if !out.is_empty() {
        return Err(super::error::to_status(Error::Invalid(out)));
    }
    let definition = Definition { description: d.description, variables, stages };
    let out = definition.check_limits(limits);
    if !out.is_empty() {
        return Err(super::error::to_status(Error::Invalid(out)));
    }
    Ok(definition)
}

fn stage(i: usize, s: pb::Stage, out: &mut Vec<Violation>) -> Option<dp::Stage> {
    let at = format!("definition.stages[{i}]");
    let env = s.environment.unwrap_or_default();
    let environment_type = match pb::EnvironmentType::try_from(env.r#type) {
        Ok(pb::EnvironmentType::Prod) => dp::EnvironmentType::Prod,
        Ok(pb::EnvironmentType::NonProd) => dp::EnvironmentType::NonProd,
        _ => {
            out.push(Violation::new(
                format!("{at}.environment.type"),
                "set ENVIRONMENT_TYPE_PROD or ENVIRONMENT_TYPE_NON_PROD",
            ));
            return None;
        }
    };
    let skip = match s.skip_condition.and_then(|c| c.condition) {
        None | Some(pb::skip_condition::Condition::Always(false)) => None,
        Some(pb::skip_condition::Condition::Always(true)) => Some(Skip::Always),
        Some(pb::skip_condition::Condition::Expression(e)) => Some(Skip::When(e)),
    };
    let mut failure_policy = dp::FailurePolicy::WaitForAll;
    let kind = match s.kind {
        Some(pb::stage::Kind::Workflows(w)) => {
            failure_policy = match pb::FailurePolicy::try_from(w.failure_policy) {
                Ok(pb::FailurePolicy::FailFast) => dp::FailurePolicy::FailFast,
                Ok(pb::FailurePolicy::Unspecified | pb::FailurePolicy::WaitForAll) => dp::FailurePolicy::WaitForAll,
                Err(_) => {
                    out.push(Violation::new(
                        format!("{at}.workflows.failure_policy"),
                        format!("unknown failure policy {}", w.failure_policy),
                    ));
                    dp::FailurePolicy::WaitForAll
                }
            };
            StageKind::Workflows(
                w.workflows
                    .into_iter()
                    .enumerate()
                    .map(|(j, w)| workflow(&format!("{at}.workflows.workflows[{j}]"), w, out))
                    .collect(),
            )
        }
        Some(pb::stage::Kind::Approval(a)) => StageKind::Approval {
            timeout_ms: millis(&format!("{at}.approval.timeout"), a.timeout, dp::DEFAULT_APPROVAL_TIMEOUT, out),
            instructions: a.instructions,
        },
        None => {
            out.push(Violation::new(format!("{at}.kind"), "set either `workflows` or `approval`"));
            return None;
        }
    };
    Some(dp::Stage { name: s.name.into(), environment_name: env.name, environment_type, skip, kind, failure_policy })
}

fn workflow(at: &str, w: pb::Workflow, out: &mut Vec<Violation>) -> dp::Workflow {
    if w.max_attempts < 0 {
        out.push(Violation::new(format!("{at}.max_attempts"), "must not be negative; 0 means the default of 3"));
    }
    dp::Workflow {
        timeout_ms: millis(&format!("{at}.timeout"), w.timeout, dp::DEFAULT_WORKFLOW_TIMEOUT, out),
        max_attempts: if w.max_attempts == 0 { dp::DEFAULT_MAX_ATTEMPTS } else { w.max_attempts.max(0) as u32 },
        task_queue: if w.task_queue.is_empty() { dp::DEFAULT_TASK_QUEUE.into() } else { w.task_queue },
        name: w.name,
        command: w.command,
        secrets: w.secrets,
    }
}

fn millis(field: &str, d: Option<prost_types::Duration>, default: Duration, out: &mut Vec<Violation>) -> u64 {
    match d {
        None => default.as_millis() as u64,
        Some(d) => match std_duration(d) {
            Some(d) if !d.is_zero() => u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1),
            _ => {
                out.push(Violation::new(field, "must be a positive duration, e.g. \"30s\""));
                0
            }
        },
    }
}

/// A protobuf duration that is not negative and well formed (nanos within
/// a second). `Duration::try_from` would panic on `seconds: i64::MIN` in
/// builds with overflow checks, so it is not used on caller input.
pub fn std_duration(d: prost_types::Duration) -> Option<Duration> {
    let seconds = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    Some(Duration::new(seconds, nanos))
}

/// A pipeline without its definition (the BASIC view of lists).
pub fn pipeline_basic(p: PipelineRecord) -> pb::Pipeline {
    pb::Pipeline { definition: None, ..pipeline(PipelineRecord { definition: Definition::default(), ..p }) }
}

pub fn pipeline(p: PipelineRecord) -> pb::Pipeline {
    let d = p.definition;
    pb::Pipeline {
        id: p.id,
        application: p.application,
        name: p.name,
        version: p.version,
        latest_version: p.latest_version,
        create_time: Some(timestamp(p.created_at)),
        update_time: Some(timestamp(p.version_created_at)),
        definition: Some(definition_to_pb(d)),
    }
}

fn definition_to_pb(d: Definition) -> pb::PipelineDefinition {
    pb::PipelineDefinition {
        description: d.description,
        variables: d
            .variables
            .into_iter()
            .map(|v| pb::Variable {
                name: v.name,
                default_value: v.default_value,
                description: v.description,
                secret: v.secret,
            })
            .collect(),
        stages: d.stages.into_iter().map(stage_to_pb).collect(),
    }
}

/// A definition as the server would store and return it (defaults filled
/// in: task queue, timeouts, attempts, failure policy), so a client can tell
/// whether writing it would change anything. None when it would be refused.
pub fn canonical_definition(d: pb::PipelineDefinition) -> Option<pb::PipelineDefinition> {
    definition(Some(d), &Limits::default()).ok().map(definition_to_pb)
}

fn stage_to_pb(s: dp::Stage) -> pb::Stage {
    pb::Stage {
        environment: Some(environment(&s)),
        skip_condition: s.skip.map(|skip| pb::SkipCondition {
            condition: Some(match skip {
                Skip::Always => pb::skip_condition::Condition::Always(true),
                Skip::When(e) => pb::skip_condition::Condition::Expression(e),
            }),
        }),
        kind: Some(match s.kind {
            StageKind::Workflows(ws) => pb::stage::Kind::Workflows(pb::WorkflowStage {
                failure_policy: match s.failure_policy {
                    dp::FailurePolicy::WaitForAll => pb::FailurePolicy::WaitForAll,
                    dp::FailurePolicy::FailFast => pb::FailurePolicy::FailFast,
                } as i32,
                workflows: ws
                    .into_iter()
                    .map(|w| pb::Workflow {
                        name: w.name,
                        task_queue: w.task_queue,
                        command: w.command,
                        timeout: Some(duration(w.timeout_ms)),
                        max_attempts: w.max_attempts as i32,
                        secrets: w.secrets,
                    })
                    .collect(),
            }),
            StageKind::Approval { timeout_ms, instructions } => {
                pb::stage::Kind::Approval(pb::ApprovalStage { timeout: Some(duration(timeout_ms)), instructions })
            }
        }),
        name: s.name.to_string(),
    }
}

fn environment(s: &dp::Stage) -> pb::Environment {
    let t = match s.environment_type {
        dp::EnvironmentType::Prod => pb::EnvironmentType::Prod,
        dp::EnvironmentType::NonProd => pb::EnvironmentType::NonProd,
    };
    pb::Environment { name: s.environment_name.clone(), r#type: t as i32 }
}

/// How much of each workflow's output a response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputView {
    /// None (WatchExecution: it sends every change).
    None,
    /// The last [`TAIL_CHARS`] characters (BASIC).
    Tail,
    /// All the server keeps (FULL), while the response stays under its budget.
    Full,
}

/// The characters of output a BASIC view shows per workflow.
pub const TAIL_CHARS: usize = 2048;
/// The most an execution message may grow to, well under the 4 MiB a
/// default gRPC client accepts, whatever workers reported.
pub const RESPONSE_BUDGET: usize = 3 * 1024 * 1024;

impl OutputView {
    pub fn of(view: i32) -> Result<OutputView, Status> {
        match pb::ExecutionView::try_from(view) {
            Ok(pb::ExecutionView::Unspecified | pb::ExecutionView::Basic) => Ok(OutputView::Tail),
            Ok(pb::ExecutionView::Full) => Ok(OutputView::Full),
            Err(_) => Err(invalid("view", format!("unknown view {view}"))),
        }
    }
}

/// An execution with its stages and workflows (BASIC view).
pub fn execution_detail(d: &ExecutionDetail) -> pb::Execution {
    execution_view(d, OutputView::Tail)
}

/// An execution with its stages and workflows, each workflow's output as
/// `view` says, within [`RESPONSE_BUDGET`]: past it, outputs are cut to
/// the BASIC tail, then (a very large execution) stages leave out their
/// workflows and say so.
pub fn execution_view(d: &ExecutionDetail, view: OutputView) -> pb::Execution {
    let mut e = execution(&d.execution);
    let mut budget = Budget { left: RESPONSE_BUDGET };
    let by_stage = d.workflows_by_stage();
    e.stages = d
        .stages
        .iter()
        .zip(&d.definition.stages)
        .map(|(run, def)| {
            let workflows = by_stage.get(run.index).into_iter().flatten().copied();
            stage_run(run, def, workflows, view, &mut budget)
        })
        .collect();
    e
}

/// What is left of a response's size budget.
pub struct Budget {
    left: usize,
}

impl Budget {
    fn take(&mut self, n: usize) -> bool {
        if n <= self.left {
            self.left -= n;
            true
        } else {
            false
        }
    }
}

pub fn execution(e: &Execution) -> pb::Execution {
    pb::Execution {
        id: e.id.clone(),
        pipeline_id: e.pipeline_id.clone(),
        pipeline_version: e.pipeline_version,
        application: e.application.clone(),
        status: execution_status(e.status) as i32,
        status_message: e.status_message.clone(),
        variables: e.variables.clone(),
        artifacts: e.artifacts.clone(),
        stages: Vec::new(),
        request_id: e.request_id.clone(),
        triggered_by: e.triggered_by.clone(),
        create_time: Some(timestamp(e.created_at)),
        start_time: e.started_at.map(timestamp),
        end_time: e.ended_at.map(timestamp),
        chain_id: e.chain_id.clone(),
        attempt: e.attempt,
        resumed_from: e.resumed_from.as_ref().map(origin),
        resumed_by_execution_id: e.resumed_by.clone().unwrap_or_default(),
        resume_count: e.attempt - 1,
        end_stage: e.end_stage.as_ref().map(stage_mark),
    }
}

fn stage_mark(m: &StageMark) -> pb::StageRef {
    pb::StageRef { index: Some(m.index as i32), name: m.name.clone() }
}

fn stage_run<'a>(
    run: &StageRun,
    def: &dp::Stage,
    workflows: impl Iterator<Item = &'a WorkflowRun>,
    view: OutputView,
    budget: &mut Budget,
) -> pb::StageExecution {
    let mut listed = Vec::new();
    let mut omitted = false;
    for w in workflows {
        let mut one = workflow_view(w, view);
        // What a workflow costs without its output, and with it.
        let bare = 256 + w.name.len() + w.status_message.len();
        if !budget.take(bare + one.output.len()) {
            if view != OutputView::None && budget.take(bare) {
                one.output_cut = one.output_cut || !one.output.is_empty();
                one.output.clear();
            } else {
                omitted = true;
                break;
            }
        }
        listed.push(one);
    }
    if omitted {
        listed.clear();
    }
    let c = run.counts;
    pb::StageExecution {
        workflow_counts: Some(pb::WorkflowCounts {
            total: c.total as i32,
            open: c.open as i32,
            succeeded: c.succeeded() as i32,
            failed: c.failed as i32,
            expired: c.expired as i32,
            cancelled: c.cancelled as i32,
        }),
        workflows_omitted: omitted,
        index: run.index as i32,
        name: run.name.to_string(),
        environment: Some(environment(def)),
        status: stage_status(run.status) as i32,
        status_message: run.status_message.clone(),
        approval: def.is_approval(),
        workflows: listed,
        start_time: run.started_at.map(timestamp),
        end_time: run.ended_at.map(timestamp),
        decided_by: run.decided_by.clone(),
        decision_comment: run.decision_comment.clone(),
        carried_over: run.carried_from.is_some(),
        carried_from_execution_id: run.carried_from.clone().unwrap_or_default(),
        resume_point: None,
    }
}

pub fn origin(o: &ResumeOrigin) -> pb::ResumeOrigin {
    pb::ResumeOrigin {
        execution_id: o.execution_id.clone(),
        stage_name: o.stage_name.clone(),
        stage_index: Some(o.stage_index as i32),
        reason: o.reason.clone(),
    }
}

/// Marks each stage as a valid resume point or not (GetExecution).
pub fn with_resume_points(mut e: pb::Execution, points: Vec<Option<(Block, String)>>) -> pb::Execution {
    for (stage, point) in e.stages.iter_mut().zip(points) {
        stage.resume_point = Some(match point {
            None => {
                pb::ResumePoint { resumable: true, block: pb::ErrorReason::Unspecified as i32, message: String::new() }
            }
            // The reason Resume from this stage would be refused with.
            Some((block, message)) => {
                pb::ResumePoint { resumable: false, block: super::error::proto_reason(block.reason()) as i32, message }
            }
        });
    }
    e
}

pub fn resume_outcome(o: ResumeOutcome) -> pb::ResumeResponse {
    pb::ResumeResponse {
        execution: o.execution.as_ref().map(execution_detail),
        plan: o.plan.into_iter().map(planned_stage).collect(),
        pipeline_version: o.pipeline_version,
        latest_pipeline_version: o.latest_pipeline_version,
        stages_not_rolled_back: o.not_rolled_back,
    }
}

fn planned_stage(p: PlannedStage) -> pb::PlannedStage {
    let mut out = pb::PlannedStage { index: p.index as i32, name: p.name, ..Default::default() };
    match p.planned {
        Planned::CarryOver { status, from_execution } => {
            out.action = pb::PlannedAction::CarryOver as i32;
            out.carried_status = stage_status(status) as i32;
            out.carried_from_execution_id = from_execution;
        }
        Planned::Run { workflows } => {
            out.action = pb::PlannedAction::Run as i32;
            out.workflows = workflows;
        }
    }
    out
}

pub fn history_entry(e: &Execution) -> pb::HistoryEntry {
    pb::HistoryEntry {
        execution_id: e.id.clone(),
        attempt: e.attempt,
        status: execution_status(e.status) as i32,
        resumed_from: e.resumed_from.as_ref().map(origin),
        triggered_by: e.triggered_by.clone(),
        create_time: Some(timestamp(e.created_at)),
        start_time: e.started_at.map(timestamp),
        end_time: e.ended_at.map(timestamp),
        status_message: e.status_message.clone(),
        end_stage: e.end_stage.as_ref().map(stage_mark),
        resume_reason: e.resumed_from.as_ref().map(|o| o.reason.clone()).unwrap_or_default(),
    }
}

/// One workflow, its output as `view` says.
pub fn workflow_view(w: &WorkflowRun, view: OutputView) -> pb::WorkflowExecution {
    let (output, cut) = match view {
        OutputView::None => (String::new(), !w.output.is_empty()),
        OutputView::Full => (w.output.clone(), false),
        OutputView::Tail => match w.output.char_indices().rev().nth(TAIL_CHARS - 1) {
            Some((start, _)) if start > 0 => (w.output[start..].to_owned(), true),
            _ => (w.output.clone(), false),
        },
    };
    pb::WorkflowExecution {
        name: w.name.clone(),
        status: workflow_status(w.status) as i32,
        task_queue: w.task_queue.clone(),
        attempt: w.attempt,
        exit_code: w.exit_code.unwrap_or_default(),
        output,
        output_chars: w.output_chars,
        output_cut: cut,
        status_message: w.status_message.clone(),
        start_time: w.started_at.map(timestamp),
        end_time: w.ended_at.map(timestamp),
        task_id: w.task_id.clone(),
    }
}

pub fn task(t: ClaimedTask) -> pb::Task {
    pb::Task {
        task_id: t.run.task_id,
        lease_token: t.run.lease_token.unwrap_or_default(),
        execution_id: t.run.execution_id,
        stage_name: t.stage_name,
        workflow_name: t.run.name,
        attempt: t.run.attempt,
        command: t.run.command,
        environment: t.environment,
        deadline: t.run.deadline_at.map(timestamp),
        lease_duration: prost_types::Duration::try_from(t.lease).ok(),
    }
}

pub fn execution_status(s: ExecutionStatus) -> pb::ExecutionStatus {
    use pb::ExecutionStatus as P;
    match s {
        ExecutionStatus::Queued => P::Queued,
        ExecutionStatus::Running => P::Running,
        ExecutionStatus::Paused => P::Paused,
        ExecutionStatus::Succeeded => P::Succeeded,
        ExecutionStatus::Failed => P::Failed,
        ExecutionStatus::Aborted => P::Aborted,
        ExecutionStatus::Expired => P::Expired,
        ExecutionStatus::Rejected => P::Rejected,
    }
}

/// A status filter: UNSPECIFIED means any.
pub fn status_filter(value: i32) -> Result<Option<ExecutionStatus>, Status> {
    let p = pb::ExecutionStatus::try_from(value).map_err(|_| invalid("status", format!("unknown status {value}")))?;
    Ok(ExecutionStatus::ALL.iter().copied().find(|s| execution_status(*s) == p))
}

fn stage_status(s: StageStatus) -> pb::StageStatus {
    use pb::StageStatus as P;
    match s {
        StageStatus::Pending => P::Pending,
        StageStatus::Running => P::Running,
        StageStatus::WaitingApproval => P::WaitingApproval,
        StageStatus::Succeeded => P::Succeeded,
        StageStatus::Failed => P::Failed,
        StageStatus::Skipped => P::Skipped,
        StageStatus::Aborted => P::Aborted,
        StageStatus::Expired => P::Expired,
        StageStatus::Rejected => P::Rejected,
        StageStatus::NotRun => P::NotRun,
    }
}

pub fn workflow_status(s: WorkflowStatus) -> pb::WorkflowStatus {
    use pb::WorkflowStatus as P;
    match s {
        WorkflowStatus::Queued => P::Queued,
        WorkflowStatus::Running => P::Running,
        WorkflowStatus::Succeeded => P::Succeeded,
        WorkflowStatus::Failed => P::Failed,
        WorkflowStatus::Expired => P::Expired,
        WorkflowStatus::Cancelled => P::Cancelled,
    }
}

pub fn timestamp(ms: Millis) -> Timestamp {
    Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

fn duration(ms: u64) -> prost_types::Duration {
    prost_types::Duration { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

/// A required id the server issued (a UUID), as the server writes it.
pub fn id(field: &str, value: &str) -> Result<String, Status> {
    limits::id(field, value).map_err(violation)
}

/// An optional id filter: empty means unset.
pub fn optional_id(field: &str, value: &str) -> Result<Option<String>, Status> {
    limits::optional_id(field, value).map_err(violation)
}

/// A name (application, stage, queue, group …), required or optional (then
/// empty means unset).
pub fn name(field: &str, value: String, limits: &Limits, required: bool) -> Result<Option<String>, Status> {
    limits::text(field, &value, limits.max_name_bytes, Text::Name, required).map_err(violation)?;
    Ok((!value.is_empty()).then_some(value))
}

/// A required name.
pub fn required_name(field: &str, value: String, limits: &Limits) -> Result<String, Status> {
    Ok(name(field, value, limits, true)?.unwrap_or_default())
}

/// A short token-like string (request id, worker id, subject): no control
/// characters, at most `max` bytes; empty means unset.
pub fn token(field: &str, value: String, max: usize) -> Result<Option<String>, Status> {
    limits::text(field, &value, max, Text::Name, false).map_err(violation)?;
    Ok((!value.is_empty()).then_some(value))
}

/// Free text (a reason, a comment) of at most `max` bytes.
pub fn text(field: &str, value: String, max: usize) -> Result<String, Status> {
    limits::text(field, &value, max, Text::Free, false).map_err(violation)?;
    Ok(value)
}

/// Page size with its default and ceiling.
pub fn page_size(size: i32) -> Result<u64, Status> {
    match size {
        0 => Ok(DEFAULT_PAGE as u64),
        s if s < 0 => Err(invalid("page_size", "must not be negative")),
        s => Ok(s.min(MAX_PAGE) as u64),
    }
}

/// A page token whose cursor is an id (every list but ListHistory's).
pub fn page_token_id(token: &str, limits: &Limits) -> Result<Option<String>, Status> {
    match page_token(token, limits)? {
        None => Ok(None),
        Some(key) => match limits::id("page_token", &key) {
            Ok(id) => Ok(Some(id)),
            Err(_) => Err(invalid("page_token", "not a token this server issued; pass next_page_token unchanged")),
        },
    }
}

/// Page tokens are opaque to callers: the keyset cursor, encoded.
pub fn page_token(token: &str, limits: &Limits) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    if token.len() > limits.max_page_token_bytes {
        return Err(invalid("page_token", "not a token this server issued; pass next_page_token unchanged"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid("page_token", "not a token this server issued; pass next_page_token unchanged"))?;
    let text = String::from_utf8(bytes).map_err(|_| invalid("page_token", "not a token this server issued"))?;
    text.strip_prefix("k1:")
        .map(|k| Some(k.to_owned()))
        .ok_or_else(|| invalid("page_token", "not a token this server issued; pass next_page_token unchanged"))
}

pub fn next_page_token(next: Option<String>) -> String {
    next.map(|k| URL_SAFE_NO_PAD.encode(format!("k1:{k}"))).unwrap_or_default()
}

pub fn user_group(g: UserGroup) -> pb::UserGroup {
    pb::UserGroup {
        id: g.id,
        name: g.name,
        members: g.members,
        grants: g.grants.into_iter().map(grant).collect(),
        create_time: Some(timestamp(g.created_at)),
    }
}

pub fn grant(g: Grant) -> pb::Grant {
    let permission = match g.permission {
        Permission::ExecutePipeline => pb::Permission::ExecutePipeline,
        Permission::View => pb::Permission::View,
        Permission::RunTasks => pb::Permission::RunTasks,
        Permission::Admin => pb::Permission::Admin,
    };
    let environment_type = match g.environment {
        None => pb::EnvironmentType::Unspecified,
        Some(dp::EnvironmentType::Prod) => pb::EnvironmentType::Prod,
        Some(dp::EnvironmentType::NonProd) => pb::EnvironmentType::NonProd,
    };
    pb::Grant {
        id: g.id,
        group_id: g.group_id,
        permission: permission as i32,
        application: g.application.unwrap_or_default(),
        environment_type: environment_type as i32,
    }
}

pub fn audit_event(e: AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id: e.id,
        time: Some(timestamp(e.at)),
        actor: e.actor,
        action: e.action,
        application: e.application.unwrap_or_default(),
        execution_id: e.execution_id.unwrap_or_default(),
        details: e.details,
        chain_id: e.chain_id.unwrap_or_default(),
        related_execution_id: e.related_execution_id.unwrap_or_default(),
    }
}

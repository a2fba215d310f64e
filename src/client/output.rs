//! How responses are shown: `--output json` prints the proto3 JSON of the
//! response message (through prost-reflect, as grpcurl would), `--output
//! table` prints aligned columns made here, with no table crate.

use std::{collections::HashMap, io::Write as _, sync::OnceLock};

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use super::error::{Failure, Result};
use crate::proto::{self as pb, FILE_DESCRIPTOR_SET};

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Columns for people.
    #[default]
    Table,
    /// The response message as proto3 JSON, pretty-printed, for scripts.
    Json,
}

/// The descriptors of our protos (and the well-known types they import).
pub fn pool() -> Result<&'static DescriptorPool> {
    static POOL: OnceLock<std::result::Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(FILE_DESCRIPTOR_SET).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Failure::failed(format!("the built-in descriptor set does not decode: {e}")))
}

pub fn message_descriptor(full_name: &str) -> Result<MessageDescriptor> {
    pool()?
        .get_message_by_name(full_name)
        .ok_or_else(|| Failure::failed(format!("{full_name} is not in the built-in descriptor set")))
}

/// A generated message with its full protobuf name (prost-build did not emit `prost::Name`).
pub trait ProtoName: Message + Sized {
    const NAME: &'static str;
}

macro_rules! proto_names {
    ($($t:ident),+ $(,)?) => {
        $(impl ProtoName for pb::$t {
            const NAME: &'static str = concat!("reprise.v1.", stringify!($t));
        })+
    };
}

proto_names!(
    CreatePipelineRequest,
    CreatePipelineResponse,
    UpdatePipelineResponse,
    StartExecutionResponse,
    GetExecutionResponse,
    ListExecutionsResponse,
    AbortResponse,
    PauseResponse,
    ContinueResponse,
    ApproveResponse,
    RejectResponse,
    ResumeResponse,
    ListHistoryResponse,
    WatchExecutionResponse,
);

/// The proto3 JSON of a message, pretty-printed.
pub fn to_json<M: ProtoName>(message: &M) -> Result<String> {
    let dynamic = DynamicMessage::decode(message_descriptor(M::NAME)?, message.encode_to_vec().as_slice())
        .map_err(|e| Failure::failed(format!("cannot re-read {}: {e}", M::NAME)))?;
    serde_json::to_string_pretty(&dynamic)
        .map_err(|e| Failure::failed(format!("cannot write {} as JSON: {e}", M::NAME)))
}

/// Writes to stdout. A closed pipe (`| head`) is not an error worth a panic.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Prints `message` as JSON, or what `table` renders.
pub fn show<M: ProtoName>(format: Format, message: &M, table: impl FnOnce(&M) -> String) -> Result<()> {
    let text = match format {
        Format::Json => to_json(message)? + "\n",
        Format::Table => table(message),
    };
    print(&text);
    Ok(())
}

// ---- tables ----------------------------------------------------------------

/// Left-aligned columns separated by two spaces; an empty cell shows as `-`.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table { headers: headers.iter().map(|h| h.to_string()).collect(), rows: vec![] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let cell = |row: &[String], i: usize| -> String {
            match row.get(i).map(|c| c.replace('\n', " ")) {
                Some(c) if !c.is_empty() => c,
                _ => "-".into(),
            }
        };
        let columns = self.headers.len();
        let rows: Vec<Vec<String>> = std::iter::once(&self.headers)
            .chain(&self.rows)
            .map(|row| (0..columns).map(|i| cell(row, i)).collect())
            .collect();
        let widths: Vec<usize> =
            (0..columns).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for row in rows {
            let mut line = String::new();
            for (i, c) in row.iter().enumerate() {
                line.push_str(c);
                if i + 1 < columns {
                    line.extend(std::iter::repeat_n(' ', widths[i] - c.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `Label:  value` lines, aligned; empty values are left out.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        out.push_str(&format!("{:<w$}  {value}\n", format!("{label}:"), w = width + 1));
    }
    out
}

// ---- values ----------------------------------------------------------------

pub fn execution_status(value: i32) -> String {
    pb::ExecutionStatus::try_from(value)
        .map(|s| s.as_str_name().trim_start_matches("EXECUTION_STATUS_").to_owned())
        .unwrap_or_else(|_| value.to_string())
}

pub fn stage_status(value: i32) -> String {
    pb::StageStatus::try_from(value)
        .map(|s| s.as_str_name().trim_start_matches("STAGE_STATUS_").to_owned())
        .unwrap_or_else(|_| value.to_string())
}

pub fn planned_action(value: i32) -> String {
    pb::PlannedAction::try_from(value)
        .map(|s| s.as_str_name().trim_start_matches("PLANNED_ACTION_").replace('_', " "))
        .unwrap_or_else(|_| value.to_string())
}

/// A time in the local zone to the second; empty when unset.
pub fn timestamp(value: Option<&prost_types::Timestamp>) -> String {
    value
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.clamp(0, 999_999_999) as u32))
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// `k=v, k2=v2`, sorted by name.
pub fn pairs(map: &HashMap<String, String>) -> String {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort();
    entries.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// What a stage's workflows are doing, e.g. `1/2 succeeded, 1 running`;
/// for an approval stage, whether and by whom it was decided.
pub fn workflow_summary(stage: &pb::StageExecution) -> String {
    use pb::{StageStatus as S, WorkflowStatus as W};
    if stage.approval {
        let by = if stage.decided_by.is_empty() { String::new() } else { format!(" by {}", stage.decided_by) };
        return match S::try_from(stage.status) {
            Ok(S::WaitingApproval) => "approval: waiting".into(),
            Ok(S::Succeeded) => format!("approved{by}"),
            Ok(S::Rejected) => format!("rejected{by}"),
            _ => "approval".into(),
        };
    }
    if stage.workflows.is_empty() {
        return String::new();
    }
    let count = |status: W| stage.workflows.iter().filter(|w| w.status == status as i32).count();
    let mut out = format!("{}/{} succeeded", count(W::Succeeded), stage.workflows.len());
    for (status, label) in [
        (W::Running, "running"),
        (W::Queued, "queued"),
        (W::Failed, "failed"),
        (W::Expired, "expired"),
        (W::Cancelled, "cancelled"),
    ] {
        let n = count(status);
        if n > 0 {
            out.push_str(&format!(", {n} {label}"));
        }
    }
    out
}

/// `STATUS` or `STATUS: why`.
pub fn status_line(execution: &pb::Execution) -> String {
    let status = execution_status(execution.status);
    if execution.status_message.is_empty() { status } else { format!("{status}: {}", execution.status_message) }
}

/// The pipeline of an execution for people: `shop/deploy (ID), version 2`,
/// or the id when its name is not known.
pub fn pipeline_label(execution: &pb::Execution, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{name} ({}), version {}", execution.pipeline_id, execution.pipeline_version),
        None => format!("{}, version {}", execution.pipeline_id, execution.pipeline_version),
    }
}

/// The header lines of an execution.
pub fn execution_header(e: &pb::Execution, pipeline_name: Option<&str>) -> String {
    let resumed = e
        .resumed_from
        .as_ref()
        .map(|r| format!(", resumed from {} at stage {}", r.execution_id, r.stage_name))
        .unwrap_or_default();
    let attempt = if e.attempt > 1 || !e.resumed_by_execution_id.is_empty() {
        format!("{} of chain {}{resumed}", e.attempt, e.chain_id)
    } else {
        String::new()
    };
    let resumable: Vec<&str> = e
        .stages
        .iter()
        .filter(|s| s.resume_point.as_ref().is_some_and(|p| p.resumable))
        .map(|s| s.name.as_str())
        .collect();
    fields(&[
        ("Execution", e.id.clone()),
        ("Pipeline", pipeline_label(e, pipeline_name)),
        ("Application", if pipeline_name.is_some() { String::new() } else { e.application.clone() }),
        ("Status", status_line(e)),
        ("Attempt", attempt),
        ("Resumed by", e.resumed_by_execution_id.clone()),
        ("Triggered by", e.triggered_by.clone()),
        ("Request ID", e.request_id.clone()),
        ("Variables", pairs(&e.variables)),
        ("Artifacts", pairs(&e.artifacts)),
        ("Created", timestamp(e.create_time.as_ref())),
        ("Started", timestamp(e.start_time.as_ref())),
        ("Ended", timestamp(e.end_time.as_ref())),
        ("Resumable from", resumable.join(", ")),
    ])
}

/// The stages of an execution as a table.
pub fn stage_table(e: &pb::Execution) -> String {
    let mut table = Table::new(&["STAGE", "STATUS", "WORKFLOWS", "CARRIED FROM"]);
    for s in &e.stages {
        let carried = if s.carried_over { s.carried_from_execution_id.clone() } else { String::new() };
        table.row(vec![s.name.clone(), stage_status(s.status), workflow_summary(s), carried]);
    }
    table.render()
}

/// `reprise get`: the header, the stage table, and the workflows that did not succeed.
pub fn execution_view(e: &pb::Execution, pipeline_name: Option<&str>) -> String {
    use pb::WorkflowStatus as W;
    let mut out = execution_header(e, pipeline_name);
    out.push('\n');
    out.push_str(&stage_table(e));
    let mut problems = Table::new(&["WORKFLOW", "STATUS", "EXIT", "MESSAGE"]);
    for s in e.stages.iter().filter(|s| !s.carried_over) {
        for w in &s.workflows {
            let Ok(status @ (W::Failed | W::Expired | W::Cancelled)) = W::try_from(w.status) else { continue };
            let exit = if status == W::Failed { w.exit_code.to_string() } else { String::new() };
            let status = status.as_str_name().trim_start_matches("WORKFLOW_STATUS_").to_owned();
            problems.row(vec![format!("{}/{}", s.name, w.name), status, exit, w.status_message.clone()]);
        }
    }
    if !problems.is_empty() {
        out.push('\n');
        out.push_str(&problems.render());
    }
    out
}

/// `reprise list`.
pub fn executions_table(executions: &[pb::Execution], names: &HashMap<String, String>) -> String {
    let mut table = Table::new(&["ID", "PIPELINE", "STATUS", "ATTEMPT", "STARTED", "ENDED"]);
    for e in executions {
        let pipeline = names.get(&e.pipeline_id).unwrap_or(&e.pipeline_id);
        table.row(vec![
            e.id.clone(),
            format!("{pipeline} v{}", e.pipeline_version),
            execution_status(e.status),
            e.attempt.to_string(),
            timestamp(e.start_time.as_ref()),
            timestamp(e.end_time.as_ref()),
        ]);
    }
    table.render()
}

/// `reprise history`.
pub fn history_table(history: &pb::ListHistoryResponse) -> String {
    let mut table = Table::new(&["ATTEMPT", "EXECUTION", "STATUS", "RESUMED FROM", "TRIGGERED BY", "STARTED", "ENDED"]);
    for h in &history.entries {
        let from =
            h.resumed_from.as_ref().map(|r| format!("{} at {}", r.execution_id, r.stage_name)).unwrap_or_default();
        table.row(vec![
            h.attempt.to_string(),
            h.execution_id.clone(),
            execution_status(h.status),
            from,
            h.triggered_by.clone(),
            timestamp(h.start_time.as_ref().or(h.create_time.as_ref())),
            timestamp(h.end_time.as_ref()),
        ]);
    }
    format!("Chain: {}\n\n{}", history.chain_id, table.render())
}

/// The plan of a resume: each stage carried over (from where) or run (which workflows).
pub fn plan_table(response: &pb::ResumeResponse) -> String {
    use pb::PlannedAction as A;
    let mut table = Table::new(&["STAGE", "ACTION", "DETAILS"]);
    for p in &response.plan {
        let details = match A::try_from(p.action) {
            Ok(A::CarryOver) => format!("from {} ({})", p.carried_from_execution_id, stage_status(p.carried_status)),
            Ok(A::Run) if p.workflows.is_empty() => "approval".into(),
            Ok(A::Run) => format!("workflows: {}", p.workflows.join(", ")),
            _ => String::new(),
        };
        table.row(vec![p.name.clone(), planned_action(p.action), details]);
    }
    let mut out = table.render();
    if response.latest_pipeline_version > response.pipeline_version {
        out.push_str(&format!(
            "\nRuns pipeline version {} (the original's); the latest is {}, which a resume does not pick up.\n",
            response.pipeline_version, response.latest_pipeline_version
        ));
    }
    if !response.stages_not_rolled_back.is_empty() {
        out.push_str(&format!(
            "\nNot rolled back (running when the execution was aborted): {}\n",
            response.stages_not_rolled_back.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn workflow(name: &str, status: pb::WorkflowStatus) -> pb::WorkflowExecution {
        pb::WorkflowExecution { name: name.into(), status: status as i32, ..Default::default() }
    }

    fn execution() -> pb::Execution {
        pb::Execution {
            id: "e2".into(),
            pipeline_id: "p1".into(),
            pipeline_version: 3,
            application: "shop".into(),
            status: pb::ExecutionStatus::Failed as i32,
            status_message: "workflow ship/b failed".into(),
            chain_id: "e1".into(),
            attempt: 2,
            resumed_from: Some(pb::ResumeOrigin {
                execution_id: "e1".into(),
                stage_name: "ship".into(),
                stage_index: Some(1),
                reason: String::new(),
            }),
            variables: [("region".to_string(), "eu".to_string()), ("a".to_string(), "1".to_string())].into(),
            stages: vec![
                pb::StageExecution {
                    name: "build".into(),
                    status: pb::StageStatus::Succeeded as i32,
                    workflows: vec![workflow("compile", pb::WorkflowStatus::Succeeded)],
                    carried_over: true,
                    carried_from_execution_id: "e1".into(),
                    ..Default::default()
                },
                pb::StageExecution {
                    name: "ship".into(),
                    status: pb::StageStatus::Failed as i32,
                    workflows: vec![
                        workflow("a", pb::WorkflowStatus::Succeeded),
                        pb::WorkflowExecution {
                            exit_code: 3,
                            status_message: "exit status 3".into(),
                            ..workflow("b", pb::WorkflowStatus::Failed)
                        },
                    ],
                    resume_point: Some(pb::ResumePoint { resumable: true, ..Default::default() }),
                    ..Default::default()
                },
                pb::StageExecution {
                    name: "gate".into(),
                    status: pb::StageStatus::NotRun as i32,
                    approval: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn tables_align_columns_and_fill_empty_cells() {
        let mut t = Table::new(&["A", "LONGER", "C"]);
        t.row(vec!["wide cell".into(), String::new(), "x".into()]);
        t.row(vec!["b".into(), "y".into()]);
        assert_eq!(t.render(), "A          LONGER  C\nwide cell  -       x\nb          y       -\n");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut t = Table::new(&["NAME", "X"]);
        t.row(vec!["é".into(), "1".into()]);
        assert_eq!(t.render(), "NAME  X\né     1\n");
    }

    #[test]
    fn fields_align_and_skip_empty_values() {
        assert_eq!(
            fields(&[("Id", "1".into()), ("Empty", String::new()), ("Longer", "2".into())]),
            "Id:      1\nLonger:  2\n"
        );
    }

    #[test]
    fn workflow_summaries() {
        let e = execution();
        assert_eq!(workflow_summary(&e.stages[0]), "1/1 succeeded");
        assert_eq!(workflow_summary(&e.stages[1]), "1/2 succeeded, 1 failed");
        assert_eq!(workflow_summary(&e.stages[2]), "approval");
        let waiting = pb::StageExecution {
            approval: true,
            status: pb::StageStatus::WaitingApproval as i32,
            ..Default::default()
        };
        assert_eq!(workflow_summary(&waiting), "approval: waiting");
        let approved = pb::StageExecution {
            approval: true,
            status: pb::StageStatus::Succeeded as i32,
            decided_by: "alice".into(),
            ..Default::default()
        };
        assert_eq!(workflow_summary(&approved), "approved by alice");
    }

    #[test]
    fn the_execution_view_has_header_stages_and_problems() {
        let view = execution_view(&execution(), Some("shop/deploy"));
        let expected_start = "\
Execution:       e2
Pipeline:        shop/deploy (p1), version 3
Status:          FAILED: workflow ship/b failed
Attempt:         2 of chain e1, resumed from e1 at stage ship
Variables:       a=1, region=eu
Resumable from:  ship

STAGE  STATUS     WORKFLOWS                CARRIED FROM
build  SUCCEEDED  1/1 succeeded            e1
ship   FAILED     1/2 succeeded, 1 failed  -
gate   NOT_RUN    approval                 -

WORKFLOW  STATUS  EXIT  MESSAGE
ship/b    FAILED  3     exit status 3
";
        assert_eq!(view, expected_start);
    }

    #[test]
    fn the_list_table() {
        let e = pb::Execution { start_time: None, ..execution() };
        let names = [("p1".to_string(), "shop/deploy".to_string())].into();
        assert_eq!(
            executions_table(&[e], &names),
            "ID  PIPELINE        STATUS  ATTEMPT  STARTED  ENDED\ne2  shop/deploy v3  FAILED  2        -        -\n"
        );
    }

    #[test]
    fn the_history_table() {
        let history = pb::ListHistoryResponse {
            chain_id: "e1".into(),
            entries: vec![
                pb::HistoryEntry {
                    execution_id: "e2".into(),
                    attempt: 2,
                    status: pb::ExecutionStatus::Succeeded as i32,
                    resumed_from: Some(pb::ResumeOrigin {
                        execution_id: "e1".into(),
                        stage_name: "ship".into(),
                        stage_index: Some(1),
                        reason: String::new(),
                    }),
                    triggered_by: "bob".into(),
                    ..Default::default()
                },
                pb::HistoryEntry {
                    execution_id: "e1".into(),
                    attempt: 1,
                    status: pb::ExecutionStatus::Failed as i32,
                    triggered_by: "alice".into(),
                    ..Default::default()
                },
            ],
            next_page_token: String::new(),
        };
        assert_eq!(
            history_table(&history),
            "Chain: e1\n\n\
ATTEMPT  EXECUTION  STATUS     RESUMED FROM  TRIGGERED BY  STARTED  ENDED
2        e2         SUCCEEDED  e1 at ship    bob           -        -
1        e1         FAILED     -             alice         -        -
"
        );
    }

    #[test]
    fn the_plan_table() {
        let response = pb::ResumeResponse {
            plan: vec![
                pb::PlannedStage {
                    index: 0,
                    name: "build".into(),
                    action: pb::PlannedAction::CarryOver as i32,
                    carried_from_execution_id: "e1".into(),
                    carried_status: pb::StageStatus::Succeeded as i32,
                    workflows: vec![],
                },
                pb::PlannedStage {
                    index: 1,
                    name: "ship".into(),
                    action: pb::PlannedAction::Run as i32,
                    workflows: vec!["a".into(), "b".into()],
                    ..Default::default()
                },
            ],
            pipeline_version: 1,
            latest_pipeline_version: 2,
            ..Default::default()
        };
        let text = plan_table(&response);
        assert!(
            text.starts_with(
                "STAGE  ACTION      DETAILS\nbuild  CARRY OVER  from e1 (SUCCEEDED)\nship   RUN         workflows: a, b\n"
            ),
            "{text}"
        );
        assert!(text.contains("the latest is 2"), "{text}");
    }

    #[test]
    fn json_is_proto3_json() {
        let response = pb::GetExecutionResponse { execution: Some(execution()), ..Default::default() };
        let json: serde_json::Value = serde_json::from_str(&to_json(&response).unwrap()).unwrap();
        let e = &json["execution"];
        assert_eq!(e["id"], "e2");
        assert_eq!(e["status"], "EXECUTION_STATUS_FAILED");
        assert_eq!(e["pipelineVersion"], "3", "int64 is a string in proto3 JSON");
        assert_eq!(e["resumedFrom"]["stageName"], "ship");
        assert_eq!(e["stages"][0]["carriedOver"], true);
    }

    #[test]
    fn timestamps_are_empty_when_unset() {
        assert_eq!(timestamp(None), "");
        assert_eq!(timestamp(ts(0).as_ref()).len(), "1970-01-01 00:00:00".len());
    }
}

//! How responses are shown: `--output json` prints the proto3 JSON of the
//! response message (through prost-reflect, as grpcurl would), `--output
//! yaml` the same document as YAML (as `kubectl -o yaml` does), `--output
//! table` aligned columns made here, cut to the terminal's width and
//! coloured by status when stdout is a terminal (see `style.rs`).

use std::{
    collections::{BTreeMap, HashMap},
    io::Write as _,
    sync::OnceLock,
};

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use super::{
    error::{Failure, Result},
    style::{self, Terminal},
};
use crate::proto::{self as pb, FILE_DESCRIPTOR_SET};

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Columns for people.
    #[default]
    Table,
    /// The response message as proto3 JSON, pretty-printed, for scripts.
    Json,
    /// The same document as YAML.
    Yaml,
}

impl Format {
    /// JSON or YAML: the response message itself rather than columns.
    pub fn is_document(self) -> bool {
        self != Format::Table
    }
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
    GetPipelineResponse,
    ListPipelinesResponse,
    GetTaskOutputResponse,
    WatchTaskOutputResponse,
);

/// The proto3 JSON of a message, pretty-printed.
pub fn to_json<M: ProtoName>(message: &M) -> Result<String> {
    let dynamic = DynamicMessage::decode(message_descriptor(M::NAME)?, message.encode_to_vec().as_slice())
        .map_err(|e| Failure::failed(format!("cannot re-read {}: {e}", M::NAME)))?;
    serde_json::to_string_pretty(&dynamic)
        .map_err(|e| Failure::failed(format!("cannot write {} as JSON: {e}", M::NAME)))
}

/// The proto3 JSON of a message as YAML (a document of its own, `---` first,
/// so a stream of them, as `watch -o yaml` prints, stays readable).
pub fn to_yaml<M: ProtoName>(message: &M) -> Result<String> {
    let value: serde_json::Value = serde_json::from_str(&to_json(message)?)
        .map_err(|e| Failure::failed(format!("cannot re-read {} as JSON: {e}", M::NAME)))?;
    let yaml = serde_yaml_ng::to_string(&value)
        .map_err(|e| Failure::failed(format!("cannot write {} as YAML: {e}", M::NAME)))?;
    Ok(format!("---\n{yaml}"))
}

/// A message as the document `format` asks for (JSON or YAML), ending with a newline.
pub fn document<M: ProtoName>(format: Format, message: &M) -> Result<String> {
    match format {
        Format::Yaml => to_yaml(message),
        _ => Ok(to_json(message)? + "\n"),
    }
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
        Format::Table => table(message),
        document => self::document(document, message)?,
    };
    print(&text);
    Ok(())
}

// ---- tables ----------------------------------------------------------------

/// Left-aligned columns separated by two spaces; an empty cell shows as `-`.
/// On a terminal, the widest columns are cut (ending in `…`) until the table
/// fits its width, and the status column is coloured.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    status_column: Option<usize>,
}

/// No column is cut narrower than this (or its header).
const MIN_COLUMN: usize = 8;

/// The narrowest a column gets when even headers do not fit.
const LAST_RESORT_COLUMN: usize = 3;

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table { headers: headers.iter().map(|h| h.to_string()).collect(), rows: vec![], status_column: None }
    }

    /// Colours the cells of this column by the status they name.
    pub fn status_column(mut self, column: usize) -> Self {
        self.status_column = Some(column);
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rendered for this process's stdout.
    pub fn render(&self) -> String {
        self.render_to(style::terminal())
    }

    /// Rendered for a terminal of that width and colour.
    pub fn render_to(&self, terminal: Terminal) -> String {
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
        let mut widths: Vec<usize> =
            (0..columns).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
        if let Some(limit) = terminal.width {
            fit(&mut widths, &self.headers, limit);
        }
        let mut out = String::new();
        for (r, row) in rows.into_iter().enumerate() {
            let mut line = String::new();
            for (i, c) in row.iter().enumerate() {
                let c = style::cut(c, widths[i]);
                let shown = c.chars().count();
                if r > 0 && Some(i) == self.status_column && terminal.colour {
                    line.push_str(&style::paint_with(true, &c));
                } else {
                    line.push_str(&c);
                }
                if i + 1 < columns {
                    line.extend(std::iter::repeat_n(' ', widths[i] - shown + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Narrows the widest column, one character at a time, until the columns
/// and their two-space gaps fit in `limit`: first down to each column's
/// header (or [`MIN_COLUMN`]), then, on a very narrow terminal, headers too,
/// down to [`LAST_RESORT_COLUMN`].
fn fit(widths: &mut [usize], headers: &[String], limit: usize) {
    let gaps = 2 * widths.len().saturating_sub(1);
    let floors: [&dyn Fn(usize) -> usize; 2] =
        [&|i| MIN_COLUMN.max(headers[i].chars().count()), &|_| LAST_RESORT_COLUMN];
    for floor in floors {
        while widths.iter().sum::<usize>() + gaps > limit {
            let widest = (0..widths.len()).filter(|&i| widths[i] > floor(i)).max_by_key(|&i| widths[i]);
            match widest {
                Some(i) => widths[i] -= 1,
                None => break,
            }
        }
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

/// How long something ran, to the second (`1m 5s`): from `start` to `end`,
/// or to now while it runs; empty when it did not start.
pub fn elapsed(start: Option<&prost_types::Timestamp>, end: Option<&prost_types::Timestamp>) -> String {
    let Some(start) = start else { return String::new() };
    let end = end.map_or_else(|| chrono::Utc::now().timestamp(), |e| e.seconds);
    let seconds = (end - start.seconds).max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(seconds)).to_string()
}

/// `k=v, k2=v2`, sorted by name (a map's order).
pub fn pairs(map: &BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
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
        ("Status", style::status(&status_line(e))),
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
    let mut table = Table::new(&["STAGE", "STATUS", "ELAPSED", "WORKFLOWS", "CARRIED FROM"]).status_column(1);
    for s in &e.stages {
        let carried = if s.carried_over { s.carried_from_execution_id.clone() } else { String::new() };
        let took = elapsed(s.start_time.as_ref(), s.end_time.as_ref());
        table.row(vec![s.name.clone(), stage_status(s.status), took, workflow_summary(s), carried]);
    }
    table.render()
}

/// How many lines of a failed workflow's output `get` and `watch` show.
pub const TAIL_LINES: usize = 10;

/// The last lines of the output of each workflow that failed or expired (from
/// the tail an execution carries), each under a header naming it, with the
/// command that shows all of it. Empty when none has output.
pub fn failure_tails(e: &pb::Execution, lines: usize) -> String {
    use pb::WorkflowStatus as W;
    let mut out = String::new();
    for s in e.stages.iter().filter(|s| !s.carried_over) {
        for w in &s.workflows {
            if !matches!(W::try_from(w.status), Ok(W::Failed | W::Expired)) || w.output.trim().is_empty() {
                continue;
            }
            let all: Vec<&str> = w.output.trim_end().lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            out.push_str(&style::dim(&format!(
                "\n--- {}/{}: last {} line(s) of output (all of it: reprise logs {} --stage {} --workflow {})\n",
                s.name,
                w.name,
                tail.len(),
                e.id,
                s.name,
                w.name
            )));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// `reprise get`: the header, the stage table, the workflows that did not
/// succeed, and the end of the output of those that failed.
pub fn execution_view(e: &pb::Execution, pipeline_name: Option<&str>) -> String {
    use pb::WorkflowStatus as W;
    let mut out = execution_header(e, pipeline_name);
    out.push('\n');
    out.push_str(&stage_table(e));
    let mut problems = Table::new(&["WORKFLOW", "STATUS", "EXIT", "MESSAGE"]).status_column(1);
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
    out.push_str(&failure_tails(e, TAIL_LINES));
    out
}

/// `reprise list`.
pub fn executions_table(executions: &[pb::Execution], names: &HashMap<String, String>) -> String {
    let mut table = Table::new(&["ID", "PIPELINE", "STATUS", "ATTEMPT", "STARTED", "ENDED"]).status_column(2);
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
    let mut table = Table::new(&["ATTEMPT", "EXECUTION", "STATUS", "RESUMED FROM", "TRIGGERED BY", "STARTED", "ENDED"])
        .status_column(2);
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
                            output: "connecting to us-east\nconnection refused to us-east\n".into(),
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
    fn tables_are_cut_to_the_terminal_width_widest_column_first() {
        let mut t = Table::new(&["ID", "PIPELINE", "STATUS"]).status_column(2);
        t.row(vec!["0192f3a4-aaaa-bbbb-cccc-ddddeeeeffff".into(), "shop/deploy v1".into(), "FAILED".into()]);
        let narrow = t.render_to(Terminal { colour: false, width: Some(40) });
        assert!(narrow.lines().all(|l| l.chars().count() <= 40), "{narrow}");
        assert!(narrow.contains("0192f3a4-aaaa-b…") && narrow.contains("shop/deploy v1"), "{narrow}");
        let wide = t.render_to(Terminal { colour: false, width: Some(200) });
        assert_eq!(wide, t.render_to(Terminal::default()));
        let coloured = t.render_to(Terminal { colour: true, width: None });
        assert!(coloured.contains("\x1b[") && !coloured.lines().next().unwrap().contains('\x1b'), "{coloured:?}");
    }

    #[test]
    fn yaml_is_the_json_document() {
        let response = pb::GetExecutionResponse { execution: Some(execution()), ..Default::default() };
        let yaml = to_yaml(&response).unwrap();
        assert!(yaml.starts_with("---\nexecution:\n"), "{yaml}");
        assert!(yaml.contains("status: EXECUTION_STATUS_FAILED"), "{yaml}");
    }

    #[test]
    fn elapsed_time_is_to_the_second() {
        assert_eq!(elapsed(ts(10).as_ref(), ts(75).as_ref()), "1m 5s");
        assert_eq!(elapsed(None, ts(75).as_ref()), "");
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

STAGE  STATUS     ELAPSED  WORKFLOWS                CARRIED FROM
build  SUCCEEDED  -        1/1 succeeded            e1
ship   FAILED     -        1/2 succeeded, 1 failed  -
gate   NOT_RUN    -        approval                 -

WORKFLOW  STATUS  EXIT  MESSAGE
ship/b    FAILED  3     exit status 3

--- ship/b: last 2 line(s) of output (all of it: reprise logs e2 --stage ship --workflow b)
connecting to us-east
connection refused to us-east
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

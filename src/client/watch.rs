//! `reprise watch`: follows WatchExecution until the execution ends. On a
//! terminal, one line per stage redrawn in place as messages arrive; to a
//! pipe or file, one line per change; with `--output json`, every message.

use std::io::IsTerminal as _;

use super::{
    ExecutionArgs,
    connect::Client,
    error::{Exit, Failure, Result},
    output::{self, Format, Table},
};
use crate::proto as pb;

pub async fn watch(args: ExecutionArgs) -> Result<Exit> {
    let mut client = Client::connect(&args.client).await?;
    let request = pb::WatchExecutionRequest { execution_id: args.execution.clone() };
    let mut stream = client.executions.watch_execution(request).await?.into_inner();
    let mut display = match args.client.output {
        Format::Json => Display::Json,
        Format::Table if std::io::stdout().is_terminal() => Display::Screen { drawn: 0 },
        Format::Table => Display::Lines { last: vec![] },
    };
    let mut last: Option<pb::Execution> = None;
    while let Some(message) = stream.message().await? {
        if let Display::Json = display {
            output::print(&(output::to_json(&message)? + "\n"));
        }
        let Some(execution) = message.execution else { continue };
        output::print(&display.update(&execution));
        last = Some(execution);
    }
    match last {
        Some(e) if e.status == pb::ExecutionStatus::Succeeded as i32 => Ok(Exit::Success),
        Some(e) if is_final(e.status) => Ok(Exit::Failed),
        Some(e) => Err(Failure::failed(format!(
            "the watch ended before execution {} finished (last seen {})",
            e.id,
            output::execution_status(e.status)
        ))),
        None => Err(Failure::failed(format!("the server sent nothing about execution {}", args.execution))),
    }
}

fn is_final(status: i32) -> bool {
    use pb::ExecutionStatus as S;
    matches!(S::try_from(status), Ok(S::Succeeded | S::Failed | S::Aborted | S::Expired | S::Rejected))
}

/// How progress is shown.
enum Display {
    /// A terminal: the whole frame, redrawn over the previous one.
    Screen { drawn: usize },
    /// A pipe or file: the lines that changed, one per change.
    Lines { last: Vec<String> },
    /// Printed by the caller as JSON.
    Json,
}

impl Display {
    /// What to print for the execution as it is now.
    fn update(&mut self, execution: &pb::Execution) -> String {
        match self {
            Display::Screen { drawn } => {
                let frame = frame(execution);
                // Cursor up over the previous frame, then clear to the end of the screen.
                let clear = if *drawn > 0 { format!("\x1b[{drawn}A\r\x1b[J") } else { String::new() };
                *drawn = frame.lines().count();
                clear + &frame
            }
            Display::Lines { last } => {
                let lines = change_lines(execution);
                let mut out = String::new();
                for (i, line) in lines.iter().enumerate() {
                    if last.get(i) != Some(line) {
                        out.push_str(&format!("{} {line}\n", chrono::Local::now().format("%H:%M:%S")));
                    }
                }
                *last = lines;
                out
            }
            Display::Json => String::new(),
        }
    }
}

/// The screen: the execution's state, then a line per stage.
fn frame(e: &pb::Execution) -> String {
    let mut table = Table::new(&["STAGE", "STATUS", "WORKFLOWS"]);
    for s in &e.stages {
        let status = if s.carried_over {
            format!("{} (carried over)", output::stage_status(s.status))
        } else {
            output::stage_status(s.status)
        };
        table.row(vec![s.name.clone(), status, output::workflow_summary(s)]);
    }
    format!("Execution {}: {}\n\n{}", e.id, output::status_line(e), table.render())
}

/// One line per stage, stage order, then one for the execution: printed
/// again whenever it changes. The execution line comes last so its final
/// state is the last line printed.
fn change_lines(e: &pb::Execution) -> Vec<String> {
    let mut lines: Vec<String> = e
        .stages
        .iter()
        .map(|s| {
            let mut notes = vec![output::workflow_summary(s)];
            if s.carried_over {
                notes.push("carried over".into());
            }
            notes.retain(|n| !n.is_empty());
            let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
            format!("stage {}: {}{notes}", s.name, output::stage_status(s.status))
        })
        .collect();
    lines.push(format!("execution {}: {}", e.id, output::status_line(e)));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execution(status: pb::ExecutionStatus, stages: &[(&str, pb::StageStatus, pb::WorkflowStatus)]) -> pb::Execution {
        pb::Execution {
            id: "e1".into(),
            status: status as i32,
            stages: stages
                .iter()
                .map(|(name, s, w)| pb::StageExecution {
                    name: name.to_string(),
                    status: *s as i32,
                    workflows: vec![pb::WorkflowExecution {
                        name: "w".into(),
                        status: *w as i32,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn strip_time(text: &str) -> Vec<String> {
        text.lines().map(|l| l.split_once(' ').map(|(_, rest)| rest.to_owned()).unwrap_or_default()).collect()
    }

    #[test]
    fn lines_print_only_what_changed() {
        use pb::{ExecutionStatus as E, StageStatus as S, WorkflowStatus as W};
        let mut display = Display::Lines { last: vec![] };
        let first = display
            .update(&execution(E::Running, &[("build", S::Running, W::Running), ("ship", S::Pending, W::Queued)]));
        assert_eq!(
            strip_time(&first),
            [
                "stage build: RUNNING (0/1 succeeded, 1 running)",
                "stage ship: PENDING (0/1 succeeded, 1 queued)",
                "execution e1: RUNNING"
            ]
        );
        let second = display
            .update(&execution(E::Running, &[("build", S::Succeeded, W::Succeeded), ("ship", S::Pending, W::Queued)]));
        assert_eq!(strip_time(&second), ["stage build: SUCCEEDED (1/1 succeeded)"]);
        let third = display.update(&execution(
            E::Succeeded,
            &[("build", S::Succeeded, W::Succeeded), ("ship", S::Succeeded, W::Succeeded)],
        ));
        assert_eq!(strip_time(&third), ["stage ship: SUCCEEDED (1/1 succeeded)", "execution e1: SUCCEEDED"]);
    }

    #[test]
    fn the_screen_is_redrawn_over_the_previous_frame() {
        use pb::{ExecutionStatus as E, StageStatus as S, WorkflowStatus as W};
        let mut display = Display::Screen { drawn: 0 };
        let first = display.update(&execution(E::Running, &[("build", S::Running, W::Running)]));
        assert_eq!(
            first,
            "Execution e1: RUNNING\n\nSTAGE  STATUS   WORKFLOWS\nbuild  RUNNING  0/1 succeeded, 1 running\n"
        );
        let second = display.update(&execution(E::Succeeded, &[("build", S::Succeeded, W::Succeeded)]));
        assert!(second.starts_with("\x1b[4A\r\x1b[J"), "{second:?}");
        assert!(second.ends_with("build  SUCCEEDED  1/1 succeeded\n"), "{second:?}");
    }
}

//! Outputs and messages within bounds: a failure message is stored cut and
//! once; an execution whose every workflow printed its cap reads with a
//! default client through every RPC; a task's output pages and follows.

use std::{sync::Arc, time::Duration};

use prost::Message;
use reprise::proto as pb;
use tokio::sync::Mutex;
use tokio_stream::StreamExt;

use crate::helpers::*;

crate::on_both_backends!(
    a_huge_failure_message_is_stored_cut_and_once,
    an_execution_of_a_hundred_workflows_at_the_output_cap_reads_with_a_default_client,
    a_stage_too_big_for_one_response_leaves_its_workflows_to_list_workflows,
    task_output_pages_while_running_and_follows_to_the_end,
    a_heartbeat_sent_again_keeps_its_output_once,
    an_answer_read_again_follows_each_change_in_each_view,
);

/// What a default gRPC client accepts.
const DEFAULT_CLIENT_LIMIT: usize = 4 * 1024 * 1024;
const KEPT: usize = 65_536;

/// `n` workflow names, in the order they sort.
fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("w{i:04}")).collect()
}

fn stage_of(name: &str, q: &str, workflow_names: &[String]) -> pb::Stage {
    let refs: Vec<&str> = workflow_names.iter().map(String::as_str).collect();
    workflows(name, q, &refs)
}

/// An output of exactly `chars` characters that ends with `name`.
fn output_of(name: &str, chars: usize) -> String {
    let end = format!(" end of {name}");
    format!("{}{end}", "o".repeat(chars - end.len()))
}

/// Polls `q` and completes `n` tasks from 16 callers at once, each with the
/// output `output(workflow name)`.
async fn complete_all(app: &TestApp, q: &str, n: usize, output: impl Fn(&str) -> String + Send + Sync + 'static) {
    let left = Arc::new(Mutex::new(n));
    let output = Arc::new(output);
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (client, q, left, output) = (app.workers.clone(), q.to_owned(), left.clone(), output.clone());
            tokio::spawn(async move {
                loop {
                    {
                        let mut left = left.lock().await;
                        if *left == 0 {
                            return;
                        }
                        *left -= 1;
                    }
                    // UNAVAILABLE says "retry": a worker does (a loaded machine may answer it).
                    let mut empty_polls = 0;
                    let task = loop {
                        let request = pb::PollTaskRequest {
                            task_queue: q.clone(),
                            worker_id: "outputs".into(),
                            wait: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
                        };
                        match client.clone().poll_task(request).await {
                            Ok(r) => match r.into_inner().task {
                                Some(task) => break task,
                                // The next stage is not dispatched yet (a loaded machine).
                                None if empty_polls < 12 => empty_polls += 1,
                                None => panic!("no task for 2 minutes"),
                            },
                            Err(s) if s.code() == tonic::Code::Unavailable => {
                                tokio::time::sleep(Duration::from_millis(100)).await
                            }
                            Err(s) => panic!("poll: {s:?}"),
                        }
                    };
                    let text = output(&task.workflow_name);
                    loop {
                        match complete_task(
                            &client,
                            &task.task_id,
                            &task.lease_token,
                            pb::TaskOutcome::Succeeded,
                            &text,
                        )
                        .await
                        {
                            Ok(_) => break,
                            Err(s) if s.code() == tonic::Code::Unavailable => {
                                tokio::time::sleep(Duration::from_millis(100)).await
                            }
                            Err(s) => panic!("complete: {s:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
}

/// GetExecution sends an execution it encoded earlier while the execution
/// is unchanged: each change (a claim, a report) shows in the next read, and
/// the BASIC and FULL views keep their own encodings.
async fn an_answer_read_again_follows_each_change_in_each_view(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("encoded", vec![workflows("build", &q, &["a"]), workflows("ship", &q, &["b"])]).await;
    let id = app.start(&p.id).await.id;
    let build = |r: &pb::GetExecutionResponse| r.execution.as_ref().expect("an execution").stages[0].clone();
    let queued = get_view(&app, &id, pb::ExecutionView::Basic).await;
    assert_eq!(get_view(&app, &id, pb::ExecutionView::Basic).await, queued, "unchanged, read again");
    assert_eq!(build(&queued).workflows[0].status, pb::WorkflowStatus::Queued as i32);

    let task = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(5)).await.expect("a task");
    let running = get_view(&app, &id, pb::ExecutionView::Basic).await;
    assert_eq!(build(&running).workflows[0].status, pb::WorkflowStatus::Running as i32, "the claim shows");

    let output = output_of("a", 5_000);
    complete_task(&app.workers, &task.task_id, &task.lease_token, pb::TaskOutcome::Succeeded, &output).await.unwrap();
    let basic = get_view(&app, &id, pb::ExecutionView::Basic).await;
    let full = get_view(&app, &id, pb::ExecutionView::Full).await;
    for (answer, shown, cut) in [(&basic, 2_048, true), (&full, 5_000, false)] {
        let a = &build(answer).workflows[0];
        assert_eq!(a.status, pb::WorkflowStatus::Succeeded as i32, "the report shows");
        assert_eq!((a.output.chars().count(), a.output_cut), (shown, cut));
        assert!(a.output.ends_with(" end of a"));
    }
    assert_eq!(get_view(&app, &id, pb::ExecutionView::Basic).await, basic, "each view keeps its own");
    assert_eq!(get_view(&app, &id, pb::ExecutionView::Full).await, full);
    let ship = &basic.execution.as_ref().unwrap().stages[1];
    assert_eq!(ship.status, pb::StageStatus::Running as i32, "the next stage started");
}

async fn get_view(app: &TestApp, id: &str, view: pb::ExecutionView) -> pb::GetExecutionResponse {
    let request = pb::GetExecutionRequest { execution_id: id.into(), view: view as i32 };
    app.executions.clone().get_execution(request).await.expect("a default client reads it").into_inner()
}

async fn list_executions(app: &TestApp, pipeline_id: &str) -> pb::ListExecutionsResponse {
    let request = pb::ListExecutionsRequest { pipeline_id: pipeline_id.into(), page_size: 100, ..Default::default() };
    app.executions.clone().list_executions(request).await.expect("a default client lists it").into_inner()
}

async fn first_watched(app: &TestApp, id: &str) -> pb::WatchExecutionResponse {
    let request = pb::WatchExecutionRequest { execution_id: id.into() };
    let mut stream = app.executions.clone().watch_execution(request).await.expect("watch").into_inner();
    stream.next().await.expect("a message").expect("a default client reads it")
}

/// Every workflow through ListWorkflows, page by page.
async fn list_workflows(
    app: &TestApp,
    id: &str,
    stage: Option<i32>,
    view: pb::ExecutionView,
) -> (Vec<pb::StageWorkflow>, usize) {
    let (mut all, mut pages, mut token) = (Vec::new(), 0, String::new());
    loop {
        let request = pb::ListWorkflowsRequest {
            execution_id: id.into(),
            stage_index: stage,
            page_size: 1000,
            page_token: token,
            view: view as i32,
        };
        let page = app.executions.clone().list_workflows(request).await.expect("a default client reads a page");
        let page = page.into_inner();
        assert!(page.encoded_len() < DEFAULT_CLIENT_LIMIT);
        pages += 1;
        all.extend(page.workflows);
        if page.next_page_token.is_empty() {
            return (all, pages);
        }
        token = page.next_page_token;
    }
}

async fn a_huge_failure_message_is_stored_cut_and_once(app: TestApp) {
    let q = queue();
    let p =
        app.create_pipeline("loud", vec![workflows("deploy", &q, &["a", "b"]), workflows("after", &q, &["c"])]).await;
    let e = app.start(&p.id).await;
    for _ in 0..2 {
        let task = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(10)).await.expect("task");
        let report = pb::CompleteTaskRequest {
            task_id: task.task_id,
            lease_token: task.lease_token,
            outcome: pb::TaskOutcome::Failed as i32,
            exit_code: 3,
            output: "connection refused".into(),
            message: format!("{} the very end", "m".repeat(2_000_000)),
            output_offset: None,
            ..Default::default()
        };
        app.workers.clone().complete_task(report).await.expect("a long message is cut, not refused");
    }
    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Failed);
    for w in &done.stages[0].workflows {
        assert!(w.status_message.len() <= 4096, "{} bytes", w.status_message.len());
        assert!(w.status_message.starts_with("mmm") && w.status_message.ends_with("… [truncated]"));
    }
    // The stage and the execution refer to the failing workflows, they do not copy their messages.
    assert!(done.stages[0].status_message.len() < 512, "{}", done.stages[0].status_message);
    assert!(done.status_message.len() < 512, "{}", done.status_message);
    assert!(done.status_message.contains("deploy"), "{}", done.status_message);
    assert!(done.encoded_len() < 16 * 1024, "the whole execution is {} bytes", done.encoded_len());
    let listed = list_executions(&app, &p.id).await;
    assert!(listed.encoded_len() < 4096, "ListExecutions is {} bytes", listed.encoded_len());
    assert!(listed.executions[0].status_message.len() < 512);
}

async fn an_execution_of_a_hundred_workflows_at_the_output_cap_reads_with_a_default_client(app: TestApp) {
    let q = queue();
    let wide = names(100);
    let p = app.create_pipeline("wide", vec![stage_of("wide", &q, &wide)]).await;
    let e = app.start(&p.id).await;
    complete_all(&app, &q, wide.len(), |name| output_of(name, KEPT)).await;
    app.wait_until(&e.id, |e| is_final(e.status)).await;

    // BASIC (the default): every workflow with the tail of its output.
    let basic = get_view(&app, &e.id, pb::ExecutionView::Basic).await;
    assert!(basic.encoded_len() < 512 * 1024, "BASIC is {} bytes", basic.encoded_len());
    let stage = &basic.execution.as_ref().unwrap().stages[0];
    assert_eq!(stage.workflows.len(), 100);
    for w in &stage.workflows {
        assert_eq!((w.output.chars().count(), w.output_cut, w.output_chars), (2048, true, KEPT as i64));
        assert!(w.output.ends_with(&format!("end of {}", w.name)));
    }
    assert_eq!(stage.workflow_counts.as_ref().unwrap().succeeded, 100);

    // FULL: as much as fits in a response; the rest marked cut.
    let full = get_view(&app, &e.id, pb::ExecutionView::Full).await;
    assert!(full.encoded_len() < DEFAULT_CLIENT_LIMIT, "FULL is {} bytes", full.encoded_len());
    let stage = &full.execution.as_ref().unwrap().stages[0];
    assert!(!stage.workflows_omitted);
    let whole = stage.workflows.iter().filter(|w| w.output.len() == KEPT && !w.output_cut).count();
    let cut = stage.workflows.iter().filter(|w| w.output.is_empty() && w.output_cut).count();
    assert!(whole >= 40 && whole + cut == 100, "{whole} whole, {cut} cut");

    // ListExecutions and WatchExecution carry no outputs.
    let listed = list_executions(&app, &p.id).await;
    assert!(listed.encoded_len() < 64 * 1024, "ListExecutions is {} bytes", listed.encoded_len());
    let watched = first_watched(&app, &e.id).await;
    assert!(watched.encoded_len() < 64 * 1024, "a Watch message is {} bytes", watched.encoded_len());
    let watched_stage = &watched.execution.as_ref().unwrap().stages[0];
    assert!(watched_stage.workflows.iter().all(|w| w.output.is_empty() && w.output_cut));

    // ListWorkflows FULL: every output whole, over pages that each fit.
    let (all, pages) = list_workflows(&app, &e.id, None, pb::ExecutionView::Full).await;
    assert!(pages >= 2, "6.5 MB of output takes more than one page");
    let listed_names: Vec<&str> = all.iter().map(|w| w.workflow.as_ref().unwrap().name.as_str()).collect();
    assert_eq!(listed_names, wide.iter().map(String::as_str).collect::<Vec<_>>(), "each once, in order");
    for w in &all {
        let w = w.workflow.as_ref().unwrap();
        assert_eq!(w.output, output_of(&w.name, KEPT));
    }

    // GetTaskOutput: the whole kept output in pages of 16,384.
    let w = &stage.workflows[7];
    let (mut text, mut offset, mut pages) = (String::new(), 0, 0);
    loop {
        let request = pb::GetTaskOutputRequest { task_id: w.task_id.clone(), offset, max_chars: 0 };
        let page = app.executions.clone().get_task_output(request).await.unwrap().into_inner();
        assert_eq!(page.first_offset, offset);
        text.push_str(&page.output);
        offset = page.next_offset;
        pages += 1;
        if page.complete {
            assert_eq!(page.status, pb::WorkflowStatus::Succeeded as i32);
            break;
        }
    }
    assert_eq!((pages, text), (4, output_of(&w.name, KEPT)));
}

async fn a_stage_too_big_for_one_response_leaves_its_workflows_to_list_workflows(app: TestApp) {
    let q = queue();
    let (first, second) = (names(1000), names(1000));
    let p = app.create_pipeline("huge", vec![stage_of("first", &q, &first), stage_of("second", &q, &second)]).await;
    let e = app.start(&p.id).await;
    complete_all(&app, &q, 2000, |name| output_of(name, 2100)).await;
    app.wait_until(&e.id, |e| is_final(e.status)).await;

    for view in [pb::ExecutionView::Basic, pb::ExecutionView::Full] {
        let got = get_view(&app, &e.id, view).await;
        assert!(got.encoded_len() < DEFAULT_CLIENT_LIMIT, "{view:?} is {} bytes", got.encoded_len());
        let execution = got.execution.unwrap();
        assert_eq!(status(&execution), pb::ExecutionStatus::Succeeded);
        let omitted: Vec<&pb::StageExecution> = execution.stages.iter().filter(|s| s.workflows_omitted).collect();
        assert!(!omitted.is_empty(), "{view:?}: 2,000 tails do not fit one response");
        for s in omitted {
            assert!(s.workflows.is_empty());
            let counts = s.workflow_counts.as_ref().unwrap();
            assert_eq!((counts.total, counts.succeeded), (1000, 1000), "the counts say what was left out");
        }
    }
    let watched = first_watched(&app, &e.id).await;
    assert!(watched.encoded_len() < DEFAULT_CLIENT_LIMIT);
    let (listed, _) = list_workflows(&app, &e.id, Some(1), pb::ExecutionView::Basic).await;
    assert_eq!(listed.len(), 1000);
    assert!(listed.iter().all(|w| w.stage_name == "second" && w.stage_index == 1));
}

async fn task_output_pages_while_running_and_follows_to_the_end(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("chatty", vec![workflows("build", &q, &["w"])]).await;
    let e = app.start(&p.id).await;
    let task = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(10)).await.expect("task");
    let beat = |output: &str| pb::HeartbeatRequest {
        task_id: task.task_id.clone(),
        lease_token: task.lease_token.clone(),
        output: output.into(),
        output_offset: None,
    };
    app.workers.clone().heartbeat(beat("one\n")).await.expect("heartbeat with output");

    let page = |offset: i64| pb::GetTaskOutputRequest { task_id: task.task_id.clone(), offset, max_chars: 0 };
    let running = app.executions.clone().get_task_output(page(0)).await.unwrap().into_inner();
    assert_eq!((running.output.as_str(), running.complete), ("one\n", false));
    assert_eq!(running.status, pb::WorkflowStatus::Running as i32);

    let request = pb::WatchTaskOutputRequest { task_id: task.task_id.clone(), offset: 0 };
    let mut follow = app.executions.clone().watch_task_output(request).await.expect("follow").into_inner();
    let mut next =
        async || tokio::time::timeout(Duration::from_secs(10), follow.next()).await.expect("a message in time");
    let first = next().await.unwrap().unwrap();
    assert_eq!((first.output.as_str(), first.offset), ("one\n", 0));
    app.workers.clone().heartbeat(beat("two\n")).await.unwrap();
    let second = next().await.unwrap().unwrap();
    assert_eq!((second.output.as_str(), second.offset), ("two\n", 4));
    complete_task(&app.workers, &task.task_id, &task.lease_token, pb::TaskOutcome::Succeeded, "three\n").await.unwrap();
    let mut rest = String::new();
    let mut last = None;
    while let Some(message) = next().await {
        let message = message.unwrap();
        rest.push_str(&message.output);
        last = Some(message.status);
    }
    assert_eq!(rest, "three\n");
    assert_eq!(last, Some(pb::WorkflowStatus::Succeeded as i32), "the stream ends on the final status");

    let done = app.executions.clone().get_task_output(page(0)).await.unwrap().into_inner();
    assert_eq!((done.output.as_str(), done.complete, done.total_chars), ("one\ntwo\nthree\n", true, 14));
    let tail = app.executions.clone().get_task_output(page(8)).await.unwrap().into_inner();
    assert_eq!((tail.output.as_str(), tail.first_offset, tail.next_offset), ("three\n", 8, 14));
    let done = app.wait_final(&e.id).await;
    assert_eq!(workflow_of(&done, "build", "w").output, "one\ntwo\nthree\n");
}

/// A worker that says where each piece of output begins can send a
/// heartbeat again when its answer was lost: the server keeps each
/// character once, keeps what follows a lost piece, and refuses a negative
/// offset.
async fn a_heartbeat_sent_again_keeps_its_output_once(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("retrying", vec![workflows("build", &q, &["w"])]).await;
    let e = app.start(&p.id).await;
    let task = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(10)).await.expect("task");
    let beat = |output: &str, offset: i64| pb::HeartbeatRequest {
        task_id: task.task_id.clone(),
        lease_token: task.lease_token.clone(),
        output: output.into(),
        output_offset: Some(offset),
    };
    let mut workers = app.workers.clone();
    workers.heartbeat(beat("one\n", 0)).await.unwrap();
    workers.heartbeat(beat("one\n", 0)).await.unwrap(); // its answer was lost
    workers.heartbeat(beat("e\ntwo\n", 2)).await.unwrap(); // overlaps what is there
    workers.heartbeat(beat("é✓\n", 8)).await.unwrap();
    workers.heartbeat(beat("✓\n", 9)).await.unwrap(); // characters, not bytes
    workers.heartbeat(beat("five\n", 20)).await.unwrap(); // the piece before it was lost
    workers.heartbeat(beat("", 25)).await.unwrap();
    let refused = workers.heartbeat(beat("x", -1)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("output_offset"), "{}", refused.message());
    // Without an offset the piece is appended as it is.
    let plain = pb::HeartbeatRequest { output: "six\n".into(), ..beat("", 0) };
    let plain = pb::HeartbeatRequest { output_offset: None, ..plain };
    workers.heartbeat(plain).await.unwrap();

    let page = pb::GetTaskOutputRequest { task_id: task.task_id.clone(), offset: 0, max_chars: 0 };
    let kept = app.executions.clone().get_task_output(page).await.unwrap().into_inner();
    assert_eq!(kept.output, "one\ntwo\né✓\nfive\nsix\n");
    // The report repeats what the last heartbeat carried (its answer was
    // lost) and says so: kept once. Received so far: 29 characters.
    let report = succeeded_from(&task, "six\nend\n", 25);
    let negative = pb::CompleteTaskRequest { output_offset: Some(-5), ..report.clone() };
    let refused = workers.complete_task(negative).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("output_offset"), "{}", refused.message());
    workers.complete_task(report).await.unwrap();
    let done = app.wait_final(&e.id).await;
    assert_eq!(workflow_of(&done, "build", "w").output, "one\ntwo\né✓\nfive\nsix\nend\n");
}

//! Issue 9 at the edge: every limit refused with INVALID_ARGUMENT naming the
//! field and the limit, strings no database can hold refused alike on both
//! backends, ids that are not ids refused before any lookup, messages that
//! echo only a short prefix, and list pages that stay receivable.

use std::{collections::BTreeSet, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, ReflectMessage, Value};
use reprise::proto as pb;
use tonic::Code;

use crate::{
    fuzz_gen::{Generated, Outcome, send},
    helpers::*,
};

crate::on_both_backends!(
    configured_pipeline_limits_are_enforced_and_named,
    skip_conditions_that_overflowed_the_parser_are_refused_naming_the_limit,
    a_nul_in_any_string_field_of_any_rpc_is_invalid_argument,
    ids_that_are_not_ids_are_invalid_and_unknown_ids_not_found,
    definition_limits_name_the_field_and_the_limit,
    start_and_decision_limits_name_the_field_and_the_limit,
    worker_reports_are_capped_cut_or_refused_by_size,
    messages_quote_a_short_prefix_of_what_the_caller_sent,
    list_pipelines_leaves_definitions_out_unless_asked_and_pages_full_ones_by_size,
    polls_on_made_up_queues_leave_nothing_behind,
);

fn expression_stage(expression: &str) -> pb::Stage {
    skip_when(workflows("build", "q", &["w"]), expression)
}

fn create(name: &str, variables: Vec<pb::Variable>, stages: Vec<pb::Stage>) -> pb::CreatePipelineRequest {
    pb::CreatePipelineRequest {
        application: "shop".into(),
        name: name.into(),
        definition: Some(pb::PipelineDefinition { description: String::new(), variables, stages }),
    }
}

fn region() -> Vec<pb::Variable> {
    vec![pb::Variable {
        name: "region".into(),
        default_value: Some("eu".into()),
        description: String::new(),
        ..Default::default()
    }]
}

async fn skip_conditions_that_overflowed_the_parser_are_refused_naming_the_limit(app: TestApp) {
    let field = "definition.stages[0].skip_condition.expression";
    let cases = [
        (format!("{}region{}", "(".repeat(512), ")".repeat(512)), "16 deep"),
        (format!("{}{}", "[".repeat(256), "]".repeat(256)), "16 deep"),
        (format!("region{}", ".b".repeat(5000)), "at most 4096"),
        (format!("region{}", ".b".repeat(65)), "64 operators"),
        (format!("{}region == \"eu\"{}", "(".repeat(17), ")".repeat(17)), "16 deep"),
        ("[1].all(x, [1].all(y, true))".to_string(), "inside another"),
        ("region ==".to_string(), "does not parse"),
    ];
    for (expression, says) in cases {
        let request = create("p", region(), vec![expression_stage(&expression)]);
        let status = assert_invalid(app.pipelines.clone().create_pipeline(request).await, field);
        assert!(status.message().contains(says), "{says}: {}", status.message());
        assert!(status.message().len() < 2048, "{}", status.message().len());
    }
    // The deepest expression allowed is accepted, and runs.
    let deepest = format!("{}region == \"us\"{}", "(".repeat(16), ")".repeat(16));
    let q = queue();
    let stages = vec![skip_when(workflows("maybe", &q, &["w"]), &deepest), workflows("then", &q, &["w"])];
    let p = app.pipelines.clone().create_pipeline(create("deepest", region(), stages)).await.expect("allowed");
    let p = p.into_inner().pipeline.unwrap();
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let e = app.start_with(&p.id, &[("region", "us")]).await;
    let done = app.wait_final(&e.id).await;
    assert_eq!(stage_status(&done, "maybe"), pb::StageStatus::Skipped);
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
}

// ---- NUL in every string field ---------------------------------------------

/// Every RPC with every string field set to something valid (ids that exist
/// where it matters), so a NUL put in any one of them is the only problem.
/// The stage's first workflow receives the secret variable `token`.
fn with_secret(mut stage: pb::Stage) -> pb::Stage {
    if let Some(pb::stage::Kind::Workflows(w)) = &mut stage.kind {
        w.workflows[0].secrets = vec!["token".into()];
    }
    stage
}

async fn full_requests(app: &TestApp) -> Vec<(&'static str, Vec<u8>)> {
    let q = queue();
    let definition = || pb::PipelineDefinition {
        description: "d".into(),
        variables: vec![
            pb::Variable {
                name: "region".into(),
                default_value: Some("eu".into()),
                description: "r".into(),
                ..Default::default()
            },
            pb::Variable { name: "token".into(), description: "t".into(), secret: true, ..Default::default() },
        ],
        stages: vec![
            pb::Stage {
                environment: Some(pb::Environment { name: "ci".into(), r#type: pb::EnvironmentType::NonProd as i32 }),
                ..skip_when(with_secret(workflows("build", &q, &["w"])), "region == \"us\"")
            },
            approval("gate", Duration::from_secs(3600)),
        ],
    };
    let p = app.create_pipeline_with("full", definition().variables, definition().stages).await;
    let e = app.start_with(&p.id, &[("token", "s3cret-token")]).await;
    let (id, uuid) = (e.id.clone(), || uuid::Uuid::now_v7().to_string());
    let token = |key: &str| URL_SAFE_NO_PAD.encode(format!("k1:{key}"));
    let task_id = e.stages[0].workflows[0].task_id.clone();
    vec![
        (
            "PipelineService/CreatePipeline",
            pb::CreatePipelineRequest { application: "shop".into(), name: "n".into(), definition: Some(definition()) }
                .encode_to_vec(),
        ),
        (
            "PipelineService/UpdatePipeline",
            pb::UpdatePipelineRequest {
                pipeline_id: p.id.clone(),
                expected_version: 1,
                definition: Some(definition()),
            }
            .encode_to_vec(),
        ),
        (
            "PipelineService/GetPipeline",
            pb::GetPipelineRequest { pipeline_id: p.id.clone(), version: 0 }.encode_to_vec(),
        ),
        (
            "PipelineService/ListPipelines",
            pb::ListPipelinesRequest {
                application: "shop".into(),
                page_size: 5,
                page_token: token(&p.id),
                view: pb::PipelineView::Full as i32,
            }
            .encode_to_vec(),
        ),
        (
            "ExecutionService/StartExecution",
            pb::StartExecutionRequest {
                pipeline_id: p.id.clone(),
                pipeline_version: 0,
                variables: [("region".to_string(), "eu".to_string()), ("token".to_string(), "t0ken".to_string())]
                    .into(),
                artifacts: [("web".to_string(), "1.2.3".to_string())].into(),
                request_id: "request-1".into(),
            }
            .encode_to_vec(),
        ),
        (
            "ExecutionService/GetExecution",
            pb::GetExecutionRequest { execution_id: id.clone(), ..Default::default() }.encode_to_vec(),
        ),
        ("ExecutionService/WatchExecution", pb::WatchExecutionRequest { execution_id: id.clone() }.encode_to_vec()),
        (
            "ExecutionService/ListExecutions",
            pb::ListExecutionsRequest {
                application: "shop".into(),
                pipeline_id: p.id.clone(),
                status: 0,
                page_size: 5,
                page_token: token(&id),
            }
            .encode_to_vec(),
        ),
        ("ExecutionService/Pause", pb::PauseRequest { execution_id: id.clone() }.encode_to_vec()),
        ("ExecutionService/Continue", pb::ContinueRequest { execution_id: id.clone() }.encode_to_vec()),
        (
            "ExecutionService/Approve",
            pb::ApproveRequest { execution_id: id.clone(), stage_name: "gate".into(), comment: "c".into() }
                .encode_to_vec(),
        ),
        (
            "ExecutionService/Reject",
            pb::RejectRequest { execution_id: id.clone(), stage_name: "gate".into(), comment: "c".into() }
                .encode_to_vec(),
        ),
        (
            "ExecutionService/Resume",
            pb::ResumeRequest {
                execution_id: id.clone(),
                from_stage: Some(pb::resume_request::FromStage::StageName("build".into())),
                request_id: "resume-1".into(),
                validate_only: true,
                reason: "why".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            // Must be empty: refused whatever they hold, NUL or not.
            "ExecutionService/Resume",
            pb::ResumeRequest {
                execution_id: id.clone(),
                from_stage: Some(pb::resume_request::FromStage::StageIndex(0)),
                variables: [("k".to_string(), "v".to_string())].into(),
                artifacts: [("k".to_string(), "v".to_string())].into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "ExecutionService/ListWorkflows",
            pb::ListWorkflowsRequest {
                execution_id: id.clone(),
                page_size: 5,
                page_token: token("0.0"),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "ExecutionService/GetTaskOutput",
            pb::GetTaskOutputRequest { task_id: task_id.clone(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "ExecutionService/WatchTaskOutput",
            pb::WatchTaskOutputRequest { task_id: task_id.clone(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "ExecutionService/ListHistory",
            pb::ListHistoryRequest { execution_id: id.clone(), page_size: 5, page_token: token("2") }.encode_to_vec(),
        ),
        ("ExecutionService/Abort", pb::AbortRequest { execution_id: id.clone(), reason: "r".into() }.encode_to_vec()),
        (
            "WorkerService/PollTask",
            pb::PollTaskRequest {
                task_queue: queue(),
                worker_id: "w".into(),
                wait: Some(prost_types::Duration { seconds: 0, nanos: 1_000_000 }),
            }
            .encode_to_vec(),
        ),
        (
            "WorkerService/Heartbeat",
            pb::HeartbeatRequest { task_id: uuid(), lease_token: uuid(), output: "o".into(), output_offset: None }
                .encode_to_vec(),
        ),
        (
            "WorkerService/CompleteTask",
            pb::CompleteTaskRequest {
                task_id: uuid(),
                lease_token: uuid(),
                outcome: pb::TaskOutcome::Succeeded as i32,
                exit_code: 0,
                output: "o".into(),
                message: "m".into(),
                output_offset: None,
                next_task_queue: queue(),
                worker_id: "w".into(),
            }
            .encode_to_vec(),
        ),
        ("AccessService/CreateUserGroup", pb::CreateUserGroupRequest { name: "g".into() }.encode_to_vec()),
        ("AccessService/DeleteUserGroup", pb::DeleteUserGroupRequest { group_id: uuid() }.encode_to_vec()),
        (
            "AccessService/ListUserGroups",
            pb::ListUserGroupsRequest { page_size: 5, page_token: token(&uuid()) }.encode_to_vec(),
        ),
        (
            "AccessService/AddGroupMember",
            pb::AddGroupMemberRequest { group_id: uuid(), subject: "alice".into() }.encode_to_vec(),
        ),
        (
            "AccessService/RemoveGroupMember",
            pb::RemoveGroupMemberRequest { group_id: uuid(), subject: "alice".into() }.encode_to_vec(),
        ),
        (
            "AccessService/AddGrant",
            pb::AddGrantRequest {
                grant: Some(pb::Grant {
                    id: uuid(),
                    group_id: uuid(),
                    permission: pb::Permission::View as i32,
                    application: "shop".into(),
                    environment_type: 0,
                }),
            }
            .encode_to_vec(),
        ),
        ("AccessService/RemoveGrant", pb::RemoveGrantRequest { grant_id: uuid() }.encode_to_vec()),
        (
            "AccessService/ListAuditEvents",
            pb::ListAuditEventsRequest {
                application: "shop".into(),
                execution_id: id.clone(),
                page_size: 5,
                page_token: token(&uuid()),
                chain_id: id.clone(),
            }
            .encode_to_vec(),
        ),
    ]
}

/// Copies of `message`, each with a NUL put into one string (a field, a map
/// key or a map value, at any depth), labelled `Message.field`.
fn with_nul(message: &DynamicMessage) -> Vec<(String, DynamicMessage)> {
    let desc = message.descriptor();
    let mut out = Vec::new();
    for field in desc.fields() {
        if !message.has_field(&field) {
            continue;
        }
        let label = format!("{}.{}", desc.full_name(), field.name());
        let value = message.get_field(&field).into_owned();
        let mut put = |label: String, value: Value| {
            let mut copy = message.clone();
            copy.set_field(&field, value);
            out.push((label, copy));
        };
        match (field.kind(), value) {
            (_, Value::Map(map)) => {
                for (key, v) in &map {
                    if let MapKey::String(k) = key {
                        let mut changed = map.clone();
                        let v = changed.remove(key).unwrap();
                        changed.insert(MapKey::String(format!("{k}\0")), v);
                        put(format!("{label}[key]"), Value::Map(changed));
                    }
                    if let Value::String(s) = v {
                        let mut changed = map.clone();
                        changed.insert(key.clone(), Value::String(format!("{s}\0")));
                        put(format!("{label}[value]"), Value::Map(changed));
                    }
                }
            }
            (Kind::String, Value::String(s)) => put(label, Value::String(format!("{s}\0x"))),
            (Kind::String, Value::List(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::String(s) = item {
                        let mut list = items.clone();
                        list[i] = Value::String(format!("{s}\0x"));
                        put(label.clone(), Value::List(list));
                    }
                }
            }
            (Kind::Message(_), Value::Message(inner)) => {
                for (inner_label, changed) in with_nul(&inner) {
                    put(inner_label, Value::Message(changed));
                }
            }
            (Kind::Message(_), Value::List(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Message(inner) = item {
                        for (inner_label, changed) in with_nul(inner) {
                            let mut list = items.clone();
                            list[i] = Value::Message(changed);
                            put(inner_label, Value::List(list));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Every string field (and string map key and value) reachable from `desc`.
fn string_fields(desc: &MessageDescriptor, seen: &mut BTreeSet<String>, out: &mut BTreeSet<String>) {
    if !seen.insert(desc.full_name().to_owned()) || desc.full_name().starts_with("google.") {
        return;
    }
    for field in desc.fields() {
        let label = format!("{}.{}", desc.full_name(), field.name());
        match field.kind() {
            Kind::String => {
                out.insert(label);
            }
            Kind::Message(m) if field.is_map() => {
                if matches!(m.map_entry_key_field().kind(), Kind::String) {
                    out.insert(format!("{label}[key]"));
                }
                if matches!(m.map_entry_value_field().kind(), Kind::String) {
                    out.insert(format!("{label}[value]"));
                }
            }
            Kind::Message(m) => string_fields(&m, seen, out),
            _ => {}
        }
    }
}

/// The outputs of a process are kept, not refused: NUL becomes U+FFFD.
const KEPT_WITH_NUL: [&str; 3] = [
    "reprise.v1.CompleteTaskRequest.output",
    "reprise.v1.CompleteTaskRequest.message",
    "reprise.v1.HeartbeatRequest.output",
];

async fn a_nul_in_any_string_field_of_any_rpc_is_invalid_argument(app: TestApp) {
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut covered = BTreeSet::new();
    let mut all = BTreeSet::new();
    let mut methods = BTreeSet::new();
    for (path, body) in full_requests(&app).await {
        let (service, method) = path.split_once('/').unwrap();
        let m = pool
            .get_service_by_name(&format!("reprise.v1.{service}"))
            .and_then(|s| s.methods().find(|x| x.name() == method))
            .unwrap_or_else(|| panic!("no method {path}"));
        methods.insert(path);
        string_fields(&m.input(), &mut BTreeSet::new(), &mut all);
        let request = |body: Vec<u8>| Generated {
            path: format!("/reprise.v1.{path}"),
            method: method.to_owned(),
            output: m.output(),
            streaming: m.is_server_streaming(),
            body,
            token: None,
            malformed: false,
            kind: "nul",
        };
        let message = DynamicMessage::decode(m.input(), body.as_slice()).unwrap();
        // Without a NUL the request is fine (but for a Resume's inputs, which
        // must be empty whatever they hold).
        let control = send(app.channel.clone(), &request(body.clone())).await;
        let must_be_empty = message
            .get_field_by_name("variables")
            .is_some_and(|v| method == "Resume" && matches!(v.as_ref(), Value::Map(m) if !m.is_empty()));
        if !must_be_empty {
            assert!(
                !matches!(&control, Outcome::Failed(s) if s.code() == Code::InvalidArgument),
                "{path} without NUL: {control:?}"
            );
        }
        for (label, changed) in with_nul(&message) {
            covered.insert(label.clone());
            let outcome = send(app.channel.clone(), &request(changed.encode_to_vec())).await;
            let code = match &outcome {
                Outcome::Failed(s) => s.code(),
                Outcome::Ok(_) => Code::Ok,
                Outcome::TimedOut => Code::DeadlineExceeded,
            };
            if KEPT_WITH_NUL.contains(&label.as_str()) {
                assert!(
                    !matches!(code, Code::InvalidArgument | Code::Unavailable | Code::Internal),
                    "{label}: {outcome:?}"
                );
            } else {
                assert_eq!(code, Code::InvalidArgument, "{path}: NUL in {label}: {outcome:?}");
                let Outcome::Failed(status) = &outcome else { unreachable!() };
                assert!(!bad_request_fields(status).is_empty(), "{label}: a BadRequest detail: {status:?}");
            }
        }
    }
    assert_eq!(methods.len(), 29, "every RPC: {methods:?}");
    let missed: Vec<_> = all.difference(&covered).collect();
    assert!(missed.is_empty(), "string fields without a NUL case: {missed:?}");
}

// ---- ids ---------------------------------------------------------------------

async fn ids_that_are_not_ids_are_invalid_and_unknown_ids_not_found(app: TestApp) {
    let mut e = app.executions.clone();
    let mut p = app.pipelines.clone();
    let malformed = ["nope", "01234567-89ab-cdef-0123-456789abcdeg", "\0", &"9".repeat(100_000)];
    for id in malformed {
        let get = pb::GetExecutionRequest { execution_id: id.into(), ..Default::default() };
        assert_invalid(e.get_execution(get).await, "execution_id");
        assert_invalid(
            p.get_pipeline(pb::GetPipelineRequest { pipeline_id: id.into(), version: 0 }).await,
            "pipeline_id",
        );
        let history = pb::ListHistoryRequest { execution_id: id.into(), ..Default::default() };
        assert_invalid(e.list_history(history).await, "execution_id");
        let filter = pb::ListExecutionsRequest { pipeline_id: id.into(), ..Default::default() };
        assert_invalid(e.list_executions(filter).await, "pipeline_id");
    }
    // Well-formed ids of nothing are NOT_FOUND, in any form a UUID is written.
    let unknown = uuid::Uuid::now_v7();
    for id in [unknown.to_string(), unknown.to_string().to_uppercase(), unknown.simple().to_string()] {
        let get = pb::GetExecutionRequest { execution_id: id.clone(), ..Default::default() };
        assert_code(e.get_execution(get).await, Code::NotFound);
        assert_code(
            p.get_pipeline(pb::GetPipelineRequest { pipeline_id: id.clone(), version: 0 }).await,
            Code::NotFound,
        );
        let abort = pb::AbortRequest { execution_id: id.clone(), reason: String::new() };
        assert_code(e.abort(abort).await, Code::NotFound);
    }
    // An id written in capitals finds what the server issued.
    let pipeline = app.create_pipeline("ids", vec![workflows("build", &queue(), &["w"])]).await;
    let upper = pb::GetPipelineRequest { pipeline_id: pipeline.id.to_uppercase(), version: 0 };
    assert_eq!(p.get_pipeline(upper).await.expect("found").into_inner().pipeline.unwrap().id, pipeline.id);
    // Page tokens whose cursor is not an id are refused the same way.
    for cursor in ["\0", "x", &"1".repeat(40)] {
        let token = URL_SAFE_NO_PAD.encode(format!("k1:{cursor}"));
        let list = pb::ListExecutionsRequest { page_token: token, ..Default::default() };
        assert_invalid(e.list_executions(list).await, "page_token");
    }
    let long = pb::ListPipelinesRequest { page_token: "a".repeat(10_000), ..Default::default() };
    assert_invalid(p.list_pipelines(long).await, "page_token");
}

// ---- definitions ---------------------------------------------------------------

async fn definition_limits_name_the_field_and_the_limit(app: TestApp) {
    let mut p = app.pipelines.clone();
    let ok = || workflows("build", "q", &["w"]);
    let with = |edit: &dyn Fn(&mut pb::Stage)| {
        let mut s = ok();
        edit(&mut s);
        create("p", vec![], vec![s])
    };
    let workflow = |edit: &dyn Fn(&mut pb::Workflow)| {
        with(&|s: &mut pb::Stage| {
            if let Some(pb::stage::Kind::Workflows(w)) = &mut s.kind {
                edit(&mut w.workflows[0]);
            }
        })
    };
    let long = |n: usize| "x".repeat(n);
    let at = "definition.stages[0]";
    let cases: Vec<(pb::CreatePipelineRequest, String, &str)> = vec![
        (
            pb::CreatePipelineRequest { application: long(129), ..create("p", vec![], vec![ok()]) },
            "application".into(),
            "128",
        ),
        (pb::CreatePipelineRequest { name: "a\0".into(), ..create("p", vec![], vec![ok()]) }, "name".into(), "NUL"),
        (with(&|s| s.name = long(129)), format!("{at}.name"), "128"),
        (
            with(&|s| s.environment.as_mut().unwrap().name = "a\u{1b}[31m".into()),
            format!("{at}.environment.name"),
            "control",
        ),
        (workflow(&|w| w.name = long(200)), format!("{at}.workflows.workflows[0].name"), "128"),
        (workflow(&|w| w.task_queue = long(129)), format!("{at}.workflows.workflows[0].task_queue"), "128"),
        (workflow(&|w| w.command = long(33 * 1024)), format!("{at}.workflows.workflows[0].command"), "32768"),
        (
            workflow(&|w| w.timeout = Some(prost_types::Duration { seconds: 8 * 24 * 3600, nanos: 0 })),
            format!("{at}.workflows.workflows[0].timeout"),
            "604800s",
        ),
        (
            workflow(&|w| w.timeout = Some(prost_types::Duration { seconds: i64::MIN, nanos: 0 })),
            format!("{at}.workflows.workflows[0].timeout"),
            "positive",
        ),
        (
            create("p", vec![], vec![approval("gate", Duration::from_secs(31 * 24 * 3600))]),
            format!("{at}.approval.timeout"),
            "2592000s",
        ),
        (
            create("p", vec![], (0..501).map(|i| workflows(&format!("s{i}"), "q", &["w"])).collect()),
            "definition.stages".into(),
            "500 stages",
        ),
        (
            create("p", vec![], (0..10_000).map(|i| workflows(&format!("s{i}"), "q", &["w"])).collect()),
            "definition.stages".into(),
            "500 stages",
        ),
        (
            create(
                "p",
                vec![],
                vec![workflows(
                    "big",
                    "q",
                    &(0..1001)
                        .map(|j| format!("w{j}"))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                )],
            ),
            format!("{at}.workflows.workflows"),
            "1000 workflows",
        ),
        (
            create(
                "p",
                vec![],
                (0..21)
                    .map(|i| {
                        let names: Vec<String> = (0..1000).map(|j| format!("w{j}")).collect();
                        workflows(&format!("s{i}"), "q", &names.iter().map(String::as_str).collect::<Vec<_>>())
                    })
                    .collect(),
            ),
            "definition.stages".into(),
            "20000 workflows",
        ),
        (
            create(
                "p",
                (0..101).map(|i| pb::Variable { name: format!("v{i}"), ..Default::default() }).collect(),
                vec![ok()],
            ),
            "definition.variables".into(),
            "100 variables",
        ),
        (
            create(
                "p",
                vec![
                    pb::Variable { name: "region".into(), ..Default::default() },
                    pb::Variable { name: "REGION".into(), ..Default::default() },
                ],
                vec![ok()],
            ),
            "definition.variables[1].name".into(),
            "REPRISE_VAR_REGION",
        ),
        (
            create(
                "p",
                vec![],
                (0..70)
                    .map(|i| {
                        let mut s = workflows(&format!("s{i}"), "q", &["w"]);
                        if let Some(pb::stage::Kind::Workflows(w)) = &mut s.kind {
                            w.workflows[0].command = "c".repeat(32 * 1024);
                        }
                        s
                    })
                    .collect(),
            ),
            "definition".into(),
            "2097152 bytes",
        ),
    ];
    for (request, field, says) in cases {
        let status = assert_invalid(p.create_pipeline(request).await, &field);
        assert!(status.message().contains(says), "{field}: {:?} should say {says:?}", status.message());
    }
    // The limits hold on update too.
    let pipeline = app.create_pipeline("update-me", vec![ok()]).await;
    let update = pb::UpdatePipelineRequest {
        pipeline_id: pipeline.id,
        expected_version: i64::MAX,
        definition: Some(pb::PipelineDefinition { stages: vec![ok()], ..Default::default() }),
    };
    assert_invalid(p.update_pipeline(update.clone()).await, "expected_version");
    let update = pb::UpdatePipelineRequest {
        expected_version: 1,
        definition: Some(pb::PipelineDefinition {
            stages: vec![with(&|s| s.name = long(129)).definition.unwrap().stages.remove(0)],
            ..Default::default()
        }),
        ..update
    };
    assert_invalid(p.update_pipeline(update).await, "definition.stages[0].name");
}

// ---- starts, decisions, worker reports ----------------------------------------

async fn start_and_decision_limits_name_the_field_and_the_limit(app: TestApp) {
    let q = queue();
    let p = app
        .create_pipeline_with(
            "inputs",
            region(),
            vec![workflows("build", &q, &["w"]), approval("gate", Duration::from_secs(60))],
        )
        .await;
    let mut e = app.executions.clone();
    let start = |edit: &dyn Fn(&mut pb::StartExecutionRequest)| {
        let mut r = pb::StartExecutionRequest { pipeline_id: p.id.clone(), ..Default::default() };
        edit(&mut r);
        r
    };
    let cases: Vec<(pb::StartExecutionRequest, &str, &str)> = vec![
        (start(&|r| r.request_id = "r".repeat(129)), "request_id", "128"),
        (start(&|r| r.request_id = "r\n".into()), "request_id", "control"),
        (
            start(&|r| r.variables = (0..101).map(|i| (format!("v{i}"), "x".into())).collect()),
            "variables",
            "100 variables",
        ),
        (start(&|r| r.variables = [("region".into(), "x".repeat(4097))].into()), "variables[region]", "4096"),
        (
            start(&|r| r.artifacts = (0..101).map(|i| (format!("a{i}"), "1".into())).collect()),
            "artifacts",
            "100 artifacts",
        ),
        (
            start(&|r| r.artifacts = [("web-1".into(), "1".into()), ("web_1".into(), "2".into())].into()),
            "artifacts[web_1]",
            "REPRISE_ARTIFACT_WEB_1",
        ),
        (start(&|r| r.artifacts = [("web".into(), "v".repeat(257))].into()), "artifacts[web]", "256"),
        (start(&|r| r.artifacts = [("w".repeat(129), "1".into())].into()), "", "128"),
    ];
    for (request, field, says) in cases {
        let key_field = format!("artifacts[\"{}\"…]", "w".repeat(64));
        let field = if field.is_empty() { key_field.as_str() } else { field };
        let status = assert_invalid(e.start_execution(request).await, field);
        assert!(status.message().contains(says), "{field}: {:?} should say {says:?}", status.message());
    }
    let run = app.start(&p.id).await;
    let abort = pb::AbortRequest { execution_id: run.id.clone(), reason: "r".repeat(1025) };
    assert!(assert_invalid(e.abort(abort).await, "reason").message().contains("1024"));
    let approve =
        pb::ApproveRequest { execution_id: run.id.clone(), stage_name: String::new(), comment: "c".repeat(1025) };
    assert!(assert_invalid(e.approve(approve).await, "comment").message().contains("1024"));
    let reject =
        pb::RejectRequest { execution_id: run.id.clone(), stage_name: "s".repeat(129), comment: String::new() };
    assert_invalid(e.reject(reject).await, "stage_name");
    let resume = pb::ResumeRequest {
        execution_id: run.id.clone(),
        from_stage: Some(pb::resume_request::FromStage::StageName("s".repeat(129))),
        ..Default::default()
    };
    assert_invalid(e.resume(resume).await, "stage_name");
    let resume = pb::ResumeRequest {
        execution_id: run.id.clone(),
        from_stage: Some(pb::resume_request::FromStage::StageIndex(i32::MIN)),
        request_id: "x".repeat(129),
        ..Default::default()
    };
    assert_invalid(e.resume(resume).await, "request_id");
}

async fn worker_reports_are_capped_cut_or_refused_by_size(app: TestApp) {
    let q = queue();
    let p =
        app.create_pipeline("reports", vec![workflows("build", &q, &["a", "b"]), workflows("next", &q, &["c"])]).await;
    let e = app.start(&p.id).await;
    let w = app.workers.clone();
    let poll = |worker_id: String| pb::PollTaskRequest { task_queue: q.clone(), worker_id, wait: None };
    assert_invalid(w.clone().poll_task(poll("w".repeat(129))).await, "worker_id");
    assert_invalid(
        w.clone().poll_task(pb::PollTaskRequest { task_queue: "q".repeat(129), ..poll("w".into()) }).await,
        "task_queue",
    );
    let huge_wait =
        pb::PollTaskRequest { wait: Some(prost_types::Duration { seconds: i64::MIN, nanos: 0 }), ..poll("w".into()) };
    assert_invalid(w.clone().poll_task(huge_wait).await, "wait");
    let odd_nanos =
        pb::PollTaskRequest { wait: Some(prost_types::Duration { seconds: 1, nanos: -5 }), ..poll("w".into()) };
    assert_invalid(w.clone().poll_task(odd_nanos).await, "wait");

    let a = poll_once(w.clone(), q.clone(), Duration::from_secs(10)).await.expect("task a");
    let b = poll_once(w.clone(), q.clone(), Duration::from_secs(10)).await.expect("task b");
    // Beyond 1 MiB the report is refused; the lease still holds for a retry.
    let refused =
        complete_task(&w, &a.task_id, &a.lease_token, pb::TaskOutcome::Succeeded, &"o".repeat(1024 * 1024 + 1)).await;
    assert!(assert_invalid(refused, "output").message().contains("1048576"));
    // Up to 1 MiB it is kept: its last 64 KiB, NUL as U+FFFD.
    let output = format!("{}\0end", "o".repeat(1024 * 1024 - 4));
    complete_task(&w, &a.task_id, &a.lease_token, pb::TaskOutcome::Succeeded, &output).await.expect("accepted");
    // A long message is cut with a marker, not refused.
    let report = pb::CompleteTaskRequest {
        task_id: b.task_id.clone(),
        lease_token: b.lease_token.clone(),
        outcome: pb::TaskOutcome::Failed as i32,
        exit_code: 3,
        output: String::new(),
        message: format!("{}\0", "m".repeat(10_000)),
        output_offset: None,
        ..Default::default()
    };
    w.clone().complete_task(report).await.expect("accepted");
    let done = app.wait_final(&e.id).await;
    let kept = &workflow_of(&done, "build", &a.workflow_name).output;
    assert_eq!(kept.len(), 64 * 1024);
    assert!(kept.ends_with("\u{FFFD}end"), "{:?}", &kept[kept.len() - 10..]);
    let message = &workflow_of(&done, "build", &b.workflow_name).status_message;
    assert!(message.len() <= 4096 && message.ends_with("… [truncated]"), "{} bytes", message.len());
}

// ---- messages -------------------------------------------------------------------

async fn messages_quote_a_short_prefix_of_what_the_caller_sent(app: TestApp) {
    let mut e = app.executions.clone();
    // A 100 KB id: the answer is INVALID_ARGUMENT, not a header too big to send.
    let get = pb::GetExecutionRequest { execution_id: "i".repeat(100_000), ..Default::default() };
    let status = assert_invalid(e.get_execution(get).await, "execution_id");
    assert!(status.message().len() < 300 && status.message().contains('…'), "{}", status.message());
    // Names are quoted in part wherever they come back.
    let q = queue();
    let p = app.create_pipeline_with("quotes", region(), vec![workflows("build", &q, &["w"])]).await;
    let start = pb::StartExecutionRequest {
        pipeline_id: p.id.clone(),
        variables: [("v".repeat(120), "x".into())].into(),
        ..Default::default()
    };
    let status = assert_code(e.start_execution(start).await, Code::InvalidArgument);
    assert!(!status.message().contains(&"v".repeat(100)), "{}", status.message());
    assert!(status.message().contains(&format!("\"{}\"…", "v".repeat(64))), "{}", status.message());
    // Many problems at once: the refusal lists some and counts the rest.
    let stages = (0..400).map(|i| workflows(&format!("s{}", i % 2), &q, &["w"])).collect();
    let status =
        assert_code(app.pipelines.clone().create_pipeline(create("dups", vec![], stages)).await, Code::InvalidArgument);
    assert!(status.message().len() <= 2048 && status.message().contains("more problem(s)"), "{}", status.message());
    assert!(bad_request_fields(&status).len() <= 10);
}

// ---- lists ---------------------------------------------------------------------

async fn list_pipelines_leaves_definitions_out_unless_asked_and_pages_full_ones_by_size(app: TestApp) {
    // Four pipelines of about 1.4 MiB each (45 commands of 32 KiB): any
    // two fit under the 3 MiB budget of a FULL page, three do not.
    let q = queue();
    let mut ids = Vec::new();
    for i in 0..4 {
        let mut stage = workflows(
            "build",
            &q,
            &(0..45).map(|j| format!("w{j}")).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>(),
        );
        if let Some(pb::stage::Kind::Workflows(w)) = &mut stage.kind {
            w.workflows.iter_mut().for_each(|w| w.command = format!("{i}").repeat(32 * 1024));
        }
        let request =
            pb::CreatePipelineRequest { application: "big".into(), ..create(&format!("big-{i}"), vec![], vec![stage]) };
        ids.push(
            app.pipelines.clone().create_pipeline(request).await.expect("create").into_inner().pipeline.unwrap().id,
        );
    }
    ids.sort();
    // BASIC (the default): all four, small, no definitions.
    let list = |view: pb::PipelineView, page_token: String| pb::ListPipelinesRequest {
        application: "big".into(),
        page_size: 50,
        page_token,
        view: view as i32,
    };
    let basic = app.pipelines.clone().list_pipelines(list(pb::PipelineView::Unspecified, String::new())).await.unwrap();
    let basic = basic.into_inner();
    assert_eq!(basic.pipelines.len(), 4);
    assert!(basic.pipelines.iter().all(|p| p.definition.is_none()));
    assert!(basic.encoded_len() < 4096, "{} bytes", basic.encoded_len());
    // FULL: pages end early by size; every page fits a default client.
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = app
            .pipelines
            .clone()
            .list_pipelines(list(pb::PipelineView::Full, token))
            .await
            .expect("a page fits")
            .into_inner();
        pages += 1;
        assert!(!page.pipelines.is_empty() && page.encoded_len() <= 3 * 1024 * 1024, "{} bytes", page.encoded_len());
        assert!(page.pipelines.iter().all(|p| p.definition.is_some()));
        seen.extend(page.pipelines.into_iter().map(|p| p.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 10);
    }
    assert_eq!(seen, ids, "each once, in order");
    assert_eq!(pages, 2);
    let unknown = pb::ListPipelinesRequest { view: 7, ..Default::default() };
    assert_invalid(app.pipelines.clone().list_pipelines(unknown).await, "view");
}

// ---- memory -------------------------------------------------------------------

async fn polls_on_made_up_queues_leave_nothing_behind(app: TestApp) {
    let mut polls = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let w = app.workers.clone();
        polls.spawn(async move {
            poll_once(w, format!("made-up-{}", uuid::Uuid::new_v4()), Duration::from_millis(50)).await
        });
    }
    while let Some(polled) = polls.join_next().await {
        assert!(polled.unwrap().is_none());
    }
    assert_eq!(app.engine.parked_queues(), 0, "no poller stays parked");
    assert!(app.engine.remembered_queues() <= 10_000, "what is remembered of idle queues is bounded");
}

async fn configured_pipeline_limits_are_enforced_and_named(app: TestApp) {
    let limits = reprise::domain::limits::Limits {
        max_stages: 3,
        max_workflows_per_stage: 2,
        max_workflows: 4,
        ..Default::default()
    };
    let app = app.restart_with(reprise::engine::Settings { limits, ..test_settings() }).await;
    let q = queue();
    let create = |stages: Vec<pb::Stage>| pb::CreatePipelineRequest {
        application: "shop".into(),
        name: format!("p-{}", uuid::Uuid::new_v4().simple()),
        definition: Some(pb::PipelineDefinition { stages, ..Default::default() }),
    };
    let stage = |name: &str, n: usize| {
        let names: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
        workflows(name, &q, &names.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let too_many_stages = vec![stage("a", 1), stage("b", 1), stage("c", 1), stage("d", 1)];
    let refused =
        assert_invalid(app.pipelines.clone().create_pipeline(create(too_many_stages)).await, "definition.stages");
    assert!(refused.message().contains("at most 3 stages"), "{}", refused.message());
    let too_wide = vec![stage("a", 3)];
    let refused = assert_invalid(
        app.pipelines.clone().create_pipeline(create(too_wide)).await,
        "definition.stages[0].workflows.workflows",
    );
    assert!(refused.message().contains("at most 2 workflows"), "{}", refused.message());
    let too_many_workflows = vec![stage("a", 2), stage("b", 2), stage("c", 1)];
    let refused = app.pipelines.clone().create_pipeline(create(too_many_workflows)).await.unwrap_err();
    assert!(refused.message().contains("at most 4 workflows"), "{}", refused.message());
    // At the limits it is accepted.
    app.pipelines.clone().create_pipeline(create(vec![stage("a", 2), stage("b", 2)])).await.expect("at the limits");
}

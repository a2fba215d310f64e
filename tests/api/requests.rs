//! Requests answered exactly or refused precisely: pipeline validation and
//! versions, starting executions (inputs, idempotency, pinning), pagination,
//! and calls cut off by their deadline.

use std::{collections::HashSet, time::Duration};

use reprise::proto as pb;
use tonic::Code;

use crate::helpers::*;

crate::on_both_backends!(
    create_pipeline_refuses_a_bad_definition_naming_the_field,
    create_pipeline_refuses_a_second_pipeline_of_the_same_name,
    update_pipeline_writes_a_new_version_and_keeps_the_old_one,
    start_execution_refuses_unknown_pipelines_and_bad_variables,
    a_retried_start_with_one_request_id_creates_one_execution,
    concurrent_starts_with_one_request_id_create_one_execution,
    an_execution_keeps_the_pipeline_version_it_started_with,
    list_executions_pages_newest_first_and_filters,
    list_pipelines_pages_by_id_and_filters_by_application,
    starts_cut_off_by_their_deadline_leave_no_half_written_execution,
);

fn definition(variables: Vec<pb::Variable>, stages: Vec<pb::Stage>) -> pb::PipelineDefinition {
    pb::PipelineDefinition { description: String::new(), variables, stages }
}

fn create_request(
    application: &str,
    name: &str,
    definition: Option<pb::PipelineDefinition>,
) -> pb::CreatePipelineRequest {
    pb::CreatePipelineRequest { application: application.into(), name: name.into(), definition }
}

fn variable(name: &str, default: Option<&str>) -> pb::Variable {
    pb::Variable {
        name: name.into(),
        default_value: default.map(Into::into),
        description: String::new(),
        ..Default::default()
    }
}

fn start_request(pipeline_id: &str, variables: &[(&str, &str)]) -> pb::StartExecutionRequest {
    pb::StartExecutionRequest {
        pipeline_id: pipeline_id.into(),
        variables: variables.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    }
}

fn stage_names(d: &pb::PipelineDefinition) -> Vec<&str> {
    d.stages.iter().map(|s| s.name.as_str()).collect()
}

async fn get_pipeline(app: &TestApp, id: &str, version: i64) -> Result<pb::Pipeline, tonic::Status> {
    let request = pb::GetPipelineRequest { pipeline_id: id.into(), version };
    app.pipelines.clone().get_pipeline(request).await.map(|r| r.into_inner().pipeline.expect("pipeline"))
}

/// Every page of ListExecutions for `request` with `page_size`.
async fn execution_pages(
    app: &TestApp,
    mut request: pb::ListExecutionsRequest,
    page_size: i32,
) -> Vec<Vec<pb::Execution>> {
    request.page_size = page_size;
    let mut pages = Vec::new();
    loop {
        let page = app.executions.clone().list_executions(request.clone()).await.expect("list executions").into_inner();
        pages.push(page.executions);
        if page.next_page_token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 50, "pagination does not end");
        request.page_token = page.next_page_token;
    }
}

/// Every page of ListPipelines of `application` with `page_size`.
async fn pipeline_pages(app: &TestApp, application: &str, page_size: i32) -> Vec<Vec<pb::Pipeline>> {
    let mut request = pb::ListPipelinesRequest {
        application: application.into(),
        page_size,
        page_token: String::new(),
        view: pb::PipelineView::Full as i32,
    };
    let mut pages = Vec::new();
    loop {
        let page = app.pipelines.clone().list_pipelines(request.clone()).await.expect("list pipelines").into_inner();
        pages.push(page.pipelines);
        if page.next_page_token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 50, "pagination does not end");
        request.page_token = page.next_page_token;
    }
}

fn sizes<T>(pages: &[Vec<T>]) -> Vec<usize> {
    pages.iter().map(Vec::len).collect()
}

fn execution_ids(pages: &[Vec<pb::Execution>]) -> Vec<String> {
    pages.iter().flatten().map(|e| e.id.clone()).collect()
}

fn of_pipeline(pipeline_id: &str) -> pb::ListExecutionsRequest {
    pb::ListExecutionsRequest { pipeline_id: pipeline_id.into(), ..Default::default() }
}

async fn create_pipeline_refuses_a_bad_definition_naming_the_field(app: TestApp) {
    let q = queue();
    let fine = || Some(definition(vec![], vec![workflows("build", &q, &["compile"])]));
    let region = || vec![variable("region", None)];
    let mut no_environment_type = workflows("build", &q, &["compile"]);
    no_environment_type.environment =
        Some(pb::Environment { name: "staging".into(), r#type: pb::EnvironmentType::Unspecified as i32 });
    let mut no_environment = workflows("build", &q, &["compile"]);
    no_environment.environment = None;
    let skip = "definition.stages[0].skip_condition.expression";

    let cases: Vec<(&str, pb::CreatePipelineRequest, &str, &str)> = vec![
        ("no definition", create_request("shop", "p", None), "definition", ""),
        ("no stages", create_request("shop", "p", Some(definition(vec![], vec![]))), "definition.stages", ""),
        (
            "duplicate stage names",
            create_request(
                "shop",
                "p",
                Some(definition(vec![], vec![workflows("a", &q, &["w"]), workflows("a", &q, &["x"])])),
            ),
            "definition.stages[1].name",
            "duplicate",
        ),
        (
            "duplicate workflow names",
            create_request("shop", "p", Some(definition(vec![], vec![workflows("a", &q, &["w", "w"])]))),
            "definition.stages[0].workflows.workflows[1].name",
            "duplicate",
        ),
        (
            "an empty workflow set",
            create_request("shop", "p", Some(definition(vec![], vec![workflows("a", &q, &[])]))),
            "definition.stages[0].workflows.workflows",
            "",
        ),
        (
            "an undeclared variable in a skip condition",
            create_request(
                "shop",
                "p",
                Some(definition(vec![], vec![skip_when(workflows("a", &q, &["w"]), r#"region == "eu""#)])),
            ),
            skip,
            "region",
        ),
        (
            "a malformed expression",
            create_request(
                "shop",
                "p",
                Some(definition(region(), vec![skip_when(workflows("a", &q, &["w"]), "region ==")])),
            ),
            skip,
            "parse",
        ),
        (
            "an expression that is not a bool",
            create_request(
                "shop",
                "p",
                Some(definition(region(), vec![skip_when(workflows("a", &q, &["w"]), "region")])),
            ),
            skip,
            "bool",
        ),
        (
            "a missing environment type",
            create_request("shop", "p", Some(definition(vec![], vec![no_environment_type]))),
            "definition.stages[0].environment.type",
            "",
        ),
        (
            "a missing environment",
            create_request("shop", "p", Some(definition(vec![], vec![no_environment]))),
            "definition.stages[0].environment.type",
            "",
        ),
        ("a missing application", create_request("", "p", fine()), "application", ""),
        ("a missing name", create_request("shop", " ", fine()), "name", ""),
    ];
    for (what, request, field, mention) in cases {
        let refused = app.pipelines.clone().create_pipeline(request).await.expect_err(what);
        assert_eq!(refused.code(), Code::InvalidArgument, "{what}: {refused:?}");
        let fields = bad_request_fields(&refused);
        assert!(fields.iter().any(|f| f == field), "{what}: BadRequest should name {field:?}, names {fields:?}");
        assert!(refused.message().contains(field), "{what}: {refused:?}");
        assert!(refused.message().contains(mention), "{what}: message should mention {mention:?}: {refused:?}");
    }
    let stored = pipeline_pages(&app, "", 0).await;
    assert_eq!(sizes(&stored), [0], "nothing refused was stored: {stored:#?}");
}

async fn create_pipeline_refuses_a_second_pipeline_of_the_same_name(app: TestApp) {
    let q = queue();
    let first = app.create_pipeline("deploy", vec![workflows("build", &q, &["compile"])]).await;
    assert_eq!((first.version, first.latest_version), (1, 1));

    let again = create_request("shop", "deploy", Some(definition(vec![], vec![workflows("other", &q, &["x"])])));
    let refused = assert_code(app.pipelines.clone().create_pipeline(again).await, Code::AlreadyExists);
    assert!(refused.message().contains("deploy"), "{refused:?}");

    let unchanged = get_pipeline(&app, &first.id, 0).await.expect("get");
    assert_eq!(unchanged.version, 1);
    assert_eq!(unchanged.definition, first.definition);

    // The name is unique within an application, not across applications.
    let elsewhere = create_request("billing", "deploy", Some(definition(vec![], vec![workflows("build", &q, &["x"])])));
    let other = app.pipelines.clone().create_pipeline(elsewhere).await.expect("another application").into_inner();
    assert_ne!(other.pipeline.unwrap().id, first.id);
}

async fn update_pipeline_writes_a_new_version_and_keeps_the_old_one(app: TestApp) {
    let q = queue();
    let v1 = app.create_pipeline("deploy", vec![workflows("build", &q, &["compile"])]).await;
    let two_stages = definition(vec![], vec![workflows("build", &q, &["compile"]), workflows("ship", &q, &["push"])]);
    let update = |id: &str, expected_version: i64, d: pb::PipelineDefinition| pb::UpdatePipelineRequest {
        pipeline_id: id.into(),
        expected_version,
        definition: Some(d),
    };

    let v2 = app.pipelines.clone().update_pipeline(update(&v1.id, 1, two_stages.clone())).await.expect("update");
    let v2 = v2.into_inner().pipeline.expect("pipeline");
    assert_eq!((v2.id.as_str(), v2.version, v2.latest_version), (v1.id.as_str(), 2, 2));
    assert_eq!(stage_names(v2.definition.as_ref().unwrap()), ["build", "ship"]);

    let old = get_pipeline(&app, &v1.id, 1).await.expect("version 1 is still there");
    assert_eq!((old.version, old.latest_version), (1, 2));
    assert_eq!(old.definition, v1.definition, "version 1 is immutable");
    let latest = get_pipeline(&app, &v1.id, 0).await.expect("latest");
    assert_eq!(latest.version, 2);
    assert_eq!(latest.definition, v2.definition);

    let stale = app.pipelines.clone().update_pipeline(update(&v1.id, 1, two_stages.clone())).await;
    let refused = assert_code(stale, Code::Aborted);
    assert!(refused.message().contains("version 2"), "{refused:?}");
    assert_eq!(get_pipeline(&app, &v1.id, 0).await.unwrap().version, 2, "a stale update writes nothing");

    let unknown = uuid::Uuid::now_v7().to_string();
    assert_code(app.pipelines.clone().update_pipeline(update(&unknown, 1, two_stages.clone())).await, Code::NotFound);
    assert_code(get_pipeline(&app, &unknown, 0).await, Code::NotFound);

    let refused = assert_code(get_pipeline(&app, &v1.id, 7).await, Code::NotFound);
    assert!(refused.message().contains("1 to 2"), "names the versions that exist: {refused:?}");

    // An update is validated like a create and writes nothing when refused.
    assert_invalid(
        app.pipelines.clone().update_pipeline(update(&v1.id, 0, two_stages.clone())).await,
        "expected_version",
    );
    assert_invalid(
        app.pipelines.clone().update_pipeline(update(&v1.id, 2, definition(vec![], vec![]))).await,
        "definition.stages",
    );
    assert_eq!(get_pipeline(&app, &v1.id, 0).await.unwrap().version, 2);
}

async fn start_execution_refuses_unknown_pipelines_and_bad_variables(app: TestApp) {
    let q = queue();
    let variables = vec![variable("region", None), variable("tier", Some("gold"))];
    let p = app.create_pipeline_with("deploy", variables, vec![workflows("build", &q, &["compile"])]).await;
    let mut client = app.executions.clone();

    let unknown = uuid::Uuid::now_v7().to_string();
    let refused =
        assert_code(client.start_execution(start_request(&unknown, &[("region", "eu")])).await, Code::NotFound);
    assert!(refused.message().contains(&unknown), "{refused:?}");
    let no_such_version =
        pb::StartExecutionRequest { pipeline_version: 9, ..start_request(&p.id, &[("region", "eu")]) };
    assert_code(client.start_execution(no_such_version).await, Code::NotFound);
    assert_invalid(client.start_execution(start_request("", &[])).await, "pipeline_id");
    let negative_version =
        pb::StartExecutionRequest { pipeline_version: -1, ..start_request(&p.id, &[("region", "eu")]) };
    assert_invalid(client.start_execution(negative_version).await, "pipeline_version");

    let undeclared = client.start_execution(start_request(&p.id, &[("region", "eu"), ("colour", "red")])).await;
    assert_invalid(undeclared, "variables[colour]");
    let unbound = client.start_execution(start_request(&p.id, &[("tier", "silver")])).await;
    assert_invalid(unbound, "variables[region]");

    let listed = execution_pages(&app, of_pipeline(&p.id), 0).await;
    assert_eq!(sizes(&listed), [0], "a refused start creates nothing");

    let e = client.start_execution(start_request(&p.id, &[("region", "eu")])).await.expect("start").into_inner();
    let e = e.execution.unwrap();
    assert_eq!(e.variables.get("region").map(String::as_str), Some("eu"));
    assert_eq!(e.variables.get("tier").map(String::as_str), Some("gold"), "the default is bound");
    assert_eq!(status(&e), pb::ExecutionStatus::Running);
}

async fn a_retried_start_with_one_request_id_creates_one_execution(app: TestApp) {
    let q = queue();
    let p = app
        .create_pipeline_with("deploy", vec![variable("region", Some("eu"))], vec![workflows("build", &q, &["c"])])
        .await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let request = |region: &str| pb::StartExecutionRequest {
        request_id: request_id.clone(),
        ..start_request(&p.id, &[("region", region)])
    };
    let mut client = app.executions.clone();

    let first = client.start_execution(request("us")).await.expect("start").into_inner().execution.unwrap();
    let retry = client.start_execution(request("us")).await.expect("retry").into_inner().execution.unwrap();
    assert_eq!(retry.id, first.id, "a retry returns the first call's execution");
    assert_eq!(retry.request_id, request_id);
    assert_eq!(execution_ids(&execution_pages(&app, of_pipeline(&p.id), 0).await), std::slice::from_ref(&first.id));

    let different = client.start_execution(request("eu")).await;
    let refused = assert_code(different, Code::AlreadyExists);
    assert!(refused.message().contains(&request_id), "{refused:?}");
    assert_eq!(execution_ids(&execution_pages(&app, of_pipeline(&p.id), 0).await), std::slice::from_ref(&first.id));
}

async fn concurrent_starts_with_one_request_id_create_one_execution(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("deploy", vec![workflows("build", &q, &["a", "b"])]).await;
    let request = start_request(&p.id, &[]);
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let (mut client, request) = (app.executions.clone(), request.clone());
            tokio::spawn(async move { client.start_execution(request).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for call in calls {
        let response = call.await.unwrap().expect("every concurrent start answers");
        ids.insert(response.into_inner().execution.unwrap().id);
    }
    assert_eq!(ids.len(), 1, "one execution: {ids:?}");
    let listed = execution_ids(&execution_pages(&app, of_pipeline(&p.id), 0).await);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let e = app.get(&listed[0]).await;
    assert_eq!(e.stages[0].workflows.len(), 2, "its first stage was started once: {e:#?}");
}

async fn an_execution_keeps_the_pipeline_version_it_started_with(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("deploy", vec![workflows("build", &q, &["compile"])]).await;
    let pinned = app.start(&p.id).await;
    assert_eq!(pinned.pipeline_version, 1);

    let v2 = definition(vec![], vec![workflows("build", &q, &["compile", "lint"]), workflows("ship", &q, &["push"])]);
    let request = pb::UpdatePipelineRequest { pipeline_id: p.id.clone(), expected_version: 1, definition: Some(v2) };
    app.pipelines.clone().update_pipeline(request).await.expect("update");

    let running = app.get(&pinned.id).await;
    assert_eq!(running.pipeline_version, 1);
    assert_eq!(running.stages.len(), 1, "{running:#?}");
    assert_eq!(running.stages[0].workflows.len(), 1);

    let latest = app.start(&p.id).await;
    assert_eq!((latest.pipeline_version, latest.stages.len()), (2, 2));
    let explicit = pb::StartExecutionRequest { pipeline_version: 1, ..start_request(&p.id, &[]) };
    let explicit =
        app.executions.clone().start_execution(explicit).await.expect("start v1").into_inner().execution.unwrap();
    assert_eq!((explicit.pipeline_version, explicit.stages.len()), (1, 1));

    let worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let done = app.wait_final(&pinned.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{done:#?}");
    assert_eq!(done.pipeline_version, 1);
    let ran: Vec<&str> = done.stages.iter().flat_map(|s| s.workflows.iter().map(|w| w.name.as_str())).collect();
    assert_eq!(ran, ["compile"], "version 1 ran, not version 2");
    let done = app.wait_final(&latest.id).await;
    assert_eq!((status(&done), done.pipeline_version), (pb::ExecutionStatus::Succeeded, 2));
    app.wait_final(&explicit.id).await;
    assert_eq!(worker.task_count(), 1 + 3 + 1);
}

async fn list_executions_pages_newest_first_and_filters(app: TestApp) {
    let (idle, busy) = (queue(), queue());
    let waiting = app.create_pipeline("waiting", vec![workflows("build", &idle, &["c"])]).await;
    let finishing = app.create_pipeline("finishing", vec![workflows("build", &busy, &["c"])]).await;
    let _worker = app.worker(&busy, |_| Script::Succeed(Duration::ZERO));
    let mut running = Vec::new();
    for _ in 0..7 {
        running.push(app.start(&waiting.id).await.id);
    }
    let mut succeeded = Vec::new();
    for _ in 0..2 {
        let e = app.start(&finishing.id).await;
        app.wait_final(&e.id).await;
        succeeded.push(e.id);
    }
    running.reverse();
    succeeded.reverse();
    let newest_first: Vec<String> = succeeded.iter().chain(&running).cloned().collect();

    let pages = execution_pages(&app, of_pipeline(&waiting.id), 3).await;
    assert_eq!(sizes(&pages), [3, 3, 1]);
    assert_eq!(execution_ids(&pages), running, "newest first, each once");
    let times: Vec<_> = pages.iter().flatten().map(|e| e.create_time.unwrap()).collect();
    assert!(times.windows(2).all(|w| (w[0].seconds, w[0].nanos) >= (w[1].seconds, w[1].nanos)), "{times:?}");

    let pages = execution_pages(&app, pb::ListExecutionsRequest::default(), 3).await;
    assert_eq!(sizes(&pages), [3, 3, 3], "a full last page ends the list");
    assert_eq!(execution_ids(&pages), newest_first);
    let unique: HashSet<_> = execution_ids(&pages).into_iter().collect();
    assert_eq!(unique.len(), 9);

    let with_status = |s: pb::ExecutionStatus| pb::ListExecutionsRequest { status: s as i32, ..Default::default() };
    assert_eq!(execution_ids(&execution_pages(&app, with_status(pb::ExecutionStatus::Succeeded), 0).await), succeeded);
    assert_eq!(execution_ids(&execution_pages(&app, with_status(pb::ExecutionStatus::Running), 2).await), running);
    assert!(execution_ids(&execution_pages(&app, with_status(pb::ExecutionStatus::Failed), 0).await).is_empty());
    let both = pb::ListExecutionsRequest { status: pb::ExecutionStatus::Succeeded as i32, ..of_pipeline(&waiting.id) };
    assert!(execution_ids(&execution_pages(&app, both, 0).await).is_empty());
    let of_app = |a: &str| pb::ListExecutionsRequest { application: a.into(), ..Default::default() };
    assert_eq!(execution_ids(&execution_pages(&app, of_app("shop"), 4).await), newest_first);
    assert!(execution_ids(&execution_pages(&app, of_app("billing"), 0).await).is_empty());

    let mut client = app.executions.clone();
    let garbage = pb::ListExecutionsRequest { page_token: "not-a-token!".into(), ..Default::default() };
    assert_invalid(client.list_executions(garbage).await, "page_token");
    let forged = pb::ListExecutionsRequest { page_token: "aGVsbG8".into(), ..Default::default() }; // "hello"
    assert_invalid(client.list_executions(forged).await, "page_token");
    let huge = pb::ListExecutionsRequest { page_size: 100_000, ..Default::default() };
    let capped = client.list_executions(huge).await.expect("a page size above the ceiling is capped").into_inner();
    assert_eq!((capped.executions.len(), capped.next_page_token.as_str()), (9, ""));
    let negative = pb::ListExecutionsRequest { page_size: -1, ..Default::default() };
    assert_invalid(client.list_executions(negative).await, "page_size");
}

async fn list_pipelines_pages_by_id_and_filters_by_application(app: TestApp) {
    let q = queue();
    let mut shop = Vec::new();
    for i in 0..7 {
        shop.push(app.create_pipeline(&format!("p{i}"), vec![workflows("build", &q, &["c"])]).await);
    }
    let billing = create_request("billing", "p0", Some(definition(vec![], vec![workflows("build", &q, &["c"])])));
    let billing = app.pipelines.clone().create_pipeline(billing).await.expect("create").into_inner().pipeline.unwrap();
    // One pipeline at version 2: lists show latest versions.
    let update = pb::UpdatePipelineRequest {
        pipeline_id: shop[3].id.clone(),
        expected_version: 1,
        definition: Some(definition(vec![], vec![workflows("build", &q, &["c"]), workflows("ship", &q, &["d"])])),
    };
    app.pipelines.clone().update_pipeline(update).await.expect("update");

    let pages = pipeline_pages(&app, "shop", 3).await;
    assert_eq!(sizes(&pages), [3, 3, 1]);
    let ids: Vec<&str> = pages.iter().flatten().map(|p| p.id.as_str()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ordered by id, each once: {ids:?}");
    let mut expected: Vec<&str> = shop.iter().map(|p| p.id.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let updated = pages.iter().flatten().find(|p| p.id == shop[3].id).unwrap();
    assert_eq!((updated.version, updated.latest_version), (2, 2));
    assert_eq!(stage_names(updated.definition.as_ref().unwrap()), ["build", "ship"]);

    let all = pipeline_pages(&app, "", 0).await;
    assert_eq!(sizes(&all), [8], "the default page holds them all");
    assert!(all[0].iter().any(|p| p.id == billing.id));
    let billing_only = pipeline_pages(&app, "billing", 0).await;
    assert_eq!(
        billing_only.iter().flatten().map(|p| p.id.clone()).collect::<Vec<_>>(),
        std::slice::from_ref(&billing.id)
    );

    // The default view leaves definitions out.
    let basic = app.pipelines.clone().list_pipelines(pb::ListPipelinesRequest::default()).await.unwrap().into_inner();
    assert_eq!(basic.pipelines.len(), 8);
    assert!(basic.pipelines.iter().all(|p| p.definition.is_none() && p.version >= 1 && p.update_time.is_some()));
    let listed = basic.pipelines.iter().find(|p| p.id == shop[3].id).unwrap();
    assert_eq!((listed.version, listed.update_time), (updated.version, updated.update_time));

    let mut client = app.pipelines.clone();
    let garbage = pb::ListPipelinesRequest { page_token: "%%%".into(), ..Default::default() };
    assert_invalid(client.list_pipelines(garbage).await, "page_token");
    let negative = pb::ListPipelinesRequest { page_size: -3, ..Default::default() };
    assert_invalid(client.list_pipelines(negative).await, "page_size");
}

/// Asserts an execution of the two-stage pipeline below is whole: its first
/// stage started with both tasks queued, the second pending.
fn assert_whole(e: &pb::Execution) {
    assert_eq!(status(e), pb::ExecutionStatus::Running, "{e:#?}");
    assert!(e.start_time.is_some(), "{e:#?}");
    assert_eq!(e.stages.len(), 2, "{e:#?}");
    assert_eq!(stage_status(e, "build"), pb::StageStatus::Running, "{e:#?}");
    let tasks: Vec<(&str, i32)> = e.stages[0].workflows.iter().map(|w| (w.name.as_str(), w.status)).collect();
    let queued = pb::WorkflowStatus::Queued as i32;
    assert_eq!(tasks, [("a", queued), ("b", queued)], "{e:#?}");
    assert_eq!(stage_status(e, "ship"), pb::StageStatus::Pending, "{e:#?}");
    assert!(e.stages[1].workflows.is_empty(), "{e:#?}");
}

async fn starts_cut_off_by_their_deadline_leave_no_half_written_execution(app: TestApp) {
    let q = queue();
    let p =
        app.create_pipeline("deploy", vec![workflows("build", &q, &["a", "b"]), workflows("ship", &q, &["c"])]).await;
    let request_ids: Vec<String> = (0..50).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let request = |id: &str| pb::StartExecutionRequest { request_id: id.into(), ..start_request(&p.id, &[]) };

    // The impatient client has its own connection, as a separate process would:
    // many cancelled streams in a row may make the server close that connection
    // (HTTP/2 rapid-reset protection), which must not matter to anyone else.
    let impatient =
        tonic::transport::Channel::from_shared(app.address.clone()).unwrap().connect().await.expect("connect");
    let impatient = pb::execution_service_client::ExecutionServiceClient::new(impatient);
    let mut calls = tokio::task::JoinSet::new();
    for (i, id) in request_ids.iter().enumerate() {
        let mut client = impatient.clone();
        let mut r = tonic::Request::new(request(id));
        // From 1 µs (cut off before the handler runs) to about 50 ms (cut off
        // while it writes, or not at all).
        r.set_timeout(Duration::from_micros(1 + 1000 * i as u64));
        calls.spawn(async move { client.start_execution(r).await });
    }
    let mut cut_off = 0;
    while let Some(outcome) = calls.join_next().await {
        if let Ok(answered) = &outcome.as_ref().unwrap() {
            assert_whole(answered.get_ref().execution.as_ref().unwrap());
        }
        if let Err(refused) = outcome.unwrap() {
            // The deadline (CANCELLED "Timeout expired" from the server), or the
            // impatient connection itself closed by the server's HTTP/2 rapid-reset
            // protection (RESOURCE_EXHAUSTED, UNAVAILABLE, or UNKNOWN "broken pipe").
            let cut =
                [Code::DeadlineExceeded, Code::Cancelled, Code::Unavailable, Code::ResourceExhausted, Code::Unknown];
            assert!(cut.contains(&refused.code()), "{refused:?}");
            cut_off += 1;
        }
    }
    assert!(cut_off > 0, "the tiny deadlines cut calls off");

    // Whatever exists is whole; nothing exists half-written.
    let listed = execution_ids(&execution_pages(&app, of_pipeline(&p.id), 500).await);
    assert!(listed.len() <= request_ids.len());
    for id in &listed {
        let e = app.get(id).await;
        assert!(request_ids.contains(&e.request_id), "{e:#?}");
        assert_whole(&e);
    }

    // The server answers normally and a plain start works.
    let fresh = app.start(&p.id).await;
    assert_whole(&fresh);
    assert_whole(&app.get(&fresh.id).await);

    // Retrying every cut-off call creates what is missing and nothing twice.
    let mut retried = HashSet::new();
    for id in &request_ids {
        let e =
            app.executions.clone().start_execution(request(id)).await.expect("retry").into_inner().execution.unwrap();
        assert_eq!(&e.request_id, id);
        assert_whole(&e);
        retried.insert(e.id);
    }
    assert_eq!(retried.len(), request_ids.len());
    let listed: HashSet<String> =
        execution_ids(&execution_pages(&app, of_pipeline(&p.id), 500).await).into_iter().collect();
    assert_eq!(listed.len(), request_ids.len() + 1, "one execution per request id, plus the plain start");
    assert!(retried.is_subset(&listed) && listed.contains(&fresh.id));

    // Every one is whole, including those the cut-off calls finished in the
    // background; reading them all at once also shows the pool still serves.
    let reads: Vec<_> = listed
        .iter()
        .map(|id| {
            let (mut client, id) = (app.executions.clone(), id.clone());
            tokio::spawn(async move {
                client.get_execution(pb::GetExecutionRequest { execution_id: id, ..Default::default() }).await
            })
        })
        .collect();
    for read in reads {
        let e = read.await.unwrap().expect("get after the cut-off calls").into_inner().execution.unwrap();
        assert_whole(&e);
    }
}

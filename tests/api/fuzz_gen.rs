//! Adversarial requests for every RPC of every service of Reprise, sent to a
//! real server over a raw gRPC client, and the rules their answers must
//! keep. Shared by the fuzz test (`tests/api/fuzz.rs`, a few thousand
//! requests per backend) and the long run (`benches/fuzz_long.rs`, 100,000
//! and more), so both send the same kinds of requests.
//!
//! Requests are generated from the services' descriptors (prost-reflect),
//! with proptest's strategies and random source: a valid-looking request
//! built from ids the server really issued, with one to three fields set to
//! something hostile (huge, empty, NUL, odd unicode, deep expressions,
//! negative or huge numbers, unknown enum values, tampered page tokens), or a
//! message generated from nothing, or one of a few big ones (10,000 stages).
//! Ids in answers are harvested, so later requests reach deeper states.

#![allow(dead_code)] // the test and the long run use different parts

use std::{
    collections::{BTreeMap, HashMap},
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{EncodingKey, Header};
use proptest::{
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use prost::{
    Message as _,
    bytes::{Buf, BufMut},
};
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value,
};
use reprise::{
    auth::{Authenticator, JwtConfig, Verifier},
    engine::Engine,
    proto::{
        self as pb, access_service_client::AccessServiceClient, execution_service_client::ExecutionServiceClient,
        pipeline_service_client::PipelineServiceClient, worker_service_client::WorkerServiceClient,
    },
    server::ServeOptions,
};
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};

// ---- identities ---------------------------------------------------------

pub const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret!!";

/// Serve options with HS256 bearer tokens signed with [`SECRET`].
pub fn serve_options() -> ServeOptions {
    let config = JwtConfig { hs256_secret: Some(SECRET.into()), ..Default::default() };
    let verifier = Verifier::new(&config).expect("verifier");
    ServeOptions {
        auth: Authenticator::Enabled { verifier: Some(Arc::new(verifier)), certificates: None },
        tls: None,
        metrics_sampling: None,
        ..Default::default()
    }
}

/// A token for `subject`, valid for an hour.
pub fn token(subject: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = serde_json::json!({ "sub": subject, "exp": exp });
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// The subjects requests are sent as: the bootstrap admin, a deployer of
/// "shop", a viewer of "shop", a worker (RUN_TASKS), one without grants,
/// and subjects no server should store.
pub const ADMIN: &str = "root";
pub const SUBJECTS: [&str; 5] = [ADMIN, "deployer", "viewer", "worker", "stranger"];

fn odd_subjects() -> Vec<String> {
    vec!["nul\0subject".into(), "x".repeat(300), "tab\tsubject".into(), String::new()]
}

/// Where requests go: a server and the tokens to send (None: no token).
#[derive(Clone)]
pub struct Endpoint {
    pub channel: Channel,
    pub tokens: Vec<Option<String>>,
}

impl Endpoint {
    /// A server without authentication: every caller may do everything.
    pub fn open(channel: Channel) -> Endpoint {
        Endpoint { channel, tokens: vec![None] }
    }

    /// A server with bearer tokens: each identity, odd subjects, garbage.
    pub fn secured(channel: Channel) -> Endpoint {
        // Real identities most of the time, the admin (who reaches the most
        // code) most of all; odd subjects, garbage and no token now and then.
        let mut tokens: Vec<Option<String>> = Vec::new();
        for _ in 0..3 {
            tokens.extend(SUBJECTS.iter().map(|s| Some(token(s))));
            tokens.push(Some(token(ADMIN)));
        }
        tokens.extend(odd_subjects().iter().map(|s| Some(token(s))));
        tokens.push(Some("garbage".into()));
        tokens.push(None);
        Endpoint { channel, tokens }
    }
}

/// `message` with a bearer token for `subject`.
pub fn authed<T>(message: T, subject: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {}", token(subject)).parse().unwrap());
    request
}

// ---- what the server issued ----------------------------------------------

/// Ids and tokens the server issued, harvested from its answers.
#[derive(Default)]
pub struct Targets {
    pub pipelines: Vec<String>,
    pub executions: Vec<String>,
    pub tasks: Vec<(String, String)>,
    pub groups: Vec<String>,
    pub grants: Vec<String>,
    pub page_tokens: Vec<String>,
    pub stage_names: Vec<String>,
}

const KEPT: usize = 64;

fn keep<T: PartialEq>(list: &mut Vec<T>, item: T, slot: usize) {
    if list.contains(&item) {
        return;
    }
    if list.len() < KEPT { list.push(item) } else { list[slot % KEPT] = item }
}

/// Fuzz queues: seeded pipelines and generated ones use these, so PollTask
/// finds real tasks.
pub const QUEUES: [&str; 2] = ["fuzz-a", "fuzz-b"];

/// Makes [`ADMIN`] the engine's bootstrap admin, then [`seed_over`] `channel`
/// (a secured server on the engine's database).
pub async fn seed(engine: &Engine, channel: &Channel) -> Arc<Mutex<Targets>> {
    engine.bootstrap_admin(ADMIN).await.expect("bootstrap admin");
    seed_over(channel).await
}

/// Creates the identities' grants, pipelines of "shop" and "bank" (one with
/// an approval, one with a skip condition), executions in several states
/// and a leased task, all as the admin, through `channel` (a secured server
/// whose bootstrap admin is [`ADMIN`]).
pub async fn seed_over(channel: &Channel) -> Arc<Mutex<Targets>> {
    let mut access = AccessServiceClient::new(channel.clone());
    let mut targets = Targets::default();
    let grants = [
        ("deployer", pb::Permission::ExecutePipeline, "shop"),
        ("viewer", pb::Permission::View, "shop"),
        ("worker", pb::Permission::RunTasks, ""),
    ];
    for (subject, permission, application) in grants {
        let name = format!("fuzz-{subject}");
        let group = access
            .create_user_group(authed(pb::CreateUserGroupRequest { name }, ADMIN))
            .await
            .expect("group")
            .into_inner()
            .group
            .unwrap();
        let member = pb::AddGroupMemberRequest { group_id: group.id.clone(), subject: subject.into() };
        access.add_group_member(authed(member, ADMIN)).await.expect("member");
        let grant = pb::Grant {
            group_id: group.id.clone(),
            permission: permission as i32,
            application: application.into(),
            ..Default::default()
        };
        let grant = access.add_grant(authed(pb::AddGrantRequest { grant: Some(grant) }, ADMIN)).await.expect("grant");
        targets.groups.push(group.id);
        targets.grants.push(grant.into_inner().grant.unwrap().id);
    }
    let mut pipelines = PipelineServiceClient::new(channel.clone());
    let mut executions = ExecutionServiceClient::new(channel.clone());
    let shapes = [
        ("shop", "two-stages", vec![stage("build", QUEUES[0], 2, None), stage("deploy", QUEUES[1], 1, None)]),
        ("shop", "gated", vec![stage("build", QUEUES[0], 1, None), gate("gate"), stage("roll", QUEUES[0], 1, None)]),
        ("shop", "skipping", vec![stage("maybe", QUEUES[1], 1, Some("region == \"us\"")), gate("gate")]),
        ("bank", "vault", vec![stage("build", QUEUES[0], 1, None), gate("gate")]),
    ];
    for (application, name, stages) in shapes {
        let definition = pb::PipelineDefinition {
            variables: vec![pb::Variable {
                name: "region".into(),
                default_value: Some("eu".into()),
                ..Default::default()
            }],
            stages,
            ..Default::default()
        };
        let request = pb::CreatePipelineRequest {
            application: application.into(),
            name: name.into(),
            definition: Some(definition),
        };
        let p =
            pipelines.create_pipeline(authed(request, ADMIN)).await.expect("pipeline").into_inner().pipeline.unwrap();
        for run in 0..3 {
            let request = pb::StartExecutionRequest { pipeline_id: p.id.clone(), ..Default::default() };
            let e = executions.start_execution(authed(request, ADMIN)).await.expect("start").into_inner();
            let e = e.execution.unwrap();
            if run == 0 {
                let abort = pb::AbortRequest { execution_id: e.id.clone(), reason: "seeded".into() };
                executions.abort(authed(abort, ADMIN)).await.expect("abort");
            }
            targets.executions.push(e.id);
        }
        targets.pipelines.push(p.id);
    }
    let mut workers = WorkerServiceClient::new(channel.clone());
    let poll = pb::PollTaskRequest {
        task_queue: QUEUES[0].into(),
        worker_id: "seed".into(),
        wait: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
    };
    if let Some(task) = workers.poll_task(authed(poll, ADMIN)).await.expect("poll").into_inner().task {
        targets.tasks.push((task.task_id, task.lease_token));
    }
    targets.stage_names = ["build", "deploy", "gate", "roll", "maybe"].map(String::from).to_vec();
    Arc::new(Mutex::new(targets))
}

fn stage(name: &str, queue: &str, workflows: usize, skip: Option<&str>) -> pb::Stage {
    pb::Stage {
        name: name.into(),
        environment: Some(pb::Environment { name: "staging".into(), r#type: pb::EnvironmentType::NonProd as i32 }),
        skip_condition: skip
            .map(|e| pb::SkipCondition { condition: Some(pb::skip_condition::Condition::Expression(e.into())) }),
        kind: Some(pb::stage::Kind::Workflows(pb::WorkflowStage {
            workflows: (0..workflows)
                .map(|i| pb::Workflow {
                    name: format!("w{i}"),
                    task_queue: queue.into(),
                    command: "true".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })),
    }
}

fn gate(name: &str) -> pb::Stage {
    pb::Stage {
        name: name.into(),
        environment: Some(pb::Environment { name: "prod".into(), r#type: pb::EnvironmentType::Prod as i32 }),
        skip_condition: None,
        kind: Some(pb::stage::Kind::Approval(pb::ApprovalStage {
            timeout: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
            instructions: "look".into(),
        })),
    }
}

// ---- generation ------------------------------------------------------------

/// One request to send.
pub struct Generated {
    /// `/reprise.v1.Service/Method`.
    pub path: String,
    pub method: String,
    pub output: MessageDescriptor,
    pub streaming: bool,
    pub body: Vec<u8>,
    pub token: Option<String>,
    /// Not a valid protobuf encoding: INTERNAL is the expected answer.
    pub malformed: bool,
    /// How it was made, for reports.
    pub kind: &'static str,
}

/// Skip conditions that broke the CEL parser (issue 9), and their kin.
pub fn hostile_expressions() -> Vec<String> {
    vec![
        format!("{}a{}", "(".repeat(512), ")".repeat(512)),
        format!("{}{}", "[".repeat(256), "]".repeat(256)),
        format!("a{}", ".b".repeat(5000)),
        format!("{}1{}", "{1:".repeat(300), "}".repeat(300)),
        format!("a{}", " + a".repeat(1000)),
        format!("{}c", "a ? b : ".repeat(500)),
        format!("{}a{}", "size(".repeat(100), ")".repeat(100)),
        format!("a{}", "[0]".repeat(65)),
        format!("{}true{}", "(".repeat(16), ")".repeat(16)),
        format!("{}true", "!".repeat(10_000)),
        "x".repeat(5000),
        "region ==".into(),
        "region == \"eu\"".into(),
        "[1].all(x, [1].all(y, true))".into(),
        "\"unterminated".into(),
        "r'''".into(),
        "region.matches('(a+)+$')".into(),
        "1 / 0 == 1".into(),
    ]
}

/// The generator of one sender: its own random source and proptest runner.
pub struct Fuzzer {
    pool: DescriptorPool,
    methods: Vec<prost_reflect::MethodDescriptor>,
    runner: TestRunner,
    targets: Arc<Mutex<Targets>>,
    expressions: Vec<String>,
    endpoint_tokens: Vec<Option<String>>,
}

impl Fuzzer {
    pub fn new(seed: u64, targets: Arc<Mutex<Targets>>, tokens: Vec<Option<String>>) -> Fuzzer {
        let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let methods: Vec<_> = pool
            .services()
            .filter(|s| s.full_name().starts_with("reprise.v1."))
            .flat_map(|s| s.methods().collect::<Vec<_>>())
            .collect();
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
        Fuzzer {
            pool,
            methods,
            runner: TestRunner::new_with_rng(Config::default(), rng),
            targets,
            expressions: hostile_expressions(),
            endpoint_tokens: tokens,
        }
    }

    /// Every method the services have (26).
    pub fn method_names(&self) -> Vec<String> {
        self.methods.iter().map(|m| m.full_name().to_owned()).collect()
    }

    fn rng(&mut self) -> &mut TestRng {
        self.runner.rng()
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng().random_range(0..100) < percent
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() { None } else { Some(items[self.rng().random_range(0..items.len())].clone()) }
    }

    fn sample<S: Strategy>(&mut self, strategy: S) -> S::Value {
        strategy.new_tree(&mut self.runner).expect("strategy").current()
    }

    /// The next request.
    pub fn next(&mut self) -> Generated {
        let method = self.pick(&self.methods.clone()).expect("methods");
        let token = self.pick(&self.endpoint_tokens.clone()).flatten();
        let input = method.input();
        let roll = self.rng().random_range(0..100);
        let (body, malformed, kind) = match roll {
            0..=9 => (self.baseline(method.name(), &input), false, "valid"),
            10..=59 => {
                let mut message =
                    DynamicMessage::decode(input.clone(), self.baseline(method.name(), &input).as_slice())
                        .expect("baseline decodes");
                for _ in 0..self.rng().random_range(1..=3) {
                    self.mutate(&mut message, 0);
                }
                (message.encode_to_vec(), false, "mutated")
            }
            60..=91 => (self.random_message(&input, 0).encode_to_vec(), false, "random"),
            92..=97 => (self.big(method.name(), &input), false, "big"),
            _ => (self.malformed(&input), true, "malformed"),
        };
        Generated {
            path: format!("/{}/{}", method.parent_service().full_name(), method.name()),
            method: method.name().to_owned(),
            output: method.output(),
            streaming: method.is_server_streaming(),
            body,
            token,
            malformed,
            kind,
        }
    }

    fn id(&mut self) -> String {
        let t = self.targets.lock().unwrap();
        let all: Vec<String> = t
            .pipelines
            .iter()
            .chain(&t.executions)
            .chain(&t.groups)
            .chain(&t.grants)
            .cloned()
            .chain(t.tasks.iter().flat_map(|(a, b)| [a.clone(), b.clone()]))
            .collect();
        drop(t);
        self.pick(&all).unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
    }

    fn of(&mut self, list: fn(&Targets) -> &Vec<String>) -> String {
        let items = list(&self.targets.lock().unwrap()).clone();
        self.pick(&items).unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
    }

    fn task(&mut self) -> (String, String) {
        let tasks = self.targets.lock().unwrap().tasks.clone();
        self.pick(&tasks).unwrap_or_else(|| (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string()))
    }

    fn stage_name(&mut self) -> String {
        let names = self.targets.lock().unwrap().stage_names.clone();
        self.pick(&names).unwrap_or_else(|| "build".into())
    }

    fn page_token(&mut self) -> String {
        let tokens = self.targets.lock().unwrap().page_tokens.clone();
        match self.rng().random_range(0..6) {
            0 => self.pick(&tokens).unwrap_or_default(),
            1 => URL_SAFE_NO_PAD.encode(format!("k1:{}", uuid::Uuid::now_v7())),
            2 => URL_SAFE_NO_PAD.encode("k1:\0"),
            3 => URL_SAFE_NO_PAD.encode(format!("k1:{}", "9".repeat(500))),
            4 => URL_SAFE_NO_PAD.encode("k1:-2147483648"),
            _ => {
                let mut t = self.pick(&tokens).unwrap_or_else(|| "azE6MQ".into()).into_bytes();
                let at = self.rng().random_range(0..t.len().max(1));
                if let Some(b) = t.get_mut(at) {
                    *b = b'A' + (*b % 26);
                }
                String::from_utf8(t).unwrap_or_default()
            }
        }
    }

    /// A hostile (or, now and then, ordinary) string.
    fn string(&mut self) -> String {
        match self.rng().random_range(0..100) {
            0..=17 => self.id(),
            18..=24 => uuid::Uuid::now_v7().to_string(),
            25..=27 => {
                let id = uuid::Uuid::parse_str(&self.id()).unwrap_or_else(|_| uuid::Uuid::now_v7());
                match self.rng().random_range(0..3) {
                    0 => id.to_string().to_uppercase(),
                    1 => id.simple().to_string(),
                    _ => id.braced().to_string(),
                }
            }
            28..=35 => String::new(),
            36..=45 => {
                let names = ["shop", "bank", "deploy", "build", "gate", "default", "eu", "fuzz-a", "fuzz-b", "w0"];
                self.pick(&names).unwrap().to_string()
            }
            46..=53 => {
                let base = self.sample("[a-z]{0,8}");
                format!("{base}\0{}", self.sample("[a-z]{0,8}"))
            }
            54..=57 => {
                let n = if self.chance(3) { 5 * 1024 * 1024 } else { self.rng().random_range(4096..200_000) };
                "x".repeat(n)
            }
            58..=67 => {
                if self.chance(50) {
                    self.sample(any::<String>())
                } else {
                    self.sample("[\\u{0300}-\\u{036f}\\u{202e}\\u{fe0f}\\u{1f600}-\\u{1f64f}\\u{ffff}a-z]{1,64}")
                }
            }
            68..=73 => self.pick(&self.expressions.clone()).unwrap(),
            74..=78 => self.page_token(),
            79..=82 => self.sample("[\\x01-\\x1f\\x7f]{1,8}"),
            83..=87 => "n".repeat(self.rng().random_range(129..2000)),
            88..=90 => self.pick(&["   ", "\t", "\n", " shop "]).unwrap().into(),
            91..=94 => {
                let odd = ["'; DROP TABLE executions; --", "%", "_", "\\", "../../etc/passwd", "$(reboot)", "k1:"];
                self.pick(&odd).unwrap().into()
            }
            _ => self.stage_name(),
        }
    }

    fn int(&mut self, wide: bool) -> i64 {
        let edges: [i64; 12] = [0, 1, -1, 2, 3, 7, 50, 500, 501, i32::MAX as i64, i32::MIN as i64, 20];
        if wide && self.chance(25) {
            return self.pick(&[i64::MAX, i64::MIN, i64::MAX - 1, 1 << 40]).unwrap();
        }
        if self.chance(20) { self.rng().random_range(-1000..1000) } else { self.pick(&edges).unwrap() }
    }

    fn enum_number(&mut self) -> i32 {
        if self.chance(70) {
            self.rng().random_range(0..5)
        } else {
            self.pick(&[-1, 5, 6, 99, i32::MAX, i32::MIN, 1 << 20]).unwrap()
        }
    }

    fn duration(&mut self) -> DynamicMessage {
        let d = prost_types::Duration {
            seconds: self.pick(&[0, 1, 30, 3600, -1, i64::MAX, i64::MIN, 315_576_000_001, 8 * 24 * 3600]).unwrap(),
            nanos: self.pick(&[0, 1, 999_999_999, 1_000_000_000, -1, i32::MIN, i32::MAX, 500]).unwrap(),
        };
        let desc = self.pool.get_message_by_name("google.protobuf.Duration").expect("Duration");
        DynamicMessage::decode(desc, d.encode_to_vec().as_slice()).expect("duration")
    }

    /// A hostile value for one (non-repeated) field of kind `kind`.
    fn value(&mut self, kind: &Kind, depth: usize) -> Value {
        match kind {
            Kind::String => Value::String(self.string()),
            Kind::Bytes => Value::Bytes(self.string().into_bytes().into()),
            Kind::Bool => Value::Bool(self.chance(50)),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(self.int(false) as i32),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(self.int(true)),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(self.int(false) as u32),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(self.int(true) as u64),
            Kind::Float => Value::F32(f32::NAN),
            Kind::Double => Value::F64(f64::INFINITY),
            Kind::Enum(_) => Value::EnumNumber(self.enum_number()),
            Kind::Message(m) if m.full_name() == "google.protobuf.Duration" => Value::Message(self.duration()),
            Kind::Message(m) => Value::Message(self.random_message(m, depth + 1)),
        }
    }

    fn map_key(&mut self, kind: &Kind) -> MapKey {
        match kind {
            Kind::String => MapKey::String(self.string()),
            Kind::Bool => MapKey::Bool(self.chance(50)),
            _ => MapKey::I64(self.int(true)),
        }
    }

    /// A whole field's value: repeated fields get a few elements (or, now
    /// and then, thousands), maps a few hostile entries.
    fn field_value(&mut self, field: &FieldDescriptor, depth: usize) -> Value {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else { unreachable!() };
            let (k, v) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            let n = if self.chance(3) { self.rng().random_range(100..3000) } else { self.rng().random_range(0..4) };
            let mut map = HashMap::new();
            for _ in 0..n {
                map.insert(self.map_key(&k.kind()), self.value(&v.kind(), depth));
            }
            Value::Map(map)
        } else if field.is_list() {
            let n = if depth < 2 && self.chance(2) {
                self.rng().random_range(1000..10_000)
            } else {
                self.rng().random_range(0..4)
            };
            let first = self.value(&field.kind(), depth);
            let mut items = vec![first.clone(); n.min(1)];
            for _ in 1..n {
                items.push(if n > 50 { first.clone() } else { self.value(&field.kind(), depth) });
            }
            Value::List(items)
        } else {
            self.value(&field.kind(), depth)
        }
    }

    /// A message with random fields set, nested at most a few levels.
    fn random_message(&mut self, desc: &MessageDescriptor, depth: usize) -> DynamicMessage {
        let mut message = DynamicMessage::new(desc.clone());
        if depth > 4 {
            return message;
        }
        for field in desc.fields().collect::<Vec<_>>() {
            if self.chance(55) {
                let value = self.field_value(&field, depth);
                message.set_field(&field, value);
            }
        }
        message
    }

    /// Sets one field somewhere in `message` (maybe nested) to a hostile value.
    fn mutate(&mut self, message: &mut DynamicMessage, depth: usize) {
        let fields: Vec<FieldDescriptor> = message.descriptor().fields().collect();
        let Some(field) = self.pick(&fields) else { return };
        let descend = depth < 5 && !field.is_map() && self.chance(60);
        match (field.kind(), descend) {
            (Kind::Message(m), true) if m.full_name() != "google.protobuf.Duration" => {
                if field.is_list() {
                    let mut items = match message.get_field(&field).into_owned() {
                        Value::List(items) => items,
                        _ => Vec::new(),
                    };
                    if items.is_empty() {
                        items.push(Value::Message(DynamicMessage::new(m.clone())));
                    }
                    let at = self.rng().random_range(0..items.len());
                    if let Value::Message(inner) = &mut items[at] {
                        self.mutate(inner, depth + 1);
                    }
                    message.set_field(&field, Value::List(items));
                } else {
                    let mut inner = match message.get_field(&field).into_owned() {
                        Value::Message(inner) => inner,
                        _ => DynamicMessage::new(m.clone()),
                    };
                    self.mutate(&mut inner, depth + 1);
                    message.set_field(&field, Value::Message(inner));
                }
            }
            _ if field.is_list() && self.chance(50) => {
                // One hostile element among the existing ones.
                let mut items = match message.get_field(&field).into_owned() {
                    Value::List(items) => items,
                    _ => Vec::new(),
                };
                items.push(self.value(&field.kind(), depth));
                message.set_field(&field, Value::List(items));
            }
            _ => {
                let value = self.field_value(&field, depth);
                message.set_field(&field, value);
            }
        }
    }

    fn malformed(&mut self, input: &MessageDescriptor) -> Vec<u8> {
        let mut body = self.random_message(input, 0).encode_to_vec();
        match self.rng().random_range(0..3) {
            0 => body = (0..self.rng().random_range(1..64)).map(|_| self.rng().random_range(0..=255u8)).collect(),
            1 => body.extend([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), // a field longer than the message
            _ => body.extend([0x78]),                               // a tag and no value
        }
        body
    }

    // ---- typed baselines: what a reasonable caller sends ----

    fn definition(&mut self) -> pb::PipelineDefinition {
        let n = self.rng().random_range(1..5);
        let mut stages = Vec::new();
        for i in 0..n {
            let queue = self.pick(&QUEUES).unwrap();
            if self.chance(20) {
                stages.push(gate(&format!("s{i}")));
            } else {
                let skip = self.chance(20).then_some("region == \"us\"");
                let workflows = self.rng().random_range(1..4);
                stages.push(stage(&format!("s{i}"), queue, workflows, skip));
            }
        }
        pb::PipelineDefinition {
            description: "fuzz".into(),
            variables: vec![pb::Variable {
                name: "region".into(),
                default_value: Some("eu".into()),
                ..Default::default()
            }],
            stages,
        }
    }

    fn application(&mut self) -> String {
        self.pick(&["shop", "shop", "bank"]).unwrap().into()
    }

    fn baseline(&mut self, method: &str, input: &MessageDescriptor) -> Vec<u8> {
        let request_id = if self.chance(50) { uuid::Uuid::new_v4().to_string() } else { String::new() };
        match method {
            "CreatePipeline" => pb::CreatePipelineRequest {
                application: self.application(),
                name: format!("p-{}", self.sample("[a-z0-9]{6}")),
                definition: Some(self.definition()),
            }
            .encode_to_vec(),
            "UpdatePipeline" => pb::UpdatePipelineRequest {
                pipeline_id: self.of(|t| &t.pipelines),
                expected_version: self.rng().random_range(1..4),
                definition: Some(self.definition()),
            }
            .encode_to_vec(),
            "GetPipeline" => pb::GetPipelineRequest {
                pipeline_id: self.of(|t| &t.pipelines),
                version: self.rng().random_range(0..3),
            }
            .encode_to_vec(),
            "ListPipelines" => pb::ListPipelinesRequest {
                application: if self.chance(50) { self.application() } else { String::new() },
                page_size: self.rng().random_range(0..20),
                page_token: if self.chance(30) { self.page_token() } else { String::new() },
                view: self.rng().random_range(0..3),
            }
            .encode_to_vec(),
            "StartExecution" => pb::StartExecutionRequest {
                pipeline_id: self.of(|t| &t.pipelines),
                variables: [("region".to_string(), self.pick(&["eu", "us"]).unwrap().to_string())].into(),
                artifacts: [("web".to_string(), "1.2.3".to_string())].into(),
                request_id,
                ..Default::default()
            }
            .encode_to_vec(),
            "GetExecution" => pb::GetExecutionRequest {
                execution_id: self.of(|t| &t.executions),
                view: self.rng().random_range(0..4),
            }
            .encode_to_vec(),
            "ListWorkflows" => pb::ListWorkflowsRequest {
                execution_id: self.of(|t| &t.executions),
                stage_index: self.chance(50).then(|| self.rng().random_range(-1..4)),
                page_size: self.rng().random_range(0..20),
                page_token: if self.chance(30) { self.page_token() } else { String::new() },
                view: self.rng().random_range(0..4),
            }
            .encode_to_vec(),
            "GetTaskOutput" => pb::GetTaskOutputRequest {
                task_id: self.task().0,
                offset: {
                    let wide = self.chance(20);
                    self.int(wide)
                },
                max_chars: self.rng().random_range(-1..70_000),
            }
            .encode_to_vec(),
            "WatchTaskOutput" => {
                let wide = self.chance(20);
                pb::WatchTaskOutputRequest { task_id: self.task().0, offset: self.int(wide) }.encode_to_vec()
            }
            "WatchExecution" => pb::WatchExecutionRequest { execution_id: self.of(|t| &t.executions) }.encode_to_vec(),
            "ListExecutions" => pb::ListExecutionsRequest {
                application: if self.chance(50) { self.application() } else { String::new() },
                status: self.rng().random_range(0..9),
                page_size: self.rng().random_range(0..20),
                ..Default::default()
            }
            .encode_to_vec(),
            "Abort" => {
                pb::AbortRequest { execution_id: self.of(|t| &t.executions), reason: "fuzz".into() }.encode_to_vec()
            }
            "Pause" => pb::PauseRequest { execution_id: self.of(|t| &t.executions) }.encode_to_vec(),
            "Continue" => pb::ContinueRequest { execution_id: self.of(|t| &t.executions) }.encode_to_vec(),
            "Approve" => pb::ApproveRequest {
                execution_id: self.of(|t| &t.executions),
                stage_name: if self.chance(50) { self.stage_name() } else { String::new() },
                comment: "ok".into(),
            }
            .encode_to_vec(),
            "Reject" => pb::RejectRequest {
                execution_id: self.of(|t| &t.executions),
                stage_name: String::new(),
                comment: "no".into(),
            }
            .encode_to_vec(),
            "Resume" => pb::ResumeRequest {
                execution_id: self.of(|t| &t.executions),
                from_stage: Some(if self.chance(50) {
                    pb::resume_request::FromStage::StageName(self.stage_name())
                } else {
                    pb::resume_request::FromStage::StageIndex(self.rng().random_range(0..3))
                }),
                request_id,
                validate_only: self.chance(30),
                ..Default::default()
            }
            .encode_to_vec(),
            "ListHistory" => pb::ListHistoryRequest {
                execution_id: self.of(|t| &t.executions),
                page_size: self.rng().random_range(0..5),
                page_token: String::new(),
            }
            .encode_to_vec(),
            "PollTask" => pb::PollTaskRequest {
                task_queue: self.pick(&QUEUES).unwrap().into(),
                worker_id: "fuzz".into(),
                wait: Some(prost_types::Duration { seconds: 0, nanos: 50_000_000 }),
            }
            .encode_to_vec(),
            "Heartbeat" => {
                let (task_id, lease_token) = self.task();
                let output =
                    if self.chance(30) { "x".repeat(self.rng().random_range(0..200_000)) } else { String::new() };
                pb::HeartbeatRequest { task_id, lease_token, output, output_offset: None }.encode_to_vec()
            }
            "CompleteTask" => {
                let (task_id, lease_token) = self.task();
                pb::CompleteTaskRequest {
                    task_id,
                    lease_token,
                    outcome: self.rng().random_range(1..3),
                    exit_code: 0,
                    output: "done".into(),
                    message: String::new(),
                    output_offset: None,
                    // Sometimes ready for the next task, of a queue in use or not.
                    next_task_queue: if self.chance(50) { self.pick(&QUEUES).unwrap().into() } else { String::new() },
                    worker_id: "fuzz".into(),
                }
                .encode_to_vec()
            }
            "CreateUserGroup" => {
                pb::CreateUserGroupRequest { name: format!("g-{}", self.sample("[a-z0-9]{6}")) }.encode_to_vec()
            }
            "DeleteUserGroup" => pb::DeleteUserGroupRequest { group_id: self.of(|t| &t.groups) }.encode_to_vec(),
            "ListUserGroups" => pb::ListUserGroupsRequest::default().encode_to_vec(),
            "AddGroupMember" => {
                pb::AddGroupMemberRequest { group_id: self.of(|t| &t.groups), subject: "someone".into() }
                    .encode_to_vec()
            }
            "RemoveGroupMember" => {
                pb::RemoveGroupMemberRequest { group_id: self.of(|t| &t.groups), subject: "someone".into() }
                    .encode_to_vec()
            }
            "AddGrant" => pb::AddGrantRequest {
                grant: Some(pb::Grant {
                    group_id: self.of(|t| &t.groups),
                    permission: pb::Permission::View as i32,
                    application: "shop".into(),
                    ..Default::default()
                }),
            }
            .encode_to_vec(),
            "RemoveGrant" => pb::RemoveGrantRequest { grant_id: self.of(|t| &t.grants) }.encode_to_vec(),
            "ListAuditEvents" => pb::ListAuditEventsRequest {
                application: if self.chance(50) { "shop".into() } else { String::new() },
                ..Default::default()
            }
            .encode_to_vec(),
            _ => self.random_message(input, 0).encode_to_vec(),
        }
    }

    /// Big requests: 10,000 stages, the largest definition allowed, one
    /// over the size limit, ListPipelines FULL of big pages, a 100 KB id, a
    /// hostile skip condition in an otherwise valid pipeline.
    fn big(&mut self, method: &str, input: &MessageDescriptor) -> Vec<u8> {
        let pipeline_id = self.of(|t| &t.pipelines);
        let expected_version = self.rng().random_range(1..4);
        let create = |definition: pb::PipelineDefinition, name: String| {
            if method == "UpdatePipeline" {
                pb::UpdatePipelineRequest {
                    pipeline_id: pipeline_id.clone(),
                    expected_version,
                    definition: Some(definition),
                }
                .encode_to_vec()
            } else {
                pb::CreatePipelineRequest { application: "shop".into(), name, definition: Some(definition) }
                    .encode_to_vec()
            }
        };
        let name = format!("big-{}", uuid::Uuid::new_v4().simple());
        match (method, self.rng().random_range(0..6)) {
            ("CreatePipeline" | "UpdatePipeline", 0) => {
                let stages = (0..10_000).map(|i| stage(&format!("s{i}"), QUEUES[0], 1, None)).collect();
                create(pb::PipelineDefinition { stages, ..Default::default() }, name)
            }
            ("CreatePipeline" | "UpdatePipeline", 1) => {
                // 500 stages × 40 workflows: the largest pipeline allowed.
                let stages = (0..500).map(|i| stage(&format!("s{i}"), QUEUES[1], 40, None)).collect();
                create(pb::PipelineDefinition { stages, ..Default::default() }, name)
            }
            ("CreatePipeline" | "UpdatePipeline", 2) => {
                // Over 2 MiB encoded, in commands of the largest size allowed.
                let mut s = stage("s", QUEUES[0], 70, None);
                if let Some(pb::stage::Kind::Workflows(w)) = &mut s.kind {
                    w.workflows.iter_mut().for_each(|w| w.command = "c".repeat(32 * 1024));
                }
                create(pb::PipelineDefinition { stages: vec![s], ..Default::default() }, name)
            }
            ("CreatePipeline" | "UpdatePipeline", _) => {
                let mut definition = self.definition();
                let expression = self.pick(&self.expressions.clone()).unwrap();
                definition.stages[0].skip_condition =
                    Some(pb::SkipCondition { condition: Some(pb::skip_condition::Condition::Expression(expression)) });
                create(definition, name)
            }
            ("ListPipelines", _) => {
                pb::ListPipelinesRequest { page_size: 500, view: pb::PipelineView::Full as i32, ..Default::default() }
                    .encode_to_vec()
            }
            (_, _) => {
                // The method's baseline with every string field 100 KB long.
                let mut message =
                    DynamicMessage::decode(input.clone(), self.baseline(method, input).as_slice()).expect("baseline");
                for field in input.fields().filter(|f| matches!(f.kind(), Kind::String) && !f.is_list()) {
                    message.set_field(&field, Value::String("i".repeat(100_000)));
                }
                message.encode_to_vec()
            }
        }
    }
}

// ---- sending ---------------------------------------------------------------

/// Sends bytes as they are and returns the answer's bytes.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// How a request ended.
#[derive(Debug)]
pub enum Outcome {
    Ok(Vec<Vec<u8>>),
    Failed(Status),
    /// No answer within the client's patience (long polls and watches).
    TimedOut,
}

impl Outcome {
    pub fn code_name(&self) -> String {
        match self {
            Outcome::Ok(_) => "OK".into(),
            Outcome::Failed(s) => format!("{:?}", s.code()),
            Outcome::TimedOut => "client timeout".into(),
        }
    }
}

/// Long polls and watches may wait; anything else that takes this long is a hang.
const PATIENCE: Duration = Duration::from_secs(60);
const SHORT_PATIENCE: Duration = Duration::from_secs(2);

pub async fn send(channel: Channel, g: &Generated) -> Outcome {
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut request = Request::new(g.body.clone());
    if let Some(token) = &g.token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        request.metadata_mut().insert("authorization", value);
    }
    let path = PathAndQuery::from_str(&g.path).expect("path");
    let streaming = g.streaming;
    let call = async move {
        grpc.ready().await.map_err(|e| Status::unavailable(format!("client not ready: {e}")))?;
        if streaming {
            let mut stream = grpc.server_streaming(request, path, RawCodec).await?.into_inner();
            Ok::<_, Status>(stream.message().await?.into_iter().collect())
        } else {
            Ok(vec![grpc.unary(request, path, RawCodec).await?.into_inner()])
        }
    };
    let patience = if g.method == "PollTask" || g.streaming { SHORT_PATIENCE } else { PATIENCE };
    match tokio::time::timeout(patience, call).await {
        Ok(Ok(messages)) => Outcome::Ok(messages),
        Ok(Err(status)) => Outcome::Failed(status),
        Err(_) => Outcome::TimedOut,
    }
}

/// The rules every answer keeps; a broken one, described.
pub fn verdict(g: &Generated, outcome: &Outcome) -> Result<(), String> {
    const WIRE_LIMIT: usize = 4 * 1024 * 1024;
    let what = || format!("{} ({}, {} bytes)", g.method, g.kind, g.body.len());
    match outcome {
        Outcome::Ok(_) => Ok(()),
        Outcome::TimedOut if g.method == "PollTask" || g.streaming => Ok(()),
        Outcome::TimedOut => Err(format!("{}: no answer within {PATIENCE:?}", what())),
        Outcome::Failed(status) => {
            let code = status.code();
            if matches!(code, Code::Internal | Code::Unknown | Code::Unavailable | Code::DataLoss) && !g.malformed {
                return Err(format!("{}: {code:?}: {}", what(), status.message()));
            }
            if matches!(code, Code::ResourceExhausted | Code::OutOfRange) && g.body.len() <= WIRE_LIMIT {
                return Err(format!("{}: {code:?} for a request within limits: {}", what(), status.message()));
            }
            if status.message().len() > 4096 {
                return Err(format!("{}: a {} byte message", what(), status.message().len()));
            }
            Ok(())
        }
    }
}

/// Remembers the ids and page tokens an answer carries.
pub fn harvest(targets: &Mutex<Targets>, g: &Generated, outcome: &Outcome, slot: usize) {
    let Outcome::Ok(messages) = outcome else { return };
    let mut t = targets.lock().unwrap();
    for bytes in messages {
        if let Ok(message) = DynamicMessage::decode(g.output.clone(), bytes.as_slice()) {
            collect(&message, &mut t, slot);
        }
    }
}

fn collect(message: &DynamicMessage, t: &mut Targets, slot: usize) {
    let name = message.descriptor().full_name().to_owned();
    // The admins' own group stays out of reach: the admin identity the
    // requests are sent as could otherwise delete it and lock itself out.
    if name == "reprise.v1.UserGroup"
        && matches!(message.get_field_by_name("name").as_deref(), Some(Value::String(n)) if n == "bootstrap-admins")
    {
        return;
    }
    let text = |field: &str| match message.get_field_by_name(field).as_deref() {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    match name.as_str() {
        "reprise.v1.Pipeline" => text("id").into_iter().for_each(|id| keep(&mut t.pipelines, id, slot)),
        "reprise.v1.Execution" => text("id").into_iter().for_each(|id| keep(&mut t.executions, id, slot)),
        "reprise.v1.UserGroup" => text("id").into_iter().for_each(|id| keep(&mut t.groups, id, slot)),
        "reprise.v1.Grant" => text("id").into_iter().for_each(|id| keep(&mut t.grants, id, slot)),
        "reprise.v1.StageExecution" => text("name").into_iter().for_each(|n| keep(&mut t.stage_names, n, slot)),
        "reprise.v1.Task" => {
            if let (Some(id), Some(lease)) = (text("task_id"), text("lease_token")) {
                keep(&mut t.tasks, (id, lease), slot);
            }
        }
        _ => {}
    }
    if let Some(next) = text("next_page_token") {
        keep(&mut t.page_tokens, next, slot);
    }
    for (_, value) in message.fields() {
        match value {
            Value::Message(inner) => collect(inner, t, slot),
            Value::List(items) => {
                for item in items {
                    if let Value::Message(inner) = item {
                        collect(inner, t, slot);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Counts by code and method, and the rules broken.
#[derive(Default, Debug)]
pub struct Tally {
    pub by_code: BTreeMap<String, u64>,
    pub by_method: BTreeMap<String, u64>,
    pub broken: Vec<String>,
    pub sent: u64,
}

impl Tally {
    /// Adds another tally's counts (and broken rules) to this one.
    pub fn absorb(&mut self, other: Tally) {
        for (k, v) in other.by_code {
            *self.by_code.entry(k).or_default() += v;
        }
        for (k, v) in other.by_method {
            *self.by_method.entry(k).or_default() += v;
        }
        self.broken.extend(other.broken);
        self.sent += other.sent;
    }
}

/// Sends `total` generated requests, `concurrency` at a time, spread over
/// `endpoints`; returns what came back.
pub async fn run(
    endpoints: &[Endpoint],
    targets: Arc<Mutex<Targets>>,
    seed: u64,
    total: usize,
    concurrency: usize,
) -> Tally {
    let mut senders = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let endpoint = endpoints[i % endpoints.len()].clone();
        let targets = targets.clone();
        let share = total / concurrency + usize::from(i < total % concurrency);
        senders.spawn(async move {
            let mut fuzzer =
                Fuzzer::new(seed.wrapping_mul(1000).wrapping_add(i as u64), targets.clone(), endpoint.tokens);
            let mut tally = Tally::default();
            for n in 0..share {
                let g = fuzzer.next();
                let outcome = send(endpoint.channel.clone(), &g).await;
                *tally.by_code.entry(outcome.code_name()).or_default() += 1;
                *tally.by_method.entry(g.method.clone()).or_default() += 1;
                tally.sent += 1;
                if let Err(broken) = verdict(&g, &outcome)
                    && tally.broken.len() < 20
                {
                    tally.broken.push(broken);
                }
                harvest(&targets, &g, &outcome, n);
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(done) = senders.join_next().await {
        tally.absorb(done.expect("sender"));
    }
    tally
}

/// After the storm: a new pipeline is created, started, its task polled
/// and completed, and the execution ends SUCCEEDED; as the admin on a
/// secured server, or without a token on an open one.
pub async fn can_run_a_pipeline(channel: &Channel, secured: bool) -> Result<(), String> {
    fn as_caller<T>(message: T, secured: bool) -> Request<T> {
        if secured { authed(message, ADMIN) } else { Request::new(message) }
    }
    let queue = format!("after-{}", uuid::Uuid::new_v4().simple());
    let request = pb::CreatePipelineRequest {
        application: "shop".into(),
        name: format!("after-{}", uuid::Uuid::new_v4().simple()),
        definition: Some(pb::PipelineDefinition { stages: vec![stage("only", &queue, 1, None)], ..Default::default() }),
    };
    let p = PipelineServiceClient::new(channel.clone())
        .create_pipeline(as_caller(request, secured))
        .await
        .map_err(|s| format!("create: {s:?}"))?
        .into_inner()
        .pipeline
        .ok_or("no pipeline")?;
    let mut executions = ExecutionServiceClient::new(channel.clone());
    let start = pb::StartExecutionRequest { pipeline_id: p.id, ..Default::default() };
    let e = executions
        .start_execution(as_caller(start, secured))
        .await
        .map_err(|s| format!("start: {s:?}"))?
        .into_inner()
        .execution
        .ok_or("no execution")?;
    let mut workers = WorkerServiceClient::new(channel.clone());
    let poll = pb::PollTaskRequest {
        task_queue: queue,
        worker_id: "after".into(),
        wait: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
    };
    let task = workers.poll_task(as_caller(poll, secured)).await.map_err(|s| format!("poll: {s:?}"))?.into_inner().task;
    let task = task.ok_or("no task was handed out")?;
    let complete = pb::CompleteTaskRequest {
        task_id: task.task_id,
        lease_token: task.lease_token,
        outcome: pb::TaskOutcome::Succeeded as i32,
        ..Default::default()
    };
    workers.complete_task(as_caller(complete, secured)).await.map_err(|s| format!("complete: {s:?}"))?;
    let watch = pb::WatchExecutionRequest { execution_id: e.id };
    let mut stream =
        executions.watch_execution(as_caller(watch, secured)).await.map_err(|s| format!("watch: {s:?}"))?.into_inner();
    let mut last = None;
    while let Some(item) = stream.message().await.map_err(|s| format!("watch: {s:?}"))? {
        last = item.execution.map(|e| e.status);
    }
    if last == Some(pb::ExecutionStatus::Succeeded as i32) {
        Ok(())
    } else {
        Err(format!("the execution ended as {last:?}"))
    }
}

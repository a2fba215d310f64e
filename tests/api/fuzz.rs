//! The fuzz suite of issue 9: thousands of generated adversarial requests
//! for every RPC of every service (see `fuzz_gen`), against a real server
//! with bearer tokens and one without authentication, on SQLite and on
//! PostgreSQL. It fails if the server dies (a stack overflow aborts this
//! process), if a well-formed request is answered INTERNAL, UNKNOWN,
//! UNAVAILABLE or RESOURCE_EXHAUSTED, if a message grows past 4 KiB, or if
//! the server cannot run a pipeline afterwards. `cargo bench --bench
//! fuzz_long` sends the same requests by the hundred thousand.

use tonic::transport::Channel;

use crate::{fuzz_gen::*, helpers::*};

crate::on_both_backends!(adversarial_requests_never_break_the_server);

/// Requests per backend: enough to reach every RPC many times over, few
/// enough for CI. `REPRISE_FUZZ_REQUESTS` and `REPRISE_FUZZ_SEED` change them.
const REQUESTS: usize = 4000;

async fn adversarial_requests_never_break_the_server(app: TestApp) {
    let (address, secured_engine, _stop) = app.secured(serve_options()).await;
    let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.expect("connect");
    let targets = seed(&secured_engine, &channel).await;
    let endpoints = [Endpoint::secured(channel.clone()), Endpoint::open(app.channel.clone())];
    let requests = std::env::var("REPRISE_FUZZ_REQUESTS").ok().and_then(|n| n.parse().ok()).unwrap_or(REQUESTS);
    let seed_value = std::env::var("REPRISE_FUZZ_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(9);

    let tally = run(&endpoints, targets, seed_value, requests, 8).await;
    eprintln!("{:?} fuzz (seed {seed_value}): {} requests; by code {:?}", app.backend, tally.sent, tally.by_code);
    assert!(tally.broken.is_empty(), "broken rules:\n{}", tally.broken.join("\n"));
    assert_eq!(tally.sent as usize, requests);
    let methods = Fuzzer::new(0, Default::default(), vec![None]).method_names();
    assert_eq!(methods.len(), 29, "{methods:?}");
    assert_eq!(tally.by_method.len(), methods.len(), "every RPC was called: {:?}", tally.by_method);

    can_run_a_pipeline(&channel, true).await.expect("the secured server still runs pipelines");
    can_run_a_pipeline(&app.channel, false).await.expect("the open server still runs pipelines");
    // Long polls on made-up queues left nothing behind once they ended.
    eventually("the poll registry empties", || secured_engine.parked_queues() == 0 && app.engine.parked_queues() == 0)
        .await;
}

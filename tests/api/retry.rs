//! A database error that would recur on a retry is never UNAVAILABLE: a
//! client told UNAVAILABLE retries (gRPC retry policies do by themselves)
//! and would send a statement the database refuses again and again. Only
//! what can pass by itself is: a busy pool, a database that does not answer.
//!
//! Real errors from each database, through the store's classification
//! (`StoreError::from`, what every store call's `?` does) and the API's
//! mapping to a status.

use std::time::{Duration, Instant};

use reprise::{
    api::error::to_status,
    engine::Error,
    store::{self, Cause, StoreError, StoreOptions},
};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement, Value};
use tonic::Code;

use crate::helpers::*;

crate::on_both_backends!(
    statements_the_database_refuses_are_never_unavailable,
    a_busy_pool_and_an_unreachable_database_are_unavailable,
);

fn code_of(e: &StoreError) -> Code {
    to_status(Error::Store(e.clone())).code()
}

/// Runs `sql`, which the database must refuse; the refusal as the store classifies it.
async fn refusal(db: &DatabaseConnection, sql: &str, values: Vec<Value>) -> StoreError {
    let statement = Statement::from_sql_and_values(db.get_database_backend(), sql, values);
    let e = db.query_all_raw(statement).await.expect_err("the database refuses it");
    StoreError::from(e)
}

/// Refused, not worth a retry, and never told UNAVAILABLE.
fn assert_recurs(what: &str, e: &StoreError) {
    assert!(matches!(e, StoreError::Rejected(_) | StoreError::Duplicate(_)), "{what}: {e:?}");
    assert_eq!(e.cause(), None, "{what}: {e:?}");
    assert_ne!(code_of(e), Code::Unavailable, "{what}: {e:?}");
}

async fn statements_the_database_refuses_are_never_unavailable(app: TestApp) {
    let db = app.engine.store().connection();
    let pg = app.engine.store().is_postgres();
    db.execute_unprepared("CREATE TABLE retry_probe (k TEXT PRIMARY KEY, v TEXT NOT NULL)").await.expect("table");
    db.execute_unprepared("INSERT INTO retry_probe (k, v) VALUES ('a', 'x')").await.expect("first insert");

    let duplicate = refusal(db, "INSERT INTO retry_probe (k, v) VALUES ('a', 'y')", vec![]).await;
    assert!(matches!(duplicate, StoreError::Duplicate(_)), "{duplicate:?}");
    assert_recurs("a unique key taken", &duplicate);

    let null = refusal(db, "INSERT INTO retry_probe (k, v) VALUES ('b', NULL)", vec![]).await;
    assert_recurs("NULL in a NOT NULL column", &null);

    // Past each database's limit on bind parameters (SQLite 32,766;
    // PostgreSQL 65,535, which sqlx enforces before sending).
    let n = if pg { 70_000 } else { 40_000 };
    let placeholders: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    let sql = format!("SELECT 1 AS one WHERE 1 IN ({})", placeholders.join(", "));
    let too_many = refusal(db, &sql, (0..n).map(|i| Value::from(i as i64)).collect()).await;
    assert_recurs("too many bind parameters", &too_many);

    // A value past the database's largest, refused before it is built.
    let sql = if pg { "SELECT repeat('xx', 600000000) AS v" } else { "SELECT zeroblob(2000000000) AS v" };
    let too_large = refusal(db, sql, vec![]).await;
    assert_recurs("a value too large", &too_large);

    // A NUL in text: PostgreSQL refuses it (SQLite stores it; the API
    // refuses NUL at the edge on both).
    let nul = Value::from("a\0b".to_owned());
    if pg {
        let refused = refusal(db, "INSERT INTO retry_probe (k, v) VALUES ('c', $1)", vec![nul]).await;
        assert_recurs("a string with NUL", &refused);
    } else {
        let sql = "INSERT INTO retry_probe (k, v) VALUES ('c', $1)";
        db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, vec![nul]))
            .await
            .expect("SQLite stores a NUL");
    }
}

async fn a_busy_pool_and_an_unreachable_database_are_unavailable(app: TestApp) {
    // A pool whose every connection is held in a transaction: the next
    // caller waits its acquire timeout, then is told to come back.
    // (SQLite: a database of its own, one process's store per file.)
    let pg = app.engine.store().is_postgres();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = if pg { app.db_url().to_owned() } else { format!("sqlite://{}", dir.path().join("busy.db").display()) };
    let timeout = Duration::from_millis(300);
    let busy = store::connect_with(&url, StoreOptions { acquire_timeout: timeout, max_connections: 2 })
        .await
        .expect("a second store");
    let mut held = Vec::new();
    let refused = loop {
        assert!(held.len() < 32, "the pool never ran out of connections");
        let asked = Instant::now();
        match busy.snapshot().await {
            Ok(s) => held.push(s),
            Err(e) => {
                assert!(asked.elapsed() >= timeout, "refused after {:?}, before the timeout: {e:?}", asked.elapsed());
                break e;
            }
        }
    };
    assert_eq!(refused.cause(), Some(Cause::Busy), "{refused:?}");
    assert_eq!(code_of(&refused), Code::Unavailable, "{refused:?}");
    for s in held {
        s.end().await;
    }
    busy.close().await;

    // A database that is not there: nothing listens on port 1; a SQLite
    // file in a directory that does not exist cannot be opened.
    let url = if pg {
        "postgres://postgres@127.0.0.1:1/reprise".to_owned()
    } else {
        format!("sqlite://{}?mode=rw", dir.path().join("missing").join("reprise.db").display())
    };
    let mut options = ConnectOptions::new(url);
    options.acquire_timeout(Duration::from_secs(2)).connect_timeout(Duration::from_secs(2));
    let e = StoreError::from(Database::connect(options).await.expect_err("nothing to connect to"));
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert_eq!(code_of(&e), Code::Unavailable, "{e:?}");
}

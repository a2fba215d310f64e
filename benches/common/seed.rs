//! Bulk seeding of executions straight into the `executions` table, for
//! benches that need a store of a million rows without a million API calls.
//!
//! Seeded rows are final (SUCCEEDED or REJECTED), one pipeline's, in chains
//! of 1 to 1,000 attempts (see [`chain_len`]); ids look like UUIDv7s of
//! their creation time, so they sort like real ones.

use anyhow::{Context as _, ensure};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

/// Rows per seeding statement (one transaction each).
pub const SEED_CHUNK: i64 = 100_000;

/// The id of seeded execution `g`, shaped like a UUIDv7 of its creation time
/// (so ids sort by time like real ones) and unique by `g`.
pub fn seeded_id(base: i64, g: i64) -> String {
    let ts = base + g * 10;
    format!("{:08x}-{:04x}-7000-8000-{:012x}", ts >> 16, ts & 0xffff, g)
}

/// SQL computing `seeded_id` of the integer expression `g`.
fn id_sql(backend: DbBackend, base: i64, g: &str) -> String {
    let ts = format!("({base} + ({g}) * 10)");
    match backend {
        DbBackend::Postgres => format!(
            "lpad(to_hex({ts} >> 16), 8, '0') || '-' || lpad(to_hex({ts} & 65535), 4, '0') || '-7000-8000-' || lpad(to_hex({g}), 12, '0')"
        ),
        _ => format!("printf('%08x-%04x-7000-8000-%012x', {ts} >> 16, {ts} & 65535, {g})"),
    }
}

/// Chain layout of seeded execution g, in blocks of 1,000 rows: block b
/// with b % 100 == 0 is one chain of 1,000 attempts; in the other blocks the
/// first 500 rows are single executions and the last 500 are chains of
/// 2, 3, 5, 10, 50, 100, 250 or 500 attempts (by b % 8).
pub fn chain_len(g: i64) -> i64 {
    let (b, r) = (g / 1000, g % 1000);
    if b % 100 == 0 {
        1000
    } else if r < 500 {
        1
    } else {
        [2, 3, 5, 10, 50, 100, 250, 500][(b % 8) as usize]
    }
}

/// Inserts seeded executions [from, to) in bulk, SEED_CHUNK rows per
/// statement and transaction: PostgreSQL `INSERT ... SELECT FROM
/// generate_series`, SQLite the same over a recursive CTE.
pub async fn seed(db: &DatabaseConnection, pipeline_id: &str, base: i64, from: i64, to: i64) -> anyhow::Result<()> {
    let backend = db.get_database_backend();
    let id = |g: &str| id_sql(backend, base, g);
    let request_id = match backend {
        DbBackend::Postgres => "'seed-' || lpad(g::text, 9, '0')",
        _ => "printf('seed-%09d', g)",
    };
    let mut lo = from;
    while lo < to {
        let hi = (lo + SEED_CHUNK).min(to) - 1;
        let (with, source) = match backend {
            DbBackend::Postgres => (String::new(), format!("generate_series({lo}::bigint, {hi}::bigint) AS src(g)")),
            _ => (
                format!("WITH RECURSIVE src(g) AS (SELECT {lo} UNION ALL SELECT g + 1 FROM src WHERE g < {hi}) "),
                "src".to_owned(),
            ),
        };
        // len: attempts of the chain; pos: position in the block's chain region.
        let layout = format!(
            "SELECT g, \
               CASE WHEN (g / 1000) % 100 = 0 THEN 1000 WHEN g % 1000 < 500 THEN 1 \
                    ELSE CASE (g / 1000) % 8 WHEN 0 THEN 2 WHEN 1 THEN 3 WHEN 2 THEN 5 WHEN 3 THEN 10 \
                         WHEN 4 THEN 50 WHEN 5 THEN 100 WHEN 6 THEN 250 ELSE 500 END END AS len, \
               CASE WHEN (g / 1000) % 100 = 0 THEN g % 1000 WHEN g % 1000 < 500 THEN 0 ELSE g % 1000 - 500 END AS pos \
             FROM {source}"
        );
        let chains = format!(
            "SELECT g, pos % len + 1 AS attempt, \
               CASE WHEN pos % len = len - 1 OR g % 1000 = 999 THEN 1 ELSE 0 END AS last \
             FROM ({layout}) l"
        );
        let sql = format!(
            "{with}INSERT INTO executions (id, pipeline_id, pipeline_version, application, status, status_message, \
               variables, artifacts, request_id, request_fingerprint, triggered_by, chain_id, attempt, revision, \
               created_at, started_at, ended_at, resumed_from_execution_id, resume_stage_index, resume_stage_name, \
               resumed_by_execution_id) \
             SELECT {id_g}, '{pipeline_id}', 1, 'bench', \
               CASE WHEN last = 1 AND g % 3 <> 0 THEN 'SUCCEEDED' ELSE 'REJECTED' END, '', '{{}}', '{{}}', \
               {request_id}, 'seed', 'bench', {id_first}, attempt, 0, \
               {base} + g * 10, {base} + g * 10, {base} + g * 10 + 5, \
               CASE WHEN attempt > 1 THEN {id_prev} END, CASE WHEN attempt > 1 THEN 0 END, \
               CASE WHEN attempt > 1 THEN 'gate' END, CASE WHEN last = 0 THEN {id_next} END \
             FROM ({chains}) c",
            id_g = id("g"),
            id_first = id("g - attempt + 1"),
            id_prev = id("g - 1"),
            id_next = id("g + 1"),
        );
        let r = db.execute_unprepared(&sql).await.with_context(|| format!("seeding rows {lo}..={hi}"))?;
        ensure!(r.rows_affected() as i64 == hi - lo + 1, "seeded {} rows, expected {}", r.rows_affected(), hi - lo + 1);
        lo = hi + 1;
    }
    // Settle before measuring, as a table that grew over months would be:
    // PostgreSQL's autovacuum would vacuum and analyze the new rows (and
    // would otherwise do it in the middle of the measurement); SQLite's
    // WAL is checkpointed into the database file.
    match backend {
        DbBackend::Postgres => db.execute_unprepared("VACUUM ANALYZE executions").await?,
        _ => db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)").await?,
    };
    Ok(())
}

pub async fn count_executions(db: &DatabaseConnection) -> anyhow::Result<i64> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_string(backend, "SELECT COUNT(*) AS n FROM executions"))
        .await?
        .context("no count")?;
    Ok(row.try_get::<i64>("", "n")?)
}

pub async fn table_bytes(db: &DatabaseConnection) -> anyhow::Result<i64> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "SELECT pg_total_relation_size('executions')::bigint AS n",
        _ => "SELECT page_count * page_size AS n FROM pragma_page_count(), pragma_page_size()",
    };
    let row = db.query_one_raw(Statement::from_string(backend, sql)).await?.context("no size")?;
    Ok(row.try_get::<i64>("", "n")?)
}

/// A row count as the reports print it: 10k, 1M.
pub fn rows(n: i64) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

//! Storage failures, classified once at this edge by whether a retry can
//! succeed: callers are told UNAVAILABLE only when it can.

use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr, sqlx};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the write: someone else wrote the same key first.
    #[error("unique constraint violated: {0}")]
    Duplicate(String),
    /// The database cannot do it now; the same call may succeed later.
    #[error("{}", .0.message)]
    Unavailable(Unavailable),
    /// The database refused this statement and would refuse it again (a
    /// value or statement it cannot take, a constraint): a bug or a limit the
    /// service failed to enforce, never worth a retry.
    #[error("the database refused the statement: {0}")]
    Rejected(String),
    /// A stored value the code cannot read back (a bug or a foreign write).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A change sent as one statement was decided from what the database
    /// no longer holds (see `reprise_expect`): nothing was written, and the
    /// change is to be decided again from what it holds now.
    #[error("the database changed since this change was decided: {0}")]
    Stale(String),
}

/// The SQLSTATE of a failed `reprise_expect`.
const EXPECTATION_FAILED: &str = "RPX01";

/// Why the database cannot do it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub cause: Cause,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The database does not answer (connection refused or lost, shut down).
    Unreachable,
    /// The database answers but cannot store more (disk or quota full).
    Full,
    /// Contention or a busy pool: a retry will likely do.
    Busy,
}

impl StoreError {
    pub fn unavailable(cause: Cause, message: impl Into<String>) -> Self {
        StoreError::Unavailable(Unavailable { cause, message: message.into() })
    }

    pub fn cause(&self) -> Option<Cause> {
        match self {
            StoreError::Unavailable(u) => Some(u.cause),
            _ => None,
        }
    }
}

impl From<DbErr> for StoreError {
    fn from(e: DbErr) -> Self {
        classify(&e)
    }
}

/// What a statement refused without trying says (the database is known to be down).
pub(super) const KNOWN_DOWN: &str = "the database is not accepting work right now; retry shortly";

fn classify(e: &DbErr) -> StoreError {
    let text = e.to_string();
    if let DbErr::Custom(m) = e
        && m == KNOWN_DOWN
    {
        return StoreError::unavailable(Cause::Unreachable, KNOWN_DOWN);
    }
    let runtime = match e {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => {
            return StoreError::unavailable(
                Cause::Busy,
                "no database connection became free in time (the pool is busy or the database is slow); retry",
            );
        }
        DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed) => {
            return StoreError::unavailable(Cause::Unreachable, format!("database connection closed: {text}"));
        }
        DbErr::Conn(r) | DbErr::Exec(r) | DbErr::Query(r) => r,
        DbErr::RecordNotFound(_) | DbErr::RecordNotInserted | DbErr::RecordNotUpdated => {
            return StoreError::Rejected(text);
        }
        DbErr::Type(_) | DbErr::Json(_) | DbErr::TryIntoErr { .. } => return StoreError::Corrupt(text),
        _ => return StoreError::Rejected(text),
    };
    match runtime {
        RuntimeErr::SqlxError(sqlx) => classify_sqlx(sqlx, text),
        RuntimeErr::Internal(_) => StoreError::Rejected(text),
        #[allow(unreachable_patterns)]
        _ => StoreError::Rejected(text),
    }
}

fn classify_sqlx(e: &sqlx::Error, text: String) -> StoreError {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            classify_code(&code, db.message(), text)
        }
        sqlx::Error::PoolTimedOut => StoreError::unavailable(
            Cause::Busy,
            "no database connection became free in time (the pool is busy or the database is slow); retry",
        ),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            StoreError::unavailable(Cause::Unreachable, format!("database unreachable: {text}"))
        }
        sqlx::Error::Protocol(p) if p.contains("too many arguments") => StoreError::Rejected(text),
        sqlx::Error::Protocol(_) => {
            StoreError::unavailable(Cause::Unreachable, format!("database connection broke: {text}"))
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => {
            StoreError::Corrupt(text)
        }
        _ => StoreError::Rejected(text),
    }
}

/// PostgreSQL SQLSTATE codes (five characters) and SQLite result codes (numbers).
fn classify_code(code: &str, message: &str, text: String) -> StoreError {
    let unique = matches!(code, "23505" | "2067" | "1555");
    if unique {
        return StoreError::Duplicate(message.to_owned());
    }
    if code == EXPECTATION_FAILED {
        return StoreError::Stale(message.to_owned());
    }
    // SQLSTATEs have five characters; SQLite's (extended) codes stay below 10000.
    if code.len() == 5 {
        return classify_sqlstate(code, text);
    }
    classify_sqlite(code.parse().unwrap_or(-1), text)
}

fn classify_sqlstate(code: &str, text: String) -> StoreError {
    match &code[..2] {
        "08" | "57" | "58" => StoreError::unavailable(Cause::Unreachable, format!("database unavailable: {text}")),
        "40" => StoreError::unavailable(Cause::Busy, format!("a concurrent change won; retry: {text}")),
        "53" if code == "53100" => StoreError::unavailable(Cause::Full, format!("database disk full: {text}")),
        "53" => StoreError::unavailable(Cause::Busy, format!("database out of resources: {text}")),
        "55" if code == "55P03" => StoreError::unavailable(Cause::Busy, format!("lock not available: {text}")),
        _ => StoreError::Rejected(text),
    }
}

fn classify_sqlite(code: i64, text: String) -> StoreError {
    // Extended codes keep the primary code in their low byte.
    match code & 0xff {
        5 | 6 => StoreError::unavailable(Cause::Busy, format!("database busy: {text}")),
        13 => StoreError::unavailable(Cause::Full, format!("database or disk is full: {text}")),
        7 | 10 | 14 | 15 | 26 => StoreError::unavailable(Cause::Unreachable, format!("database unavailable: {text}")),
        _ => StoreError::Rejected(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_say_whether_a_retry_can_succeed() {
        let t = || String::from("x");
        assert!(matches!(classify_code("23505", "dup", t()), StoreError::Duplicate(_)));
        assert!(matches!(classify_code("RPX01", "changed", t()), StoreError::Stale(_)));
        assert!(matches!(classify_code("2067", "dup", t()), StoreError::Duplicate(_)));
        assert_eq!(classify_code("08006", "", t()).cause(), Some(Cause::Unreachable));
        assert_eq!(classify_code("57P01", "", t()).cause(), Some(Cause::Unreachable));
        assert_eq!(classify_code("40001", "", t()).cause(), Some(Cause::Busy));
        assert_eq!(classify_code("40P01", "", t()).cause(), Some(Cause::Busy));
        assert_eq!(classify_code("53100", "", t()).cause(), Some(Cause::Full));
        assert!(matches!(classify_code("22021", "", t()), StoreError::Rejected(_)));
        assert!(matches!(classify_code("54000", "", t()), StoreError::Rejected(_)));
        assert!(matches!(classify_code("23503", "", t()), StoreError::Rejected(_)));
        assert_eq!(classify_code("13", "", t()).cause(), Some(Cause::Full));
        assert_eq!(classify_code("5", "", t()).cause(), Some(Cause::Busy));
        assert_eq!(classify_code("517", "", t()).cause(), Some(Cause::Busy));
        assert!(matches!(classify_code("1", "too many SQL variables", t()), StoreError::Rejected(_)));
        assert!(matches!(classify_code("787", "", t()), StoreError::Rejected(_)));
    }

    /// The driver's own errors (tests/api/retry.rs drives the ones a test
    /// can provoke on a real database: refusals, a busy pool, no database).
    #[test]
    fn driver_errors_say_whether_a_retry_can_succeed() {
        let sqlx = |e: sqlx::Error| classify(&DbErr::Query(RuntimeErr::SqlxError(e.into())));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(sqlx(sqlx::Error::Io(refused)).cause(), Some(Cause::Unreachable));
        assert_eq!(sqlx(sqlx::Error::PoolTimedOut).cause(), Some(Cause::Busy));
        assert_eq!(sqlx(sqlx::Error::PoolClosed).cause(), Some(Cause::Unreachable));
        assert_eq!(sqlx(sqlx::Error::Protocol("unexpected message".into())).cause(), Some(Cause::Unreachable));
        let too_many = sqlx::Error::Protocol("PgConnection::run(): too many arguments for query: 70000".into());
        assert!(matches!(sqlx(too_many), StoreError::Rejected(_)));
        assert!(matches!(sqlx(sqlx::Error::ColumnNotFound("x".into())), StoreError::Corrupt(_)));
        assert!(matches!(sqlx(sqlx::Error::RowNotFound), StoreError::Rejected(_)));

        assert_eq!(classify(&DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)).cause(), Some(Cause::Busy));
        let closed = classify(&DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed));
        assert_eq!(closed.cause(), Some(Cause::Unreachable));
        assert_eq!(classify(&DbErr::Custom(KNOWN_DOWN.into())).cause(), Some(Cause::Unreachable));
        assert!(matches!(classify(&DbErr::Custom("anything else".into())), StoreError::Rejected(_)));
        assert!(matches!(classify(&DbErr::RecordNotInserted), StoreError::Rejected(_)));
    }
}

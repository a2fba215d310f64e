//! Raw SQL for the paths that run on every transition: written once with
//! PostgreSQL's `$1` placeholders, turned into SQLite's `?1` when needed, and
//! rows read by column name.

use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, TryGetable, Value};

use super::{Result, corrupt};

/// A statement for `c`'s backend from PostgreSQL-style SQL.
pub(crate) fn statement(c: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Statement {
    let backend = c.get_database_backend();
    let sql = if backend == DbBackend::Postgres { sql.to_owned() } else { sqlite_placeholders(sql) };
    Statement::from_sql_and_values(backend, sql, values)
}

/// `$12` → `?12`, outside string literals.
fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '$' && !quoted && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// A column of a row, or a corrupt-row error naming it.
pub(crate) fn get<T: TryGetable>(row: &QueryResult, column: &str) -> Result<T> {
    row.try_get::<T>("", column).map_err(|e| corrupt(format!("column {column}: {e}")))
}

/// `($1, $2, …), ($n+1, …)` for `rows` rows of `width` values, numbered from `first`.
pub(crate) fn value_rows(rows: usize, width: usize, first: usize) -> String {
    let mut out = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..width {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(first + r * width + c).to_string());
        }
        out.push(')');
    }
    out
}

/// Rows per multi-row statement: bounded so that no statement passes
/// SQLite's or PostgreSQL's parameter limits, whatever the pipeline's size.
pub(crate) fn chunk_rows(width: usize) -> usize {
    (30_000 / width).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_rows() {
        assert_eq!(sqlite_placeholders("a = $1 AND b = '$2' AND c = $12"), "a = ?1 AND b = '$2' AND c = ?12");
        assert_eq!(value_rows(2, 2, 3), "($3, $4), ($5, $6)");
    }
}

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

/// `$12` → `?12`, outside string literals; or `?` when the placeholders run
/// `$1, $2, …` in order, as a multi-row INSERT's do. SQLite finds a numbered
/// parameter's name by walking all of them (`sqlite3_bind_parameter_name`,
/// which the driver calls for each), so binding n numbered parameters costs
/// n²: half a second for the 22,000 of a 1,000-workflow stage's tasks.
/// Anonymous ones are bound in order, at no such cost.
fn sqlite_placeholders(sql: &str) -> String {
    let mut numbers = Vec::new();
    let out = replace_placeholders(sql, |n| {
        numbers.push(n);
        format!("?{n}")
    });
    if numbers.iter().enumerate().all(|(i, n)| *n == i + 1) {
        return replace_placeholders(sql, |_| "?".to_owned());
    }
    out
}

/// `sql` with each `$n` outside string literals replaced by `f(n)`.
fn replace_placeholders(sql: &str, mut f: impl FnMut(usize) -> String) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '$' && !quoted && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            let mut n = 0usize;
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                n = n * 10 + d as usize;
                chars.next();
            }
            out.push_str(&f(n));
        } else {
            out.push(c);
        }
    }
    out
}

/// A column of a row, or a corrupt-row error naming it.
pub(crate) fn get<T: TryGetable>(row: &QueryResult, column: &str) -> Result<T> {
    // The driver reads a column that is not there as NULL; in tests, a
    // misspelt name must fail loudly instead.
    debug_assert!(row.column_names().iter().any(|c| c == column), "no column {column} in the row");
    row.try_get::<T>("", column).map_err(|e| corrupt(format!("column {column}: {e}")))
}

/// A row read by column name, the names carrying a prefix when the row is
/// a join of several tables (`e_id`, `t_id`): the prefixed name is built in
/// one reused buffer, not allocated per column.
pub(crate) struct Columns<'r> {
    row: &'r QueryResult,
    prefix: &'r str,
    name: std::cell::RefCell<String>,
}

impl<'r> Columns<'r> {
    pub(crate) fn new(row: &'r QueryResult, prefix: &'r str) -> Self {
        Columns { row, prefix, name: std::cell::RefCell::new(String::with_capacity(prefix.len() + 32)) }
    }

    pub(crate) fn get<T: TryGetable>(&self, column: &str) -> Result<T> {
        if self.prefix.is_empty() {
            return get(self.row, column);
        }
        let mut name = self.name.borrow_mut();
        name.clear();
        name.push_str(self.prefix);
        name.push_str(column);
        get(self.row, &name)
    }
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
        assert_eq!(sqlite_placeholders("a = $2 AND b = $1"), "a = ?2 AND b = ?1");
        assert_eq!(sqlite_placeholders("a = $1 AND b = $1"), "a = ?1 AND b = ?1");
        assert_eq!(sqlite_placeholders("VALUES ($1, $2), ($3, $4) -- '$9'"), "VALUES (?, ?), (?, ?) -- '$9'");
        assert_eq!(sqlite_placeholders("SELECT 1"), "SELECT 1");
        assert_eq!(value_rows(2, 2, 3), "($3, $4), ($5, $6)");
    }
}

/// One data-changing statement, written with its own `$1…` placeholders.
#[derive(Debug, Clone)]
pub struct Part {
    pub sql: String,
    pub values: Vec<Value>,
}

/// Data-changing statements that belong to one transaction, and what to
/// tell other replicas when it commits. On PostgreSQL they go to the
/// database as one statement (data-modifying CTEs: one round trip for all
/// of a decision's writes); on SQLite, in-process, one after the other.
#[derive(Debug, Default)]
pub struct Batch {
    parts: Vec<Part>,
    notify: Option<String>,
}

/// Parameters per PostgreSQL statement, under its limit of 65,535.
const MAX_PARAMETERS: usize = 60_000;

impl Batch {
    pub fn push(&mut self, part: Part) {
        self.parts.push(part);
    }

    pub fn extend(&mut self, parts: impl IntoIterator<Item = Part>) {
        self.parts.extend(parts);
    }

    /// Sends `payload` on the events channel with the last statement
    /// (PostgreSQL; nothing on SQLite, where there is one process).
    pub fn notify(&mut self, payload: String) {
        if !payload.is_empty() {
            self.notify = Some(payload);
        }
    }

    /// Whether it holds statements (a notification alone writes nothing).
    pub fn has_statements(&self) -> bool {
        !self.parts.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.notify.is_none()
    }

    pub async fn run(self, c: &impl ConnectionTrait) -> Result<()> {
        if c.get_database_backend() != DbBackend::Postgres {
            return self.run_then(c, None).await;
        }
        let mut groups: Vec<Vec<Part>> = vec![Vec::new()];
        let mut params = 0;
        for part in self.parts {
            if params + part.values.len() > MAX_PARAMETERS && !groups.last().is_some_and(Vec::is_empty) {
                groups.push(Vec::new());
                params = 0;
            }
            params += part.values.len();
            groups.last_mut().expect("a group").push(part);
        }
        let last = groups.len() - 1;
        for (i, group) in groups.into_iter().enumerate() {
            let notify = if i == last { self.notify.clone() } else { None };
            if group.len() == 1 && notify.is_none() {
                let part = group.into_iter().next().expect("one part");
                c.execute_raw(statement(c, &part.sql, part.values)).await?;
                continue;
            }
            if group.is_empty() && notify.is_none() {
                continue;
            }
            let (sql, values) = as_one_statement(group, notify);
            c.query_one_raw(statement(c, &sql, values)).await?;
        }
        Ok(())
    }

    /// Runs the statements on SQLite, then `tail` (no placeholders) in the
    /// same call as the last of them. One call holds every statement it can:
    /// each call is a round trip to the thread that owns the connection.
    pub(super) async fn run_then(self, c: &impl ConnectionTrait, tail: Option<&str>) -> Result<()> {
        let mut lists = as_statement_lists(self.parts);
        match (lists.last_mut(), tail) {
            (Some((sql, _)), Some(tail)) => {
                sql.push_str(";\n");
                sql.push_str(tail);
            }
            (None, Some(tail)) => lists.push((tail.to_owned(), Vec::new())),
            (_, None) => {}
        }
        for (sql, values) in lists {
            c.execute_raw(statement(c, &sql, values)).await?;
        }
        Ok(())
    }
}

/// `WITH p0 AS (… RETURNING 1), p1 AS (…), n AS (SELECT pg_notify(…))
/// SELECT …` referencing every part, so all of them run.
fn as_one_statement(parts: Vec<Part>, notify: Option<String>) -> (String, Vec<Value>) {
    let mut values = Vec::new();
    let (ctes, counts) = as_ctes(parts, notify, &mut values);
    (format!("WITH {} SELECT {} AS n", ctes.join(", "), counts.join(" + ")), values)
}

/// The parts as CTEs `p0`, `p1`, … (and `n`, the notification), their
/// placeholders numbered after the `values` there are, which they join;
/// with an expression counting each one's rows.
fn as_ctes(parts: Vec<Part>, notify: Option<String>, values: &mut Vec<Value>) -> (Vec<String>, Vec<String>) {
    let mut ctes = Vec::new();
    let mut counts = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        ctes.push(format!("p{i} AS ({} RETURNING 1)", shift_placeholders(&part.sql, values.len())));
        counts.push(format!("(SELECT count(*) FROM p{i})"));
        values.extend(part.values);
    }
    if let Some(payload) = notify {
        values.push(super::EVENTS_CHANNEL.into());
        values.push(payload.into());
        ctes.push(format!("n AS (SELECT 1 AS one FROM pg_notify(${}, ${}))", values.len() - 1, values.len()));
        counts.push("(SELECT count(*) FROM n)".into());
    }
    (ctes, counts)
}

impl Batch {
    /// The batch behind `head` — CTEs whose placeholders number `values` —
    /// as one PostgreSQL statement ending in the query `select` makes of an
    /// expression that sends the notification (a CTE that only reads runs
    /// only if read; the data-modifying parts run whether read or not). The
    /// parts and the notification follow the head, their placeholders
    /// renumbered. None if it would pass the parameter limit.
    pub fn behind(
        self,
        head: &str,
        mut values: Vec<Value>,
        select: impl FnOnce(&str) -> String,
    ) -> Option<(String, Vec<Value>)> {
        let batch: usize = self.parts.iter().map(|p| p.values.len()).sum();
        if values.len() + batch + 2 > MAX_PARAMETERS {
            return None;
        }
        let notifies = self.notify.is_some();
        let (ctes, _) = as_ctes(self.parts, self.notify, &mut values);
        let mut sql = format!("WITH {head}");
        for cte in ctes {
            sql.push_str(", ");
            sql.push_str(&cte);
        }
        sql.push(' ');
        sql.push_str(&select(if notifies { "(SELECT count(*) FROM n)" } else { "0" }));
        Some((sql, values))
    }
}

/// Parameters per SQLite call, under its limit of 32,766.
const MAX_SQLITE_PARAMETERS: usize = 30_000;

/// The parts as few `stmt; stmt; …` lists as SQLite's parameter limit
/// allows, placeholders numbered through each list (SQLite binds `?N` by
/// its number in every statement of a list).
///
/// sqlx binds a later statement's unused lower slots (`?1` … below its
/// first placeholder) as if they were anonymous, from a counter that runs
/// on through the list, and stops binding once that counter passes the end
/// of the values: so each list ends with as many NULLs as it has such
/// slots, and every numbered placeholder is reached.
fn as_statement_lists(parts: Vec<Part>) -> Vec<(String, Vec<Value>)> {
    let mut lists: Vec<(String, Vec<Value>, usize)> = Vec::new();
    for part in parts {
        match lists.last_mut() {
            Some((sql, values, gaps)) if values.len() + part.values.len() <= MAX_SQLITE_PARAMETERS => {
                sql.push_str(";\n");
                sql.push_str(&shift_placeholders(&part.sql, values.len()));
                if !part.values.is_empty() {
                    *gaps += values.len();
                }
                values.extend(part.values);
            }
            _ => lists.push((part.sql, part.values, 0)),
        }
    }
    lists
        .into_iter()
        .map(|(sql, mut values, gaps)| {
            values.resize(values.len() + gaps, Value::String(None));
            (sql, values)
        })
        .collect()
}

/// `$3` → `$(3 + by)`, outside string literals.
pub(crate) fn shift_placeholders(sql: &str, by: usize) -> String {
    if by == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '$' && !quoted && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            let mut n = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(*d);
                chars.next();
            }
            out.push('$');
            out.push_str(&(n.parse::<usize>().unwrap_or(0) + by).to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn parts_become_one_statement_with_their_placeholders_renumbered() {
        assert_eq!(shift_placeholders("a = $1 AND b = '$2' AND c = $12", 3), "a = $4 AND b = '$2' AND c = $15");
        let parts = vec![
            Part { sql: "UPDATE x SET a = $1".into(), values: vec![1i32.into()] },
            Part { sql: "INSERT INTO y VALUES ($1, $2)".into(), values: vec![2i32.into(), 3i32.into()] },
        ];
        let (sql, values) = as_one_statement(parts, Some("c e1".into()));
        assert_eq!(
            sql,
            "WITH p0 AS (UPDATE x SET a = $1 RETURNING 1), p1 AS (INSERT INTO y VALUES ($2, $3) RETURNING 1), \
             n AS (SELECT 1 AS one FROM pg_notify($4, $5)) \
             SELECT (SELECT count(*) FROM p0) + (SELECT count(*) FROM p1) + (SELECT count(*) FROM n) AS n"
        );
        assert_eq!(values.len(), 5);
    }

    #[test]
    fn a_batch_behind_a_head_numbers_its_placeholders_after_the_heads() {
        let mut batch = Batch::default();
        batch.push(Part { sql: "UPDATE x SET a = $1".into(), values: vec![1i32.into()] });
        batch.notify("c e1".into());
        let head = "h AS (UPDATE y SET b = $1 WHERE c = $2 RETURNING 1)";
        let (sql, values) = batch
            .behind(head, vec![7i32.into(), 8i32.into()], |told| format!("SELECT {told} AS told, * FROM h"))
            .unwrap();
        assert_eq!(
            sql,
            "WITH h AS (UPDATE y SET b = $1 WHERE c = $2 RETURNING 1), p0 AS (UPDATE x SET a = $3 RETURNING 1), \
             n AS (SELECT 1 AS one FROM pg_notify($4, $5)) SELECT (SELECT count(*) FROM n) AS told, * FROM h"
        );
        assert_eq!(values.len(), 5);
        let quiet = Batch::default().behind("h AS (SELECT 1)", vec![], |told| format!("SELECT {told}")).unwrap();
        assert_eq!(quiet.0, "WITH h AS (SELECT 1) SELECT 0", "nothing to tell");
        let mut big = Batch::default();
        big.push(Part { sql: "INSERT INTO z VALUES ($1)".into(), values: vec![0i32.into(); MAX_PARAMETERS] });
        let over = big.behind("h AS (SELECT 1)", vec![], |_| "SELECT 1".into());
        assert!(over.is_none(), "over the limit: the caller goes another way");
    }

    #[test]
    fn sqlite_parts_become_lists_within_the_parameter_limit() {
        let part = |sql: &str, n: usize| Part { sql: sql.into(), values: vec![0i32.into(); n] };
        let lists = as_statement_lists(vec![
            part("UPDATE x SET a = $1", 1),
            part("INSERT INTO y VALUES ($1, $2)", 2),
            part("INSERT INTO z VALUES ($1)", MAX_SQLITE_PARAMETERS),
            part("DELETE FROM w", 0),
        ]);
        let sql: Vec<&str> = lists.iter().map(|(sql, _)| sql.as_str()).collect();
        assert_eq!(
            sql,
            ["UPDATE x SET a = $1;\nINSERT INTO y VALUES ($2, $3)", "INSERT INTO z VALUES ($1);\nDELETE FROM w"]
        );
        assert_eq!(lists.iter().map(|(_, v)| v.len()).collect::<Vec<_>>(), [3 + 1, MAX_SQLITE_PARAMETERS]);
    }

    /// Every value of every statement of a list reaches its placeholder,
    /// through the driver the store uses.
    #[tokio::test]
    async fn a_statement_list_binds_every_statement_on_sqlite() {
        use sea_orm::Database;
        let db = Database::connect("sqlite::memory:").await.unwrap();
        db.execute_unprepared("CREATE TABLE a (x INTEGER NOT NULL)").await.unwrap();
        let part = |n: i32| Part {
            sql: "INSERT INTO a (x) VALUES ($1), ($2), ($3)".into(),
            values: vec![(3 * n).into(), (3 * n + 1).into(), (3 * n + 2).into()],
        };
        // In order, the list is bound as anonymous placeholders; one part
        // out of order makes the whole list numbered.
        let backwards = Part { sql: "INSERT INTO a (x) VALUES ($2), ($1)".into(), values: vec![16.into(), 15.into()] };
        for out_of_order in [false, true] {
            db.execute_unprepared("DELETE FROM a").await.unwrap();
            let mut batch = Batch::default();
            batch.extend((0..5).map(part));
            if out_of_order {
                batch.push(backwards.clone());
            }
            batch.run(&db).await.unwrap();
            let sql = "SELECT count(*) AS n, sum(x) AS s, sum(x * x) AS q FROM a";
            let row = db.query_one_raw(Statement::from_string(DbBackend::Sqlite, sql)).await.unwrap().unwrap();
            let n: i64 = if out_of_order { 17 } else { 15 };
            let sums = (get::<i64>(&row, "s").unwrap(), get::<i64>(&row, "q").unwrap());
            assert_eq!(get::<i64>(&row, "n").unwrap(), n);
            assert_eq!(sums, ((0..n).sum::<i64>(), (0..n).map(|x| x * x).sum::<i64>()), "every value arrived once");
        }
    }
}

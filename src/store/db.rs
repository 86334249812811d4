//! The one thing the store's queries need from a database: run a statement with parameters,
//! read rows as plain values, group statements in a transaction. SQLite and PostgreSQL
//! implement it, so every query in `store.rs` is written once.
//!
//! Queries use `?1`, `?2`… placeholders (rewritten to `$1`… for PostgreSQL) and two tokens
//! for what the dialects spell differently: `{now_ms}` (the database clock in epoch
//! milliseconds, so leases do not depend on each node's clock) and `{skip_locked}`
//! (`FOR UPDATE SKIP LOCKED` where rows can be locked).

use std::borrow::Cow;

use super::{Result, StoreError};

/// Which SQL dialect a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The statement as this dialect spells it.
    pub fn sql<'a>(self, sql: &'a str) -> Cow<'a, str> {
        let needs_tokens = sql.contains('{');
        let needs_dollars = self == Dialect::Postgres && sql.contains('?');
        if !needs_tokens && !needs_dollars {
            return Cow::Borrowed(sql);
        }
        let (now_ms, skip_locked) = match self {
            Dialect::Sqlite => ("CAST(unixepoch('subsec') * 1000 AS INTEGER)", ""),
            Dialect::Postgres => {
                ("CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)", "FOR UPDATE SKIP LOCKED")
            }
        };
        let mut out = sql.replace("{now_ms}", now_ms).replace("{skip_locked}", skip_locked);
        if needs_dollars {
            out = dollar_placeholders(&out);
        }
        Cow::Owned(out)
    }
}

/// `?1` → `$1` outside quoted literals.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('$');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Real(v.into())
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}
impl<T: Clone + Into<Value>> From<&Option<T>> for Value {
    fn from(v: &Option<T>) -> Self {
        v.clone().map_or(Value::Null, Into::into)
    }
}

/// Parameters of one statement: `params![a, b, c]`.
macro_rules! params {
    ($($v:expr),* $(,)?) => { &[$($crate::store::db::Value::from($v)),*][..] };
}
pub(crate) use params;

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value> {
        self.0.get(i).ok_or_else(|| StoreError::Decode(format!("no column {i}")))
    }

    fn mismatch(&self, i: usize, want: &str) -> StoreError {
        StoreError::Decode(format!("column {i}: expected {want}, found {:?}", self.0.get(i)))
    }

    /// An integer column (NULL is an error).
    pub fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?.ok_or_else(|| self.mismatch(i, "an integer"))
    }

    /// A nullable integer column.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            _ => Err(self.mismatch(i, "an integer")),
        }
    }

    /// A real column (NULL is an error); integers widen.
    pub fn real(&self, i: usize) -> Result<f64> {
        self.opt_real(i)?.ok_or_else(|| self.mismatch(i, "a number"))
    }

    /// A nullable real column; integers widen.
    pub fn opt_real(&self, i: usize) -> Result<Option<f64>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Real(v) => Ok(Some(*v)),
            Value::Int(v) => Ok(Some(*v as f64)),
            _ => Err(self.mismatch(i, "a number")),
        }
    }

    /// A blob column (NULL is an error).
    pub fn blob(&self, i: usize) -> Result<Vec<u8>> {
        match self.at(i)? {
            Value::Blob(v) => Ok(v.clone()),
            _ => Err(self.mismatch(i, "a blob")),
        }
    }

    /// A text column (NULL is an error).
    pub fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?.ok_or_else(|| self.mismatch(i, "text"))
    }

    /// A nullable text column.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            _ => Err(self.mismatch(i, "text")),
        }
    }
}

/// A connection (inside a transaction when handed to `Store::write`).
pub trait Conn {
    /// Runs one statement; returns the rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    /// Runs one query; returns every row.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
    /// Wakes the other nodes' coordinators — jobs were queued or a cancel was asked for
    /// (PostgreSQL `NOTIFY`, sent at commit).
    fn wake_nodes(&mut self) -> Result<()>;
}

impl dyn Conn + '_ {
    /// The first row, if any.
    pub fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row; none is an error.
    pub fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row> {
        self.query_opt(sql, params)?.ok_or_else(|| StoreError::Decode("the query returned no row".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_tokens_follow_the_dialect() {
        let sql = "SELECT '?1', ?1, ?12 FROM jobs WHERE x < {now_ms} {skip_locked}";
        assert_eq!(Dialect::Postgres.sql("SELECT 1"), "SELECT 1");
        let pg = Dialect::Postgres.sql(sql);
        assert!(pg.starts_with("SELECT '?1', $1, $12 FROM jobs WHERE x < CAST(EXTRACT"), "{pg}");
        assert!(pg.ends_with("FOR UPDATE SKIP LOCKED"), "{pg}");
        let lite = Dialect::Sqlite.sql(sql);
        assert!(lite.starts_with("SELECT '?1', ?1, ?12 FROM jobs WHERE x < CAST(unixepoch"), "{lite}");
        assert!(!lite.contains("SKIP"), "{lite}");
    }
}

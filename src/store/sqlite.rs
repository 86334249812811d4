//! SQLite, the embedded default: one writer connection behind a mutex plus a small pool of
//! read connections (WAL), so API reads never wait behind a worker's writes.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::db::{Conn, Dialect, Row, Value};
use super::migrations::MIGRATIONS;
use super::{Result, StoreError};

/// Read connections besides the writer (file databases only).
const READERS: usize = 4;

/// A SQLite connection speaking [`Conn`].
pub struct SqliteConn(Connection);

impl Conn for SqliteConn {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut stmt = self.0.prepare_cached(&Dialect::Sqlite.sql(sql))?;
        Ok(stmt.execute(rusqlite::params_from_iter(params.iter().map(to_sqlite)))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = self.0.prepare_cached(&Dialect::Sqlite.sql(sql))?;
        let columns = stmt.column_count();
        let rows = stmt.query_map(rusqlite::params_from_iter(params.iter().map(to_sqlite)), |r| {
            (0..columns).map(|i| r.get_ref(i).map(from_sqlite)).collect::<rusqlite::Result<Vec<_>>>().map(Row)
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn wake_nodes(&mut self) -> Result<()> {
        // One process per SQLite file: the queue wakes its own workers and cancels its own jobs.
        Ok(())
    }
}

fn to_sqlite(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Int(i) => V::Integer(*i),
        Value::Real(f) => V::Real(*f),
        Value::Text(s) => V::Text(s.clone()),
        Value::Blob(b) => V::Blob(b.clone()),
    }
}

fn from_sqlite(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// The SQLite backend.
pub struct Sqlite {
    writer: Mutex<SqliteConn>,
    /// Empty for an in-memory database, whose reads go through the writer.
    readers: Vec<Mutex<SqliteConn>>,
    next_reader: AtomicUsize,
}

fn lock(m: &Mutex<SqliteConn>) -> MutexGuard<'_, SqliteConn> {
    // A panic while holding the lock leaves SQLite consistent (`write` rolls back what it finds open).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sqlite {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |message: String| StoreError::Open { path: path.display().to_string(), message };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let writer = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        let mut db = Self::init(writer)?;
        for _ in 0..READERS {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let reader = Connection::open_with_flags(path, flags).map_err(|e| fail(e.to_string()))?;
            reader.busy_timeout(Duration::from_secs(10))?;
            db.readers.push(Mutex::new(SqliteConn(reader)));
        }
        Ok(db)
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Off while tables are rebuilt (the pragma is a no-op inside a transaction).
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(m.sqlite)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Self {
            writer: Mutex::new(SqliteConn(conn)),
            readers: Vec::new(),
            next_reader: AtomicUsize::new(0),
        })
    }

    /// Runs `f` in a write transaction: committed if it returns `Ok`, rolled back otherwise.
    pub fn write<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut conn = lock(&self.writer);
        if !conn.0.is_autocommit() {
            // Left open by a panic inside an earlier `f`.
            conn.0.execute_batch("ROLLBACK")?;
        }
        conn.0.execute_batch("BEGIN IMMEDIATE")?;
        match f(&mut *conn) {
            Ok(v) => {
                conn.0.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = conn.0.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Runs `f` on a read connection: a free one from the pool, else the next in turn.
    pub fn read<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        if self.readers.is_empty() {
            return f(&mut *lock(&self.writer));
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        let guard = (0..n)
            .find_map(|i| self.readers[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| lock(&self.readers[start % n]));
        let mut guard = guard;
        f(&mut *guard)
    }

    /// Holds the writer, for a test that reads must not wait for it.
    #[cfg(test)]
    pub fn hold_writer(&self) -> MutexGuard<'_, SqliteConn> {
        lock(&self.writer)
    }
}

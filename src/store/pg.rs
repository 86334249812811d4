//! PostgreSQL, for several nodes sharing one queue: a small pool of synchronous clients (the
//! callers are threads), statements prepared once per connection, migrations serialised by an
//! advisory lock, and one listening connection that sleeps until another node queues work.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Statement};

use super::db::{Conn, Dialect, Row, Value};
use super::migrations::MIGRATIONS;
use super::{Result, StoreError};

/// Channel on which enqueues are announced.
const CHANNEL: &str = "diarized_jobs";
/// Channel on which job events are announced to the other nodes.
const EVENTS: &str = "diarized_events";
/// Connections kept at most (workers, HTTP threads, watcher and the node's heartbeat share them).
const MAX_CONNECTIONS: usize = 16;
/// Serialises migrations of nodes starting together.
const MIGRATION_LOCK: i64 = 0x6469_6172_697a;

/// A client with its prepared statements.
pub struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl PgConn {
    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let stmt = self.client.prepare(&Dialect::Postgres.sql(sql))?;
        self.statements.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

impl Conn for PgConn {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let stmt = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        Ok(self.client.execute(&stmt, &refs)?)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let stmt = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        self.client.query(&stmt, &refs)?.iter().map(from_pg).collect()
    }

    fn wake_nodes(&mut self) -> Result<()> {
        self.client.batch_execute(&format!("NOTIFY {CHANNEL}"))?;
        Ok(())
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Value::Real(f) if *ty == Type::FLOAT4 => (*f as f32).to_sql(ty, out),
            Value::Real(f) => f.to_sql(ty, out),
            Value::Text(s) => s.to_sql(ty, out),
            Value::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn from_pg(row: &postgres::Row) -> Result<Row> {
    let value = |i: usize, ty: &Type| -> std::result::Result<Value, postgres::Error> {
        Ok(match *ty {
            Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map_or(Value::Null, |v| Value::Int(v.into())),
            Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map_or(Value::Null, |v| Value::Int(v.into())),
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map_or(Value::Null, Value::Int),
            Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map_or(Value::Null, |v| Value::Int(v.into())),
            Type::FLOAT4 => row.try_get::<_, Option<f32>>(i)?.map_or(Value::Null, |v| Value::Real(v.into())),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map_or(Value::Null, Value::Real),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map_or(Value::Null, Value::Blob),
            _ => row.try_get::<_, Option<String>>(i)?.map_or(Value::Null, Value::Text),
        })
    };
    row.columns().iter().enumerate().map(|(i, c)| Ok(value(i, c.type_())?)).collect::<Result<_>>().map(Row)
}

/// Idle connections and how many are open in all.
struct Slots {
    idle: Vec<PgConn>,
    open: usize,
}

/// The PostgreSQL backend.
pub struct Postgres {
    config: postgres::Config,
    slots: Mutex<Slots>,
    freed: Condvar,
    /// The connection that LISTENs; only the node's coordinator waits on it.
    listener: Mutex<Option<Client>>,
}

/// A pooled connection, back in the pool when dropped.
struct Pooled<'a> {
    pool: &'a Postgres,
    conn: Option<PgConn>,
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let mut slots = self.pool.slots();
        match self.conn.take() {
            // A panic may have left a transaction open: that connection is not reused.
            Some(c) if !c.client.is_closed() && !std::thread::panicking() => slots.idle.push(c),
            _ => slots.open -= 1,
        }
        self.pool.freed.notify_one();
    }
}

impl Postgres {
    /// Connects to `url` (a `postgres://` URL) and migrates the database.
    pub fn open(url: &str) -> Result<Self> {
        let fail = |message: String| StoreError::Open { path: redact(url), message };
        let config: postgres::Config = url.parse().map_err(|e: postgres::Error| fail(e.to_string()))?;
        let db = Self {
            config,
            slots: Mutex::new(Slots { idle: Vec::new(), open: 0 }),
            freed: Condvar::new(),
            listener: Mutex::new(None),
        };
        db.migrate().map_err(|e| fail(e.to_string()))?;
        Ok(db)
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connect(&self) -> Result<Client> {
        Ok(self.config.connect(NoTls)?)
    }

    fn get(&self) -> Result<Pooled<'_>> {
        let mut slots = self.slots();
        loop {
            if let Some(c) = slots.idle.pop() {
                if c.client.is_closed() {
                    slots.open -= 1;
                    continue;
                }
                return Ok(Pooled { pool: self, conn: Some(c) });
            }
            if slots.open < MAX_CONNECTIONS {
                slots.open += 1;
                drop(slots);
                return match self.connect() {
                    Ok(client) => {
                        Ok(Pooled { pool: self, conn: Some(PgConn { client, statements: HashMap::new() }) })
                    }
                    Err(e) => {
                        self.slots().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            slots = self.freed.wait(slots).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn migrate(&self) -> Result<()> {
        let mut client = self.connect()?;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
        let version: i64 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?.get(0);
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            if !m.postgres.is_empty() {
                tx.batch_execute(m.postgres)?;
            }
            tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&(i as i64 + 1)])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs `f` in a transaction: committed if it returns `Ok`, rolled back otherwise.
    pub fn write<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut pooled = self.get()?;
        let conn = pooled.conn.as_mut().expect("a pooled connection");
        conn.client.batch_execute("BEGIN")?;
        match f(conn) {
            Ok(v) => {
                conn.client.batch_execute("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = conn.client.batch_execute("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Runs `f` on a pooled connection (each statement its own transaction).
    pub fn read<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut pooled = self.get()?;
        f(pooled.conn.as_mut().expect("a pooled connection"))
    }

    /// Announces a job event (`payload`, JSON) to the other nodes.
    pub fn announce(&self, payload: &str) -> Result<()> {
        let mut pooled = self.get()?;
        let conn = pooled.conn.as_mut().expect("a pooled connection");
        conn.client.execute("SELECT pg_notify($1, $2)", &[&EVENTS, &payload])?;
        Ok(())
    }

    /// Calls `on` with the payload of every job event announced from now on, on a thread of
    /// its own (listening before this returns); a lost connection is made again.
    pub fn relay_events(&self, mut on: impl FnMut(&str) + Send + 'static) -> Result<()> {
        let listen = |config: &postgres::Config| -> Result<Client> {
            let mut client = config.connect(NoTls)?;
            client.batch_execute(&format!("LISTEN {EVENTS}"))?;
            Ok(client)
        };
        let mut client = listen(&self.config)?;
        let config = self.config.clone();
        std::thread::Builder::new()
            .name("pg-events".into())
            .spawn(move || {
                loop {
                    let mut notes = client.notifications();
                    let mut iter = notes.blocking_iter();
                    let failed = loop {
                        match iter.next() {
                            Ok(Some(n)) => on(n.payload()),
                            Ok(None) => break None,
                            Err(e) => break Some(e),
                        }
                    };
                    drop(iter);
                    drop(notes);
                    tracing::warn!(error = ?failed, "lost the event listener connection; reconnecting");
                    client = loop {
                        std::thread::sleep(Duration::from_secs(1));
                        match listen(&config) {
                            Ok(c) => break c,
                            Err(e) => tracing::warn!(error = %e, "cannot listen for job events"),
                        }
                    };
                }
            })
            .map_err(|e| StoreError::Decode(format!("cannot start the event listener: {e}")))?;
        Ok(())
    }

    /// Sleeps until another node (or this one) queues a job, or `timeout`; true if woken.
    pub fn wait_for_queued(&self, timeout: Duration) -> Result<bool> {
        let mut listener = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        if listener.as_ref().is_none_or(Client::is_closed) {
            let mut client = self.connect()?;
            client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
            *listener = Some(client);
        }
        let client = listener.as_mut().expect("the listener was just connected");
        let first = client.notifications().timeout_iter(timeout).next();
        match first {
            Ok(Some(_)) => {
                // Several enqueues make one wake-up.
                while let Ok(Some(_)) = client.notifications().iter().next() {}
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                *listener = None;
                Err(e.into())
            }
        }
    }
}

/// A database created for one test and dropped (connections and all) after it.
pub struct ScratchDatabase {
    admin_url: String,
    name: String,
    /// Where the test's store connects.
    pub url: String,
}

impl ScratchDatabase {
    /// Creates a fresh database on the cluster `admin_url` points at.
    pub fn create(admin_url: &str) -> Result<Self> {
        let name = format!("diarized_test_{}", uuid::Uuid::new_v4().simple());
        Client::connect(admin_url, NoTls)?.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin_url, String::new()),
        };
        // `scheme://user@host:port` without the database name.
        let start = base.find("://").map_or(0, |i| i + 3);
        let server = &base[..base[start..].find('/').map_or(base.len(), |j| start + j)];
        Ok(Self { admin_url: admin_url.to_owned(), url: format!("{server}/{name}{query}"), name })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let dropped = Client::connect(&self.admin_url, NoTls).and_then(|mut c| {
            c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
        });
        if let Err(e) = dropped {
            eprintln!("test database {} not dropped: {e}", self.name);
        }
    }
}

/// The PostgreSQL cluster for tests (`DIARIZED_TEST_PG_URL`, which `make test` sets). Unset, the
/// PostgreSQL tests fail, unless `DIARIZED_TEST_PG_SKIP=1` skips them (`None`).
pub fn test_url() -> Option<String> {
    if let Some(url) = std::env::var("DIARIZED_TEST_PG_URL").ok().filter(|u| !u.is_empty()) {
        return Some(url);
    }
    if std::env::var("DIARIZED_TEST_PG_SKIP").is_ok_and(|v| !v.is_empty() && v != "0") {
        eprintln!("DIARIZED_TEST_PG_SKIP is set: PostgreSQL test skipped");
        return None;
    }
    panic!(
        "DIARIZED_TEST_PG_URL is not set, so the PostgreSQL tests cannot run. `make test` starts a \
         throwaway cluster; by hand: eval \"$(scripts/pg-test-cluster.sh start)\" (and \
         scripts/pg-test-cluster.sh stop afterwards), or set DIARIZED_TEST_PG_SKIP=1 to skip them"
    )
}

/// `url` without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{}{user}{hidden}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(redact("postgres://u:secret@db:5432/x"), "postgres://u:***@db:5432/x");
        assert_eq!(redact("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
    }
}

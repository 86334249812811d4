//! Job storage: jobs, transcript segments, speaker turns, tombstones of deleted jobs, the
//! nodes that share the queue, known speakers (in [`speakers`]) and webhook deliveries (in
//! [`integrations`]). The queue is a query here.
//!
//! Two backends behind one API, chosen by `DATABASE_URL`: SQLite (embedded, the default) and
//! PostgreSQL (several nodes share one queue). Every query is written once against
//! [`db::Conn`]; the schema of both lives in `migrations`. A running job holds a lease that its
//! node's heartbeat renews; a job whose lease ran out (its node died) is queued again.

mod db;
mod integrations;
mod migrations;
mod pg;
mod speakers;
mod sqlite;

pub use integrations::{Attempt, Delivery, DeliveryState, NewDelivery};
pub use speakers::NewPrint;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use db::{Conn, Row, params};

use crate::events::{Bus, Event};
use crate::model::{
    ActionItem, Analysis, Job, JobOptions, Segment, Source, SpeakerHints, SpeakerTurn, Status, Transcript,
};

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("database error: unexpected value: {0}")]
    Decode(String),
    #[error("job {0} not found")]
    NotFound(i64),
    #[error("speaker {0} not found")]
    PersonNotFound(i64),
    #[error("{0}")]
    Conflict(String),
    #[error("database at {path}: {message}")]
    Open { path: String, message: String },
}

impl StoreError {
    /// Whether a unique constraint refused the write.
    fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::ConstraintViolation
            }
            StoreError::Postgres(e) => e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a queued run should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStage {
    /// The whole pipeline.
    All,
    /// Analysis only, on the stored segments.
    Analyze,
}

impl RunStage {
    fn as_str(self) -> &'static str {
        match self {
            RunStage::All => "all",
            RunStage::Analyze => "analyze",
        }
    }
}

/// A new job's row.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Unique name; uploads are stored as `<uuid>.<ext>`.
    pub uuid: String,
    pub audio_path: String,
    pub original_filename: Option<String>,
    pub sha256: String,
    pub source: Source,
    pub speakers: SpeakerHints,
}

#[cfg(test)]
impl NewJob {
    /// A test job for `audio_path`: a fresh uuid, placeholder hash, no original name or hints.
    pub(crate) fn for_test(audio_path: impl Into<String>, source: Source) -> Self {
        NewJob {
            uuid: uuid::Uuid::new_v4().to_string(),
            audio_path: audio_path.into(),
            original_filename: None,
            sha256: "x".into(),
            source,
            speakers: SpeakerHints::default(),
        }
    }
}

/// User edits to a finished job (`PUT /api/jobs/<id>`); `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct JobPatch {
    pub conversation_type: Option<String>,
    pub summary: Option<String>,
    pub keypoints: Option<Vec<String>>,
    pub language: Option<String>,
    pub clean_transcript: Option<String>,
    pub action_items: Option<Vec<ActionItem>>,
    pub topics: Option<Vec<String>>,
}

/// Filter and page for listing jobs.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub status: Option<Status>,
    pub limit: Option<u32>,
    pub offset: u32,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    Error(String),
    Cancelled,
}

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancelled {
    /// The job was queued and is now `cancelled`.
    Dequeued(Job),
    /// The job is running; the caller must stop it.
    Running(Job),
}

/// A process sharing the store, as `/api/status` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    pub pid: u32,
    /// `serve`, `serve --no-workers` or `worker`.
    pub role: String,
    pub workers: u32,
    pub started_at: String,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_s: f64,
    /// Whether this is the node asking.
    pub current: bool,
}

/// Message of a job left `processing` by two crashes in a row.
pub const INTERRUPTED_TWICE: &str = "interrupted twice while processing; not retried";

/// How long a claimed job stays leased without a heartbeat, unless set with [`Store::set_lease`].
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// Nodes silent this many leases are dropped from the nodes table.
const STALE_NODE_LEASES: u64 = 10;

enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(Box<pg::Postgres>),
}

/// This process as a node: a fresh id per start, and where it runs (to tell a dead local
/// predecessor at start-up).
struct NodeSelf {
    id: String,
    hostname: String,
    pid: u32,
    /// Role and worker count once registered.
    registered: Mutex<Option<(String, u32)>>,
}

/// The job store.
pub struct Store {
    backend: Backend,
    node: NodeSelf,
    lease_ms: AtomicU64,
    /// `UPLOAD_FOLDER` as configured and made absolute, once set: stored audio paths under it
    /// are relative to it.
    upload_folder: RwLock<Option<(PathBuf, PathBuf)>>,
    /// Every status change and progress step is published here after it is written.
    events: Bus,
}

const JOB_COLUMNS: &str = "id, audio_path, original_filename, sha256, source, status, error_message, \
    conversation_type, summary, keypoints, language, language_probability, clean_transcript, transcript, \
    duration_s, progress, num_speakers, min_speakers, max_speakers, created_at, updated_at, started_at, \
    finished_at, uuid, attempts, action_items, topics, speakers";

/// Current time as ISO-8601 UTC with milliseconds.
pub fn now() -> String {
    iso_time(time::OffsetDateTime::now_utc())
}

/// A time as stored: ISO-8601 UTC with milliseconds (these strings sort as the times do).
pub fn iso_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

/// `url` without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    pg::redact(url)
}

impl Store {
    /// Opens the database `DATABASE_URL` names: `postgres://…` or a SQLite URL or path.
    pub fn connect(url: &str) -> Result<Self> {
        if crate::config::is_postgres_url(url) {
            return Ok(Self::new(Backend::Postgres(Box::new(pg::Postgres::open(url)?))));
        }
        let path = crate::config::database_path(url)
            .map_err(|e| StoreError::Open { path: url.to_owned(), message: e.to_string() })?;
        Self::open(&path)
    }

    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self::new(Backend::Sqlite(sqlite::Sqlite::open(path)?)))
    }

    /// An in-memory SQLite store, for tests.
    pub fn in_memory() -> Result<Self> {
        Ok(Self::new(Backend::Sqlite(sqlite::Sqlite::in_memory()?)))
    }

    fn new(backend: Backend) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        let node = NodeSelf {
            id: uuid::Uuid::new_v4().to_string(),
            hostname,
            pid: std::process::id(),
            registered: Mutex::new(None),
        };
        Self {
            backend,
            node,
            lease_ms: AtomicU64::new(DEFAULT_LEASE.as_millis() as u64),
            upload_folder: RwLock::new(None),
            events: Bus::default(),
        }
    }

    /// The bus this store publishes job events on.
    pub fn events(&self) -> &Bus {
        &self.events
    }

    /// Publishes a job's stored state as a status event; returns it.
    fn published(&self, job: Job) -> Job {
        self.publish(Event::Status { job: Box::new(job.clone()) });
        job
    }

    /// Publishes an event on this node's bus and, with PostgreSQL, announces it to the other
    /// nodes (their event streams relay it, see [`Store::relay_remote_events`]).
    fn publish(&self, event: Event) {
        if let Backend::Postgres(db) = &self.backend {
            let (kind, progress) = match &event {
                Event::Status { .. } => ("status", None),
                Event::Progress { progress, .. } => ("progress", Some(*progress)),
                Event::Deleted { .. } => ("deleted", None),
            };
            let payload = serde_json::json!({
                "node": self.node.id, "event": kind, "id": event.job_id(), "progress": progress,
            });
            if let Err(e) = db.announce(&payload.to_string()) {
                tracing::warn!(job = event.job_id(), error = %e, "cannot announce a job event to other nodes");
            }
        }
        self.events.publish(event);
    }

    /// With PostgreSQL: relays the job events other nodes announce (jobs their workers run) to
    /// this node's live subscribers (event streams), the job as stored. Webhooks and exports
    /// are made by the node that wrote the change. Listening when this returns; SQLite (one
    /// node) has nothing to relay.
    pub fn relay_remote_events(self: &std::sync::Arc<Self>) -> Result<()> {
        let Backend::Postgres(db) = &self.backend else { return Ok(()) };
        let store = std::sync::Arc::downgrade(self);
        db.relay_events(move |payload| {
            let Some(store) = store.upgrade() else { return };
            let Ok(note) = serde_json::from_str::<serde_json::Value>(payload) else { return };
            let Some(id) = note["id"].as_i64() else { return };
            if note["node"].as_str() == Some(store.node.id.as_str()) {
                return;
            }
            let event = match note["event"].as_str() {
                Some("status") => match store.job(id) {
                    Ok(job) => Event::Status { job: Box::new(job) },
                    Err(_) => return,
                },
                Some("progress") => {
                    Event::Progress { id, progress: note["progress"].as_f64().unwrap_or(0.0) as f32 }
                }
                Some("deleted") => Event::Deleted { id },
                _ => return,
            };
            store.events.publish_live(event);
        })
    }

    /// Runs `f` in one transaction.
    fn write<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(db) => db.write(f),
            Backend::Postgres(db) => db.write(f),
        }
    }

    /// Runs `f` on a read connection.
    fn read<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(db) => db.read(f),
            Backend::Postgres(db) => db.read(f),
        }
    }

    /// This node's id (fresh per process).
    pub fn node_id(&self) -> &str {
        &self.node.id
    }

    /// Sets how long a claimed job stays leased without a heartbeat.
    pub fn set_lease(&self, lease: Duration) {
        self.lease_ms.store(lease.as_millis() as u64, Ordering::Relaxed);
    }

    /// The lease of claimed jobs.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.load(Ordering::Relaxed))
    }

    fn lease_ms(&self) -> i64 {
        self.lease_ms.load(Ordering::Relaxed) as i64
    }

    /// Inserts a job in status `uploaded`; `None` if a job for this audio path already exists
    /// (on a shared folder another node may have registered it first).
    pub fn insert_job(&self, new: &NewJob) -> Result<Option<Job>> {
        let ts = now();
        self.write(|c| {
            c.query_opt(
                &format!(
                    "INSERT INTO jobs (uuid, audio_path, original_filename, sha256, source, status, num_speakers,
                        min_speakers, max_speakers, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'uploaded', ?6, ?7, ?8, ?9, ?9)
                     ON CONFLICT (audio_path) DO NOTHING RETURNING {JOB_COLUMNS}"
                ),
                params![
                    &new.uuid,
                    self.stored_path(&new.audio_path),
                    &new.original_filename,
                    &new.sha256,
                    new.source.as_str(),
                    new.speakers.num_speakers.map(|n| n as i64),
                    new.speakers.min_speakers.map(|n| n as i64),
                    new.speakers.max_speakers.map(|n| n as i64),
                    ts
                ],
            )?
            .map(|r| self.job_from_row(&r))
            .transpose()
        })
        .map(|job| job.map(|job| self.published(job)))
    }

    /// The job with `id`, or `NotFound`.
    pub fn job(&self, id: i64) -> Result<Job> {
        self.read(|c| self.job_in(c, id))
    }

    /// A job whose audio has this SHA-256, if any.
    pub fn job_by_sha256(&self, sha: &str) -> Result<Option<Job>> {
        self.find_one("sha256 = ?1", sha)
    }

    /// The job stored for this audio path, if any.
    pub fn job_by_audio_path(&self, path: &str) -> Result<Option<Job>> {
        self.find_one("audio_path = ?1", &self.stored_path(path))
    }

    fn find_one(&self, cond: &str, arg: &str) -> Result<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {cond} LIMIT 1");
        self.read(|c| c.query_opt(&sql, params![arg])?.map(|r| self.job_from_row(&r)).transpose())
    }

    /// Whether a job for this path and content was deleted with its audio left in place.
    pub fn is_tombstoned(&self, audio_path: &str, sha256: &str) -> Result<bool> {
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT 1 FROM tombstones WHERE audio_path = ?1 AND sha256 = ?2",
                params![self.stored_path(audio_path), sha256],
            )?
            .is_some())
        })
    }

    /// Jobs newest first, with the total count matching the filter.
    pub fn list_jobs(&self, q: &JobQuery) -> Result<(Vec<Job>, u64)> {
        let limit = q.limit.map_or(i64::MAX, i64::from);
        let (cond, filter) = match q.status {
            Some(s) => ("WHERE status = ?3", Some(s.as_str())),
            None => ("", None),
        };
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs {cond} ORDER BY created_at DESC, id DESC LIMIT ?1 OFFSET ?2"
        );
        let count = format!("SELECT COUNT(*) FROM jobs {}", cond.replace("?3", "?1"));
        self.read(|c| {
            let (total, rows) = match filter {
                Some(s) => (c.query_one(&count, params![s])?, c.query(&sql, params![limit, q.offset, s])?),
                None => (c.query_one(&count, &[])?, c.query(&sql, params![limit, q.offset])?),
            };
            let jobs = rows.iter().map(|r| self.job_from_row(r)).collect::<Result<Vec<_>>>()?;
            Ok((jobs, total.int(0)? as u64))
        })
    }

    /// Applies user edits and returns the updated job.
    pub fn patch_job(&self, id: i64, patch: &JobPatch) -> Result<Job> {
        let keypoints = patch.keypoints.as_ref().map(|k| serde_json::to_string(k).unwrap_or_default());
        let action_items = patch.action_items.as_ref().map(|a| serde_json::to_string(a).unwrap_or_default());
        let topics = patch.topics.as_ref().map(|t| serde_json::to_string(t).unwrap_or_default());
        self.write(|c| {
            let n = c.execute(
                "UPDATE jobs SET conversation_type = COALESCE(?2, conversation_type),
                    summary = COALESCE(?3, summary), keypoints = COALESCE(?4, keypoints),
                    language = COALESCE(?5, language), clean_transcript = COALESCE(?6, clean_transcript),
                    updated_at = ?7, action_items = COALESCE(?8, action_items), topics = COALESCE(?9, topics)
                 WHERE id = ?1",
                params![
                    id,
                    &patch.conversation_type,
                    &patch.summary,
                    keypoints,
                    &patch.language,
                    &patch.clean_transcript,
                    now(),
                    action_items,
                    topics
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(id));
            }
            self.job_in(c, id)
        })
    }

    /// Stores a job's processing options (read by the worker when it runs the job).
    pub fn set_job_options(&self, id: i64, options: &JobOptions) -> Result<()> {
        let json = serde_json::to_string(options).unwrap_or_default();
        self.write(|c| {
            let n = c.execute("UPDATE jobs SET options = ?2 WHERE id = ?1", params![id, json])?;
            if n == 0 { Err(StoreError::NotFound(id)) } else { Ok(()) }
        })
    }

    /// A job's processing options (the default when none were set).
    pub fn job_options(&self, id: i64) -> Result<JobOptions> {
        let row = self
            .read(|c| c.query_opt("SELECT options FROM jobs WHERE id = ?1", params![id]))?
            .ok_or(StoreError::NotFound(id))?;
        Ok(row.opt_text(0)?.and_then(|j| serde_json::from_str(&j).ok()).unwrap_or_default())
    }

    /// Queues a job for `stage` with a fresh attempt count; a job already queued or processing
    /// is a conflict. Every node is told (PostgreSQL `NOTIFY`).
    pub fn enqueue(&self, id: i64, stage: RunStage) -> Result<Job> {
        self.write(|c| {
            let n = c.execute(
                "UPDATE jobs SET status = 'queued', run_stage = ?2, error_message = NULL, progress = NULL,
                    attempts = 0, queued_seq = (SELECT COALESCE(MAX(queued_seq), 0) + 1 FROM jobs),
                    lease_owner = NULL, lease_expires_ms = NULL, cancel_requested = 0, updated_at = ?3
                 WHERE id = ?1 AND status NOT IN ('queued', 'processing')",
                params![id, stage.as_str(), now()],
            )?;
            let job = self.job_in(c, id)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("job {id} is already {}", job.status.as_str())));
            }
            c.wake_nodes()?;
            Ok(job)
        })
        .map(|job| self.published(job))
    }

    /// Takes the oldest queued job (skipping rows other nodes are claiming), marks it
    /// `processing` leased to this node, and counts the attempt.
    pub fn claim_next_job(&self) -> Result<Option<(Job, RunStage)>> {
        let sql = format!(
            "UPDATE jobs SET status = 'processing', started_at = ?1, finished_at = NULL, progress = 0,
                attempts = attempts + 1, updated_at = ?1, lease_owner = ?2, cancel_requested = 0,
                lease_expires_ms = {{now_ms}} + ?3
             WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_seq, id LIMIT 1
                {{skip_locked}})
             RETURNING {JOB_COLUMNS}, run_stage"
        );
        self.write(|c| {
            let Some(row) = c.query_opt(&sql, params![now(), &self.node.id, self.lease_ms()])? else {
                return Ok(None);
            };
            let stage = if row.text(28)? == "analyze" { RunStage::Analyze } else { RunStage::All };
            Ok(Some((self.job_from_row(&row)?, stage)))
        })
        .map(|claimed| claimed.map(|(job, stage)| (self.published(job), stage)))
    }

    /// At start-up: running jobs whose node is gone go back to the queue — those whose lease
    /// ran out, and those of an earlier process on this host that no longer runs (a restart
    /// after a crash need not wait for the lease). See [`Store::requeue_expired`].
    pub fn requeue_interrupted(&self) -> Result<(usize, usize)> {
        let nodes = self.read(|c| {
            c.query(
                "SELECT id, pid FROM nodes WHERE hostname = ?1 AND id <> ?2",
                params![&self.node.hostname, &self.node.id],
            )
        })?;
        let mut dead = Vec::new();
        for row in nodes {
            let pid = row.int(1)?;
            // One node per process: a node with our pid is an earlier process (a container's pid 1).
            if pid == i64::from(self.node.pid) || !Path::new(&format!("/proc/{pid}")).exists() {
                dead.push(row.text(0)?);
            }
        }
        self.write(|c| {
            for id in &dead {
                c.execute(
                    "UPDATE jobs SET lease_expires_ms = NULL WHERE lease_owner = ?1 AND status = 'processing'",
                    params![id],
                )?;
                c.execute("DELETE FROM nodes WHERE id = ?1", params![id])?;
            }
            Ok(())
        })?;
        self.requeue_expired()
    }

    /// Jobs left `processing` with an expired lease (their node died or lost the database) go
    /// back to the queue, except those already started twice, which end in `error`
    /// ([`INTERRUPTED_TWICE`]) so a job that kills its process cannot loop forever. Returns
    /// (requeued, failed).
    pub fn requeue_expired(&self) -> Result<(usize, usize)> {
        let expired = "status = 'processing' AND (lease_expires_ms IS NULL OR lease_expires_ms <= {now_ms})";
        let ts = now();
        let (requeued, failed) = self.write(|c| {
            let failed = c.query(
                &format!(
                    "UPDATE jobs SET status = 'error', error_message = ?2, progress = NULL, finished_at = ?1,
                        updated_at = ?1, lease_owner = NULL, lease_expires_ms = NULL
                     WHERE {expired} AND attempts >= 2 RETURNING {JOB_COLUMNS}"
                ),
                params![&ts, INTERRUPTED_TWICE],
            )?;
            let failed = failed.iter().map(|r| self.job_from_row(r)).collect::<Result<Vec<_>>>()?;
            let requeued = c.execute(
                &format!(
                    "UPDATE jobs SET status = 'queued', progress = NULL, updated_at = ?1, lease_owner = NULL,
                        lease_expires_ms = NULL
                     WHERE {expired}"
                ),
                params![&ts],
            )?;
            if requeued > 0 {
                c.wake_nodes()?;
            }
            Ok((requeued as usize, failed))
        })?;
        let count = failed.len();
        for job in failed {
            self.published(job);
        }
        Ok((requeued, count))
    }

    /// Puts one processing job back in the queue (shutdown grace period ran out). A deliberate
    /// stop is not a crash, so the attempt is not counted.
    pub fn requeue(&self, id: i64) -> Result<()> {
        self.write(|c| {
            c.execute(
                "UPDATE jobs SET status = 'queued', progress = NULL,
                    attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,
                    lease_owner = NULL, lease_expires_ms = NULL, updated_at = ?2
                 WHERE id = ?1 AND status = 'processing'",
                params![id, now()],
            )?;
            c.wake_nodes()
        })?;
        if let Ok(job) = self.job(id) {
            self.published(job);
        }
        Ok(())
    }

    /// Cancels a job: a queued one becomes `cancelled` here; a running one is reported so the
    /// caller can stop it; any other status is a conflict.
    pub fn cancel(&self, id: i64) -> Result<Cancelled> {
        self.write(|c| {
            let n = c.execute(
                "UPDATE jobs SET status = 'cancelled', error_message = NULL, progress = NULL, finished_at = ?2,
                    updated_at = ?2
                 WHERE id = ?1 AND status = 'queued'",
                params![id, now()],
            )?;
            let job = self.job_in(c, id)?;
            match job.status {
                _ if n == 1 => Ok(Cancelled::Dequeued(self.published(job))),
                Status::Processing => {
                    // Recorded for the node running it, which may be another one.
                    c.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", params![id])?;
                    c.wake_nodes()?;
                    Ok(Cancelled::Running(job))
                }
                s => Err(StoreError::Conflict(format!("job {id} is {}; nothing to cancel", s.as_str()))),
            }
        })
    }

    /// Whether a cancel was asked for while job `id` runs.
    pub fn cancel_requested(&self, id: i64) -> Result<bool> {
        self.read(|c| {
            let row = c.query_opt("SELECT cancel_requested FROM jobs WHERE id = ?1", params![id])?;
            Ok(row.map(|r| r.int(0)).transpose()?.unwrap_or(0) != 0)
        })
    }

    /// This node's running jobs whose cancel was asked for (on any node).
    pub fn cancel_requests(&self) -> Result<Vec<i64>> {
        let rows = self.read(|c| {
            c.query(
                "SELECT id FROM jobs WHERE status = 'processing' AND cancel_requested = 1 AND lease_owner = ?1",
                params![&self.node.id],
            )
        })?;
        rows.iter().map(|r| r.int(0)).collect()
    }

    /// Number of queued jobs.
    pub fn queue_depth(&self) -> Result<u64> {
        self.read(|c| {
            Ok(c.query_one("SELECT COUNT(*) FROM jobs WHERE status = 'queued'", &[])?.int(0)? as u64)
        })
    }

    /// Job counts per status (every status present, zero included).
    pub fn counts_by_status(&self) -> Result<BTreeMap<&'static str, u64>> {
        let mut out: BTreeMap<&'static str, u64> = Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let rows = self.read(|c| c.query("SELECT status, COUNT(*) FROM jobs GROUP BY status", &[]))?;
        for row in rows {
            if let Some(s) = Status::parse(&row.text(0)?) {
                out.insert(s.as_str(), row.int(1)? as u64);
            }
        }
        Ok(out)
    }

    /// Records progress (0–100) of a running job.
    pub fn set_progress(&self, id: i64, percent: f32) -> Result<()> {
        self.write(|c| {
            c.execute("UPDATE jobs SET progress = ?2 WHERE id = ?1", params![id, percent]).map(drop)
        })?;
        self.publish(Event::Progress { id, progress: percent });
        Ok(())
    }

    /// Records the decoded duration.
    pub fn set_duration(&self, id: i64, duration_s: f64) -> Result<()> {
        self.write(|c| {
            let n = c.execute(
                "UPDATE jobs SET duration_s = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, duration_s, now()],
            )?;
            if n == 0 { Err(StoreError::NotFound(id)) } else { Ok(()) }
        })
    }

    /// Stores the transcript (replacing earlier segments) and its language. A job deleted while
    /// it ran is `NotFound` (nothing is written).
    pub fn save_transcript(&self, id: i64, transcript: &Transcript) -> Result<()> {
        self.write(|c| {
            let n = c.execute(
                "UPDATE jobs SET transcript = ?2, language = ?3, language_probability = ?4, updated_at = ?5
                 WHERE id = ?1",
                params![id, transcript.text(), &transcript.language, transcript.language_probability, now()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(id));
            }
            write_segments(c, id, &transcript.segments)
        })
    }

    /// Stores speaker turns and the speaker-labelled segments.
    pub fn save_diarization(&self, id: i64, turns: &[SpeakerTurn], segments: &[Segment]) -> Result<()> {
        self.write(|c| {
            let n = c.execute("UPDATE jobs SET updated_at = ?2 WHERE id = ?1", params![id, now()])?;
            if n == 0 {
                return Err(StoreError::NotFound(id));
            }
            write_turns(c, id, turns)?;
            write_segments(c, id, segments)
        })
    }

    /// Stores an analysis; `None` fields leave the stored value alone.
    pub fn save_analysis(&self, id: i64, a: &Analysis) -> Result<()> {
        let patch = JobPatch {
            conversation_type: a.conversation_type.clone(),
            summary: a.summary.clone(),
            keypoints: a.keypoints.clone(),
            language: a.language.clone(),
            clean_transcript: a.clean_transcript.clone(),
            action_items: a.action_items.clone(),
            topics: a.topics.clone(),
        };
        self.patch_job(id, &patch).map(drop)
    }

    /// Ends a run. Results saved so far are kept.
    pub fn finish(&self, id: i64, outcome: &Outcome) -> Result<Job> {
        let (status, message) = match outcome {
            Outcome::Done => (Status::Done, None),
            Outcome::Error(m) => (Status::Error, Some(m.as_str())),
            Outcome::Cancelled => (Status::Cancelled, None),
        };
        self.write(|c| {
            let n = c.execute(
                "UPDATE jobs SET status = ?2, error_message = ?3, progress = NULL, finished_at = ?4, updated_at = ?4,
                    lease_owner = NULL, lease_expires_ms = NULL
                 WHERE id = ?1",
                params![id, status.as_str(), message, now()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(id));
            }
            self.job_in(c, id)
        })
        .map(|job| self.published(job))
    }

    /// The job's transcript segments in order.
    pub fn segments(&self, id: i64) -> Result<Vec<Segment>> {
        let rows = self.read(|c| {
            c.query(
                "SELECT start_s, end_s, speaker, text, words FROM segments WHERE job_id = ?1 ORDER BY idx",
                params![id],
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(Segment {
                    start_s: r.real(0)?,
                    end_s: r.real(1)?,
                    speaker: r.opt_text(2)?,
                    text: r.text(3)?,
                    words: r.opt_text(4)?.and_then(|w| serde_json::from_str(&w).ok()).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// The job's speaker turns in time order.
    pub fn speaker_turns(&self, id: i64) -> Result<Vec<SpeakerTurn>> {
        let rows = self.read(|c| {
            c.query(
                "SELECT start_s, end_s, speaker FROM speaker_turns WHERE job_id = ?1 ORDER BY idx",
                params![id],
            )
        })?;
        rows.iter()
            .map(|r| Ok(SpeakerTurn { start_s: r.real(0)?, end_s: r.real(1)?, speaker: r.text(2)? }))
            .collect()
    }

    /// Deletes one job (its segments and turns go with it); returns the deleted row. With
    /// `files_kept` its audio stays on disk, so a tombstone keeps the folder scan from taking
    /// that same file (path and content) again.
    pub fn delete_job(&self, id: i64, files_kept: bool) -> Result<Job> {
        let job = self.write(|c| {
            let job = self.job_in(c, id)?;
            c.execute("DELETE FROM jobs WHERE id = ?1", params![id])?;
            if files_kept {
                tombstone(c, &self.stored_path(&job.audio_path), &job.sha256)?;
            }
            Ok(job)
        })?;
        self.publish(Event::Deleted { id });
        Ok(job)
    }

    /// Deletes every job; returns the deleted rows. `files_kept` as in [`Store::delete_job`].
    pub fn delete_all(&self, files_kept: bool) -> Result<Vec<Job>> {
        let jobs = self.write(|c| {
            let jobs = c
                .query(&format!("SELECT {JOB_COLUMNS} FROM jobs"), &[])?
                .iter()
                .map(|r| self.job_from_row(r))
                .collect::<Result<Vec<_>>>()?;
            c.execute("DELETE FROM jobs", &[])?;
            if files_kept {
                for job in &jobs {
                    tombstone(c, &self.stored_path(&job.audio_path), &job.sha256)?;
                }
            }
            Ok(jobs)
        })?;
        for job in &jobs {
            self.publish(Event::Deleted { id: job.id });
        }
        Ok(jobs)
    }

    /// Records this process as a node (`role`, `workers`) with a first heartbeat.
    pub fn register_node(&self, role: &str, workers: u32) -> Result<()> {
        *self.node.registered.lock().unwrap_or_else(|p| p.into_inner()) = Some((role.to_owned(), workers));
        self.heartbeat()
    }

    /// Renews this node's heartbeat and the leases of the jobs it runs; forgets nodes silent
    /// for many leases.
    pub fn heartbeat(&self) -> Result<()> {
        let registered = self.node.registered.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let lease = self.lease_ms();
        self.write(|c| {
            if let Some((role, workers)) = &registered {
                c.execute(
                    "INSERT INTO nodes (id, hostname, pid, role, workers, started_at, heartbeat_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, {now_ms})
                     ON CONFLICT (id) DO UPDATE SET heartbeat_ms = {now_ms}",
                    params![&self.node.id, &self.node.hostname, self.node.pid, role, *workers, now()],
                )?;
            }
            c.execute(
                "UPDATE jobs SET lease_expires_ms = {now_ms} + ?2 WHERE lease_owner = ?1 AND status = 'processing'",
                params![&self.node.id, lease],
            )?;
            let stale = lease.saturating_mul(STALE_NODE_LEASES as i64).max(60_000);
            c.execute("DELETE FROM nodes WHERE heartbeat_ms < {now_ms} - ?1", params![stale])?;
            Ok(())
        })
    }

    /// Removes this node from the nodes table (a clean stop).
    pub fn leave(&self) -> Result<()> {
        // A heartbeat after this must not bring the row back.
        *self.node.registered.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.write(|c| c.execute("DELETE FROM nodes WHERE id = ?1", params![&self.node.id]).map(drop))
    }

    /// The nodes sharing this store, oldest first.
    pub fn nodes(&self) -> Result<Vec<Node>> {
        let rows = self.read(|c| {
            c.query(
                "SELECT id, hostname, pid, role, workers, started_at, {now_ms} - heartbeat_ms FROM nodes
                 ORDER BY started_at, id",
                &[],
            )
        })?;
        rows.iter()
            .map(|r| {
                let id = r.text(0)?;
                Ok(Node {
                    current: id == self.node.id,
                    id,
                    hostname: r.text(1)?,
                    pid: r.int(2)? as u32,
                    role: r.text(3)?,
                    workers: r.int(4)? as u32,
                    started_at: r.text(5)?,
                    heartbeat_age_s: (r.int(6)?.max(0) as f64) / 1000.0,
                })
            })
            .collect()
    }

    fn job_in(&self, c: &mut dyn Conn, id: i64) -> Result<Job> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
        c.query_opt(&sql, params![id])?
            .map(|r| self.job_from_row(&r))
            .transpose()?
            .ok_or(StoreError::NotFound(id))
    }

    fn job_from_row(&self, r: &Row) -> Result<Job> {
        job_from_row(r, self.resolved_path(r.text(1)?))
    }

    /// Stores audio paths relative to `dir` (`UPLOAD_FOLDER`) from now on, so nodes that mount
    /// a shared folder at different places resolve them alike. The first time, rows stored
    /// with paths under `dir` (as given or absolute) are rewritten; returns how many.
    pub fn set_upload_folder(&self, dir: &Path) -> Result<usize> {
        let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        *self.upload_folder.write().unwrap_or_else(|p| p.into_inner()) = Some((dir.to_owned(), absolute));
        self.write(|c| {
            if c.query_opt("SELECT 1 FROM settings WHERE key = 'audio_paths'", &[])?.is_some() {
                return Ok(0);
            }
            let mut rewritten = 0;
            for table in ["jobs", "tombstones"] {
                for row in c.query(&format!("SELECT audio_path FROM {table}"), &[])? {
                    let old = row.text(0)?;
                    let new = self.stored_path(&old);
                    if new != old {
                        rewritten += c.execute(
                            &format!(
                                "UPDATE {table} SET audio_path = ?2 WHERE audio_path = ?1
                                 AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.audio_path = ?2)"
                            ),
                            params![&old, new],
                        )? as usize;
                    }
                }
            }
            c.execute("INSERT INTO settings (key, value) VALUES ('audio_paths', 'relative')", &[])?;
            Ok(rewritten)
        })
    }

    /// `path` as stored: relative to the upload folder when under it.
    fn stored_path(&self, path: &str) -> String {
        let folder = self.upload_folder.read().unwrap_or_else(|p| p.into_inner());
        let Some((given, absolute)) = folder.as_ref() else { return path.to_owned() };
        let path = Path::new(path);
        match path.strip_prefix(given).or_else(|_| path.strip_prefix(absolute)) {
            Ok(rel) if !rel.as_os_str().is_empty() => rel.to_string_lossy().into_owned(),
            _ => path.to_string_lossy().into_owned(),
        }
    }

    /// A stored path as this node reaches it.
    fn resolved_path(&self, stored: String) -> String {
        let folder = self.upload_folder.read().unwrap_or_else(|p| p.into_inner());
        match folder.as_ref() {
            Some((given, _)) if Path::new(&stored).is_relative() => {
                given.join(stored).to_string_lossy().into_owned()
            }
            _ => stored,
        }
    }

    /// Sleeps until another node may have queued or cancelled a job (PostgreSQL `LISTEN`), or
    /// `timeout`; true if woken. With SQLite (one node) it just waits out `timeout`.
    pub fn wait_for_queued(&self, timeout: Duration) -> Result<bool> {
        match &self.backend {
            Backend::Postgres(db) => db.wait_for_queued(timeout),
            Backend::Sqlite(_) => {
                std::thread::sleep(timeout);
                Ok(false)
            }
        }
    }
}

/// For tests of the PostgreSQL backend (here and in `tests/`).
#[doc(hidden)]
pub mod test_support {
    pub use super::pg::{ScratchDatabase, test_url as postgres_url};
}

fn tombstone(c: &mut dyn Conn, stored_path: &str, sha256: &str) -> Result<()> {
    c.execute(
        "INSERT INTO tombstones (audio_path, sha256, deleted_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        params![stored_path, sha256, now()],
    )?;
    Ok(())
}

fn write_turns(c: &mut dyn Conn, id: i64, turns: &[SpeakerTurn]) -> Result<()> {
    c.execute("DELETE FROM speaker_turns WHERE job_id = ?1", params![id])?;
    for (i, t) in turns.iter().enumerate() {
        c.execute(
            "INSERT INTO speaker_turns (job_id, idx, start_s, end_s, speaker) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, i as i64, t.start_s, t.end_s, &t.speaker],
        )?;
    }
    Ok(())
}

fn write_segments(c: &mut dyn Conn, id: i64, segments: &[Segment]) -> Result<()> {
    c.execute("DELETE FROM segments WHERE job_id = ?1", params![id])?;
    for (i, s) in segments.iter().enumerate() {
        let words = (!s.words.is_empty()).then(|| serde_json::to_string(&s.words).unwrap_or_default());
        c.execute(
            "INSERT INTO segments (job_id, idx, start_s, end_s, speaker, text, words)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id, i as i64, s.start_s, s.end_s, &s.speaker, &s.text, words],
        )?;
    }
    Ok(())
}

fn job_from_row(r: &Row, audio_path: String) -> Result<Job> {
    let count = |i: usize| -> Result<Option<usize>> { Ok(r.opt_int(i)?.map(|n| n as usize)) };
    Ok(Job {
        id: r.int(0)?,
        audio_path,
        original_filename: r.opt_text(2)?,
        sha256: r.text(3)?,
        source: if r.text(4)? == "watch" { Source::Watch } else { Source::Upload },
        status: Status::parse(&r.text(5)?).unwrap_or(Status::Error),
        error_message: r.opt_text(6)?,
        conversation_type: r.opt_text(7)?,
        summary: r.opt_text(8)?,
        keypoints: r.opt_text(9)?.and_then(|k| serde_json::from_str(&k).ok()),
        language: r.opt_text(10)?,
        language_probability: r.opt_real(11)?.map(|p| p as f32),
        clean_transcript: r.opt_text(12)?,
        transcript: r.opt_text(13)?,
        duration_s: r.opt_real(14)?,
        progress: r.opt_real(15)?.map(|p| p as f32),
        speakers: SpeakerHints {
            num_speakers: count(16)?,
            min_speakers: count(17)?,
            max_speakers: count(18)?,
        },
        created_at: r.text(19)?,
        updated_at: r.text(20)?,
        started_at: r.opt_text(21)?,
        finished_at: r.opt_text(22)?,
        uuid: r.text(23)?,
        attempts: r.int(24)? as u32,
        action_items: r.opt_text(25)?.and_then(|a| serde_json::from_str(&a).ok()),
        topics: r.opt_text(26)?.and_then(|t| serde_json::from_str(&t).ok()),
        speaker_names: r.opt_text(27)?.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rusqlite::{Connection, params};

    use super::*;

    use super::integrations::tests::{
        a_job_end_waits_in_the_outbox_until_it_becomes_a_delivery,
        deliveries_are_scheduled_logged_and_deleted_with_their_job,
    };
    use super::speakers::tests::people_keep_several_prints_and_lose_them_with_the_person;

    /// A store on a fresh database of the backend under test, and how to open it again as
    /// another node.
    pub(super) struct TestStore {
        store: Store,
        url: String,
        _dir: Option<tempfile::TempDir>,
        _scratch: Option<test_support::ScratchDatabase>,
    }

    impl TestStore {
        fn sqlite() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let url = dir.path().join("jobs.db").to_string_lossy().into_owned();
            Self { store: Store::connect(&url).unwrap(), url, _dir: Some(dir), _scratch: None }
        }

        /// `None` when PostgreSQL tests are skipped on purpose.
        fn postgres() -> Option<Self> {
            let scratch = test_support::ScratchDatabase::create(&test_support::postgres_url()?).unwrap();
            let url = scratch.url.clone();
            Some(Self { store: Store::connect(&url).unwrap(), url, _dir: None, _scratch: Some(scratch) })
        }

        /// Another node on the same database (or this one reopened).
        pub(super) fn another_node(&self) -> Store {
            Store::connect(&self.url).unwrap()
        }
    }

    impl std::ops::Deref for TestStore {
        type Target = Store;
        fn deref(&self) -> &Store {
            &self.store
        }
    }

    /// Each listed test runs once per backend: `on_sqlite::name` and `on_postgres::name`.
    macro_rules! contract {
        ($($name:ident),* $(,)?) => {
            mod on_sqlite {
                $( #[test] fn $name() { super::$name(super::TestStore::sqlite()) } )*
            }
            mod on_postgres {
                $( #[test] fn $name() { if let Some(s) = super::TestStore::postgres() { super::$name(s) } } )*
            }
        };
    }

    contract!(
        queue_claims_in_order_and_rejects_double_runs,
        a_job_interrupted_twice_is_not_retried,
        cancel_dequeues_or_reports_running,
        results_survive_an_error_and_patches_merge,
        list_is_newest_first_with_filters,
        ids_are_never_reused_paths_are_unique_and_deletes_leave_tombstones,
        a_dead_nodes_job_is_requeued_when_its_lease_runs_out,
        a_restart_on_the_same_host_requeues_its_predecessors_jobs_at_once,
        concurrent_claims_never_hand_out_a_job_twice,
        nodes_are_listed_with_their_heartbeat,
        audio_paths_are_stored_relative_to_the_upload_folder,
        job_options_round_trip,
        action_items_and_topics_are_saved_and_patched,
        people_keep_several_prints_and_lose_them_with_the_person,
        deliveries_are_scheduled_logged_and_deleted_with_their_job,
        a_job_end_waits_in_the_outbox_until_it_becomes_a_delivery,
        a_due_delivery_is_handed_to_one_node_only,
        writes_are_published_after_they_are_stored,
    );

    fn job_options_round_trip(store: TestStore) {
        let id = insert(&store, "a", "a");
        assert_eq!(store.job_options(id).unwrap(), JobOptions::default(), "none set: the configuration's");
        let opts = JobOptions {
            model: Some("base".into()),
            decode: crate::model::DecodeOptions {
                language: Some("de".into()),
                prompt: Some("Grüße".into()),
                temperature: Some(0.4),
            },
            skip_analysis: true,
        };
        store.set_job_options(id, &opts).unwrap();
        assert_eq!(store.job_options(id).unwrap(), opts);
        assert!(matches!(store.job_options(99), Err(StoreError::NotFound(99))));
        assert!(matches!(store.set_job_options(99, &opts), Err(StoreError::NotFound(99))));
    }

    fn action_items_and_topics_are_saved_and_patched(store: TestStore) {
        let id = insert(&store, "j", "x");
        assert_eq!((store.job(id).unwrap().action_items, store.job(id).unwrap().topics), (None, None));
        let item = ActionItem { owner: Some("Speaker01".into()), text: "Review the payment code".into() };
        let analysis = Analysis {
            action_items: Some(vec![item.clone()]),
            topics: Some(vec!["release date".into()]),
            ..Analysis::default()
        };
        store.save_analysis(id, &analysis).unwrap();
        let job = store.job(id).unwrap();
        assert_eq!(job.action_items, Some(vec![item.clone()]));
        assert_eq!(job.topics, Some(vec!["release date".to_string()]));
        // A patch of one list leaves the other alone.
        let patch = JobPatch { topics: Some(vec!["budget".into()]), ..Default::default() };
        let job = store.patch_job(id, &patch).unwrap();
        assert_eq!((job.topics, job.action_items), (Some(vec!["budget".to_string()]), Some(vec![item])));
    }

    fn a_due_delivery_is_handed_to_one_node_only(store: TestStore) {
        let other = store.another_node();
        let id = insert(&store, "a", "a");
        let new = |event: &str| NewDelivery {
            job_id: id,
            event_id: event.into(),
            event_type: "job.done".into(),
            url: "http://a.example/hook".into(),
            payload: "{}".into(),
        };
        let [d1, d2] = ["msg_1", "msg_2"].map(|e| store.insert_delivery(&new(e)).unwrap().unwrap());
        let first = store.due_deliveries(10, 1).unwrap();
        assert_eq!(first.iter().map(|d| d.id).collect::<Vec<_>>(), [d1]);
        let second = other.due_deliveries(10, 10).unwrap();
        assert_eq!(second.iter().map(|d| d.id).collect::<Vec<_>>(), [d2], "d1 is held by the first node");
        assert!(store.due_deliveries(10, 10).unwrap().is_empty());
        // A node that died mid-attempt: its deliveries come due again when the hold ends.
        let later = other.due_deliveries(10 + integrations::DELIVERY_CLAIM_MS, 10).unwrap();
        assert_eq!(later.iter().map(|d| d.id).collect::<Vec<_>>(), [d1, d2]);
    }

    fn writes_are_published_after_they_are_stored(store: TestStore) {
        let mut live = store.events().subscribe();
        let id = insert(&store, "a", "a");
        store.enqueue(id, RunStage::All).unwrap();
        store.claim_next_job().unwrap().unwrap();
        store.set_progress(id, 50.0).unwrap();
        store.finish(id, &Outcome::Done).unwrap();
        store.delete_job(id, false).unwrap();
        let mut seen = Vec::new();
        while let Ok(event) = live.try_recv() {
            seen.push(match &*event {
                Event::Status { job } => job.status.as_str().to_owned(),
                Event::Progress { progress, .. } => format!("{progress}%"),
                Event::Deleted { .. } => "deleted".into(),
            });
        }
        assert_eq!(seen, ["uploaded", "queued", "processing", "50%", "done", "deleted"]);
    }

    fn new_job(name: &str, sha: &str) -> NewJob {
        NewJob {
            uuid: format!("uuid-{name}"),
            audio_path: format!("uploads/{name}.wav"),
            original_filename: Some("a.wav".into()),
            sha256: sha.into(),
            source: Source::Upload,
            speakers: SpeakerHints::default(),
        }
    }

    fn insert(store: &Store, name: &str, sha: &str) -> i64 {
        store.insert_job(&new_job(name, sha)).unwrap().unwrap().id
    }

    fn queue_claims_in_order_and_rejects_double_runs(store: TestStore) {
        // Leases that end at once stand for a crashed node.
        store.set_lease(Duration::ZERO);
        let [a, b, _c] = ["a", "b", "c"].map(|n| insert(&store, n, n));
        assert_eq!((a, b), (1, 2), "integer ids from 1");
        store.enqueue(b, RunStage::All).unwrap();
        store.enqueue(a, RunStage::Analyze).unwrap();
        assert!(matches!(store.enqueue(b, RunStage::All), Err(StoreError::Conflict(_))));
        assert_eq!(store.queue_depth().unwrap(), 2);
        let (job, stage) = store.claim_next_job().unwrap().unwrap();
        assert_eq!((job.id, job.status, stage, job.attempts), (b, Status::Processing, RunStage::All, 1));
        let (job, stage) = store.claim_next_job().unwrap().unwrap();
        assert_eq!((job.id, stage), (a, RunStage::Analyze));
        assert!(store.claim_next_job().unwrap().is_none());
        assert_eq!(store.requeue_expired().unwrap(), (2, 0));
        assert_eq!(store.job(b).unwrap().status, Status::Queued);
    }

    fn a_job_interrupted_twice_is_not_retried(store: TestStore) {
        store.set_lease(Duration::ZERO);
        let id = insert(&store, "a", "a");
        store.enqueue(id, RunStage::All).unwrap();
        store.claim_next_job().unwrap().unwrap();
        assert_eq!(store.requeue_expired().unwrap(), (1, 0), "first crash: run again");
        // A shutdown that ran out of grace is not a crash.
        store.claim_next_job().unwrap().unwrap();
        store.requeue(id).unwrap();
        assert_eq!(store.job(id).unwrap().attempts, 1);
        let (job, _) = store.claim_next_job().unwrap().unwrap();
        assert_eq!(job.attempts, 2);
        assert_eq!(store.requeue_expired().unwrap(), (0, 1), "second crash: give up");
        let job = store.job(id).unwrap();
        assert_eq!((job.status, job.error_message.as_deref()), (Status::Error, Some(INTERRUPTED_TWICE)));
        // A user's re-run starts counting afresh.
        assert_eq!(store.enqueue(id, RunStage::All).unwrap().attempts, 0);
    }

    fn cancel_dequeues_or_reports_running(store: TestStore) {
        let [a, b] = ["a", "b"].map(|n| insert(&store, n, n));
        assert!(matches!(store.cancel(a), Err(StoreError::Conflict(_))), "uploaded: nothing to cancel");
        store.enqueue(a, RunStage::All).unwrap();
        store.enqueue(b, RunStage::All).unwrap();
        let (running, _) = store.claim_next_job().unwrap().unwrap();
        assert!(matches!(store.cancel(running.id), Ok(Cancelled::Running(_))));
        match store.cancel(b).unwrap() {
            Cancelled::Dequeued(job) => assert_eq!(job.status, Status::Cancelled),
            other => panic!("{other:?}"),
        }
        assert!(store.claim_next_job().unwrap().is_none(), "a cancelled job is not claimed");
        assert_eq!(store.finish(a, &Outcome::Cancelled).unwrap().status, Status::Cancelled);
        assert_eq!(store.enqueue(b, RunStage::All).unwrap().status, Status::Queued, "can run again");
    }

    fn results_survive_an_error_and_patches_merge(store: TestStore) {
        let j = insert(&store, "j", "x");
        let t = Transcript {
            language: Some("en".into()),
            language_probability: Some(0.5),
            segments: vec![Segment {
                start_s: 0.0,
                end_s: 1.5,
                text: " hello there".into(),
                speaker: None,
                words: vec![],
            }],
        };
        store.save_transcript(j, &t).unwrap();
        store.set_duration(j, 1.5).unwrap();
        store.set_progress(j, 42.5).unwrap();
        let job = store.job(j).unwrap();
        assert_eq!(
            (job.duration_s, job.progress, job.language_probability),
            (Some(1.5), Some(42.5), Some(0.5))
        );
        let job = store.finish(j, &Outcome::Error("analyze: backend down".into())).unwrap();
        assert_eq!(job.status, Status::Error);
        assert_eq!(job.transcript.as_deref(), Some("hello there"));
        assert_eq!(store.segments(j).unwrap(), t.segments);
        let turns = [SpeakerTurn { start_s: 0.0, end_s: 1.0, speaker: "Speaker00".into() }];
        let labelled = vec![Segment { speaker: Some("Speaker00".into()), ..t.segments[0].clone() }];
        store.save_diarization(j, &turns, &labelled).unwrap();
        assert_eq!((store.speaker_turns(j).unwrap(), store.segments(j).unwrap()), (turns.to_vec(), labelled));
        let patch = JobPatch { keypoints: Some(vec!["k1".into()]), ..Default::default() };
        let job = store.patch_job(j, &patch).unwrap();
        assert_eq!(job.keypoints, Some(vec!["k1".to_string()]));
        assert_eq!(job.language.as_deref(), Some("en"));
        assert!(matches!(store.patch_job(99, &patch), Err(StoreError::NotFound(99))));

        // A job deleted while it runs: its results are refused cleanly, not a foreign-key error.
        store.delete_job(j, false).unwrap();
        assert!(matches!(store.save_transcript(j, &t), Err(StoreError::NotFound(_))));
        assert!(matches!(store.save_diarization(j, &turns, &t.segments), Err(StoreError::NotFound(_))));
        assert!(matches!(store.finish(j, &Outcome::Done), Err(StoreError::NotFound(_))));
    }

    fn list_is_newest_first_with_filters(store: TestStore) {
        let ids: Vec<i64> = (0..5).map(|i| insert(&store, &format!("j{i}"), "s")).collect();
        store.enqueue(ids[1], RunStage::All).unwrap();
        let (jobs, total) = store.list_jobs(&JobQuery { limit: Some(2), ..Default::default() }).unwrap();
        assert_eq!(total, 5);
        assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[4], ids[3]]);
        let page = JobQuery { limit: Some(2), offset: 3, ..Default::default() };
        assert_eq!(
            store.list_jobs(&page).unwrap().0.iter().map(|j| j.id).collect::<Vec<_>>(),
            [ids[1], ids[0]]
        );
        let q = JobQuery { status: Some(Status::Queued), ..Default::default() };
        let (jobs, total) = store.list_jobs(&q).unwrap();
        assert_eq!((jobs.len(), total, jobs[0].id), (1, 1, ids[1]));
        let counts = store.counts_by_status().unwrap();
        assert_eq!((counts["uploaded"], counts["queued"], counts["done"]), (4, 1, 0));
        assert_eq!(store.job_by_sha256("s").unwrap().map(|j| j.sha256), Some("s".into()));
        assert_eq!(store.job_by_audio_path("uploads/j2.wav").unwrap().map(|j| j.id), Some(ids[2]));
        assert!(store.job_by_audio_path("uploads/none.wav").unwrap().is_none());
        assert_eq!(store.delete_all(false).unwrap().len(), 5);
        assert_eq!(store.list_jobs(&JobQuery::default()).unwrap().1, 0);
    }

    fn ids_are_never_reused_paths_are_unique_and_deletes_leave_tombstones(store: TestStore) {
        let a = insert(&store, "a", "sha-a");
        assert!(store.insert_job(&NewJob { uuid: "other".into(), ..new_job("a", "x") }).unwrap().is_none());
        let b = insert(&store, "b", "sha-b");
        store.delete_job(b, true).unwrap();
        assert!(insert(&store, "c", "sha-c") > b, "the deleted id is not handed out again");
        assert!(store.is_tombstoned("uploads/b.wav", "sha-b").unwrap());
        store.delete_job(a, false).unwrap();
        assert!(!store.is_tombstoned("uploads/a.wav", "sha-a").unwrap(), "files deleted: no tombstone");
        assert!(!store.is_tombstoned("uploads/b.wav", "changed").unwrap());
    }

    fn a_dead_nodes_job_is_requeued_when_its_lease_runs_out(store: TestStore) {
        let other = store.another_node();
        let [a, b] = ["a", "b"].map(|n| insert(&store, n, n));
        store.enqueue(a, RunStage::All).unwrap();
        store.enqueue(b, RunStage::All).unwrap();
        // `store` claims `a` with a long lease and keeps renewing it; `b`'s lease ends at once.
        store.claim_next_job().unwrap().unwrap();
        store.set_lease(Duration::ZERO);
        store.claim_next_job().unwrap().unwrap();
        assert_eq!(other.requeue_expired().unwrap(), (1, 0), "only the expired lease");
        let (job, _) = other.claim_next_job().unwrap().unwrap();
        assert_eq!((job.id, job.attempts), (b, 2), "the lost run counts as an attempt");
        assert_eq!(store.job(a).unwrap().status, Status::Processing);
        // A heartbeat renews the lease of every job the node runs: a zero lease expires it.
        store.heartbeat().unwrap();
        assert_eq!(other.requeue_expired().unwrap(), (1, 0));
        store.set_lease(Duration::from_secs(3600));
        other.claim_next_job().unwrap().unwrap();
        assert_eq!(store.requeue_expired().unwrap(), (0, 0), "other's leases are fresh");
    }

    fn a_restart_on_the_same_host_requeues_its_predecessors_jobs_at_once(store: TestStore) {
        let id = insert(&store, "a", "a");
        store.register_node("serve", 1).unwrap();
        store.enqueue(id, RunStage::All).unwrap();
        store.claim_next_job().unwrap().unwrap();
        // Same host, and the predecessor's process is gone (here: it had our pid, so it is not
        // running any more); its lease has an hour to go.
        let restarted = store.another_node();
        assert_eq!(restarted.requeue_interrupted().unwrap(), (1, 0));
        assert_eq!(restarted.nodes().unwrap(), vec![], "the dead node is forgotten");
        assert_eq!(store.job(id).unwrap().status, Status::Queued);
    }

    fn concurrent_claims_never_hand_out_a_job_twice(store: TestStore) {
        let ids: Vec<i64> = (0..60).map(|i| insert(&store, &format!("j{i}"), "s")).collect();
        for &id in &ids {
            store.enqueue(id, RunStage::All).unwrap();
        }
        let nodes = [Arc::new(store.another_node()), Arc::new(store.another_node())];
        let claimers: Vec<_> = (0..4)
            .map(|i| {
                let node = Arc::clone(&nodes[i % 2]);
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some((job, _)) = node.claim_next_job().unwrap() {
                        got.push(job.id);
                    }
                    got
                })
            })
            .collect();
        let mut claimed: Vec<i64> = claimers.into_iter().flat_map(|t| t.join().unwrap()).collect();
        claimed.sort();
        assert_eq!(claimed, ids, "every job claimed exactly once");
    }

    fn nodes_are_listed_with_their_heartbeat(store: TestStore) {
        let other = store.another_node();
        store.register_node("serve", 2).unwrap();
        other.register_node("worker", 4).unwrap();
        let nodes = store.nodes().unwrap();
        let mut summary: Vec<_> = nodes.iter().map(|n| (n.role.as_str(), n.workers, n.current)).collect();
        summary.sort();
        assert_eq!(summary, [("serve", 2, true), ("worker", 4, false)]);
        assert!(nodes.iter().all(|n| n.pid == std::process::id() && n.heartbeat_age_s < 3600.0), "{nodes:?}");
        other.leave().unwrap();
        assert_eq!(store.nodes().unwrap().len(), 1);
    }

    fn audio_paths_are_stored_relative_to_the_upload_folder(store: TestStore) {
        // Stored before the upload folder was known: an absolute path, and one outside it.
        let legacy = NewJob { audio_path: "/mnt/a/uploads/old.wav".into(), ..new_job("old", "o") };
        let old = store.insert_job(&legacy).unwrap().unwrap().id;
        let outside = NewJob { audio_path: "/elsewhere/x.wav".into(), ..new_job("x", "x") };
        let outside = store.insert_job(&outside).unwrap().unwrap().id;
        assert_eq!(store.set_upload_folder(Path::new("/mnt/a/uploads")).unwrap(), 1);
        let new = NewJob { audio_path: "/mnt/a/uploads/sub/new.wav".into(), ..new_job("new", "n") };
        let new = store.insert_job(&new).unwrap().unwrap().id;
        store.delete_job(old, true).unwrap();
        // A node that mounts the shared folder elsewhere finds the same files.
        let other = store.another_node();
        assert_eq!(other.set_upload_folder(Path::new("/srv/shared")).unwrap(), 0, "rewritten once");
        assert_eq!(other.job(new).unwrap().audio_path, "/srv/shared/sub/new.wav");
        assert_eq!(other.job(outside).unwrap().audio_path, "/elsewhere/x.wav");
        assert_eq!(other.job_by_audio_path("/srv/shared/sub/new.wav").unwrap().map(|j| j.id), Some(new));
        assert!(other.is_tombstoned("/srv/shared/old.wav", "o").unwrap());
        assert_eq!(store.job(new).unwrap().audio_path, "/mnt/a/uploads/sub/new.wav");
        // The unique path holds across mounts: the second node's registration is refused.
        let again = NewJob { audio_path: "/srv/shared/sub/new.wav".into(), ..new_job("again", "n") };
        assert!(other.insert_job(&again).unwrap().is_none());
    }

    #[test]
    fn on_postgres_a_queued_job_wakes_a_listening_node() {
        let Some(store) = TestStore::postgres() else { return };
        let listener = Arc::new(store.another_node());
        assert!(!listener.wait_for_queued(Duration::from_millis(50)).unwrap(), "nothing queued yet");
        let id = insert(&store, "a", "a");
        let waiting = Arc::clone(&listener);
        let woken = std::thread::spawn(move || waiting.wait_for_queued(Duration::from_secs(30)).unwrap());
        // The listener is connected (first wait above): a NOTIFY sent now reaches it.
        store.enqueue(id, RunStage::All).unwrap();
        assert!(woken.join().unwrap(), "the enqueue did not wake the other node");
    }

    #[test]
    fn on_postgres_events_of_another_node_reach_this_nodes_streams() {
        let Some(store) = TestStore::postgres() else { return };
        let api = Arc::new(store.another_node());
        api.relay_remote_events().unwrap();
        let mut live = api.events().subscribe();
        let mut next = || {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                match live.try_recv() {
                    Ok(e) => return e,
                    Err(_) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("no event relayed within 30 s: {e:?}"),
                }
            }
        };
        let id = insert(&store, "a", "a");
        match &*next() {
            Event::Status { job } => assert_eq!((job.id, job.status), (id, Status::Uploaded)),
            other => panic!("{other:?}"),
        }
        store.set_progress(id, 25.0).unwrap();
        assert_eq!(*next(), Event::Progress { id, progress: 25.0 });
        store.delete_job(id, false).unwrap();
        assert_eq!(*next(), Event::Deleted { id });
        // Its own events are published once, not relayed back to it.
        let own = insert(&api, "b", "b");
        assert_eq!(next().job_id(), own);
        let other = insert(&store, "c", "c");
        assert_eq!(next().job_id(), other, "nothing in between");
    }

    #[test]
    fn without_postgres_the_sqlite_wait_is_only_a_timer() {
        let store = TestStore::sqlite();
        assert!(!store.wait_for_queued(Duration::from_millis(10)).unwrap());
    }

    #[test]
    fn a_uuid_database_is_migrated_keeping_every_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(migrations::MIGRATIONS[0].sqlite).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            let job = |id: &str, path: &str, created: &str| {
                conn.execute(
                    "INSERT INTO jobs (id, audio_path, sha256, source, status, summary, created_at, updated_at)
                     VALUES (?1, ?2, 'sha', 'upload', 'done', 'sum', ?3, ?3)",
                    params![id, path, created],
                )
                .unwrap();
            };
            // Inserted out of creation order; the last is a duplicate path from the old race.
            job("cccc", "uploads/c.wav", "2025-01-03T00:00:00.000Z");
            job("aaaa", "uploads/a.wav", "2025-01-01T00:00:00.000Z");
            job("bbbb", "uploads/b.wav", "2025-01-02T00:00:00.000Z");
            job("dddd", "uploads/a.wav", "2025-01-04T00:00:00.000Z");
            conn.execute(
                "INSERT INTO segments (job_id, idx, start_s, end_s, speaker, text) VALUES ('bbbb', 0, 0, 1, 'Speaker00', 'hi')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO speaker_turns (job_id, idx, start_s, end_s, speaker) VALUES ('bbbb', 0, 0, 1, 'Speaker00')",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let (jobs, total) = store.list_jobs(&JobQuery::default()).unwrap();
        assert_eq!(total, 4);
        let by_id: Vec<(i64, &str, &str)> =
            jobs.iter().rev().map(|j| (j.id, j.uuid.as_str(), j.audio_path.as_str())).collect();
        assert_eq!(
            by_id,
            [
                (1, "aaaa", "uploads/a.wav"),
                (2, "bbbb", "uploads/b.wav"),
                (3, "cccc", "uploads/c.wav"),
                (4, "dddd", "uploads/a.wav#dddd")
            ]
        );
        assert!(jobs.iter().all(|j| j.summary.as_deref() == Some("sum") && j.status == Status::Done));
        assert_eq!(store.segments(2).unwrap()[0].text, "hi");
        assert_eq!(store.speaker_turns(2).unwrap().len(), 1);
        // Foreign keys hold after the rebuild: deleting cascades.
        store.delete_job(2, false).unwrap();
        assert!(store.segments(2).unwrap().is_empty());
        drop(store);
        let again = Store::open(&path).unwrap();
        assert_eq!(again.list_jobs(&JobQuery::default()).unwrap().1, 3, "migrations run once");
        assert_eq!(again.insert_job(&new_job("e", "e")).unwrap().unwrap().id, 5);
    }

    #[test]
    fn a_single_node_database_gains_the_node_tables_keeping_its_speakers_and_options() {
        // A file of the single-node line: migrations v1–v6, no leases or nodes yet.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v6.db");
        {
            let conn = Connection::open(&path).unwrap();
            for m in &migrations::MIGRATIONS[..6] {
                conn.execute_batch(m.sqlite).unwrap();
            }
            conn.pragma_update(None, "user_version", 6).unwrap();
            conn.execute(
                "INSERT INTO jobs (uuid, audio_path, sha256, source, status, created_at, updated_at, options, speakers)
                 VALUES ('u', 'uploads/u.wav', 'sha', 'upload', 'done', 't', 't', '{\"skip_analysis\":true}',
                    '[{\"label\":\"Speaker00\",\"name\":\"Ann\"}]')",
                [],
            )
            .unwrap();
            conn.execute("INSERT INTO people (name, created_at, updated_at) VALUES ('Ann', 't', 't')", [])
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert!(store.job_options(1).unwrap().skip_analysis);
        assert_eq!(store.job(1).unwrap().speaker_names[0].name.as_deref(), Some("Ann"));
        assert!(store.person_by_name("ann").unwrap().is_some());
        store.register_node("serve", 1).unwrap();
        assert_eq!(store.nodes().unwrap().len(), 1);
    }

    #[test]
    fn reads_do_not_wait_for_the_writer() {
        let store = Arc::new(TestStore::sqlite());
        let id = insert(&store, "a", "a");
        let Backend::Sqlite(db) = &store.backend else { unreachable!() };
        let writer = db.hold_writer();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = Arc::clone(&store);
        std::thread::spawn(move || {
            let _ =
                tx.send((reader.job(id).map(|j| j.id).ok(), reader.list_jobs(&JobQuery::default()).is_ok()));
        });
        let got = rx.recv_timeout(Duration::from_secs(10));
        drop(writer);
        assert_eq!(got.expect("a read waited behind the held writer"), (Some(id), true));
    }
}

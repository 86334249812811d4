//! SQLite storage: jobs, transcript segments, speaker turns, tombstones of deleted jobs, and
//! known speakers (in [`speakers`]). The queue is a query here.
//!
//! One writer connection behind a mutex plus a small pool of read connections (WAL), so API
//! reads never wait behind a worker's writes.

mod speakers;

pub use speakers::NewPrint;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use crate::events::{Bus, Event};
use crate::model::{
    ActionItem, Analysis, Job, JobOptions, Segment, Source, SpeakerHints, SpeakerTurn, Status, Transcript,
};

mod integrations;
pub use integrations::{Attempt, Delivery, DeliveryState, NewDelivery};

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("job {0} not found")]
    NotFound(i64),
    #[error("speaker {0} not found")]
    PersonNotFound(i64),
    #[error("{0}")]
    Conflict(String),
    #[error("database at {path}: {message}")]
    Open { path: String, message: String },
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

/// User edits to a finished job (`PUT /api/jobs/<id>`); `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct JobPatch {
    pub conversation_type: Option<String>,
    pub summary: Option<String>,
    pub keypoints: Option<Vec<String>>,
    pub action_items: Option<Vec<ActionItem>>,
    pub topics: Option<Vec<String>>,
    pub language: Option<String>,
    pub clean_transcript: Option<String>,
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

/// Message of a job left `processing` by two crashes in a row.
pub const INTERRUPTED_TWICE: &str = "interrupted twice while processing; not retried";

/// Read connections besides the writer (file databases only).
const READERS: usize = 4;

/// The SQLite-backed store.
pub struct Store {
    writer: Mutex<Connection>,
    /// Empty for an in-memory database, whose reads go through the writer.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Every status change and progress step is published here after it is written.
    events: Bus,
}

const MIGRATIONS: &[&str] = &[
    // v1: UUID ids.
    "CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        audio_path TEXT NOT NULL,
        original_filename TEXT,
        sha256 TEXT NOT NULL,
        source TEXT NOT NULL,
        status TEXT NOT NULL,
        error_message TEXT,
        conversation_type TEXT,
        summary TEXT,
        keypoints TEXT,
        language TEXT,
        language_probability REAL,
        clean_transcript TEXT,
        transcript TEXT,
        duration_s REAL,
        progress REAL,
        num_speakers INTEGER,
        min_speakers INTEGER,
        max_speakers INTEGER,
        run_stage TEXT NOT NULL DEFAULT 'all',
        queued_seq INTEGER,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX jobs_created ON jobs(created_at DESC);
    CREATE INDEX jobs_status ON jobs(status, queued_seq);
    CREATE INDEX jobs_sha ON jobs(sha256);
    CREATE INDEX jobs_audio ON jobs(audio_path);
    CREATE TABLE segments (
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL NOT NULL,
        speaker TEXT,
        text TEXT NOT NULL,
        words TEXT,
        PRIMARY KEY (job_id, idx)
    );
    CREATE TABLE speaker_turns (
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL NOT NULL,
        speaker TEXT NOT NULL,
        PRIMARY KEY (job_id, idx)
    );",
    // v2: integer ids in creation order (never reused), the UUID kept as `uuid`; one job per
    // audio path (a later duplicate, which only the old watcher race could make, keeps its row
    // with `#<uuid>` appended to the path); run attempts; tombstones of deleted jobs.
    "CREATE TABLE jobs_v2 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid TEXT NOT NULL UNIQUE,
        audio_path TEXT NOT NULL UNIQUE,
        original_filename TEXT,
        sha256 TEXT NOT NULL,
        source TEXT NOT NULL,
        status TEXT NOT NULL,
        error_message TEXT,
        conversation_type TEXT,
        summary TEXT,
        keypoints TEXT,
        language TEXT,
        language_probability REAL,
        clean_transcript TEXT,
        transcript TEXT,
        duration_s REAL,
        progress REAL,
        num_speakers INTEGER,
        min_speakers INTEGER,
        max_speakers INTEGER,
        run_stage TEXT NOT NULL DEFAULT 'all',
        queued_seq INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    INSERT INTO jobs_v2 (uuid, audio_path, original_filename, sha256, source, status, error_message,
        conversation_type, summary, keypoints, language, language_probability, clean_transcript,
        transcript, duration_s, progress, num_speakers, min_speakers, max_speakers, run_stage,
        queued_seq, created_at, updated_at, started_at, finished_at)
    SELECT j.id,
        CASE WHEN j.rowid = (SELECT MIN(o.rowid) FROM jobs o WHERE o.audio_path = j.audio_path)
            THEN j.audio_path ELSE j.audio_path || '#' || j.id END,
        j.original_filename, j.sha256, j.source, j.status, j.error_message, j.conversation_type,
        j.summary, j.keypoints, j.language, j.language_probability, j.clean_transcript, j.transcript,
        j.duration_s, j.progress, j.num_speakers, j.min_speakers, j.max_speakers, j.run_stage,
        j.queued_seq, j.created_at, j.updated_at, j.started_at, j.finished_at
    FROM jobs j ORDER BY j.created_at, j.rowid;
    CREATE TABLE segments_v2 (
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL NOT NULL,
        speaker TEXT,
        text TEXT NOT NULL,
        words TEXT,
        PRIMARY KEY (job_id, idx)
    );
    INSERT INTO segments_v2 SELECT n.id, s.idx, s.start_s, s.end_s, s.speaker, s.text, s.words
        FROM segments s JOIN jobs_v2 n ON n.uuid = s.job_id;
    CREATE TABLE speaker_turns_v2 (
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL NOT NULL,
        speaker TEXT NOT NULL,
        PRIMARY KEY (job_id, idx)
    );
    INSERT INTO speaker_turns_v2 SELECT n.id, t.idx, t.start_s, t.end_s, t.speaker
        FROM speaker_turns t JOIN jobs_v2 n ON n.uuid = t.job_id;
    DROP TABLE segments;
    DROP TABLE speaker_turns;
    DROP TABLE jobs;
    ALTER TABLE jobs_v2 RENAME TO jobs;
    ALTER TABLE segments_v2 RENAME TO segments;
    ALTER TABLE speaker_turns_v2 RENAME TO speaker_turns;
    CREATE INDEX jobs_created ON jobs(created_at DESC);
    CREATE INDEX jobs_status ON jobs(status, queued_seq);
    CREATE INDEX jobs_sha ON jobs(sha256);
    CREATE TABLE tombstones (
        audio_path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        deleted_at TEXT NOT NULL,
        PRIMARY KEY (audio_path, sha256)
    );",
    // Analysis lists added by issue 13 (JSON arrays).
    "ALTER TABLE jobs ADD COLUMN action_items TEXT;
    ALTER TABLE jobs ADD COLUMN topics TEXT;",
    speakers::MIGRATION,
    // Per-job processing options (JSON of `JobOptions`; NULL = the configuration's).
    "ALTER TABLE jobs ADD COLUMN options TEXT;",
    integrations::MIGRATION,
];

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

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves SQLite consistent (transactions roll back).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |message: String| StoreError::Open { path: path.display().to_string(), message };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let writer = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        let mut store = Self::init(writer)?;
        for _ in 0..READERS {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let reader = Connection::open_with_flags(path, flags).map_err(|e| fail(e.to_string()))?;
            reader.busy_timeout(std::time::Duration::from_secs(10))?;
            store.readers.push(Mutex::new(reader));
        }
        Ok(store)
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Off while tables are rebuilt (the pragma is a no-op inside a transaction).
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Self {
            writer: Mutex::new(conn),
            readers: Vec::new(),
            next_reader: AtomicUsize::new(0),
            events: Bus::default(),
        })
    }

    /// The bus this store publishes job events on.
    pub fn events(&self) -> &Bus {
        &self.events
    }

    /// Publishes a job's stored state as a status event; returns it.
    fn published(&self, job: Job) -> Job {
        self.events.publish(Event::Status { job: Box::new(job.clone()) });
        job
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        lock(&self.writer)
    }

    /// A read connection: a free one from the pool, else the next in turn.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        if self.readers.is_empty() {
            return self.writer();
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        for i in 0..n {
            if let Ok(guard) = self.readers[(start + i) % n].try_lock() {
                return guard;
            }
        }
        lock(&self.readers[start % n])
    }

    /// Inserts a job in status `uploaded`; `None` if a job for this audio path already exists.
    pub fn insert_job(&self, new: &NewJob) -> Result<Option<Job>> {
        let ts = now();
        let id: Option<i64> = self
            .writer()
            .query_row(
                "INSERT INTO jobs (uuid, audio_path, original_filename, sha256, source, status, num_speakers,
                    min_speakers, max_speakers, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'uploaded', ?6, ?7, ?8, ?9, ?9)
                 ON CONFLICT (audio_path) DO NOTHING RETURNING id",
                params![
                    new.uuid,
                    new.audio_path,
                    new.original_filename,
                    new.sha256,
                    new.source.as_str(),
                    new.speakers.num_speakers.map(|n| n as i64),
                    new.speakers.min_speakers.map(|n| n as i64),
                    new.speakers.max_speakers.map(|n| n as i64),
                    ts
                ],
                |r| r.get(0),
            )
            .optional()?;
        Ok(id.map(|id| self.job(id)).transpose()?.map(|job| self.published(job)))
    }

    /// The job with `id`, or `NotFound`.
    pub fn job(&self, id: i64) -> Result<Job> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
        self.reader().query_row(&sql, [id], job_from_row).optional()?.ok_or(StoreError::NotFound(id))
    }

    /// A job whose audio has this SHA-256, if any.
    pub fn job_by_sha256(&self, sha: &str) -> Result<Option<Job>> {
        self.find_one("sha256 = ?1", sha)
    }

    /// The job stored for this audio path, if any.
    pub fn job_by_audio_path(&self, path: &str) -> Result<Option<Job>> {
        self.find_one("audio_path = ?1", path)
    }

    fn find_one(&self, cond: &str, arg: &str) -> Result<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {cond} LIMIT 1");
        Ok(self.reader().query_row(&sql, [arg], job_from_row).optional()?)
    }

    /// Whether a job for this path and content was deleted with its audio left in place.
    pub fn is_tombstoned(&self, audio_path: &str, sha256: &str) -> Result<bool> {
        Ok(self
            .reader()
            .query_row(
                "SELECT 1 FROM tombstones WHERE audio_path = ?1 AND sha256 = ?2",
                [audio_path, sha256],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Jobs newest first, with the total count matching the filter.
    pub fn list_jobs(&self, q: &JobQuery) -> Result<(Vec<Job>, u64)> {
        let conn = self.reader();
        let (cond, status) = match q.status {
            Some(s) => ("WHERE status = ?1", s.as_str()),
            None => ("WHERE ?1 = ?1", ""),
        };
        let total: u64 =
            conn.query_row(&format!("SELECT COUNT(*) FROM jobs {cond}"), [status], |r| r.get(0))?;
        let limit = q.limit.map_or(-1, i64::from);
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs {cond} ORDER BY created_at DESC, id DESC LIMIT ?2 OFFSET ?3"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let jobs = stmt
            .query_map(params![status, limit, q.offset], job_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((jobs, total))
    }

    /// Applies user edits and returns the updated job.
    pub fn patch_job(&self, id: i64, patch: &JobPatch) -> Result<Job> {
        let keypoints = patch.keypoints.as_ref().map(|k| serde_json::to_string(k).unwrap_or_default());
        let action_items = patch.action_items.as_ref().map(|a| serde_json::to_string(a).unwrap_or_default());
        let topics = patch.topics.as_ref().map(|t| serde_json::to_string(t).unwrap_or_default());
        let n = self.writer().execute(
            "UPDATE jobs SET conversation_type = COALESCE(?2, conversation_type),
                summary = COALESCE(?3, summary), keypoints = COALESCE(?4, keypoints),
                language = COALESCE(?5, language), clean_transcript = COALESCE(?6, clean_transcript),
                updated_at = ?7, action_items = COALESCE(?8, action_items), topics = COALESCE(?9, topics)
             WHERE id = ?1",
            params![
                id,
                patch.conversation_type,
                patch.summary,
                keypoints,
                patch.language,
                patch.clean_transcript,
                now(),
                action_items,
                topics
            ],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(id));
        }
        self.job(id)
    }

    /// Stores a job's processing options (read by the worker when it runs the job).
    pub fn set_job_options(&self, id: i64, options: &JobOptions) -> Result<()> {
        let json = serde_json::to_string(options).unwrap_or_default();
        let n = self.writer().execute("UPDATE jobs SET options = ?2 WHERE id = ?1", params![id, json])?;
        if n == 0 { Err(StoreError::NotFound(id)) } else { Ok(()) }
    }

    /// A job's processing options (the default when none were set).
    pub fn job_options(&self, id: i64) -> Result<JobOptions> {
        let json: Option<String> = self
            .reader()
            .query_row("SELECT options FROM jobs WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .ok_or(StoreError::NotFound(id))?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()).unwrap_or_default())
    }

    /// Queues a job for `stage` with a fresh attempt count; a job already queued or processing
    /// is a conflict.
    pub fn enqueue(&self, id: i64, stage: RunStage) -> Result<Job> {
        let n = self.writer().execute(
            "UPDATE jobs SET status = 'queued', run_stage = ?2, error_message = NULL, progress = NULL,
                attempts = 0, queued_seq = (SELECT COALESCE(MAX(queued_seq), 0) + 1 FROM jobs),
                updated_at = ?3
             WHERE id = ?1 AND status NOT IN ('queued', 'processing')",
            params![id, stage.as_str(), now()],
        )?;
        if n == 0 {
            let job = self.job(id)?;
            return Err(StoreError::Conflict(format!("job {id} is already {}", job.status.as_str())));
        }
        self.job(id).map(|job| self.published(job))
    }

    /// Takes the oldest queued job, marks it `processing` and counts the attempt.
    pub fn claim_next_job(&self) -> Result<Option<(Job, RunStage)>> {
        let claimed: Option<(i64, String)> = self
            .writer()
            .query_row(
                "UPDATE jobs SET status = 'processing', started_at = ?1, finished_at = NULL, progress = 0,
                    attempts = attempts + 1, updated_at = ?1
                 WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_seq LIMIT 1)
                 RETURNING id, run_stage",
                [now()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((id, stage)) = claimed else { return Ok(None) };
        let stage = if stage == "analyze" { RunStage::Analyze } else { RunStage::All };
        Ok(Some((self.published(self.job(id)?), stage)))
    }

    /// After a crash: jobs left `processing` go back to the queue, except those already started
    /// twice, which end in `error` ([`INTERRUPTED_TWICE`]) so a job that kills the process cannot
    /// loop forever. Returns (requeued, failed).
    pub fn requeue_interrupted(&self) -> Result<(usize, usize)> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let ts = now();
        let failed: Vec<i64> = tx
            .prepare(
                "UPDATE jobs SET status = 'error', error_message = ?2, progress = NULL, finished_at = ?1,
                    updated_at = ?1
                 WHERE status = 'processing' AND attempts >= 2 RETURNING id",
            )?
            .query_map(params![ts, INTERRUPTED_TWICE], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let requeued = tx.execute(
            "UPDATE jobs SET status = 'queued', progress = NULL, updated_at = ?1 WHERE status = 'processing'",
            [&ts],
        )?;
        tx.commit()?;
        drop(conn);
        for &id in &failed {
            self.published(self.job(id)?);
        }
        Ok((requeued, failed.len()))
    }

    /// Puts one processing job back in the queue (shutdown grace period ran out). A deliberate
    /// stop is not a crash, so the attempt is not counted.
    pub fn requeue(&self, id: i64) -> Result<()> {
        self.writer().execute(
            "UPDATE jobs SET status = 'queued', progress = NULL, attempts = MAX(attempts - 1, 0),
                updated_at = ?2
             WHERE id = ?1 AND status = 'processing'",
            params![id, now()],
        )?;
        if let Ok(job) = self.job(id) {
            self.published(job);
        }
        Ok(())
    }

    /// Cancels a job: a queued one becomes `cancelled` here; a running one is reported so the
    /// caller can stop it; any other status is a conflict.
    pub fn cancel(&self, id: i64) -> Result<Cancelled> {
        let n = self.writer().execute(
            "UPDATE jobs SET status = 'cancelled', error_message = NULL, progress = NULL, finished_at = ?2,
                updated_at = ?2
             WHERE id = ?1 AND status = 'queued'",
            params![id, now()],
        )?;
        let job = self.job(id)?;
        match job.status {
            _ if n == 1 => Ok(Cancelled::Dequeued(self.published(job))),
            Status::Processing => Ok(Cancelled::Running(job)),
            s => Err(StoreError::Conflict(format!("job {id} is {}; nothing to cancel", s.as_str()))),
        }
    }

    /// Number of queued jobs.
    pub fn queue_depth(&self) -> Result<u64> {
        Ok(self.reader().query_row("SELECT COUNT(*) FROM jobs WHERE status = 'queued'", [], |r| r.get(0))?)
    }

    /// Job counts per status (every status present, zero included).
    pub fn counts_by_status(&self) -> Result<BTreeMap<&'static str, u64>> {
        let mut out: BTreeMap<&'static str, u64> = Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let conn = self.reader();
        let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM jobs GROUP BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
        for row in rows {
            let (status, n) = row?;
            if let Some(s) = Status::parse(&status) {
                out.insert(s.as_str(), n);
            }
        }
        Ok(out)
    }

    /// Records progress (0–100) of a running job.
    pub fn set_progress(&self, id: i64, percent: f32) -> Result<()> {
        self.writer().execute("UPDATE jobs SET progress = ?2 WHERE id = ?1", params![id, percent])?;
        self.events.publish(Event::Progress { id, progress: percent });
        Ok(())
    }

    /// Records the decoded duration.
    pub fn set_duration(&self, id: i64, duration_s: f64) -> Result<()> {
        let n = self.writer().execute(
            "UPDATE jobs SET duration_s = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, duration_s, now()],
        )?;
        if n == 0 { Err(StoreError::NotFound(id)) } else { Ok(()) }
    }

    /// Stores the transcript (replacing earlier segments) and its language. A job deleted while
    /// it ran is `NotFound` (nothing is written).
    pub fn save_transcript(&self, id: i64, transcript: &Transcript) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE jobs SET transcript = ?2, language = ?3, language_probability = ?4, updated_at = ?5
             WHERE id = ?1",
            params![id, transcript.text(), transcript.language, transcript.language_probability, now()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(id));
        }
        write_segments(&tx, id, &transcript.segments)?;
        tx.commit()?;
        Ok(())
    }

    /// Stores speaker turns and the speaker-labelled segments.
    pub fn save_diarization(&self, id: i64, turns: &[SpeakerTurn], segments: &[Segment]) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let n = tx.execute("UPDATE jobs SET updated_at = ?2 WHERE id = ?1", params![id, now()])?;
        if n == 0 {
            return Err(StoreError::NotFound(id));
        }
        tx.execute("DELETE FROM speaker_turns WHERE job_id = ?1", [id])?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO speaker_turns (job_id, idx, start_s, end_s, speaker) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (i, t) in turns.iter().enumerate() {
                stmt.execute(params![id, i as i64, t.start_s, t.end_s, t.speaker])?;
            }
        }
        write_segments(&tx, id, segments)?;
        tx.commit()?;
        Ok(())
    }

    /// Stores an analysis; `None` fields leave the stored value alone.
    pub fn save_analysis(&self, id: i64, a: &Analysis) -> Result<()> {
        let patch = JobPatch {
            conversation_type: a.conversation_type.clone(),
            summary: a.summary.clone(),
            keypoints: a.keypoints.clone(),
            action_items: a.action_items.clone(),
            topics: a.topics.clone(),
            language: a.language.clone(),
            clean_transcript: a.clean_transcript.clone(),
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
        let n = self.writer().execute(
            "UPDATE jobs SET status = ?2, error_message = ?3, progress = NULL, finished_at = ?4, updated_at = ?4
             WHERE id = ?1",
            params![id, status.as_str(), message, now()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(id));
        }
        self.job(id).map(|job| self.published(job))
    }

    /// The job's transcript segments in order.
    pub fn segments(&self, id: i64) -> Result<Vec<Segment>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT start_s, end_s, speaker, text, words FROM segments WHERE job_id = ?1 ORDER BY idx",
        )?;
        let rows = stmt.query_map([id], |r| {
            let words: Option<String> = r.get(4)?;
            Ok(Segment {
                start_s: r.get(0)?,
                end_s: r.get(1)?,
                speaker: r.get(2)?,
                text: r.get(3)?,
                words: words.and_then(|w| serde_json::from_str(&w).ok()).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The job's speaker turns in time order.
    pub fn speaker_turns(&self, id: i64) -> Result<Vec<SpeakerTurn>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT start_s, end_s, speaker FROM speaker_turns WHERE job_id = ?1 ORDER BY idx",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(SpeakerTurn { start_s: r.get(0)?, end_s: r.get(1)?, speaker: r.get(2)? })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Deletes one job (its segments and turns go with it); returns the deleted row. With
    /// `files_kept` its audio stays on disk, so a tombstone keeps the folder scan from taking
    /// that same file (path and content) again.
    pub fn delete_job(&self, id: i64, files_kept: bool) -> Result<Job> {
        let job = self.job(id)?;
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM jobs WHERE id = ?1", [id])?;
        if files_kept {
            tombstone(&tx, &job)?;
        }
        tx.commit()?;
        self.events.publish(Event::Deleted { id });
        Ok(job)
    }

    /// Deletes every job; returns the deleted rows. `files_kept` as in [`Store::delete_job`].
    pub fn delete_all(&self, files_kept: bool) -> Result<Vec<Job>> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let jobs = {
            let mut stmt = tx.prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs"))?;
            stmt.query_map([], job_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.execute("DELETE FROM jobs", [])?;
        if files_kept {
            for job in &jobs {
                tombstone(&tx, job)?;
            }
        }
        tx.commit()?;
        for job in &jobs {
            self.events.publish(Event::Deleted { id: job.id });
        }
        Ok(jobs)
    }
}

fn tombstone(tx: &rusqlite::Transaction<'_>, job: &Job) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO tombstones (audio_path, sha256, deleted_at) VALUES (?1, ?2, ?3)",
        params![job.audio_path, job.sha256, now()],
    )?;
    Ok(())
}

fn write_segments(tx: &rusqlite::Transaction<'_>, id: i64, segments: &[Segment]) -> Result<()> {
    tx.execute("DELETE FROM segments WHERE job_id = ?1", [id])?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO segments (job_id, idx, start_s, end_s, speaker, text, words)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (i, s) in segments.iter().enumerate() {
        let words = (!s.words.is_empty()).then(|| serde_json::to_string(&s.words).unwrap_or_default());
        stmt.execute(params![id, i as i64, s.start_s, s.end_s, s.speaker, s.text, words])?;
    }
    Ok(())
}

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    let source: String = r.get(4)?;
    let status: String = r.get(5)?;
    let keypoints: Option<String> = r.get(9)?;
    let count =
        |i: usize| -> rusqlite::Result<Option<usize>> { Ok(r.get::<_, Option<i64>>(i)?.map(|n| n as usize)) };
    Ok(Job {
        id: r.get(0)?,
        audio_path: r.get(1)?,
        original_filename: r.get(2)?,
        sha256: r.get(3)?,
        source: if source == "watch" { Source::Watch } else { Source::Upload },
        status: Status::parse(&status).unwrap_or(Status::Error),
        error_message: r.get(6)?,
        conversation_type: r.get(7)?,
        summary: r.get(8)?,
        keypoints: keypoints.and_then(|k| serde_json::from_str(&k).ok()),
        action_items: r.get::<_, Option<String>>(25)?.and_then(|a| serde_json::from_str(&a).ok()),
        topics: r.get::<_, Option<String>>(26)?.and_then(|t| serde_json::from_str(&t).ok()),
        language: r.get(10)?,
        language_probability: r.get(11)?,
        clean_transcript: r.get(12)?,
        transcript: r.get(13)?,
        duration_s: r.get(14)?,
        progress: r.get(15)?,
        speakers: SpeakerHints {
            num_speakers: count(16)?,
            min_speakers: count(17)?,
            max_speakers: count(18)?,
        },
        created_at: r.get(19)?,
        updated_at: r.get(20)?,
        started_at: r.get(21)?,
        finished_at: r.get(22)?,
        uuid: r.get(23)?,
        attempts: r.get(24)?,
        speaker_names: r
            .get::<_, Option<String>>(27)?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn queue_claims_in_order_and_rejects_double_runs() {
        let store = Store::in_memory().unwrap();
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
        assert_eq!(store.requeue_interrupted().unwrap(), (2, 0));
        assert_eq!(store.job(b).unwrap().status, Status::Queued);
    }

    #[test]
    fn a_job_interrupted_twice_is_not_retried() {
        let store = Store::in_memory().unwrap();
        let id = insert(&store, "a", "a");
        store.enqueue(id, RunStage::All).unwrap();
        store.claim_next_job().unwrap().unwrap();
        assert_eq!(store.requeue_interrupted().unwrap(), (1, 0), "first crash: run again");
        // A shutdown that ran out of grace is not a crash.
        store.claim_next_job().unwrap().unwrap();
        store.requeue(id).unwrap();
        assert_eq!(store.job(id).unwrap().attempts, 1);
        let (job, _) = store.claim_next_job().unwrap().unwrap();
        assert_eq!(job.attempts, 2);
        assert_eq!(store.requeue_interrupted().unwrap(), (0, 1), "second crash: give up");
        let job = store.job(id).unwrap();
        assert_eq!((job.status, job.error_message.as_deref()), (Status::Error, Some(INTERRUPTED_TWICE)));
        // A user's re-run starts counting afresh.
        assert_eq!(store.enqueue(id, RunStage::All).unwrap().attempts, 0);
    }

    #[test]
    fn cancel_dequeues_or_reports_running() {
        let store = Store::in_memory().unwrap();
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

    #[test]
    fn results_survive_an_error_and_patches_merge() {
        let store = Store::in_memory().unwrap();
        let j = insert(&store, "j", "x");
        let t = Transcript {
            language: Some("en".into()),
            language_probability: Some(0.9),
            segments: vec![Segment {
                start_s: 0.0,
                end_s: 1.5,
                text: " hello there".into(),
                speaker: None,
                words: vec![],
            }],
        };
        store.save_transcript(j, &t).unwrap();
        let job = store.finish(j, &Outcome::Error("analyze: backend down".into())).unwrap();
        assert_eq!(job.status, Status::Error);
        assert_eq!(job.transcript.as_deref(), Some("hello there"));
        assert_eq!(store.segments(j).unwrap(), t.segments);
        let patch = JobPatch { keypoints: Some(vec!["k1".into()]), ..Default::default() };
        let job = store.patch_job(j, &patch).unwrap();
        assert_eq!(job.keypoints, Some(vec!["k1".to_string()]));
        assert_eq!(job.language.as_deref(), Some("en"));
        assert!(matches!(store.patch_job(99, &patch), Err(StoreError::NotFound(99))));

        // A job deleted while it runs: its results are refused cleanly, not a foreign-key error.
        store.delete_job(j, false).unwrap();
        assert!(matches!(store.save_transcript(j, &t), Err(StoreError::NotFound(_))));
        let turns = [SpeakerTurn { start_s: 0.0, end_s: 1.0, speaker: "Speaker00".into() }];
        assert!(matches!(store.save_diarization(j, &turns, &t.segments), Err(StoreError::NotFound(_))));
        assert!(matches!(store.finish(j, &Outcome::Done), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn list_is_newest_first_with_filters() {
        let store = Store::in_memory().unwrap();
        let ids: Vec<i64> = (0..5).map(|i| insert(&store, &format!("j{i}"), "s")).collect();
        store.enqueue(ids[1], RunStage::All).unwrap();
        let (jobs, total) = store.list_jobs(&JobQuery { limit: Some(2), ..Default::default() }).unwrap();
        assert_eq!(total, 5);
        assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[4], ids[3]]);
        let q = JobQuery { status: Some(Status::Queued), ..Default::default() };
        let (jobs, total) = store.list_jobs(&q).unwrap();
        assert_eq!((jobs.len(), total, jobs[0].id), (1, 1, ids[1]));
        assert_eq!(store.delete_all(false).unwrap().len(), 5);
        assert_eq!(store.list_jobs(&JobQuery::default()).unwrap().1, 0);
    }

    #[test]
    fn ids_are_never_reused_paths_are_unique_and_deletes_leave_tombstones() {
        let store = Store::in_memory().unwrap();
        let a = insert(&store, "a", "sha-a");
        assert!(store.insert_job(&NewJob { uuid: "other".into(), ..new_job("a", "x") }).unwrap().is_none());
        let b = insert(&store, "b", "sha-b");
        store.delete_job(b, true).unwrap();
        assert_eq!(insert(&store, "c", "sha-c"), b + 1, "the deleted id is not handed out again");
        assert!(store.is_tombstoned("uploads/b.wav", "sha-b").unwrap());
        store.delete_job(a, false).unwrap();
        assert!(!store.is_tombstoned("uploads/a.wav", "sha-a").unwrap(), "files deleted: no tombstone");
        assert!(!store.is_tombstoned("uploads/b.wav", "changed").unwrap());
    }

    #[test]
    fn a_uuid_database_is_migrated_keeping_every_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
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
    fn job_options_round_trip() {
        let store = Store::in_memory().unwrap();
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

    #[test]
    fn reads_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(&dir.path().join("r.db")).unwrap());
        let id = insert(&store, "a", "a");
        let writer = store.writer();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::sync::Arc::clone(&store);
        std::thread::spawn(move || {
            let _ =
                tx.send((reader.job(id).map(|j| j.id).ok(), reader.list_jobs(&JobQuery::default()).is_ok()));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        drop(writer);
        assert_eq!(got.expect("a read waited behind the held writer"), (Some(id), true));
    }

    #[test]
    fn action_items_and_topics_are_saved_patched_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            // A database from before the lists existed, with a job in it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let store = Store::open(&path).unwrap();
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
}

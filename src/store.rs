//! SQLite storage: jobs, transcript segments and speaker turns. The queue is a query here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::model::{
    ActionItem, Analysis, Job, Segment, Source, SpeakerHints, SpeakerTurn, Status, Transcript,
};

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("job {0} not found")]
    NotFound(String),
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
    pub id: String,
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

/// The SQLite-backed store. One connection behind a mutex: SQLite serialises writers anyway,
/// and every statement here is short.
pub struct Store {
    conn: Mutex<Connection>,
}

const MIGRATIONS: &[&str] = &[
    // v1
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
    // Analysis lists added by issue 13 (JSON arrays).
    "ALTER TABLE jobs ADD COLUMN action_items TEXT;
    ALTER TABLE jobs ADD COLUMN topics TEXT;",
];

const JOB_COLUMNS: &str = "id, audio_path, original_filename, sha256, source, status, error_message, \
    conversation_type, summary, keypoints, language, language_probability, clean_transcript, transcript, \
    duration_s, progress, num_speakers, min_speakers, max_speakers, created_at, updated_at, started_at, finished_at, \
    action_items, topics";

/// Current time as ISO-8601 UTC with milliseconds.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Open { path: path.display().to_string(), message: e.to_string() })?;
        }
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Open { path: path.display().to_string(), message: e.to_string() })?;
        Self::init(conn)
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts a job in status `uploaded`.
    pub fn insert_job(&self, new: &NewJob) -> Result<Job> {
        let ts = now();
        self.conn().execute(
            "INSERT INTO jobs (id, audio_path, original_filename, sha256, source, status, num_speakers,
                min_speakers, max_speakers, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'uploaded', ?6, ?7, ?8, ?9, ?9)",
            params![
                new.id,
                new.audio_path,
                new.original_filename,
                new.sha256,
                new.source.as_str(),
                new.speakers.num_speakers.map(|n| n as i64),
                new.speakers.min_speakers.map(|n| n as i64),
                new.speakers.max_speakers.map(|n| n as i64),
                ts
            ],
        )?;
        self.job(&new.id)
    }

    /// The job with `id`, or `NotFound`.
    pub fn job(&self, id: &str) -> Result<Job> {
        self.find_one("id = ?1", id)?.ok_or_else(|| StoreError::NotFound(id.into()))
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
        Ok(self.conn().query_row(&sql, [arg], job_from_row).optional()?)
    }

    /// Jobs newest first, with the total count matching the filter.
    pub fn list_jobs(&self, q: &JobQuery) -> Result<(Vec<Job>, u64)> {
        let conn = self.conn();
        let (cond, status) = match q.status {
            Some(s) => ("WHERE status = ?1", s.as_str()),
            None => ("WHERE ?1 = ?1", ""),
        };
        let total: u64 =
            conn.query_row(&format!("SELECT COUNT(*) FROM jobs {cond}"), [status], |r| r.get(0))?;
        let limit = q.limit.map_or(-1, i64::from);
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs {cond} ORDER BY created_at DESC, rowid DESC LIMIT ?2 OFFSET ?3"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let jobs = stmt
            .query_map(params![status, limit, q.offset], job_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((jobs, total))
    }

    /// Applies user edits and returns the updated job.
    pub fn patch_job(&self, id: &str, patch: &JobPatch) -> Result<Job> {
        let keypoints = patch.keypoints.as_ref().map(|k| serde_json::to_string(k).unwrap_or_default());
        let action_items = patch.action_items.as_ref().map(|a| serde_json::to_string(a).unwrap_or_default());
        let topics = patch.topics.as_ref().map(|t| serde_json::to_string(t).unwrap_or_default());
        let n = self.conn().execute(
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
            return Err(StoreError::NotFound(id.into()));
        }
        self.job(id)
    }

    /// Queues a job for `stage`; a job already queued or processing is a conflict.
    pub fn enqueue(&self, id: &str, stage: RunStage) -> Result<Job> {
        let conn = self.conn();
        let ts = now();
        let n = conn.execute(
            "UPDATE jobs SET status = 'queued', run_stage = ?2, error_message = NULL, progress = NULL,
                queued_seq = (SELECT COALESCE(MAX(queued_seq), 0) + 1 FROM jobs), updated_at = ?3
             WHERE id = ?1 AND status NOT IN ('queued', 'processing')",
            params![id, stage.as_str(), ts],
        )?;
        drop(conn);
        if n == 0 {
            let job = self.job(id)?;
            return Err(StoreError::Conflict(format!("job {id} is already {}", job.status.as_str())));
        }
        self.job(id)
    }

    /// Takes the oldest queued job and marks it `processing`.
    pub fn claim_next_job(&self) -> Result<Option<(Job, RunStage)>> {
        let conn = self.conn();
        let ts = now();
        let claimed: Option<(String, String)> = conn
            .query_row(
                "UPDATE jobs SET status = 'processing', started_at = ?1, finished_at = NULL, progress = 0,
                    updated_at = ?1
                 WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_seq LIMIT 1)
                 RETURNING id, run_stage",
                [ts],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        drop(conn);
        let Some((id, stage)) = claimed else { return Ok(None) };
        let stage = if stage == "analyze" { RunStage::Analyze } else { RunStage::All };
        Ok(Some((self.job(&id)?, stage)))
    }

    /// Puts jobs left `processing` (by a crash or a shutdown) back in the queue, oldest first.
    pub fn requeue_interrupted(&self) -> Result<usize> {
        Ok(self.conn().execute(
            "UPDATE jobs SET status = 'queued', progress = NULL, updated_at = ?1 WHERE status = 'processing'",
            [now()],
        )?)
    }

    /// Puts one processing job back in the queue (shutdown grace period ran out).
    pub fn requeue(&self, id: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE jobs SET status = 'queued', progress = NULL, updated_at = ?2
             WHERE id = ?1 AND status = 'processing'",
            params![id, now()],
        )?;
        Ok(())
    }

    /// Number of queued jobs.
    pub fn queue_depth(&self) -> Result<u64> {
        Ok(self.conn().query_row("SELECT COUNT(*) FROM jobs WHERE status = 'queued'", [], |r| r.get(0))?)
    }

    /// Job counts per status (every status present, zero included).
    pub fn counts_by_status(&self) -> Result<BTreeMap<&'static str, u64>> {
        let mut out: BTreeMap<&'static str, u64> = Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let conn = self.conn();
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
    pub fn set_progress(&self, id: &str, percent: f32) -> Result<()> {
        self.conn().execute("UPDATE jobs SET progress = ?2 WHERE id = ?1", params![id, percent])?;
        Ok(())
    }

    /// Records the decoded duration.
    pub fn set_duration(&self, id: &str, duration_s: f64) -> Result<()> {
        self.conn().execute(
            "UPDATE jobs SET duration_s = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, duration_s, now()],
        )?;
        Ok(())
    }

    /// Stores the transcript (replacing earlier segments) and its language.
    pub fn save_transcript(&self, id: &str, transcript: &Transcript) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE jobs SET transcript = ?2, language = ?3, language_probability = ?4, updated_at = ?5
             WHERE id = ?1",
            params![id, transcript.text(), transcript.language, transcript.language_probability, now()],
        )?;
        write_segments(&tx, id, &transcript.segments)?;
        tx.commit()?;
        Ok(())
    }

    /// Stores speaker turns and the speaker-labelled segments.
    pub fn save_diarization(&self, id: &str, turns: &[SpeakerTurn], segments: &[Segment]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
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
    pub fn save_analysis(&self, id: &str, a: &Analysis) -> Result<()> {
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

    /// Ends a run: `done`, or `error` with a message. Results saved so far are kept.
    pub fn finish(&self, id: &str, outcome: std::result::Result<(), String>) -> Result<Job> {
        let ts = now();
        let (status, message) = match &outcome {
            Ok(()) => (Status::Done, None),
            Err(m) => (Status::Error, Some(m.as_str())),
        };
        self.conn().execute(
            "UPDATE jobs SET status = ?2, error_message = ?3, progress = NULL, finished_at = ?4, updated_at = ?4
             WHERE id = ?1",
            params![id, status.as_str(), message, ts],
        )?;
        self.job(id)
    }

    /// The job's transcript segments in order.
    pub fn segments(&self, id: &str) -> Result<Vec<Segment>> {
        let conn = self.conn();
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
    pub fn speaker_turns(&self, id: &str) -> Result<Vec<SpeakerTurn>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT start_s, end_s, speaker FROM speaker_turns WHERE job_id = ?1 ORDER BY idx",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(SpeakerTurn { start_s: r.get(0)?, end_s: r.get(1)?, speaker: r.get(2)? })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Deletes one job (its segments and turns go with it); returns the deleted row.
    pub fn delete_job(&self, id: &str) -> Result<Job> {
        let job = self.job(id)?;
        self.conn().execute("DELETE FROM jobs WHERE id = ?1", [id])?;
        Ok(job)
    }

    /// Deletes every job; returns the deleted rows.
    pub fn delete_all(&self) -> Result<Vec<Job>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let jobs = {
            let mut stmt = tx.prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs"))?;
            stmt.query_map([], job_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.execute("DELETE FROM jobs", [])?;
        tx.commit()?;
        Ok(jobs)
    }
}

fn write_segments(tx: &rusqlite::Transaction<'_>, id: &str, segments: &[Segment]) -> Result<()> {
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
        action_items: r.get::<_, Option<String>>(23)?.and_then(|a| serde_json::from_str(&a).ok()),
        topics: r.get::<_, Option<String>>(24)?.and_then(|t| serde_json::from_str(&t).ok()),
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_job(id: &str, sha: &str) -> NewJob {
        NewJob {
            id: id.into(),
            audio_path: format!("uploads/{id}.wav"),
            original_filename: Some("a.wav".into()),
            sha256: sha.into(),
            source: Source::Upload,
            speakers: SpeakerHints::default(),
        }
    }

    #[test]
    fn queue_claims_in_order_and_rejects_double_runs() {
        let store = Store::in_memory().unwrap();
        for id in ["a", "b", "c"] {
            store.insert_job(&new_job(id, id)).unwrap();
        }
        store.enqueue("b", RunStage::All).unwrap();
        store.enqueue("a", RunStage::Analyze).unwrap();
        assert!(matches!(store.enqueue("b", RunStage::All), Err(StoreError::Conflict(_))));
        assert_eq!(store.queue_depth().unwrap(), 2);
        let (job, stage) = store.claim_next_job().unwrap().unwrap();
        assert_eq!((job.id.as_str(), job.status, stage), ("b", Status::Processing, RunStage::All));
        let (job, stage) = store.claim_next_job().unwrap().unwrap();
        assert_eq!((job.id.as_str(), stage), ("a", RunStage::Analyze));
        assert!(store.claim_next_job().unwrap().is_none());
        assert_eq!(store.requeue_interrupted().unwrap(), 2);
        assert_eq!(store.job("b").unwrap().status, Status::Queued);
    }

    #[test]
    fn results_survive_an_error_and_patches_merge() {
        let store = Store::in_memory().unwrap();
        store.insert_job(&new_job("j", "x")).unwrap();
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
        store.save_transcript("j", &t).unwrap();
        let job = store.finish("j", Err("analyze: backend down".into())).unwrap();
        assert_eq!(job.status, Status::Error);
        assert_eq!(job.transcript.as_deref(), Some("hello there"));
        assert_eq!(store.segments("j").unwrap(), t.segments);
        let patch = JobPatch { keypoints: Some(vec!["k1".into()]), ..Default::default() };
        let job = store.patch_job("j", &patch).unwrap();
        assert_eq!(job.keypoints, Some(vec!["k1".to_string()]));
        assert_eq!(job.language.as_deref(), Some("en"));
        assert!(matches!(store.patch_job("nope", &patch), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn list_is_newest_first_with_filters() {
        let store = Store::in_memory().unwrap();
        for i in 0..5 {
            store.insert_job(&new_job(&format!("j{i}"), "s")).unwrap();
        }
        store.enqueue("j1", RunStage::All).unwrap();
        let (jobs, total) = store.list_jobs(&JobQuery { limit: Some(2), ..Default::default() }).unwrap();
        assert_eq!(total, 5);
        assert_eq!(jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["j4", "j3"]);
        let q = JobQuery { status: Some(Status::Queued), ..Default::default() };
        let (jobs, total) = store.list_jobs(&q).unwrap();
        assert_eq!((jobs.len(), total, jobs[0].id.as_str()), (1, 1, "j1"));
        assert_eq!(store.delete_all().unwrap().len(), 5);
        assert_eq!(store.list_jobs(&JobQuery::default()).unwrap().1, 0);
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
        let id = store.insert_job(&new_job("j", "x")).unwrap().id;
        assert_eq!((store.job(&id).unwrap().action_items, store.job(&id).unwrap().topics), (None, None));
        let item = ActionItem { owner: Some("Speaker01".into()), text: "Review the payment code".into() };
        let analysis = Analysis {
            action_items: Some(vec![item.clone()]),
            topics: Some(vec!["release date".into()]),
            ..Analysis::default()
        };
        store.save_analysis(&id, &analysis).unwrap();
        let job = store.job(&id).unwrap();
        assert_eq!(job.action_items, Some(vec![item.clone()]));
        assert_eq!(job.topics, Some(vec!["release date".to_string()]));
        // A patch of one list leaves the other alone.
        let patch = JobPatch { topics: Some(vec!["budget".into()]), ..Default::default() };
        let job = store.patch_job(&id, &patch).unwrap();
        assert_eq!((job.topics, job.action_items), (Some(vec!["budget".to_string()]), Some(vec![item])));
    }
}

//! Every schema change, in order, spelled for each dialect: adding a table means adding one
//! entry here with its SQLite and PostgreSQL text. SQLite keeps the version in `user_version`,
//! PostgreSQL in `schema_version`. Both accept `BIGINT`, `DOUBLE PRECISION` and `TEXT`, so most
//! entries are one text for both; types differ where PostgreSQL is stricter (ids, floats,
//! `BYTEA` blobs). v3–v6 came from the single-node line (SQLite files in use carry them at
//! those numbers), so the multi-node change is v7.

/// One schema change.
pub struct Migration {
    pub sqlite: &'static str,
    /// Empty where PostgreSQL has nothing to do (it starts at the integer-id schema).
    pub postgres: &'static str,
}

impl Migration {
    /// The same text for both dialects.
    const fn both(sql: &'static str) -> Self {
        Self { sqlite: sql, postgres: sql }
    }
}

/// The migrations, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    // v1: UUID ids.
    Migration {
        sqlite: "CREATE TABLE jobs (
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
        postgres: "",
    },
    // v2: integer ids in creation order (never reused), the UUID kept as `uuid`; one job per
    // audio path (a later duplicate, which only the old watcher race could make, keeps its row
    // with `#<uuid>` appended to the path); run attempts; tombstones of deleted jobs.
    Migration {
        sqlite: "CREATE TABLE jobs_v2 (
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
        postgres: PG_V2,
    },
    // v3: analysis lists (JSON arrays).
    Migration::both(
        "ALTER TABLE jobs ADD COLUMN action_items TEXT;
        ALTER TABLE jobs ADD COLUMN topics TEXT;",
    ),
    // v4: known speakers.
    Migration { sqlite: super::speakers::MIGRATION_SQLITE, postgres: super::speakers::MIGRATION_POSTGRES },
    // v5: per-job processing options (JSON of `JobOptions`; NULL = the configuration's).
    Migration::both("ALTER TABLE jobs ADD COLUMN options TEXT;"),
    // v6: webhook targets, deliveries and attempts.
    Migration {
        sqlite: super::integrations::MIGRATION_SQLITE,
        postgres: super::integrations::MIGRATION_POSTGRES,
    },
    // v7: several nodes: a lease per running job (database-clock milliseconds, renewed by the
    // owner's heartbeat), the nodes and their heartbeats, an index for the next queue number,
    // and settings (whether audio paths were made relative to the upload folder).
    Migration::both(
        "ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
        ALTER TABLE jobs ADD COLUMN lease_expires_ms BIGINT;
        CREATE INDEX jobs_queued_seq ON jobs(queued_seq);
        CREATE TABLE nodes (
            id TEXT PRIMARY KEY,
            hostname TEXT NOT NULL,
            pid BIGINT NOT NULL,
            role TEXT NOT NULL,
            workers BIGINT NOT NULL,
            started_at TEXT NOT NULL,
            heartbeat_ms BIGINT NOT NULL
        );
        CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    ),
    // v8: the job-event outbox (status changes a webhook may announce, written by a trigger in
    // the same transaction as the change).
    Migration { sqlite: super::integrations::OUTBOX_SQLITE, postgres: super::integrations::OUTBOX_POSTGRES },
    // v9: a cancel asked for while the job runs (perhaps on another node), for its node to act on.
    Migration::both("ALTER TABLE jobs ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;"),
];

/// The v2 schema for PostgreSQL (integer ids from an identity column).
const PG_V2: &str = "CREATE TABLE jobs (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
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
        language_probability DOUBLE PRECISION,
        clean_transcript TEXT,
        transcript TEXT,
        duration_s DOUBLE PRECISION,
        progress DOUBLE PRECISION,
        num_speakers BIGINT,
        min_speakers BIGINT,
        max_speakers BIGINT,
        run_stage TEXT NOT NULL DEFAULT 'all',
        queued_seq BIGINT,
        attempts BIGINT NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX jobs_created ON jobs(created_at DESC);
    CREATE INDEX jobs_status ON jobs(status, queued_seq);
    CREATE INDEX jobs_sha ON jobs(sha256);
    CREATE TABLE segments (
        job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx BIGINT NOT NULL,
        start_s DOUBLE PRECISION NOT NULL,
        end_s DOUBLE PRECISION NOT NULL,
        speaker TEXT,
        text TEXT NOT NULL,
        words TEXT,
        PRIMARY KEY (job_id, idx)
    );
    CREATE TABLE speaker_turns (
        job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx BIGINT NOT NULL,
        start_s DOUBLE PRECISION NOT NULL,
        end_s DOUBLE PRECISION NOT NULL,
        speaker TEXT NOT NULL,
        PRIMARY KEY (job_id, idx)
    );
    CREATE TABLE tombstones (
        audio_path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        deleted_at TEXT NOT NULL,
        PRIMARY KEY (audio_path, sha256)
    );";

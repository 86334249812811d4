//! Storage for the integrations layer: per-job webhook targets, webhook deliveries with their
//! attempts, and the query retention uses. Its tables come with one migration ([`MIGRATION`]);
//! deleting a job deletes its webhook target and log (foreign keys cascade).

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::{JOB_COLUMNS, Result, Store, StoreError, job_from_row, now};
use crate::model::Job;

/// Webhook targets, deliveries and attempts.
pub(super) const MIGRATION: &str = "
    CREATE TABLE job_webhooks (
        job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
        url TEXT NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        event_id TEXT NOT NULL UNIQUE,
        event_type TEXT NOT NULL,
        url TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL,
        next_attempt_ms INTEGER,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_attempt_ms);
    CREATE INDEX webhook_deliveries_job ON webhook_deliveries(job_id);
    CREATE TABLE webhook_attempts (
        delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
        n INTEGER NOT NULL,
        at TEXT NOT NULL,
        status_code INTEGER,
        error TEXT,
        duration_ms INTEGER NOT NULL,
        PRIMARY KEY (delivery_id, n)
    );";

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Given up: a final answer (4xx other than 408/429), a refused target, or out of attempts.
    Failed,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            _ => DeliveryState::Pending,
        }
    }
}

/// A webhook event to deliver.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub job_id: i64,
    /// The `webhook-id` header, constant across retries.
    pub event_id: String,
    pub event_type: String,
    pub url: String,
    /// The exact body sent on every attempt.
    pub payload: String,
}

/// One attempt to deliver.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub n: u32,
    pub at: String,
    /// The HTTP status received, if any.
    pub status_code: Option<u16>,
    /// Why no usable answer came (network error, timeout, refused target), if so.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// A delivery and its attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub job_id: i64,
    pub event_id: String,
    pub event_type: String,
    pub url: String,
    pub state: DeliveryState,
    /// When the next attempt is due (pending deliveries), Unix milliseconds.
    pub next_attempt_ms: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip)]
    pub payload: String,
    pub attempts: Vec<Attempt>,
}

const DELIVERY_COLUMNS: &str =
    "id, job_id, event_id, event_type, url, state, next_attempt_ms, created_at, updated_at, payload";

fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        job_id: r.get(1)?,
        event_id: r.get(2)?,
        event_type: r.get(3)?,
        url: r.get(4)?,
        state: DeliveryState::parse(&r.get::<_, String>(5)?),
        next_attempt_ms: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        payload: r.get(9)?,
        attempts: Vec::new(),
    })
}

impl Store {
    /// Sets the webhook target of one job.
    pub fn set_webhook_url(&self, job_id: i64, url: &str) -> Result<()> {
        let n = self.writer().execute(
            "INSERT INTO job_webhooks (job_id, url) SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?1)
             ON CONFLICT (job_id) DO UPDATE SET url = excluded.url",
            params![job_id, url],
        )?;
        if n == 0 { Err(StoreError::NotFound(job_id)) } else { Ok(()) }
    }

    /// The webhook target of one job, if it has its own.
    pub fn webhook_url(&self, job_id: i64) -> Result<Option<String>> {
        Ok(self
            .reader()
            .query_row("SELECT url FROM job_webhooks WHERE job_id = ?1", [job_id], |r| r.get(0))
            .optional()?)
    }

    /// Stores a delivery, due at once; `None` if the job is gone.
    pub fn insert_delivery(&self, new: &NewDelivery) -> Result<Option<i64>> {
        let ts = now();
        Ok(self
            .writer()
            .query_row(
                "INSERT INTO webhook_deliveries (job_id, event_id, event_type, url, payload, state,
                    next_attempt_ms, created_at, updated_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?1)
                 RETURNING id",
                params![new.job_id, new.event_id, new.event_type, new.url, new.payload, ts],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Pending deliveries due at `now_ms`, oldest first, at most `limit`.
    pub fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
             WHERE state = 'pending' AND next_attempt_ms <= ?1 ORDER BY next_attempt_ms, id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![now_ms, limit as i64], delivery_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the next pending delivery is due, Unix milliseconds.
    pub fn next_delivery_ms(&self) -> Result<Option<i64>> {
        Ok(self.reader().query_row(
            "SELECT MIN(next_attempt_ms) FROM webhook_deliveries WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Records an attempt and where the delivery stands after it (`next_ms` when pending).
    /// Returns the number of attempts made so far.
    pub fn record_attempt(
        &self,
        delivery_id: i64,
        attempt: &Attempt,
        state: DeliveryState,
        next_ms: Option<i64>,
    ) -> Result<u32> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let n: u32 = tx.query_row(
            "SELECT COUNT(*) + 1 FROM webhook_attempts WHERE delivery_id = ?1",
            [delivery_id],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO webhook_attempts (delivery_id, n, at, status_code, error, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                delivery_id,
                n,
                attempt.at,
                attempt.status_code,
                attempt.error,
                attempt.duration_ms as i64
            ],
        )?;
        tx.execute(
            "UPDATE webhook_deliveries SET state = ?2, next_attempt_ms = ?3, updated_at = ?4 WHERE id = ?1",
            params![delivery_id, state.as_str(), next_ms, now()],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Attempts made for a delivery so far.
    pub fn attempt_count(&self, delivery_id: i64) -> Result<u32> {
        Ok(self.reader().query_row(
            "SELECT COUNT(*) FROM webhook_attempts WHERE delivery_id = ?1",
            [delivery_id],
            |r| r.get(0),
        )?)
    }

    /// A job's deliveries, oldest first, each with its attempts.
    pub fn deliveries(&self, job_id: i64) -> Result<Vec<Delivery>> {
        let conn = self.reader();
        let mut list: Vec<Delivery> = conn
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE job_id = ?1 ORDER BY id"
            ))?
            .query_map([job_id], delivery_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare_cached(
            "SELECT n, at, status_code, error, duration_ms FROM webhook_attempts WHERE delivery_id = ?1 ORDER BY n",
        )?;
        for d in &mut list {
            d.attempts = stmt
                .query_map([d.id], |r| {
                    Ok(Attempt {
                        n: r.get(0)?,
                        at: r.get(1)?,
                        status_code: r.get(2)?,
                        error: r.get(3)?,
                        duration_ms: r.get::<_, i64>(4)? as u64,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
        }
        Ok(list)
    }

    /// Jobs that ended (done, error, cancelled) before `cutoff` (an ISO-8601 UTC time as [`now`]
    /// writes them), oldest first.
    pub fn ended_before(&self, cutoff: &str) -> Result<Vec<Job>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE status IN ('done', 'error', 'cancelled') AND finished_at < ?1 ORDER BY finished_at"
        ))?;
        let rows = stmt.query_map([cutoff], job_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Source, SpeakerHints};
    use crate::store::{NewJob, Outcome};

    fn job(store: &Store) -> i64 {
        store
            .insert_job(&NewJob {
                uuid: uuid::Uuid::new_v4().to_string(),
                audio_path: format!("/tmp/{}.wav", uuid::Uuid::new_v4()),
                original_filename: None,
                sha256: "x".into(),
                source: Source::Upload,
                speakers: SpeakerHints::default(),
            })
            .unwrap()
            .unwrap()
            .id
    }

    #[test]
    fn deliveries_are_scheduled_logged_and_deleted_with_their_job() {
        let store = Store::in_memory().unwrap();
        let id = job(&store);
        assert!(store.set_webhook_url(999, "http://x").is_err());
        store.set_webhook_url(id, "http://a.example/hook").unwrap();
        assert_eq!(store.webhook_url(id).unwrap().as_deref(), Some("http://a.example/hook"));
        let new = NewDelivery {
            job_id: id,
            event_id: "msg_1".into(),
            event_type: "job.done".into(),
            url: "http://a.example/hook".into(),
            payload: "{}".into(),
        };
        let d = store.insert_delivery(&new).unwrap().unwrap();
        assert!(store.insert_delivery(&new).is_err(), "event ids are unique");
        assert!(store.insert_delivery(&NewDelivery { job_id: 999, ..new.clone() }).unwrap().is_none());
        assert_eq!(store.due_deliveries(1, 10).unwrap().len(), 1);
        let attempt = Attempt { n: 0, at: now(), status_code: Some(503), error: None, duration_ms: 3 };
        assert_eq!(store.record_attempt(d, &attempt, DeliveryState::Pending, Some(5_000)).unwrap(), 1);
        assert!(store.due_deliveries(4_999, 10).unwrap().is_empty());
        assert_eq!(store.next_delivery_ms().unwrap(), Some(5_000));
        assert_eq!(store.record_attempt(d, &attempt, DeliveryState::Delivered, None).unwrap(), 2);
        assert_eq!(store.next_delivery_ms().unwrap(), None);
        let log = store.deliveries(id).unwrap();
        assert_eq!((log.len(), log[0].state, log[0].attempts.len()), (1, DeliveryState::Delivered, 2));
        assert_eq!(log[0].attempts[1].n, 2);

        store.finish(id, &Outcome::Done).unwrap();
        assert!(store.ended_before("0000").unwrap().is_empty());
        assert_eq!(store.ended_before("9999").unwrap()[0].id, id);
        store.delete_job(id, false).unwrap();
        assert!(store.deliveries(id).unwrap().is_empty());
        assert_eq!(store.webhook_url(id).unwrap(), None);
        assert_eq!(store.attempt_count(d).unwrap(), 0);
    }
}

//! Known speakers in the store: people and their voiceprints, each job's speaker names, voices
//! and ad-hoc references. Voiceprints are little-endian f32 blobs (768 bytes for CAM++).

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, StoreError, now, write_segments};
use crate::model::{JobSpeaker, KnownVoice, Person, Sample, SpeakerVoice};
use crate::speakers::{NamedResult, decode, encode};

/// One migration step (self-contained): people, their voiceprints (deleted with the person),
/// each job's speaker voices and ad-hoc references (deleted with the job), and the job's
/// speaker names and scores as JSON.
pub(super) const MIGRATION: &str = "
    CREATE TABLE people (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE voiceprints (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
        embedding BLOB NOT NULL,
        source TEXT NOT NULL,
        seconds REAL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX voiceprints_person ON voiceprints(person_id);
    CREATE TABLE job_voices (
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        embedding BLOB NOT NULL,
        PRIMARY KEY (job_id, label)
    );
    CREATE TABLE job_references (
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        name TEXT NOT NULL,
        embedding BLOB NOT NULL,
        PRIMARY KEY (job_id, idx)
    );
    ALTER TABLE jobs ADD COLUMN speakers TEXT;";

/// A voiceprint to store.
#[derive(Debug, Clone)]
pub struct NewPrint {
    pub embedding: Vec<f32>,
    /// A clip's file name or `job <id> <label>`.
    pub source: String,
    pub seconds: Option<f64>,
}

fn conflict_on_name(e: rusqlite::Error, name: &str) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict(format!("a speaker named {name:?} already exists"))
        }
        other => other.into(),
    }
}

fn insert_prints(tx: &rusqlite::Transaction<'_>, person: i64, prints: &[NewPrint]) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO voiceprints (person_id, embedding, source, seconds, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let ts = now();
    for p in prints {
        stmt.execute(params![person, encode(&p.embedding), p.source, p.seconds, ts])?;
    }
    tx.execute("UPDATE people SET updated_at = ?2 WHERE id = ?1", params![person, ts])?;
    Ok(())
}

impl Store {
    /// Creates a person with their first voiceprints; a name taken (case-insensitively) is a
    /// conflict.
    pub fn create_person(&self, name: &str, prints: &[NewPrint]) -> Result<Person> {
        let id = {
            let mut conn = self.writer();
            let tx = conn.transaction()?;
            let ts = now();
            tx.execute(
                "INSERT INTO people (name, created_at, updated_at) VALUES (?1, ?2, ?2)",
                params![name, ts],
            )
            .map_err(|e| conflict_on_name(e, name))?;
            let id = tx.last_insert_rowid();
            insert_prints(&tx, id, prints)?;
            tx.commit()?;
            id
        };
        self.person(id)
    }

    /// The person with `id`, or `PersonNotFound`.
    pub fn person(&self, id: i64) -> Result<Person> {
        let conn = self.reader();
        let (name, created_at, updated_at): (String, String, String) = conn
            .query_row("SELECT name, created_at, updated_at FROM people WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?
            .ok_or(StoreError::PersonNotFound(id))?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, source, seconds, created_at FROM voiceprints WHERE person_id = ?1 ORDER BY id",
        )?;
        let samples = stmt
            .query_map([id], |r| {
                Ok(Sample { id: r.get(0)?, source: r.get(1)?, seconds: r.get(2)?, created_at: r.get(3)? })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Person { id, name, samples, created_at, updated_at })
    }

    /// The person with this name (case-insensitive), if any.
    pub fn person_by_name(&self, name: &str) -> Result<Option<Person>> {
        let id: Option<i64> = self
            .reader()
            .query_row("SELECT id FROM people WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        id.map(|id| self.person(id)).transpose()
    }

    /// Every person, by name.
    pub fn people(&self) -> Result<Vec<Person>> {
        let ids: Vec<i64> = {
            let conn = self.reader();
            let mut stmt = conn.prepare_cached("SELECT id FROM people ORDER BY name, id")?;
            stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<_>>>()?
        };
        ids.into_iter().map(|id| self.person(id)).collect()
    }

    /// Renames a person.
    pub fn rename_person(&self, id: i64, name: &str) -> Result<Person> {
        let n = self
            .writer()
            .execute("UPDATE people SET name = ?2, updated_at = ?3 WHERE id = ?1", params![id, name, now()])
            .map_err(|e| conflict_on_name(e, name))?;
        if n == 0 {
            return Err(StoreError::PersonNotFound(id));
        }
        self.person(id)
    }

    /// Deletes a person and every voiceprint of theirs.
    pub fn delete_person(&self, id: i64) -> Result<()> {
        let n = self.writer().execute("DELETE FROM people WHERE id = ?1", [id])?;
        if n == 0 { Err(StoreError::PersonNotFound(id)) } else { Ok(()) }
    }

    /// Adds voiceprints to a person.
    pub fn add_prints(&self, id: i64, prints: &[NewPrint]) -> Result<Person> {
        {
            let mut conn = self.writer();
            let tx = conn.transaction()?;
            if tx.query_row("SELECT 1 FROM people WHERE id = ?1", [id], |_| Ok(())).optional()?.is_none() {
                return Err(StoreError::PersonNotFound(id));
            }
            insert_prints(&tx, id, prints)?;
            tx.commit()?;
        }
        self.person(id)
    }

    /// Adds voiceprints to the person with this name, creating them if missing.
    pub fn enroll(&self, name: &str, prints: &[NewPrint]) -> Result<Person> {
        match self.person_by_name(name)? {
            Some(p) => self.add_prints(p.id, prints),
            None => self.create_person(name, prints),
        }
    }

    /// Number of voiceprints stored (all people).
    pub fn voiceprint_count(&self) -> Result<u64> {
        Ok(self.reader().query_row("SELECT COUNT(*) FROM voiceprints", [], |r| r.get(0))?)
    }

    /// Every person's voiceprints plus job `id`'s ad-hoc references: what its speakers are
    /// matched against.
    pub fn known_voices(&self, id: i64) -> Result<Vec<KnownVoice>> {
        let conn = self.reader();
        let mut out: Vec<KnownVoice> = Vec::new();
        let mut add = |name: String, blob: Vec<u8>| {
            let Some(v) = decode(&blob) else { return };
            match out.iter_mut().find(|k| k.name == name) {
                Some(k) => k.prints.push(v),
                None => out.push(KnownVoice { name, prints: vec![v] }),
            }
        };
        let mut stmt = conn.prepare_cached(
            "SELECT p.name, v.embedding FROM voiceprints v JOIN people p ON p.id = v.person_id ORDER BY p.id, v.id",
        )?;
        for row in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
            let (name, blob) = row?;
            add(name, blob);
        }
        let mut stmt =
            conn.prepare_cached("SELECT name, embedding FROM job_references WHERE job_id = ?1 ORDER BY idx")?;
        for row in stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))? {
            let (name, blob) = row?;
            add(name, blob);
        }
        Ok(out)
    }

    /// Stores a job's ad-hoc references (names with voiceprints, for this job only).
    pub fn save_job_references(&self, id: i64, refs: &[(String, Vec<f32>)]) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM job_references WHERE job_id = ?1", [id])?;
        for (i, (name, v)) in refs.iter().enumerate() {
            tx.execute(
                "INSERT INTO job_references (job_id, idx, name, embedding) VALUES (?1, ?2, ?3, ?4)",
                params![id, i as i64, name, encode(v)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores a job's speakers (names, scores) and their voices, replacing earlier ones.
    pub fn save_job_speakers(&self, id: i64, speakers: &[JobSpeaker], voices: &[SpeakerVoice]) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let json = serde_json::to_string(speakers).unwrap_or_default();
        let n = tx.execute(
            "UPDATE jobs SET speakers = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, json, now()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(id));
        }
        tx.execute("DELETE FROM job_voices WHERE job_id = ?1", [id])?;
        for v in voices {
            tx.execute(
                "INSERT INTO job_voices (job_id, label, embedding) VALUES (?1, ?2, ?3)",
                params![id, v.label, encode(&v.embedding)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The stored voice of one speaker (by diarization label) of job `id`.
    pub fn job_voice(&self, id: i64, label: &str) -> Result<Option<Vec<f32>>> {
        let blob: Option<Vec<u8>> = self
            .reader()
            .query_row(
                "SELECT embedding FROM job_voices WHERE job_id = ?1 AND label = ?2",
                params![id, label],
                |r| r.get(0),
            )
            .optional()?;
        Ok(blob.and_then(|b| decode(&b)))
    }

    /// What a rename of job `id`'s speakers rewrites.
    pub fn named_result(&self, id: i64) -> Result<NamedResult> {
        let job = self.job(id)?;
        Ok(NamedResult {
            speakers: job.speaker_names,
            segments: self.segments(id)?,
            turns: self.speaker_turns(id)?,
            clean_transcript: job.clean_transcript,
            summary: job.summary,
            keypoints: job.keypoints,
        })
    }

    /// Writes a renamed result back in one transaction.
    pub fn save_named_result(&self, id: i64, r: &NamedResult) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let keypoints = r.keypoints.as_ref().map(|k| serde_json::to_string(k).unwrap_or_default());
        let n = tx.execute(
            "UPDATE jobs SET speakers = ?2, clean_transcript = ?3, summary = ?4, keypoints = ?5, updated_at = ?6
             WHERE id = ?1",
            params![
                id,
                serde_json::to_string(&r.speakers).unwrap_or_default(),
                r.clean_transcript,
                r.summary,
                keypoints,
                now()
            ],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(id));
        }
        tx.execute("DELETE FROM speaker_turns WHERE job_id = ?1", [id])?;
        for (i, t) in r.turns.iter().enumerate() {
            tx.execute(
                "INSERT INTO speaker_turns (job_id, idx, start_s, end_s, speaker) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, i as i64, t.start_s, t.end_s, t.speaker],
            )?;
        }
        write_segments(&tx, id, &r.segments)?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Source, SpeakerHints};
    use crate::store::NewJob;

    fn print(v: &[f32], source: &str) -> NewPrint {
        NewPrint { embedding: v.to_vec(), source: source.into(), seconds: Some(3.0) }
    }

    #[test]
    fn people_keep_several_prints_and_lose_them_with_the_person() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).unwrap();
        let alice = store
            .create_person("Alice", &[print(&[1.0, 0.0], "a.wav"), print(&[0.0, 1.0], "b.wav")])
            .unwrap();
        assert_eq!(alice.samples.len(), 2);
        assert!(matches!(store.create_person("alice", &[]), Err(StoreError::Conflict(_))));
        let bob = store.enroll("Bob", &[print(&[0.6, 0.8], "job 1 Speaker01")]).unwrap();
        assert_eq!(store.enroll("bob", &[print(&[0.8, 0.6], "c.wav")]).unwrap().samples.len(), 2);
        let job = store
            .insert_job(&NewJob {
                uuid: "u".into(),
                audio_path: "uploads/u.wav".into(),
                original_filename: None,
                sha256: "s".into(),
                source: Source::Upload,
                speakers: SpeakerHints::default(),
            })
            .unwrap()
            .unwrap();
        store
            .save_job_references(
                job.id,
                &[("Carol".into(), vec![0.0, 1.0]), ("Alice".into(), vec![0.5, 0.5])],
            )
            .unwrap();
        let known = store.known_voices(job.id).unwrap();
        let counts: Vec<(&str, usize)> = known.iter().map(|k| (k.name.as_str(), k.prints.len())).collect();
        assert_eq!(counts, [("Alice", 3), ("Bob", 2), ("Carol", 1)]);
        drop(store);

        // Survives a restart; deleting a person deletes their prints.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.voiceprint_count().unwrap(), 4);
        store.delete_person(alice.id).unwrap();
        assert_eq!(store.voiceprint_count().unwrap(), 2);
        assert!(matches!(store.person(alice.id), Err(StoreError::PersonNotFound(_))));
        assert!(matches!(store.delete_person(alice.id), Err(StoreError::PersonNotFound(_))));
        assert_eq!(store.rename_person(bob.id, "Robert").unwrap().name, "Robert");
        assert_eq!(store.people().unwrap().len(), 1);

        // A job's voices and names go with the job.
        let voices = [SpeakerVoice { label: "Speaker00".into(), embedding: vec![0.6, 0.8] }];
        let names = [JobSpeaker { label: "Speaker00".into(), name: Some("Robert".into()), score: Some(0.9) }];
        store.save_job_speakers(job.id, &names, &voices).unwrap();
        assert_eq!(store.job(job.id).unwrap().speaker_names, names);
        assert_eq!(store.job_voice(job.id, "Speaker00").unwrap(), Some(vec![0.6, 0.8]));
        store.delete_job(job.id, false).unwrap();
        assert_eq!(store.job_voice(job.id, "Speaker00").unwrap(), None);
        assert!(store.known_voices(job.id).unwrap().iter().all(|k| k.name == "Robert"));
    }
}

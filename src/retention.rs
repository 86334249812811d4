//! Retention: jobs that ended more than `retention_days` ago are deleted with their audio,
//! sidecar, exports and webhook log, once at start and then on a timer (daily, or every
//! retention period when that is shorter than a day). `0` keeps everything.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigHandle};
use crate::store::{Store, StoreError};

/// Longest pause between sweeps.
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The retention period, if one is set.
fn period(cfg: &Config) -> Option<Duration> {
    (cfg.retention_days > 0.0).then(|| Duration::from_secs_f64(cfg.retention_days * 86_400.0))
}

/// Pause between sweeps: a day, or the retention period if shorter (at least a second).
pub fn interval(cfg: &Config) -> Duration {
    period(cfg).map_or(DAY, |p| p.clamp(Duration::from_secs(1), DAY))
}

/// Deletes the jobs that ended longer ago than the retention period; returns how many.
pub fn sweep(store: &Store, cfg: &Config) -> Result<usize, StoreError> {
    let Some(period) = period(cfg) else { return Ok(0) };
    let Ok(period) = time::Duration::try_from(period) else { return Ok(0) };
    let cutoff = crate::store::iso_time(time::OffsetDateTime::now_utc() - period);
    let mut deleted = 0;
    for job in store.ended_before(&cutoff)? {
        match store.delete_job(job.id, false) {
            Ok(_) => {
                crate::exports::remove_job_files(&job.audio_path, cfg.results_folder.as_deref());
                tracing::info!(job = job.id, finished = ?job.finished_at, "retention: job deleted");
                deleted += 1;
            }
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Sweeps on a timer until the runtime stops (the sweep at start is the caller's).
pub async fn run(store: Arc<Store>, config: Arc<ConfigHandle>) {
    loop {
        tokio::time::sleep(interval(&config.get())).await;
        let (store, cfg) = (Arc::clone(&store), config.get());
        match tokio::task::spawn_blocking(move || sweep(&store, &cfg)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(deleted = n, "retention sweep"),
            Ok(Err(e)) => tracing::error!(error = %e, "retention sweep failed"),
            Err(e) => tracing::error!(error = %e, "retention sweep panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Source;
    use crate::store::{NewJob, Outcome};

    #[test]
    fn only_jobs_ended_before_the_period_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::in_memory().unwrap();
        let audio = dir.path().join("a.wav");
        std::fs::write(&audio, b"x").unwrap();
        std::fs::write(dir.path().join("a.wav.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("a.wav.srt"), b"1").unwrap();
        let add = |path: &std::path::Path| {
            store.insert_job(&NewJob::for_test(path.to_string_lossy(), Source::Watch)).unwrap().unwrap().id
        };
        let ended = add(&audio);
        let waiting = add(&dir.path().join("b.wav"));
        store.finish(ended, &Outcome::Done).unwrap();
        let keep = Config::default();
        assert_eq!(sweep(&store, &keep).unwrap(), 0, "0 keeps everything");
        assert_eq!(interval(&keep), DAY);
        let month = Config { retention_days: 30.0, ..Config::default() };
        assert_eq!(sweep(&store, &month).unwrap(), 0, "ended just now");
        assert_eq!(interval(&month), DAY);
        std::thread::sleep(Duration::from_millis(20));
        let tiny = Config { retention_days: 0.01 / 86_400.0, ..Config::default() };
        assert_eq!(interval(&tiny), Duration::from_secs(1));
        assert_eq!(sweep(&store, &tiny).unwrap(), 1);
        assert!(store.job(ended).is_err());
        assert!(store.job(waiting).is_ok(), "a job that never ended stays");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "audio, sidecar and export deleted");
    }
}

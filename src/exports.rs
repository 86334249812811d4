//! Transcript exports for folder workflows: when a job is done, the renderings named in
//! `export_formats` are written beside its sidecar (`<audio name>.<format>`, e.g.
//! `meeting.m4a.srt`), each atomically (temp file + rename), so a share never shows half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{Config, EXPORT_FORMATS};
use crate::render::{Format, JobResult, sidecar_path};
use crate::store::{Store, StoreError};

/// Export failures.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Where the `format` rendering of `audio_path` goes: beside the sidecar, the sidecar's
/// `.json` replaced by the format.
pub fn export_path(audio_path: &Path, results_folder: Option<&Path>, format: &str) -> PathBuf {
    sidecar_path(audio_path, results_folder).with_extension(format)
}

/// Every export file a job may have (for deletion), whatever is configured now.
pub fn all_export_paths(audio_path: &Path, results_folder: Option<&Path>) -> Vec<PathBuf> {
    EXPORT_FORMATS.iter().map(|f| export_path(audio_path, results_folder, f)).collect()
}

/// Deletes a job's audio, sidecar and exports; missing files are fine, other failures logged.
pub fn remove_job_files(audio_path: &str, results_folder: Option<&Path>) {
    let audio = Path::new(audio_path);
    let files = [audio.to_path_buf(), sidecar_path(audio, results_folder)];
    for path in files.into_iter().chain(all_export_paths(audio, results_folder)) {
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "deleted"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot delete"),
        }
    }
}

/// Writes the configured exports of job `id`; returns the paths written.
pub fn write_exports(store: &Store, cfg: &Config, id: i64) -> Result<Vec<PathBuf>, ExportError> {
    if cfg.export_formats.is_empty() {
        return Ok(Vec::new());
    }
    let result = JobResult {
        job: store.job(id)?,
        segments: store.segments(id)?,
        speaker_turns: store.speaker_turns(id)?,
    };
    let audio = Path::new(&result.job.audio_path);
    let mut written = Vec::new();
    for name in &cfg.export_formats {
        // Validated at load: every name parses.
        let Some(format) = Format::parse(name) else { continue };
        let path = export_path(audio, cfg.results_folder.as_deref(), name);
        let text = result.render(format);
        crate::files::write_atomically(
            &path,
            |source| ExportError::Write { path: path.clone(), source },
            |w| {
                w.write_all(text.as_bytes())
                    .map_err(|source| ExportError::Write { path: path.clone(), source })
            },
        )?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_sit_beside_the_sidecar() {
        let audio = Path::new("uploads/meeting.m4a");
        assert_eq!(export_path(audio, None, "srt"), PathBuf::from("uploads/meeting.m4a.srt"));
        assert_eq!(export_path(audio, Some(Path::new("out")), "txt"), PathBuf::from("out/meeting.m4a.txt"));
        assert_eq!(all_export_paths(audio, None).len(), EXPORT_FORMATS.len());
    }
}

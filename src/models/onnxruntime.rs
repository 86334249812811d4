//! `diarized models install onnxruntime`: ONNX Runtime's CPU library for the diarization models
//! (see `diarize::runtime`), taken out of PyPI's `onnxruntime` wheel for this machine's Python
//! (pip checks the download against the index's hash). Without it, diarization runs in tract.

use std::path::{Path, PathBuf};

use crate::models::{ModelError, pip, write_atomically};

/// Catalogue name.
pub const NAME: &str = "onnxruntime";
/// The PyPI release the library comes from.
pub const VERSION: &str = "1.32.0";

/// The library's file name inside the wheel's `onnxruntime/capi/` and in the models folder.
fn file_name() -> String {
    format!("libonnxruntime.so.{VERSION}")
}

/// Where the library is installed inside the models folder.
pub fn library(models_dir: &Path) -> PathBuf {
    models_dir.join(NAME).join(file_name())
}

/// Installs the library unless it is there; returns its path.
pub fn install(models_dir: &Path) -> Result<PathBuf, ModelError> {
    let out = library(models_dir);
    if out.is_file() {
        return Ok(out);
    }
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return Err(ModelError::Fetch("the onnxruntime library is installed on x86-64 Linux only".into()));
    }
    let wheel = pip::download_wheel(NAME, VERSION, &models_dir.join("downloads"))?;
    write_atomically(&out, |w| {
        pip::extract_member(&wheel, &format!("onnxruntime/capi/{}", file_name()), w).map(|_| ())
    })?;
    Ok(out)
}

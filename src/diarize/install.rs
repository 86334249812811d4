//! `diarized models install diarization`: copies the committed ONNX models (and their licences)
//! from the repository's `models/` folder into `<models_dir>/diarization/`, verifying
//! `models/SHA256SUMS`. Idempotent: files already present with the right checksum are kept.

use std::path::{Path, PathBuf};

use crate::models::{ModelError, pip, write_atomically};

/// Catalogue name.
pub const NAME: &str = "diarization";
/// Environment variable that overrides where the committed model files are read from.
pub const SOURCE_ENV: &str = "DIARIZED_DIARIZATION_MODELS";

/// Folder of the installed diarization models inside the models folder.
pub fn install_dir(models_dir: &Path) -> PathBuf {
    models_dir.join(NAME)
}

/// The installed checksum list; it is written last, so its presence means a complete install.
pub fn installed_marker(models_dir: &Path) -> PathBuf {
    install_dir(models_dir).join("SHA256SUMS")
}

fn source_dir() -> PathBuf {
    std::env::var_os(SOURCE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
}

/// Installs from the default source (see [`SOURCE_ENV`]); returns the checksum list's path.
pub fn install(models_dir: &Path) -> Result<PathBuf, ModelError> {
    install_from(&source_dir(), models_dir)
}

/// Installs from `src` (a folder holding `SHA256SUMS` and the files it lists).
pub fn install_from(src: &Path, models_dir: &Path) -> Result<PathBuf, ModelError> {
    let sums_path = src.join("SHA256SUMS");
    let sums = std::fs::read_to_string(&sums_path).map_err(|e| ModelError::io(&sums_path, e))?;
    let dest = install_dir(models_dir);
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (hash, name) = line
            .split_once(char::is_whitespace)
            .map(|(h, n)| (h.trim(), n.trim().trim_start_matches('*')))
            .ok_or_else(|| ModelError::Format(format!("{}: bad line {line:?}", sums_path.display())))?;
        if name.contains("..") || Path::new(name).is_absolute() {
            return Err(ModelError::Format(format!("{}: unsafe path {name:?}", sums_path.display())));
        }
        let target = dest.join(name);
        if target.is_file() && pip::verify_sha256(&target, hash).is_ok() {
            continue;
        }
        let from = src.join(name);
        pip::verify_sha256(&from, hash)?;
        write_atomically(&target, |out| {
            let mut f = std::fs::File::open(&from).map_err(|e| ModelError::io(&from, e))?;
            std::io::copy(&mut f, out).map(|_| ()).map_err(|e| ModelError::io(&from, e))
        })?;
        pip::verify_sha256(&target, hash)?;
    }
    let marker = installed_marker(models_dir);
    write_atomically(&marker, |out| {
        use std::io::Write;
        out.write_all(sums.as_bytes()).map_err(|e| ModelError::io(&marker, e))
    })?;
    Ok(marker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_verifies_and_is_idempotent() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("licenses")).unwrap();
        std::fs::write(src.path().join("a.onnx"), b"model bytes").unwrap();
        std::fs::write(src.path().join("licenses/L.txt"), b"licence").unwrap();
        let h = |p: &str| pip::sha256_file(&src.path().join(p)).unwrap();
        let sums = format!("{}  a.onnx\n{}  licenses/L.txt\n", h("a.onnx"), h("licenses/L.txt"));
        std::fs::write(src.path().join("SHA256SUMS"), sums).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let marker = install_from(src.path(), dest.path()).unwrap();
        assert!(marker.is_file());
        assert_eq!(std::fs::read(install_dir(dest.path()).join("a.onnx")).unwrap(), b"model bytes");
        install_from(src.path(), dest.path()).unwrap();
        // A corrupted source is refused.
        std::fs::write(src.path().join("a.onnx"), b"tampered").unwrap();
        std::fs::remove_file(install_dir(dest.path()).join("a.onnx")).unwrap();
        assert!(matches!(install_from(src.path(), dest.path()), Err(ModelError::Checksum { .. })));
    }

    #[test]
    fn committed_models_match_their_checksums() {
        let sums = std::fs::read_to_string(source_dir().join("SHA256SUMS")).unwrap();
        let mut checked = Vec::new();
        for line in sums.lines() {
            let (hash, name) = line.split_once("  ").unwrap();
            pip::verify_sha256(&source_dir().join(name), hash).unwrap();
            checked.push(name.to_string());
        }
        for model in ["segmentation-3.0.onnx", "campplus-192.onnx", "silero_vad_16k.onnx"] {
            assert!(checked.iter().any(|n| n == model), "{model} not in SHA256SUMS: {checked:?}");
        }
    }
}

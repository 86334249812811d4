//! Diarization falls back to tract when the installed ONNX Runtime library cannot be used.
//! (Its own process: ONNX Runtime is loaded once per process, and a failed load stays failed.)

use std::path::Path;

use diarized::diarize::PyannoteDiarizer;
use diarized::diarize::runtime::Engine;

#[test]
fn a_broken_onnx_runtime_library_leaves_diarization_to_tract() {
    let repo_models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let dir = tempfile::tempdir().unwrap();
    for f in [
        diarized::diarize::SEGMENTATION_FILE,
        diarized::diarize::SEGMENTATION_INT8_FILE,
        diarized::diarize::EMBEDDING_FILE,
    ] {
        std::os::unix::fs::symlink(repo_models.join(f), dir.path().join(f)).unwrap();
    }
    let lib = diarized::models::onnxruntime::library(dir.path());
    std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
    std::fs::write(&lib, b"not a shared library").unwrap();
    assert_eq!(Engine::for_models_dir(dir.path()), Engine::OnnxRuntime(lib.clone()));

    let err =
        PyannoteDiarizer::load_with(dir.path(), 1, Engine::OnnxRuntime(lib)).err().expect("broken library");
    assert!(err.message.contains("ONNX Runtime"), "{}", err.message);

    let d = PyannoteDiarizer::load(dir.path(), 1).expect("tract takes over");
    assert_eq!(d.engine(), &Engine::Tract);
    // tract cannot run the 8-bit-LSTM export beside it.
    assert!(d.segmentation_file().ends_with(diarized::diarize::SEGMENTATION_FILE));
}

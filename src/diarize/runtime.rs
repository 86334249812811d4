//! The engine that runs the two ONNX models: ONNX Runtime when its library is installed
//! (`diarized models install onnxruntime`, taken out of PyPI's `onnxruntime` wheel and loaded at
//! run time), otherwise tract, built in. Same models, same results (identical DER on every set
//! of bench/diarize.md), about twice as fast: the 5-minute meeting diarizes in 2.9–3.5 s
//! instead of 6.2–7.3 s at 2 threads.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use super::DiarizeError;

/// Which engine runs the models.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Engine {
    /// tract, compiled into the binary.
    Tract,
    /// ONNX Runtime from this shared library.
    OnnxRuntime(PathBuf),
}

impl Engine {
    /// ONNX Runtime when the models folder `models_dir` has its library, else tract.
    pub fn for_models_dir(models_dir: &Path) -> Self {
        // Absolute: a relative library path is looked up beside the executable first.
        let lib = crate::models::onnxruntime::library(models_dir);
        let lib = std::path::absolute(&lib).unwrap_or(lib);
        if lib.is_file() { Engine::OnnxRuntime(lib) } else { Engine::Tract }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Tract => f.write_str("tract"),
            Engine::OnnxRuntime(lib) => write!(f, "ONNX Runtime ({})", lib.display()),
        }
    }
}

/// Loads the ONNX Runtime library once per process; the first library asked for is the one
/// every later session uses.
fn environment(lib: &Path) -> Result<&'static Environment, DiarizeError> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        let builder = ort::init_from(lib).map_err(|e| format!("{}: {e}", lib.display()))?;
        builder.with_name("diarized").build().map_err(|e| format!("{}: {e}", lib.display()))
    });
    env.as_ref().map_err(|e| DiarizeError::Runtime(e.clone()))
}

/// An ONNX model in ONNX Runtime, with one single-threaded session per concurrent caller (a
/// session runs one call at a time; diarization runs windows on several threads).
pub struct OrtModel {
    sessions: Vec<Mutex<Session>>,
}

impl OrtModel {
    /// Loads `model` into `sessions` (≥ 1) sessions of the runtime `lib`.
    pub fn load(lib: &Path, model: &Path, sessions: usize) -> Result<Self, DiarizeError> {
        let env = environment(lib)?;
        let session = || -> ort::Result<Session> {
            Session::builder(env)?
                .with_optimization_level(GraphOptimizationLevel::Level3)?
                .with_intra_threads(1)?
                .with_inter_threads(1)?
                .commit_from_file(model)
        };
        let sessions = (0..sessions.max(1))
            .map(|_| session().map(Mutex::new))
            .collect::<ort::Result<_>>()
            .map_err(|e| DiarizeError::Runtime(format!("{}: {e}", model.display())))?;
        Ok(Self { sessions })
    }

    /// Runs the model on f32 inputs given in the model's input order as (shape, values);
    /// returns its first output's shape and values.
    pub fn run(&self, inputs: &[(&[usize], &[f32])]) -> Result<(Vec<usize>, Vec<f32>), DiarizeError> {
        let err = |e: ort::Error| DiarizeError::Model(format!("ONNX Runtime: {e}"));
        let mut session = match self.sessions.iter().find_map(|s| s.try_lock().ok()) {
            Some(free) => free,
            None => self.sessions[0].lock().unwrap_or_else(|e| e.into_inner()),
        };
        let values = inputs
            .iter()
            .map(|&(shape, values)| TensorRef::from_array_view((shape, values)).map(Into::into))
            .collect::<Result<Vec<ort::session::SessionInputValue<'_>>, _>>()
            .map_err(err)?;
        let outputs = session.run(values.as_slice()).map_err(err)?;
        let (shape, values) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        let shape = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
        Ok((shape, values.to_vec()))
    }
}

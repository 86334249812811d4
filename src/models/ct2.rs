//! Reader for CTranslate2 `model.bin` files (the format faster-whisper models ship in).
//!
//! Layout, all little-endian: `u32` format version, spec name, `u32` revision, `u32` variable
//! count; per variable: name, `u8` rank, `u32` dims, `u8` dtype, `u32` byte count, data; then
//! `u32` alias count and (alias, target) name pairs. Strings are a `u16` length (including a
//! trailing NUL) followed by the bytes.

use std::path::Path;

use super::ModelError;

/// Element type of a CTranslate2 variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Dtype {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl Ct2Dtype {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Ct2Dtype::F32,
            1 => Ct2Dtype::I8,
            2 => Ct2Dtype::I16,
            3 => Ct2Dtype::I32,
            4 => Ct2Dtype::F16,
            5 => Ct2Dtype::Bf16,
            _ => return None,
        })
    }

    /// The on-disk code of this type.
    pub fn code(self) -> u8 {
        match self {
            Ct2Dtype::F32 => 0,
            Ct2Dtype::I8 => 1,
            Ct2Dtype::I16 => 2,
            Ct2Dtype::I32 => 3,
            Ct2Dtype::F16 => 4,
            Ct2Dtype::Bf16 => 5,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Ct2Dtype::I8 => 1,
            Ct2Dtype::I16 | Ct2Dtype::F16 | Ct2Dtype::Bf16 => 2,
            Ct2Dtype::F32 | Ct2Dtype::I32 => 4,
        }
    }
}

/// One named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Ct2Variable {
    pub name: String,
    /// Row-major dimensions, outermost first (empty for a scalar).
    pub dims: Vec<usize>,
    pub dtype: Ct2Dtype,
    /// Raw little-endian element bytes.
    pub data: Vec<u8>,
}

impl Ct2Variable {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// True for a zero-element tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements converted to f32 (floating types only).
    pub fn to_f32(&self) -> Result<Vec<f32>, ModelError> {
        let d = &self.data;
        Ok(match self.dtype {
            Ct2Dtype::F32 => {
                d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            Ct2Dtype::F16 => {
                d.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            Ct2Dtype::Bf16 => {
                d.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            other => {
                return Err(ModelError::Format(format!(
                    "{}: expected a float tensor, found {other:?}",
                    self.name
                )));
            }
        })
    }

    /// Value of an integer scalar (e.g. `encoder/num_heads`).
    pub fn scalar_int(&self) -> Result<i64, ModelError> {
        let d = &self.data;
        let bad = || ModelError::Format(format!("{}: not an integer scalar", self.name));
        if self.len() != 1 {
            return Err(bad());
        }
        Ok(match self.dtype {
            Ct2Dtype::I8 => d[0] as i8 as i64,
            Ct2Dtype::I16 => i16::from_le_bytes([d[0], d[1]]) as i64,
            Ct2Dtype::I32 => i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64,
            _ => return Err(bad()),
        })
    }
}

/// A whole CTranslate2 model file.
#[derive(Debug, Clone, PartialEq)]
pub struct Ct2Model {
    pub version: u32,
    /// e.g. `WhisperSpec`.
    pub spec: String,
    pub revision: u32,
    pub variables: Vec<Ct2Variable>,
    /// (alias, target) pairs, e.g. the output projection sharing the token embedding.
    pub aliases: Vec<(String, String)>,
}

impl Ct2Model {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::parse(&bytes).map_err(|e| match e {
            ModelError::Format(m) => ModelError::Format(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses an in-memory `model.bin`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ModelError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u32()?;
        if !(3..=6).contains(&version) {
            return Err(ModelError::Format(format!("unsupported CTranslate2 format version {version}")));
        }
        let spec = r.string()?;
        let revision = r.u32()?;
        let count = r.u32()? as usize;
        let mut variables = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let name = r.string()?;
            let rank = r.take(1)?[0] as usize;
            let dims = (0..rank).map(|_| r.u32().map(|d| d as usize)).collect::<Result<Vec<_>, _>>()?;
            let code = r.take(1)?[0];
            let dtype = Ct2Dtype::from_code(code)
                .ok_or_else(|| ModelError::Format(format!("{name}: unknown dtype code {code}")))?;
            let nbytes = r.u32()? as usize;
            let expected = dims.iter().product::<usize>() * dtype.size();
            if nbytes != expected {
                return Err(ModelError::Format(format!("{name}: {nbytes} bytes for {dims:?} {dtype:?}")));
            }
            let data = r.take(nbytes)?.to_vec();
            variables.push(Ct2Variable { name, dims, dtype, data });
        }
        let mut aliases = Vec::new();
        if r.pos < bytes.len() {
            let n = r.u32()?;
            for _ in 0..n {
                aliases.push((r.string()?, r.string()?));
            }
        }
        Ok(Ct2Model { version, spec, revision, variables, aliases })
    }

    /// The variable called `name` (aliases resolved).
    pub fn get(&self, name: &str) -> Result<&Ct2Variable, ModelError> {
        let target = self.aliases.iter().find(|(a, _)| a == name).map_or(name, |(_, t)| t.as_str());
        self.variables
            .iter()
            .find(|v| v.name == target)
            .ok_or_else(|| ModelError::Format(format!("CTranslate2 model has no variable {name}")))
    }

    /// Serialises the model in the same format (used to build test fixtures).
    pub fn to_bytes(&self) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&self.version.to_le_bytes());
        string(&mut out, &self.spec);
        out.extend_from_slice(&self.revision.to_le_bytes());
        out.extend_from_slice(&(self.variables.len() as u32).to_le_bytes());
        for v in &self.variables {
            string(&mut out, &v.name);
            out.push(v.dims.len() as u8);
            for d in &v.dims {
                out.extend_from_slice(&(*d as u32).to_le_bytes());
            }
            out.push(v.dtype.code());
            out.extend_from_slice(&(v.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&v.data);
        }
        out.extend_from_slice(&(self.aliases.len() as u32).to_le_bytes());
        for (a, t) in &self.aliases {
            string(&mut out, a);
            string(&mut out, t);
        }
        out
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            ModelError::Format(format!("truncated CTranslate2 file (need {n} bytes at offset {})", self.pos))
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, ModelError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, ModelError> {
        let b = self.take(2)?;
        let n = u16::from_le_bytes([b[0], b[1]]) as usize;
        let raw = self.take(n)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec())
            .map_err(|_| ModelError::Format("non-UTF-8 name in CTranslate2 file".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_resolves_aliases() {
        let m = Ct2Model {
            version: 6,
            spec: "WhisperSpec".into(),
            revision: 3,
            variables: vec![
                Ct2Variable {
                    name: "a/weight".into(),
                    dims: vec![2, 2],
                    dtype: Ct2Dtype::F16,
                    data: [1.0f32, -2.0, 0.5, 3.0]
                        .iter()
                        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                        .collect(),
                },
                Ct2Variable {
                    name: "n".into(),
                    dims: vec![],
                    dtype: Ct2Dtype::I16,
                    data: 6i16.to_le_bytes().to_vec(),
                },
            ],
            aliases: vec![("b/weight".into(), "a/weight".into())],
        };
        let parsed = Ct2Model::parse(&m.to_bytes()).unwrap();
        assert_eq!(parsed, m);
        assert_eq!(parsed.get("b/weight").unwrap().to_f32().unwrap(), vec![1.0, -2.0, 0.5, 3.0]);
        assert_eq!(parsed.get("n").unwrap().scalar_int().unwrap(), 6);
        assert!(Ct2Model::parse(&m.to_bytes()[..40]).is_err());
    }
}

//! Known-speaker routes: `/api/speakers[/<id>[/samples]]`, `PUT /api/jobs/<id>/speakers`, and
//! the ad-hoc `known_speaker_names[]` / `known_speaker_references[]` fields of a job upload.
//! Clips are streamed to hidden temp files in the upload folder (removed on every path) and
//! decoded one at a time; at most 30 s of audio each.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tiny_http::{Method, Request};

use super::{
    Api, ApiError, ApiResult, BodyStream, Reply, TempFile, header, limits, multipart_error, sanitize_filename,
};
use crate::speakers::{MAX_CLIP_S, SpeakerError, VoiceEmbedder};
use crate::store::NewPrint;

/// Most clips in one request.
const MAX_CLIPS: usize = 8;
/// Most ad-hoc speakers per job (as OpenAI's API).
pub(super) const MAX_REFERENCES: usize = 4;
/// Longest `data:` URL of a reference (base64 of a 30 s clip with room to spare).
const MAX_DATA_URL: usize = 8 << 20;

impl From<SpeakerError> for ApiError {
    fn from(e: SpeakerError) -> Self {
        match e {
            SpeakerError::Model(m) => ApiError::Unavailable {
                message: format!("speaker model unavailable: {m}"),
                retry_after_s: 60,
            },
            SpeakerError::Audio(m) => ApiError::Unsupported(m),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

/// The voice models, loaded on first use and shared by the request threads.
#[derive(Default)]
pub struct VoiceModels(Mutex<Option<Arc<VoiceEmbedder>>>);

impl VoiceModels {
    fn get(&self, models_dir: &Path) -> Result<Arc<VoiceEmbedder>, ApiError> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = slot.as_ref() {
            return Ok(Arc::clone(e));
        }
        let loaded = Arc::new(VoiceEmbedder::load(models_dir)?);
        *slot = Some(Arc::clone(&loaded));
        Ok(loaded)
    }
}

/// A received clip: its name (for messages and the sample's source) and its temp file.
struct Clip {
    name: String,
    file: TempFile,
}

impl Clip {
    fn path(&self) -> &Path {
        self.file.0.as_deref().unwrap_or(Path::new(""))
    }
}

/// A new hidden temp file for a clip in the upload folder.
fn temp_clip(folder: &Path, ext: &str) -> Result<(PathBuf, TempFile), ApiError> {
    std::fs::create_dir_all(folder)?;
    let path = folder.join(format!(".{}.upload.{ext}", uuid::Uuid::new_v4().simple()));
    Ok((path.clone(), TempFile(Some(path))))
}

/// Streams a file part to a temp file, at most `limit` bytes.
async fn receive_clip(
    field: &mut multer::Field<'_>,
    folder: &Path,
    limit: u64,
    allowed: &dyn Fn(&str) -> bool,
) -> Result<Clip, ApiError> {
    let name = sanitize_filename(field.file_name().unwrap_or_default());
    let ext = Path::new(&name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if !allowed(&ext) {
        return Err(ApiError::Unsupported(format!("clip {name:?}: file type {ext:?} is not allowed")));
    }
    let (path, file) = temp_clip(folder, &ext)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut bytes = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
        bytes += chunk.len() as u64;
        if bytes > limit {
            return Err(super::too_large(limit));
        }
        out.write_all(&chunk)?;
    }
    out.flush()?;
    if bytes == 0 {
        return Err(ApiError::BadRequest(format!("clip {name:?} is empty")));
    }
    Ok(Clip { name, file })
}

/// Reads a `data:audio/…;base64,…` URL field into a temp file.
async fn receive_data_url(
    field: &mut multer::Field<'_>,
    folder: &Path,
    limit: u64,
    index: usize,
) -> Result<Clip, ApiError> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
        if text.len() + chunk.len() > MAX_DATA_URL {
            return Err(ApiError::TooLarge(format!(
                "a known_speaker_references data URL is over {MAX_DATA_URL} bytes"
            )));
        }
        text.extend_from_slice(&chunk);
    }
    let name = format!("known_speaker_references[{index}]");
    let text = String::from_utf8_lossy(&text);
    let bad = || ApiError::BadRequest(format!("{name} must be an audio file or a data:audio/…;base64, URL"));
    let (head, data) = text.trim().strip_prefix("data:").and_then(|t| t.split_once(',')).ok_or_else(bad)?;
    let mime = head.strip_suffix(";base64").ok_or_else(bad)?;
    let ext = match mime.split(';').next().unwrap_or_default() {
        "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => "wav",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" | "audio/aac" => "m4a",
        "audio/ogg" | "audio/opus" => "ogg",
        "audio/webm" => "webm",
        other => return Err(ApiError::Unsupported(format!("{name}: audio type {other:?} is not accepted"))),
    };
    let bytes = base64_decode(data).ok_or_else(|| ApiError::BadRequest(format!("{name}: invalid base64")))?;
    let (path, file) = temp_clip(folder, ext)?;
    std::fs::write(&path, bytes)?;
    Ok(Clip { name, file })
}

/// Standard base64 (padding optional, whitespace ignored).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let digits = digits.strip_suffix(b"==").or_else(|| digits.strip_suffix(b"=")).unwrap_or(&digits);
    if digits.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in group.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..group.len()]);
    }
    Some(out)
}

/// The ad-hoc speakers of one upload: names and clips, paired in order.
#[derive(Default)]
pub(super) struct References {
    names: Vec<String>,
    clips: Vec<Clip>,
}

impl References {
    /// Whether a multipart field belongs to the ad-hoc speakers.
    pub(super) fn accepts(field: &str) -> bool {
        matches!(
            field,
            "known_speaker_names[]"
                | "known_speaker_names"
                | "known_speaker_references[]"
                | "known_speaker_references"
        )
    }

    /// Takes one such field.
    pub(super) async fn receive(
        &mut self,
        field: &mut multer::Field<'_>,
        folder: &Path,
        limit: u64,
        allowed: &dyn Fn(&str) -> bool,
    ) -> Result<(), ApiError> {
        let is_name = field.name().is_some_and(|n| n.starts_with("known_speaker_names"));
        if (if is_name { self.names.len() } else { self.clips.len() }) >= MAX_REFERENCES {
            return Err(ApiError::BadRequest(format!("at most {MAX_REFERENCES} known speakers per job")));
        }
        if is_name {
            let text = limits::field_text(field, "known_speaker_names[]", limit).await?;
            self.names.push(crate::speakers::check_name(&text)?);
        } else if field.file_name().is_some() {
            self.clips.push(receive_clip(field, folder, limit, allowed).await?);
        } else {
            let index = self.clips.len();
            self.clips.push(receive_data_url(field, folder, limit, index).await?);
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.names.is_empty() && self.clips.is_empty()
    }
}

impl Api {
    /// `/api/speakers[/<id>[/samples]]`.
    pub(super) fn speakers_route(&self, req: &mut Request, method: &Method, rest: &[&str]) -> ApiResult {
        match rest {
            [] => match method {
                Method::Get => Ok(Reply::json(200, &self.store.people()?)),
                Method::Post => self.create_speaker(req),
                _ => Err(ApiError::MethodNotAllowed("GET, POST")),
            },
            [id, more @ ..] => {
                let id =
                    id.parse::<i64>().ok().filter(|&id| id > 0).ok_or_else(|| {
                        ApiError::NotFound(format!("speaker {:?} not found", super::clip(id)))
                    })?;
                match (more, method) {
                    ([], Method::Get) => Ok(Reply::json(200, &self.store.person(id)?)),
                    ([], Method::Put) => self.rename_speaker(req, id),
                    ([], Method::Delete) => {
                        self.store.delete_person(id)?;
                        Ok(Reply::json(200, &json!({ "deleted": 1 })))
                    }
                    ([], _) => Err(ApiError::MethodNotAllowed("GET, PUT, DELETE")),
                    (["samples"], Method::Post) => self.add_samples(req, id),
                    (["samples"], _) => Err(ApiError::MethodNotAllowed("POST")),
                    _ => Err(ApiError::NotFound(format!(
                        "no route for speaker {id}/{}",
                        super::clip(&more.join("/"))
                    ))),
                }
            }
        }
    }

    /// `POST /api/speakers`: multipart `name` and one or more `file` clips → 201.
    fn create_speaker(&self, req: &mut Request) -> ApiResult {
        let (name, clips) = self.receive_clips(req)?;
        let name = crate::speakers::check_name(
            &name.ok_or_else(|| ApiError::BadRequest("multipart field 'name' is required".into()))?,
        )?;
        if self.store.person_by_name(&name)?.is_some() {
            return Err(ApiError::Conflict(format!("a speaker named {name:?} already exists")));
        }
        let prints = self.prints(&clips)?;
        let person = self.store.create_person(&name, &prints)?;
        tracing::info!(speaker = person.id, name = %person.name, samples = prints.len(), "speaker enrolled");
        Ok(Reply::json(201, &person))
    }

    /// `POST /api/speakers/<id>/samples`: more clips for a person → 201.
    fn add_samples(&self, req: &mut Request, id: i64) -> ApiResult {
        self.store.person(id)?;
        let (_, clips) = self.receive_clips(req)?;
        let prints = self.prints(&clips)?;
        Ok(Reply::json(201, &self.store.add_prints(id, &prints)?))
    }

    /// `PUT /api/speakers/<id>` with `{"name": "…"}`.
    fn rename_speaker(&self, req: &mut Request, id: i64) -> ApiResult {
        let body = read_json(req)?;
        let name = match body.get("name") {
            Some(Value::String(n)) if body.as_object().is_some_and(|o| o.len() == 1) => n,
            _ => return Err(ApiError::BadRequest("body must be {\"name\": \"…\"}".into())),
        };
        let name = crate::speakers::check_name(name)?;
        Ok(Reply::json(200, &self.store.rename_person(id, &name)?))
    }

    /// Receives a multipart body of a `name` and `file` clips (at least one).
    fn receive_clips(&self, req: &mut Request) -> Result<(Option<String>, Vec<Clip>), ApiError> {
        let cfg = self.config.get();
        if req.body_length().is_some_and(|len| len as u64 > cfg.max_content_length) {
            return Err(super::too_large(cfg.max_content_length));
        }
        let _slot = self.slots.upload(cfg.max_uploads)?;
        let content_type = header(req, "Content-Type").unwrap_or_default();
        let boundary = multer::parse_boundary(&content_type).map_err(|_| {
            ApiError::BadRequest("expected a multipart/form-data body with 'file' clips".into())
        })?;
        let limit = cfg.max_content_length;
        let constraints = multer::Constraints::new()
            .size_limit(multer::SizeLimit::new().whole_stream(limit.saturating_add(64 * 1024)));
        let mut multipart = multer::Multipart::with_constraints(
            BodyStream { request: req, yielded: false },
            boundary,
            constraints,
        );
        let allowed = |ext: &str| cfg.extension_allowed(ext);
        let (name, clips) = futures_executor::block_on(async {
            let mut name = None;
            let mut clips = Vec::new();
            while let Some(mut field) = multipart.next_field().await.map_err(|e| multipart_error(e, limit))? {
                match field.name().unwrap_or_default() {
                    "name" => name = Some(limits::field_text(&mut field, "name", limit).await?),
                    "file" | "file[]" if clips.len() >= MAX_CLIPS => {
                        return Err(ApiError::BadRequest(format!("at most {MAX_CLIPS} clips per request")));
                    }
                    "file" | "file[]" => {
                        clips.push(receive_clip(&mut field, &cfg.upload_folder, limit, &allowed).await?)
                    }
                    _ => while field.chunk().await.map_err(|e| multipart_error(e, limit))?.is_some() {},
                }
            }
            Ok::<_, ApiError>((name, clips))
        })?;
        if clips.is_empty() {
            return Err(ApiError::BadRequest("at least one 'file' clip of the speaker is required".into()));
        }
        Ok((name, clips))
    }

    /// Voiceprints of clips, each checked (length, speech, one voice); the first bad clip is
    /// the error, naming it.
    fn prints(&self, clips: &[Clip]) -> Result<Vec<NewPrint>, ApiError> {
        let models = self.voices.get(&self.config.get().models_dir)?;
        clips
            .iter()
            .map(|clip| {
                let label = |e: ApiError| match e {
                    ApiError::BadRequest(m) => ApiError::BadRequest(format!("{}: {m}", clip.name)),
                    ApiError::Unsupported(m) => ApiError::Unsupported(format!("{}: {m}", clip.name)),
                    other => other,
                };
                let path = clip.path();
                let audio = match crate::audio::probe_file(path).and_then(|i| i.check_duration(MAX_CLIP_S)) {
                    Err(crate::audio::AudioError::TooLong { seconds, .. }) => {
                        Err(SpeakerError::Length(seconds))
                    }
                    Err(e) => Err(SpeakerError::Audio(e.to_string())),
                    Ok(()) => {
                        crate::audio::decode_file_limited(path, MAX_CLIP_S + 1.0).map_err(|e| match e {
                            crate::audio::AudioError::LongerThanDeclared { limit } => {
                                SpeakerError::Length(limit)
                            }
                            e => SpeakerError::Audio(e.to_string()),
                        })
                    }
                }
                .map_err(|e| label(e.into()))?;
                let embedding = models.voiceprint(&audio).map_err(|e| label(e.into()))?;
                Ok(NewPrint { embedding, source: clip.name.clone(), seconds: Some(audio.duration_s()) })
            })
            .collect()
    }

    /// Voiceprints of an upload's ad-hoc speakers, paired by order (400 if the counts differ).
    pub(super) fn reference_prints(&self, refs: References) -> Result<Vec<(String, Vec<f32>)>, ApiError> {
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        if refs.names.len() != refs.clips.len() {
            return Err(ApiError::BadRequest(format!(
                "{} known_speaker_names[] but {} known_speaker_references[]; give one reference per name",
                refs.names.len(),
                refs.clips.len()
            )));
        }
        let prints = self.prints(&refs.clips)?;
        Ok(refs.names.into_iter().zip(prints).map(|(n, p)| (n, p.embedding)).collect())
    }

    /// `PUT /api/jobs/<id>/speakers`: `{"Speaker01": "Alice", …, "enroll": true}` renames the
    /// job's speakers (a name or `null` to go back to the label); with `enroll` each named
    /// speaker's voice is added to that person (created if missing).
    pub(super) fn job_speakers(&self, req: &mut Request, method: &Method, id: i64) -> ApiResult {
        match method {
            Method::Get => return Ok(Reply::json(200, &self.store.job(id)?.speaker_names)),
            Method::Put => {}
            _ => return Err(ApiError::MethodNotAllowed("GET, PUT")),
        }
        let job = self.store.job(id)?;
        if matches!(job.status, crate::model::Status::Queued | crate::model::Status::Processing) {
            return Err(ApiError::Conflict(format!(
                "job {id} is {}; rename when it has ended",
                job.status.as_str()
            )));
        }
        let Value::Object(map) = read_json(req)? else {
            return Err(ApiError::BadRequest("body must be a JSON object of label → name".into()));
        };
        let mut enroll = false;
        let mut renames = Vec::new();
        for (key, v) in map {
            if key == "enroll" {
                enroll = v
                    .as_bool()
                    .ok_or_else(|| ApiError::BadRequest("\"enroll\" must be true or false".into()))?;
                continue;
            }
            match v {
                Value::String(name) => renames.push((key, Some(name))),
                Value::Null => renames.push((key, None)),
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "the name for {key:?} must be a string or null"
                    )));
                }
            }
        }
        if renames.is_empty() {
            return Err(ApiError::BadRequest("no speaker to rename".into()));
        }
        let mut result = self.store.named_result(id)?;
        let done = result.rename(&renames)?;
        let mut enrolled: Vec<(String, NewPrint)> = Vec::new();
        if enroll {
            for (label, name) in &done {
                let Some(name) = name else { continue };
                let voice = self.store.job_voice(id, label)?.ok_or_else(|| {
                    ApiError::Conflict(format!(
                        "job {id} has no stored voice for {label}; it cannot be enrolled"
                    ))
                })?;
                enrolled.push((
                    name.clone(),
                    NewPrint { embedding: voice, source: format!("job {id} {label}"), seconds: None },
                ));
            }
        }
        self.store.save_named_result(id, &result)?;
        for (name, print) in enrolled {
            let person = self.store.enroll(&name, std::slice::from_ref(&print))?;
            tracing::info!(job = id, speaker = person.id, %name, "job speaker enrolled");
        }
        self.queue.write_sidecar(id, self.config.get().results_folder.as_deref());
        Ok(Reply::json(200, &self.store.job(id)?))
    }
}

/// A JSON body of at most 1 MiB.
fn read_json(req: &mut Request) -> Result<Value, ApiError> {
    let mut body = String::new();
    req.as_reader()
        .take(1 << 20)
        .read_to_string(&mut body)
        .map_err(|e| ApiError::BadRequest(format!("unreadable body: {e}")))?;
    serde_json::from_str(&body).map_err(|e| ApiError::BadRequest(format!("body is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_reference_fields() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVs\nbG8h").unwrap(), b"hello!");
        assert!(base64_decode("a$==").is_none() && base64_decode("a").is_none());
        assert!(
            References::accepts("known_speaker_names[]") && References::accepts("known_speaker_references")
        );
        assert!(!References::accepts("file"));
    }

    #[test]
    fn speaker_errors_map_to_statuses() {
        assert_eq!(ApiError::from(SpeakerError::NoSpeech(0.0)).status(), 400);
        assert_eq!(ApiError::from(SpeakerError::SeveralVoices(2)).status(), 400);
        assert_eq!(ApiError::from(SpeakerError::Length(40.0)).status(), 400);
        assert_eq!(ApiError::from(SpeakerError::Audio("x".into())).status(), 415);
        assert_eq!(ApiError::from(SpeakerError::Model("x".into())).status(), 503);
    }
}

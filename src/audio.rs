//! Decoding every accepted format to 16 kHz mono (symphonia; libopus for Opus), held as 16-bit
//! PCM and read by the stages as f32 a window at a time.

use std::borrow::Cow;
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rubato::{FftFixedIn, Resampler};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

/// Sample rate of every buffer handed to the stages.
pub const SAMPLE_RATE: u32 = 16_000;

/// Accepted input sample rates. Outside them a header is hostile or broken: the resampler's
/// buffers grow with the rate's ratio to 16 kHz (a 1 KB WAV claiming 0xFFFFFFF0 Hz or 1 Hz
/// would allocate gigabytes).
pub const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 4_000..=384_000;

/// Most channels accepted (down-mixing reads every channel of every frame).
pub const MAX_CHANNELS: usize = 32;

/// Scale between f32 samples in [-1, 1] and 16-bit PCM (whisper.cpp's and Kaldi's).
const PCM_SCALE: f32 = 32768.0;

/// Decoded audio: 16 kHz, mono, held as 16-bit PCM — half the memory of f32 (a 4-hour file is
/// 0.46 GB, not 0.92), and no loss for sources that are 16-bit or compressed anyway. Stages
/// read f32 in [-1, 1] a window at a time ([`Samples::window`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Audio {
    pcm: Vec<i16>,
}

impl Audio {
    /// Audio from f32 samples in [-1, 1] (louder ones are clipped).
    pub fn from_f32(samples: &[f32]) -> Self {
        let mut pcm = Vec::with_capacity(samples.len());
        push_f32(&mut pcm, samples);
        Self { pcm }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.pcm.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.pcm.is_empty()
    }

    /// Length in seconds.
    pub fn duration_s(&self) -> f64 {
        self.pcm.len() as f64 / SAMPLE_RATE as f64
    }

    /// The samples of `range` as f32, appended to `out`.
    pub fn extend_f32(&self, range: Range<usize>, out: &mut Vec<f32>) {
        out.extend(self.pcm[range].iter().map(|&x| f32::from(x) / PCM_SCALE));
    }

    /// All samples as f32 (a copy twice the size of the audio: for short clips).
    pub fn to_f32(&self) -> Vec<f32> {
        self.window(0..self.len()).into_owned()
    }

    /// The 16-bit samples.
    pub fn pcm16(&self) -> &[i16] {
        &self.pcm
    }
}

/// Appends f32 samples as 16-bit PCM (rounded; out-of-range values saturate, NaN becomes 0).
fn push_f32(pcm: &mut Vec<i16>, samples: &[f32]) {
    pcm.extend(samples.iter().map(|&x| (x * PCM_SCALE).round() as i16));
}

/// 16 kHz mono samples a stage can read a window at a time, whether held as f32 or as
/// [`Audio`]'s 16-bit PCM.
pub trait Samples: Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The samples of `range` as f32 in [-1, 1].
    fn window(&self, range: Range<usize>) -> Cow<'_, [f32]>;
}

impl Samples for [f32] {
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }
    fn window(&self, range: Range<usize>) -> Cow<'_, [f32]> {
        Cow::Borrowed(&self[range])
    }
}

impl Samples for Audio {
    fn len(&self) -> usize {
        self.pcm.len()
    }
    fn window(&self, range: Range<usize>) -> Cow<'_, [f32]> {
        let mut out = Vec::with_capacity(range.len());
        self.extend_f32(range, &mut out);
        Cow::Owned(out)
    }
}

/// Why a file could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("cannot open {0}: {1}")]
    Open(String, std::io::Error),
    #[error("not decodable audio: {0}")]
    Unsupported(String),
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error("audio is {seconds:.0} s long; the limit is {limit:.0} s (MAX_AUDIO_SECONDS)")]
    TooLong { seconds: f64, limit: f64 },
    #[error(
        "audio runs past the limit of {limit:.0} s (MAX_AUDIO_SECONDS) although its header said otherwise"
    )]
    LongerThanDeclared { limit: f64 },
}

/// Most seconds [`decode_file`] decodes (`MAX_AUDIO_SECONDS`; the daemon and `transcribe` set
/// it from the configuration). The upload check trusts the container's stated length, which a
/// file may lie about or lack; this bounds the decoded buffer (16 kHz f32: 230 MB per hour)
/// whatever the header says.
static MAX_DECODE_SECONDS: AtomicU64 = AtomicU64::new(14_400);

/// Sets the limit [`decode_file`] applies.
pub fn set_max_decode_seconds(seconds: u64) {
    MAX_DECODE_SECONDS.store(seconds, Ordering::Relaxed);
}

/// Rejects a sample rate or channel count no real recording has.
fn check_format(name: &str, rate: u32, channels: usize) -> Result<(), AudioError> {
    if !SAMPLE_RATES.contains(&rate) {
        return Err(AudioError::Unsupported(format!(
            "{name}: sample rate {rate} Hz is outside {}–{} Hz",
            SAMPLE_RATES.start(),
            SAMPLE_RATES.end()
        )));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(AudioError::Unsupported(format!(
            "{name}: {channels} channels (accepted: 1–{MAX_CHANNELS})"
        )));
    }
    Ok(())
}

/// What a quick look at a file found.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeInfo {
    pub sample_rate: u32,
    pub channels: usize,
    /// Length from the container's frame count, where it states one.
    pub duration_s: Option<f64>,
}

impl ProbeInfo {
    /// Rejects audio longer than `limit` seconds ([`AudioError::TooLong`]).
    pub fn check_duration(&self, limit: f64) -> Result<(), AudioError> {
        match self.duration_s {
            Some(seconds) if seconds > limit => Err(AudioError::TooLong { seconds, limit }),
            _ => Ok(()),
        }
    }
}

fn codecs() -> &'static CodecRegistry {
    static REGISTRY: OnceLock<CodecRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut registry);
        registry.register_audio_decoder::<symphonia_adapter_libopus::OpusDecoder>();
        registry
    })
}

/// An open file with its audio track's decoder.
struct Source {
    name: String,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    /// Frames stated by the container, if any.
    num_frames: Option<u64>,
}

impl Source {
    fn open(path: &Path) -> Result<Self, AudioError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| AudioError::Open(name.clone(), e))?;
        let mss = MediaSourceStream::new(Box::new(file), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let format = symphonia::default::get_probe()
            .probe(&hint, mss, FormatOptions::default(), MetadataOptions::default())
            .map_err(|e| AudioError::Unsupported(format!("{name}: unknown container ({e})")))?;
        let track = format
            .default_track(TrackType::Audio)
            .ok_or_else(|| AudioError::Unsupported(format!("{name}: no audio track")))?;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| AudioError::Unsupported(format!("{name}: no audio codec parameters")))?;
        // Checked before a decoder sizes its buffers from these values.
        if let Some(rate) = params.sample_rate {
            check_format(&name, rate, params.channels.as_ref().map_or(1, |c| c.count()))?;
        }
        let decoder = codecs()
            .make_audio_decoder(params, &AudioDecoderOptions::default())
            .map_err(|e| AudioError::Unsupported(format!("{name}: unsupported codec ({e})")))?;
        let (track_id, num_frames) = (track.id, track.num_frames);
        Ok(Self { name, format, decoder, track_id, num_frames })
    }

    /// Decodes the next packet of our track and hands its frames, down-mixed to mono, to `sink`.
    /// Returns the packet's sample rate, or `None` at the end of the stream.
    fn next_mono(&mut self, sink: &mut Vec<f32>, scratch: &mut Vec<f32>) -> Result<Option<u32>, AudioError> {
        loop {
            let packet = match self.format.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(None),
                // Truncated files end with an I/O error: keep what was decoded.
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(None);
                }
                Err(e) => return Err(AudioError::Decode(e.to_string())),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            let buf = match self.decoder.decode(&packet) {
                Ok(buf) => buf,
                // A corrupt packet is skipped, as players do.
                Err(SymError::DecodeError(_)) | Err(SymError::IoError(_)) => continue,
                Err(e) => return Err(AudioError::Decode(e.to_string())),
            };
            let channels = buf.spec().channels().count().max(1);
            let rate = buf.spec().rate();
            check_format(&self.name, rate, channels)?;
            scratch.clear();
            buf.copy_to_vec_interleaved(scratch);
            sink.extend(scratch.chunks_exact(channels).map(|f| f.iter().sum::<f32>() / channels as f32));
            return Ok(Some(rate));
        }
    }
}

/// Checks that `path` is audio we can decode: opens the container and decodes the first packet.
pub fn probe_file(path: &Path) -> Result<ProbeInfo, AudioError> {
    let mut src = Source::open(path)?;
    let mut mono = Vec::new();
    let mut scratch = Vec::new();
    for _ in 0..64 {
        match src.next_mono(&mut mono, &mut scratch)? {
            Some(rate) if !mono.is_empty() => {
                let channels = scratch.len() / (mono.len()).max(1);
                let duration_s = src.num_frames.map(|n| n as f64 / rate as f64);
                return Ok(ProbeInfo { sample_rate: rate, channels: channels.max(1), duration_s });
            }
            Some(_) => continue,
            None => break,
        }
    }
    Err(AudioError::Unsupported(format!("{}: no decodable audio", path.display())))
}

/// Decodes, down-mixes and resamples a whole file, at most the configured limit
/// ([`set_max_decode_seconds`]). Resampling streams, so only the 16 kHz 16-bit result is held
/// whole in memory.
pub fn decode_file(path: &Path) -> Result<Audio, AudioError> {
    decode_file_limited(path, MAX_DECODE_SECONDS.load(Ordering::Relaxed) as f64)
}

/// [`decode_file`] with an explicit limit: audio running past `max_seconds` is an error
/// ([`AudioError::LongerThanDeclared`]), so the result holds at most `max_seconds` of samples.
pub fn decode_file_limited(path: &Path, max_seconds: f64) -> Result<Audio, AudioError> {
    let mut src = Source::open(path)?;
    let mut pending = Vec::new();
    let mut scratch = Vec::new();
    let mut out = Vec::new();
    let mut resampler: Option<StreamResampler> = None;
    let mut length = Length::default();
    loop {
        let before = pending.len();
        let Some(rate) = src.next_mono(&mut pending, &mut scratch)? else { break };
        if length.add(pending.len() - before, rate) > max_seconds {
            return Err(AudioError::LongerThanDeclared { limit: max_seconds });
        }
        let rs = match &mut resampler {
            Some(rs) if rs.rate_in == rate => rs,
            _ => {
                if let Some(old) = resampler.take() {
                    old.finish(&mut Vec::new(), &mut out)?;
                }
                resampler.insert(StreamResampler::new(rate)?)
            }
        };
        rs.push(&mut pending, &mut out)?;
    }
    if let Some(rs) = resampler {
        rs.finish(&mut pending, &mut out)?;
    }
    if out.is_empty() {
        return Err(AudioError::Unsupported(format!("{}: no audio samples", path.display())));
    }
    out.shrink_to_fit();
    Ok(Audio { pcm: out })
}

/// Length decoded so far, counted in frames at each rate (float seconds summed per packet
/// drift past an exact limit).
#[derive(Default)]
struct Length {
    /// Seconds of the earlier stretches at other rates.
    earlier_s: f64,
    rate: u32,
    frames: u64,
}

impl Length {
    /// Adds `frames` at `rate`; returns the total in seconds.
    fn add(&mut self, frames: usize, rate: u32) -> f64 {
        if rate != self.rate {
            if self.rate > 0 {
                self.earlier_s += self.frames as f64 / f64::from(self.rate);
            }
            (self.rate, self.frames) = (rate, 0);
        }
        self.frames += frames as u64;
        self.earlier_s + self.frames as f64 / f64::from(rate)
    }
}

/// Chunked resampling of a mono stream to [`SAMPLE_RATE`], trimming the filter delay.
struct StreamResampler {
    rate_in: u32,
    inner: Option<FftFixedIn<f32>>,
    frames_in: u64,
    frames_out: u64,
    to_skip: usize,
}

const CHUNK: usize = 4096;

impl StreamResampler {
    fn new(rate_in: u32) -> Result<Self, AudioError> {
        let inner = if rate_in == SAMPLE_RATE {
            None
        } else {
            let r = FftFixedIn::new(rate_in as usize, SAMPLE_RATE as usize, CHUNK, 2, 1)
                .map_err(|e| AudioError::Decode(format!("resampler: {e}")))?;
            Some(r)
        };
        let to_skip = inner.as_ref().map_or(0, |r| r.output_delay());
        Ok(Self { rate_in, inner, frames_in: 0, frames_out: 0, to_skip })
    }

    /// Consumes whole chunks of `pending`, appending resampled audio to `out`.
    fn push(&mut self, pending: &mut Vec<f32>, out: &mut Vec<i16>) -> Result<(), AudioError> {
        let Some(r) = &mut self.inner else {
            self.frames_in += pending.len() as u64;
            push_f32(out, pending);
            pending.clear();
            return Ok(());
        };
        let mut used = 0;
        while pending.len() - used >= CHUNK {
            let res = r
                .process(&[&pending[used..used + CHUNK]], None)
                .map_err(|e| AudioError::Decode(format!("resampler: {e}")))?;
            used += CHUNK;
            self.frames_in += CHUNK as u64;
            Self::emit(&mut self.to_skip, &mut self.frames_out, &res[0], out);
        }
        pending.drain(..used);
        Ok(())
    }

    /// Flushes the tail and trims the output to the exact expected length.
    fn finish(mut self, pending: &mut Vec<f32>, out: &mut Vec<i16>) -> Result<(), AudioError> {
        self.push(pending, out)?;
        let Some(r) = &mut self.inner else { return Ok(()) };
        self.frames_in += pending.len() as u64;
        let expected = (self.frames_in * SAMPLE_RATE as u64).div_ceil(self.rate_in as u64);
        let start = out.len() as u64 - self.frames_out;
        let tail: &[f32] = pending;
        let mut first = true;
        while self.frames_out < expected {
            let input = if first { Some(&[tail][..]) } else { None };
            first = false;
            let res =
                r.process_partial(input, None).map_err(|e| AudioError::Decode(format!("resampler: {e}")))?;
            if res[0].is_empty() {
                break;
            }
            Self::emit(&mut self.to_skip, &mut self.frames_out, &res[0], out);
        }
        pending.clear();
        out.truncate((start + expected.min(self.frames_out)) as usize);
        Ok(())
    }

    fn emit(to_skip: &mut usize, frames_out: &mut u64, chunk: &[f32], out: &mut Vec<i16>) {
        let skip = (*to_skip).min(chunk.len());
        *to_skip -= skip;
        push_f32(out, &chunk[skip..]);
        *frames_out += (chunk.len() - skip) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures").join(name)
    }

    #[test]
    fn every_jfk_format_decodes_to_eleven_seconds() {
        let reference = decode_file(&fixture("jfk.wav")).unwrap();
        assert!((reference.duration_s() - 11.0).abs() < 0.05, "wav: {}", reference.duration_s());
        let ref_rms = rms(&reference.to_f32());
        for name in ["jfk.mp3", "jfk.m4a", "jfk.ogg", "jfk.opus.ogg", "jfk.webm"] {
            let audio = decode_file(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let d = audio.duration_s();
            assert!((d - 11.0).abs() < 0.15, "{name}: {d} s");
            // Same speech, same loudness (within lossy-codec tolerance).
            let r = rms(&audio.to_f32());
            assert!((r / ref_rms - 1.0).abs() < 0.2, "{name}: rms {r} vs {ref_rms}");
        }
    }

    #[test]
    fn float_and_stereo_wavs_decode() {
        let f32_wav = decode_file(&fixture("ami_dev00.wav")).unwrap();
        assert!((f32_wav.duration_s() - 30.0).abs() < 0.1, "{}", f32_wav.duration_s());
        assert!(rms(&f32_wav.to_f32()) > 0.001);
        let stereo = decode_file(&fixture("stereo_diarization.wav")).unwrap();
        assert!((stereo.duration_s() - 5.0).abs() < 0.2, "{}", stereo.duration_s());
        assert_eq!(probe_file(&fixture("stereo_diarization.wav")).unwrap().channels, 2);
    }

    #[test]
    fn resampled_tone_keeps_its_frequency() {
        // 440 Hz at 44.1 kHz → 16 kHz: count zero crossings over one second.
        let n = 44_100 * 2;
        let mut pending: Vec<f32> =
            (0..n).map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 44_100.0).sin() * 0.5).collect();
        let mut out = Vec::new();
        let rs = StreamResampler::new(44_100).unwrap();
        rs.finish(&mut pending, &mut out).unwrap();
        assert_eq!(out.len(), 32_000);
        let second = &out[8000..24_000];
        let crossings = second.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
        assert!((439..=441).contains(&crossings), "{crossings}");
    }

    #[test]
    fn audio_is_held_as_16_bit_and_read_back_as_f32() {
        let a = Audio::from_f32(&[0.0, 0.5, -0.5, 1.5, -2.0, f32::NAN, 1.0 / 32768.0]);
        assert_eq!(a.pcm16(), [0, 16384, -16384, 32767, -32768, 0, 1]);
        let back = a.to_f32();
        assert_eq!(back[..3], [0.0, 0.5, -0.5]);
        assert!((back[3] - 1.0).abs() < 1e-4 && back[4] == -1.0, "clipped: {back:?}");
        // f32 slices and Audio read the same windows.
        let tone: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.01).sin() * 0.8).collect();
        let held = Audio::from_f32(&tone);
        assert_eq!(Samples::len(&held), Samples::len(&tone[..]));
        let (a, b) = (held.window(100..300), tone[..].window(100..300));
        assert_eq!(a.len(), 200);
        assert!(a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() <= 0.5 / 32768.0), "rounded to 16 bits");
    }

    #[test]
    fn garbage_is_rejected_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.wav");
        std::fs::write(&path, b"this is not audio at all, just text pretending").unwrap();
        assert!(matches!(probe_file(&path), Err(AudioError::Unsupported(_))));
        assert!(decode_file(&path).is_err());
    }

    /// A 1 KB PCM WAV whose header claims `rate` Hz and `channels` channels.
    fn hostile_wav(rate: u32, channels: u16) -> Vec<u8> {
        let data = vec![0x40u8; 1000];
        let block = channels.max(1).wrapping_mul(2);
        let mut w = Vec::new();
        w.extend_from_slice(b"RIFF");
        w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        w.extend_from_slice(b"WAVEfmt ");
        w.extend_from_slice(&16u32.to_le_bytes());
        w.extend_from_slice(&1u16.to_le_bytes());
        w.extend_from_slice(&channels.to_le_bytes());
        w.extend_from_slice(&rate.to_le_bytes());
        w.extend_from_slice(&rate.wrapping_mul(u32::from(block)).to_le_bytes());
        w.extend_from_slice(&block.to_le_bytes());
        w.extend_from_slice(&16u16.to_le_bytes());
        w.extend_from_slice(b"data");
        w.extend_from_slice(&(data.len() as u32).to_le_bytes());
        w.extend_from_slice(&data);
        w
    }

    #[test]
    fn absurd_sample_rates_are_rejected_before_any_large_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hostile.wav");
        std::fs::write(&path, hostile_wav(16_000, 1)).unwrap();
        assert!(probe_file(&path).is_ok() && decode_file(&path).is_ok(), "the sane header decodes");
        for rate in [0xFFFF_FFF0, 1, 0, 3_999, 384_001] {
            std::fs::write(&path, hostile_wav(rate, 1)).unwrap();
            let probed = probe_file(&path);
            assert!(matches!(probed, Err(AudioError::Unsupported(_))), "{rate} Hz: {probed:?}");
            let decoded = decode_file(&path);
            assert!(matches!(decoded, Err(AudioError::Unsupported(_))), "{rate} Hz: {decoded:?}");
        }
        for channels in [0, 33, 0xFFFF] {
            std::fs::write(&path, hostile_wav(16_000, channels)).unwrap();
            assert!(probe_file(&path).is_err(), "{channels} channels");
        }
    }

    #[test]
    fn the_probe_states_the_duration_and_checks_the_limit() {
        let info = probe_file(&fixture("jfk.wav")).unwrap();
        let d = info.duration_s.unwrap();
        assert!((d - 11.0).abs() < 0.05, "{d}");
        assert!(info.check_duration(11.5).is_ok());
        let e = info.check_duration(10.0).unwrap_err();
        assert!(
            matches!(e, AudioError::TooLong { .. }) && e.to_string().contains("MAX_AUDIO_SECONDS"),
            "{e}"
        );
    }

    #[test]
    fn audio_exactly_at_the_limit_decodes() {
        // Summing packet lengths in float seconds drifted past the limit (a 4-hour file was
        // refused at MAX_AUDIO_SECONDS = 4 h).
        let dir = tempfile::tempdir().unwrap();
        for (rate, seconds) in [(16_000u32, 600u32), (44_100, 300), (8_000, 1_000)] {
            let path = dir.path().join(format!("{rate}.wav"));
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: rate,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut w = hound::WavWriter::create(&path, spec).unwrap();
            let mut i16w = w.get_i16_writer(rate * seconds);
            for i in 0..rate * seconds {
                i16w.write_sample(((i % 100) as i16 - 50) * 100);
            }
            i16w.flush().unwrap();
            w.finalize().unwrap();
            let a =
                decode_file_limited(&path, f64::from(seconds)).unwrap_or_else(|e| panic!("{rate} Hz: {e}"));
            assert_eq!(a.len(), 16_000 * seconds as usize, "{rate} Hz");
            assert!(decode_file_limited(&path, f64::from(seconds) - 0.01).is_err());
        }
    }

    #[test]
    fn decoding_stops_at_the_limit_in_every_format() {
        // The upload check trusts the stated length, which a stream may lack (a live WebM or
        // Ogg recording); the decoder's own limit holds whatever the container says.
        for name in ["jfk.wav", "jfk.mp3", "jfk.m4a", "jfk.ogg", "jfk.opus.ogg", "jfk.webm"] {
            let err = decode_file_limited(&fixture(name), 5.0).unwrap_err();
            assert!(matches!(err, AudioError::LongerThanDeclared { .. }), "{name}: {err}");
            assert!(err.to_string().contains("MAX_AUDIO_SECONDS"), "{err}");
            let all = decode_file_limited(&fixture(name), 12.0).unwrap();
            assert!(all.duration_s() > 10.9 && all.duration_s() <= 12.0, "{name}: {} s", all.duration_s());
        }
    }

    fn rms(s: &[f32]) -> f32 {
        (s.iter().map(|x| x * x).sum::<f32>() / s.len() as f32).sqrt()
    }
}

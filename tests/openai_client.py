"""Drives a running diarized daemon with the real `openai` Python client (tests/openai.rs runs it).

Usage: python openai_client.py BASE_URL API_KEY FIXTURES_DIR
Asserts every response_format, stream=True, another installed model with a language, and the
errors; exits non-zero (with the failing assertion) on any failure.
"""

import re
import sys
from pathlib import Path

import openai

BASE, KEY, FIXTURES = sys.argv[1], sys.argv[2], Path(sys.argv[3])
JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."

client = openai.OpenAI(base_url=f"{BASE}/v1", api_key=KEY, timeout=600, max_retries=0)


def words(text):
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def wer(reference, hypothesis):
    r, h = words(reference), words(hypothesis)
    prev = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        cur = [i] + [0] * len(h)
        for j in range(1, len(h) + 1):
            cur[j] = min(prev[j - 1] + (r[i - 1] != h[j - 1]), prev[j] + 1, cur[j - 1] + 1)
        prev = cur
    return prev[len(h)] / max(len(r), 1)


def close_to_jfk(text, what):
    assert wer(JFK, text) <= 0.2, f"{what}: {text!r} (WER {wer(JFK, text):.2f})"


def transcribe(**kwargs):
    with open(FIXTURES / kwargs.pop("fixture", "jfk.wav"), "rb") as f:
        return client.audio.transcriptions.create(file=f, **kwargs)


# The installed models and OpenAI's names for the configured one.
ids = [m.id for m in client.models.list()]
assert "tiny.en" in ids and "whisper-1" in ids and "gpt-4o-transcribe-diarize" in ids, ids

# json
r = transcribe(model="whisper-1")
assert isinstance(r, openai.types.audio.Transcription), type(r)
close_to_jfk(r.text, "json")

# text, srt, vtt: plain strings
text = transcribe(model="gpt-4o-transcribe", response_format="text")
assert isinstance(text, str) and text.endswith("\n"), repr(text)
close_to_jfk(text, "text")
srt = transcribe(model="whisper-1", response_format="srt")
assert re.match(r"1\n00:00:0\d,\d{3} --> 00:00:\d\d,\d{3}\n\S", srt), repr(srt)
assert "Speaker" not in srt, srt
close_to_jfk(" ".join(l for l in srt.splitlines() if l and "-->" not in l and not l.isdigit()), "srt")
vtt = transcribe(model="whisper-1", response_format="vtt")
assert vtt.startswith("WEBVTT\n\n00:00:0") and " --> " in vtt, repr(vtt)

# verbose_json with both granularities, and with the prompt and temperature fields
r = transcribe(
    model="whisper-1",
    response_format="verbose_json",
    timestamp_granularities=["word", "segment"],
    prompt="President Kennedy's inaugural address.",
    temperature=0.2,
)
assert isinstance(r, openai.types.audio.TranscriptionVerbose), type(r)
assert r.language == "english" and abs(r.duration - 11.0) < 0.1, (r.language, r.duration)
close_to_jfk(r.text, "verbose_json")
assert r.segments and r.words, r
for s in r.segments:
    assert s.end > s.start >= 0 and s.text.strip() and s.avg_logprob <= 0, s
    assert s.temperature == 0.2 and s.compression_ratio > 0 and s.tokens == [] and s.no_speech_prob == 0, s
assert [s.id for s in r.segments] == list(range(len(r.segments)))
assert all(w.end >= w.start for w in r.words) and words(" ".join(w.word for w in r.words)) == words(r.text)
only_words = transcribe(model="whisper-1", response_format="verbose_json", timestamp_granularities=["word"])
assert only_words.words and only_words.segments is None, only_words

# diarized_json: speakers labelled A, B, …
r = transcribe(model="gpt-4o-transcribe-diarize", response_format="diarized_json", fixture="stereo_diarization.wav")
assert isinstance(r, openai.types.audio.TranscriptionDiarized), type(r)
assert r.task == "transcribe" and abs(r.duration - 5.0) < 0.1 and r.text, r
assert r.segments and all(s.type == "transcript.text.segment" for s in r.segments), r.segments
assert all(re.fullmatch(r"[A-Z]+", s.speaker) for s in r.segments), [s.speaker for s in r.segments]
assert r.segments[0].speaker == "A" and r.segments[0].id == "seg_0", r.segments[0]
assert " ".join(s.text for s in r.segments) == r.text

# stream=True: deltas, segments, done; the deltas add up to the text
with open(FIXTURES / "jfk.wav", "rb") as f:
    events = list(client.audio.transcriptions.create(file=f, model="whisper-1", stream=True))
kinds = [e.type for e in events]
assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.done") == 1, kinds
assert "transcript.text.delta" in kinds and "transcript.text.segment" in kinds, kinds
assert kinds.index("transcript.text.segment") > max(i for i, k in enumerate(kinds) if k == "transcript.text.delta"), kinds
deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
assert deltas == events[-1].text, (deltas, events[-1].text)
close_to_jfk(events[-1].text, "stream")

# Another installed model by name, in another language (tiny.en, the configured one, is English-only).
r = transcribe(model="base", language="de", response_format="verbose_json", fixture="de_cheetah_test.wav")
assert r.language == "german" and "werbung" in r.text.lower(), (r.language, r.text)

# Errors: an unknown model, an English-only model asked for German, a bad format, a bad key.
try:
    transcribe(model="whisper-large-v9")
    raise AssertionError("an unknown model was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and e.param == "model" and e.code == "model_not_found", (e.body, e.param, e.code)
    assert e.type == "invalid_request_error" and "tiny.en" in e.message, e.message
try:
    transcribe(model="whisper-1", language="de")
    raise AssertionError("German was accepted for tiny.en")
except openai.BadRequestError as e:
    assert e.param == "language" and "English-only" in e.message, e.message
try:
    transcribe(model="whisper-1", response_format="xml")
    raise AssertionError("an unknown response_format was accepted")
except openai.BadRequestError as e:
    assert e.param == "response_format", e.body
try:
    openai.OpenAI(base_url=f"{BASE}/v1", api_key="not-the-token", max_retries=0).models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401 and e.code == "invalid_api_key", e.body

print("openai client: all checks passed")

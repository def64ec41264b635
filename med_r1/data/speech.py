"""Spoken questions: each row's `audio` file transcribed by a speech-recognition model into the question's text.

    data:
      train: {path: data/spoken.jsonl, asr_model: openai/whisper-small}   # rows carry "audio": "q/0001.wav"

At data-loading time (`med_r1.data.sources.select`, which training, validation and evaluation all go through) each
selected question with an audio file gets the transcript as its `question`, so the prompt, the rewards and the
predictions all see the words the model heard. A written `question` in the same row is replaced (it may stay in the
file as a reference for the recording); a row without one needs its audio.

Audio is read with the standard library's `wave` (PCM WAV, 8/16/24/32-bit, any channels, mixed to mono), resampled
linearly to the model's rate when it differs (record at 16 kHz for Whisper to avoid that), and handed to transformers'
`pipeline("automatic-speech-recognition")` as raw samples, so no ffmpeg is needed. Transcripts are kept on disk under
`$MED_R1_CACHE/transcripts`, one small file per (audio SHA-256, asr_model as written) written atomically, so a second
load, another process or another run never transcribes the same recording with the same model again, and the model
is loaded (once per process) only when a transcript is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np

from med_r1.errors import DataError
from med_r1.io import atomic_write_text
from med_r1.records import Question

VERSION = 1
"""Part of every cache key: bump when reading or resampling changes what the model hears."""


def cache_dir() -> Path:
    return Path(os.environ.get("MED_R1_CACHE", Path.home() / ".cache" / "med_r1")) / "transcripts"


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(mono float32 samples in [-1, 1], sampling rate) of a PCM WAV file; a DataError naming the file if not one."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise DataError(f"audio file not found: {path}") from None
    except (wave.Error, EOFError, OSError) as exc:
        raise DataError(
            f"cannot read the audio file {path}: {exc or type(exc).__name__}; med-r1 reads PCM WAV files (convert "
            "others, e.g. `ffmpeg -i in.mp3 -ac 1 -ar 16000 out.wav`)"
        ) from None
    if width == 1:
        samples = (np.frombuffer(frames, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:  # 24-bit little-endian: widen to 32 bits, keeping the sign
        raw = np.frombuffer(frames, np.uint8).reshape(-1, 3)
        wide = np.zeros((len(raw), 4), np.uint8)
        wide[:, 1:] = raw
        samples = wide.view("<i4").ravel().astype(np.float32) / 2.0**31
    else:
        dtype = {2: "<i2", 4: "<i4"}.get(width)
        if dtype is None:
            raise DataError(f"cannot read the audio file {path}: {8 * width}-bit samples; use 8, 16, 24 or 32-bit PCM")
        samples = np.frombuffer(frames, dtype).astype(np.float32) / float(2 ** (8 * width - 1))
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if not len(samples):
        raise DataError(f"the audio file {path} holds no samples")
    return samples, rate


def resample(samples: np.ndarray, rate: int, wanted: int) -> np.ndarray:
    """Linear resampling (the pipeline's own needs torchaudio)."""
    if rate == wanted:
        return samples
    n = max(1, round(len(samples) * wanted / rate))
    return np.interp(np.arange(n) * (rate / wanted), np.arange(len(samples)), samples).astype(np.float32)


def transcript_key(audio: bytes, model: str) -> str:
    return hashlib.sha256(json.dumps([VERSION, hashlib.sha256(audio).hexdigest(), model]).encode()).hexdigest()


_PIPELINES: dict[str, object] = {}


def _pipeline(model: str, where: str):
    """The speech-recognition pipeline of `model`, loaded once per process."""
    if model not in _PIPELINES:
        if model.startswith(("/", ".", "~")) and not Path(model).expanduser().exists():
            raise DataError(
                f"{where}.asr_model: {model} does not exist; give a folder holding a transformers speech-recognition "
                "model (e.g. a Whisper checkpoint with its processor), or a hub id"
            )
        import torch  # lazy: transformers and torch load only when a transcript is missing
        from transformers import pipeline

        device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"  # this rank's GPU
        try:
            _PIPELINES[model] = pipeline("automatic-speech-recognition", model=model, device=device)
        except (OSError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"{where}.asr_model: cannot load the speech-recognition model {model!r} ({reason}); give a folder "
                "holding a transformers ASR model (e.g. a Whisper checkpoint with its processor) or a downloaded hub id"
            ) from None
    return _PIPELINES[model]


def transcribe(path: str, model: str, where: str = "data.train") -> str:
    """The transcript of one audio file by `model`, from the cache when it is there."""
    try:
        audio = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"audio file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read the audio file {path}: {exc.strerror or exc}") from None
    key = transcript_key(audio, model)
    cached = cache_dir() / key[:2] / f"{key}.json"
    try:
        return json.loads(cached.read_text(encoding="utf-8"))["text"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    samples, rate = read_wav(path)
    asr = _pipeline(model, where)
    wanted = asr.feature_extractor.sampling_rate
    text = str(asr({"raw": resample(samples, rate, wanted), "sampling_rate": wanted})["text"]).strip()
    atomic_write_text(cached, json.dumps({"text": text, "audio": str(path), "model": model}, ensure_ascii=False))
    return text


def with_transcripts(questions: list[Question], asr_model: str | None, where: str = "data.train") -> list[Question]:
    """`questions` with each audio file's transcript as the question text (the others unchanged)."""
    spoken = [q for q in questions if q.audio]
    if not spoken:
        return questions
    if not asr_model:
        raise DataError(
            f"{where}.asr_model: {len(spoken)} question(s) have an audio file ({spoken[0].question_id}: "
            f"{spoken[0].audio}); set {where}.asr_model to a speech-recognition model (e.g. openai/whisper-small) "
            "to transcribe them"
        )
    model = os.path.expanduser(asr_model)
    out = []
    for q in questions:
        if q.audio:
            try:
                text = transcribe(q.audio, model, where)
            except DataError as exc:
                raise DataError(f"{where}: question {q.question_id} ({q.source}): {exc}") from None
            if not text:
                raise DataError(
                    f"{where}: question {q.question_id}: {q.audio} transcribed to nothing with {asr_model}; check the "
                    "recording (silence?) or the model"
                )
            q = replace(q, question=text)
        out.append(q)
    return out

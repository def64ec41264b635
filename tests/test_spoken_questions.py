"""Spoken questions: a tiny Whisper built in code transcribes WAV files the test writes; the transcript is the question
the loaded data (and the training prompt) hold, it is cached on disk and reused without the model, and errors name the
file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_recipe, write_recipe
from med_r1.cli import main
from med_r1.config import DataSource, SplitConfig, parse_recipe
from med_r1.data import sources
from med_r1.data.speech import read_wav
from med_r1.errors import DataError
from med_r1.plan import build_plan

RATE = 16000


def build_tiny_whisper(out: Path, seed: int = 0) -> Path:
    """A one-layer Whisper of width 16 on 16 mel bins, with a byte-level tokenizer of lower-case letters and space."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )

    letters = ["Ġ", *"abcdefghijklmnopqrstuvwxyz", "?"]  # Ġ: the byte-level alphabet's space
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>"]
    specials += ["<|notimestamps|>", "<|nocaptions|>", "<|startoflm|>", "<|startofprev|>"]
    vocab = {t: i for i, t in enumerate(letters + specials)}
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    end = vocab["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=len(vocab),
        num_mel_bins=16,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_target_positions=32,
        pad_token_id=end,
        bos_token_id=end,
        eos_token_id=end,
        decoder_start_token_id=vocab["<|startoftranscript|>"],
        suppress_tokens=[],
        begin_suppress_tokens=[],
        init_std=1.0,  # wide random weights: what it says depends on what it hears
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config.max_length = 16
    model.generation_config.forced_decoder_ids = None
    model.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=16, sampling_rate=RATE).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def whisper(tmp_path_factory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("asr") / "tiny-whisper")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MED_R1_CACHE", str(tmp_path / "cache"))


def tone(hz: float, seconds: float = 0.5, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * hz * t) + 0.1 * np.sin(2 * np.pi * 3.1 * hz * t)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


def expected_transcript(model: Path, samples: np.ndarray) -> str:
    """What transformers' own pipeline hears in the samples as the WAV stores them (16-bit)."""
    from transformers import pipeline

    heard = (samples * 32767).astype("<i2").astype(np.float32) / 32768.0
    return pipeline("automatic-speech-recognition", model=str(model))({"raw": heard, "sampling_rate": RATE})[
        "text"
    ].strip()


def make_data(root: Path, rows: list[dict]) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), "red").save(root / "scan.png")
    lines = [json.dumps({"image": "scan.png", "answer": "liver", "modality": "CT", **row}) for row in rows]
    (root / "spoken.jsonl").write_text("\n".join(lines) + "\n")
    return root / "spoken.jsonl"


def spoken_set(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    audio = {"q1": tone(220.0), "q2": tone(660.0, 0.8)}
    for qid, samples in audio.items():
        write_wav(root / "audio" / f"{qid}.wav", samples)
    path = make_data(
        root,
        [
            {"id": "q1", "audio": "audio/q1.wav"},  # spoken only
            {"id": "q2", "audio": "audio/q2.wav", "question": "Which organ is enlarged?"},  # the transcript wins
            {"id": "q3", "question": "What is shown?"},  # written only
        ],
    )
    return path, audio


def load(path: Path, model: str | None) -> dict[str, str]:
    source = DataSource(path=str(path), asr_model=model)
    return {q.question_id: q.question for q in sources.select(source, SplitConfig()).questions}


def test_the_loaded_question_is_the_pipelines_transcript(whisper, tmp_path):
    path, audio = spoken_set(tmp_path / "data")
    expected = {qid: expected_transcript(whisper, samples) for qid, samples in audio.items()}
    assert all(expected.values()) and expected["q1"] != expected["q2"]  # it says something, and not always the same
    questions = load(path, str(whisper))
    assert questions == {**expected, "q3": "What is shown?"}


@pytest.mark.slow
def test_training_rows_and_eval_use_the_transcript(tiny_model, whisper, tmp_path):
    path, audio = spoken_set(tmp_path / "data")
    raw = tiny_recipe(tiny_model, path, tmp_path / "run")
    raw["data"]["train"]["asr_model"] = str(whisper)
    raw["rewards"] = [{"name": "format_partial"}, {"name": "open_answer"}]
    plan = build_plan(parse_recipe(raw), "validate")
    prompts = dict(zip(plan.train_rows["question_id"], plan.train_rows["prompt"], strict=True))
    heard = expected_transcript(whisper, audio["q1"])
    assert heard in prompts["q1"][-1]["content"] and "Which organ" not in prompts["q2"][-1]["content"]


def test_transcripts_are_cached_and_reused_without_the_model(whisper, tmp_path):
    path, _ = spoken_set(tmp_path / "data")
    model = tmp_path / "asr-copy"
    shutil.copytree(whisper, model)
    first = load(path, str(model))
    cached = sorted((tmp_path / "cache" / "transcripts").rglob("*.json"))
    assert len(cached) == 2 and {json.loads(p.read_text())["text"] for p in cached} == {first["q1"], first["q2"]}
    shutil.rmtree(model)
    # A fresh process (no pipeline in memory): the transcripts come from the cache, transformers is never imported.
    code = (
        "import json, sys; from med_r1.config import DataSource, SplitConfig; from med_r1.data.sources import select; "
        f"qs = select(DataSource(path={str(path)!r}, asr_model={str(model)!r}), SplitConfig()).questions; "
        "print(json.dumps([{q.question_id: q.question for q in qs}, 'transformers' in sys.modules]))"
    )
    env = {
        "MED_R1_CACHE": str(tmp_path / "cache"),
        "PATH": "/usr/bin:/bin",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    again, imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert again == first and imported is False


def test_wav_reading_mixes_channels_and_resamples(whisper, tmp_path):
    path = tmp_path / "stereo8.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(1)
        wav.setframerate(8000)
        wav.writeframes(bytes([128, 192, 64, 128] * 400))  # left/right: (0, +0.5), (-0.5, 0)
    samples, rate = read_wav(path)
    assert rate == 8000 and len(samples) == 800
    assert samples[:2].tolist() == [0.25, -0.25]
    data = make_data(tmp_path / "data", [{"id": "s", "audio": str(path)}])  # an absolute path, 8 kHz: resampled
    assert load(data, str(whisper))["s"]


def test_errors_name_the_file(whisper, tmp_path):
    path = make_data(tmp_path / "data", [{"id": "gone", "audio": "audio/missing.wav"}])
    with pytest.raises(DataError) as missing:
        load(path, str(whisper))
    assert "audio file not found" in str(missing.value) and str(tmp_path / "data" / "audio" / "missing.wav") in str(
        missing.value
    )
    assert "gone" in str(missing.value)
    (tmp_path / "data" / "audio").mkdir()
    (tmp_path / "data" / "audio" / "missing.wav").write_bytes(b"ID3 this is an mp3, not a wav")
    with pytest.raises(DataError, match=r"cannot read the audio file .*missing\.wav.*PCM WAV"):
        load(path, str(whisper))
    write_wav(tmp_path / "data" / "audio" / "missing.wav", tone(440.0))
    with pytest.raises(DataError, match=r"data\.train\.asr_model: 1 question\(s\) have an audio file \(gone: .*"):
        load(path, None)
    with pytest.raises(DataError, match=r"data\.train\.asr_model: .*no-such-model does not exist"):
        load(path, str(tmp_path / "no-such-model"))
    (tmp_path / "no-such-model").mkdir()  # a folder without a model
    with pytest.raises(DataError, match=r"data\.train\.asr_model: cannot load the speech-recognition model"):
        load(path, str(tmp_path / "no-such-model"))
    bad = make_data(tmp_path / "bad", [{"id": "x", "audio": 3}, {"id": "y"}])
    problems = [str(p) for p in sources.load_source(DataSource(path=str(bad))).problems]
    assert len(problems) == 2
    assert "spoken.jsonl:1 (x): 'audio' must be the path of a WAV file" in problems[0]
    assert "spoken.jsonl:2 (y): missing key(s): question" in problems[1]  # no audio: the text is needed


def test_jsonl_round_trip_keeps_the_audio(tmp_path):
    from med_r1.data.jsonl import load_jsonl, write_jsonl

    path, _ = spoken_set(tmp_path / "data")
    first = load_jsonl(path).questions
    assert first[0].audio == str(tmp_path / "data" / "audio" / "q1.wav") and first[0].question == ""
    write_jsonl(first, tmp_path / "data" / "copy.jsonl")
    assert json.loads((tmp_path / "data" / "copy.jsonl").read_text().splitlines()[0])["audio"] == "audio/q1.wav"
    again = load_jsonl(tmp_path / "data" / "copy.jsonl").questions
    assert [q.audio for q in again] == [q.audio for q in first]


@pytest.mark.slow
def test_a_missing_audio_file_is_exit_2_naming_it(tiny_model, whisper, tmp_path, capsys):
    path = make_data(tmp_path / "data", [{"id": "gone", "audio": "audio/missing.wav"}])
    raw = tiny_recipe(tiny_model, path, tmp_path / "run")
    raw["data"]["train"]["asr_model"] = str(whisper)
    assert main(["validate", str(write_recipe(tmp_path / "r.yaml", raw))]) == 2
    err = capsys.readouterr().err
    assert "missing.wav" in err and "audio file not found" in err and "Traceback" not in err

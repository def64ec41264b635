"""The generic JSONL question format: bring any dataset without a dedicated loader, or save one that has it.

One JSON object per line (blank lines are skipped):

    {"id": "ct_0001", "image": "images/ct_0001.png", "question": "Which organ is enlarged?",
     "options": ["Liver", "Spleen", "Kidney"], "answer": "B", "modality": "CT", "question_type": "Disease Diagnosis"}
    {"id": "rad_17", "images": ["a.png", "b.png"], "question": "Is there a fracture?", "answer": "yes",
     "modality": "X-Ray", "question_type": "closed", "dataset": "my-set"}

- `id` (required): question id, unique across the load (a repeat is reported and skipped).
- `image` (a path) or `images` (a non-empty list of paths), required: relative to the file's folder, or to
  `image_root` when given; absolute paths are kept.
- `question` (required unless `audio` is given): the question text, without the options.
- `audio`: the question spoken, a PCM WAV file (path resolved like the images'); with `asr_model` set on the source,
  its transcript replaces `question` (see `med_r1.data.speech`).
- `options`: a list of option texts in letter order, or an object `{"A": ..., "B": ...}` (letters from A, no gaps);
  absent, null or empty means open-ended.
- `answer` (required): with options, the letter (`"B"`) or the option text (matched exactly, then ignoring case,
  spaces and a final "."), stored as the letter; a lone letter that names an option is read as that letter.
  Without options, the answer text.
- `answer_type`: `"closed"` or `"open"`, for open-ended questions only; default `"closed"` when the answer is yes/no
  (any case, final "." ignored), else `"open"`. Questions with options are always `"choice"`.
- `modality`: any spelling, canonicalised (`"MR"` -> `"MRI"`, see `taxonomy.canonical_modality`); default `"unknown"`.
- `modality_raw`: the source's own modality string; default: `modality` as written.
- `question_type`: kept verbatim (not canonicalised, so "Diagnosis" stays "Diagnosis"); default `"unknown"`.
- `dataset`: default: the file's stem.
- `source`: provenance, written by `write_jsonl` so a converted dataset still points at its origin; default
  `<file>:<line>`.

Other keys are ignored. Indexing never opens an image. Bad lines (malformed JSON, missing keys, an answer matching no
option) become `Problem`s naming `<file>:<line>` and the id; loading continues. `write_jsonl` then `load_jsonl` with
the same `image_root` gives back equal `Question`s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from med_r1.data.collector import Collector
from med_r1.data.omnimedvqa import answer_letter
from med_r1.data.taxonomy import canonical_modality
from med_r1.io import atomic_write_text
from med_r1.records import LETTERS, LoadResult, Problem, Question

YES_NO = {"yes", "no"}


def is_yes_no(answer: str) -> bool:
    return answer.strip().rstrip(".").strip().casefold() in YES_NO


def load_jsonl(path: Path, image_root: str | None = None) -> LoadResult:
    """Load one .jsonl file, or every *.jsonl file directly inside a folder (sorted by name)."""
    path = Path(path)
    out = Collector()
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        out.add(Problem("bad_file", str(path), "no *.jsonl files in this folder"))
    for file in files:
        base = os.path.abspath(image_root if image_root is not None else file.parent)
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            out.add(Problem("bad_file", str(file), f"cannot read: {exc}"))
            continue
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{file.name}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                out.add(Problem("bad_record", where, f"malformed JSON: {exc}"))
                continue
            question, problem = parse_record(record, where, base, default_dataset=file.stem)
            out.add(question or problem, where)
    return out.result


def parse_record(
    record: object, where: str, base: str, default_dataset: str = ""
) -> tuple[Question | None, Problem | None]:
    if not isinstance(record, dict):
        return None, Problem("bad_record", where, "line is not a JSON object")
    source = where
    if record.get("id") not in (None, ""):
        where = f"{where} ({record['id']})"
    audio = record.get("audio")
    if audio is not None and (not isinstance(audio, str) or not audio):
        return None, Problem("bad_record", where, "'audio' must be the path of a WAV file")
    required = ("id", "answer") if audio else ("id", "question", "answer")
    missing = [k for k in required if record.get(k) in (None, "")]
    if "image" not in record and "images" not in record:
        missing.append("image/images")
    if missing:
        return None, Problem("bad_record", where, f"missing key(s): {', '.join(missing)}")
    images = record["images"] if "images" in record else [record["image"]]
    if not images or not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
        return None, Problem("bad_record", where, "'image' must be a path and 'images' a non-empty list of paths")
    options = record.get("options") or []
    if isinstance(options, dict):
        letters = sorted(options)
        if letters != list(LETTERS[: len(letters)]):
            return None, Problem("bad_record", where, f"option letters {letters} must run from A without gaps")
        options = [options[k] for k in letters]
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        return None, Problem("bad_record", where, "'options' must be a list of strings or a {letter: text} object")
    if len(options) > len(LETTERS):
        return None, Problem(
            "bad_record", where, f"{len(options)} options: at most {len(LETTERS)} (A-J) are supported"
        )
    answer = str(record["answer"])
    if options:
        answer_type = "choice"
        letter = answer.strip()
        if (
            len(letter) == 1
            and letter.upper() in LETTERS[: len(options)]
            and letter.lower() not in map(str.lower, options)
        ):
            letter = letter.upper()  # "b" names option B (unless some option's text is literally "b")
        if len(letter) != 1 or letter not in LETTERS[: len(options)]:
            letter = answer_letter(answer, options)
        if letter is None:
            shown = ", ".join(f"{LETTERS[i]}={t!r}" for i, t in enumerate(options))
            return None, Problem("answer_not_in_options", where, f"answer {answer!r} names none of ({shown})")
        answer = letter
    else:
        answer_type = record.get("answer_type") or ("closed" if is_yes_no(answer) else "open")
        if answer_type not in ("closed", "open"):
            return None, Problem("bad_record", where, f"answer_type {answer_type!r} is not 'closed' or 'open'")
    modality = str(record.get("modality") or "unknown")
    return Question(
        question_id=str(record["id"]),
        dataset=str(record.get("dataset") or default_dataset),
        images=tuple(i if os.path.isabs(i) else os.path.join(base, i) for i in images),
        question=str(record.get("question") or ""),
        options=tuple(options),
        answer=answer,
        modality=canonical_modality(modality),
        question_type=str(record.get("question_type") or "unknown"),
        answer_type=answer_type,
        modality_raw=str(record.get("modality_raw", modality)),
        source=str(record.get("source") or source),
        audio=(audio if os.path.isabs(audio) else os.path.join(base, audio)) if audio else "",
    ), None


def to_record(question: Question, base: str) -> dict:
    """The JSONL object for one question; image paths under `base` are written relative to it."""
    images = [relative_to(i, base) for i in question.images]
    record: dict = {"id": question.question_id}
    record.update({"image": images[0]} if len(images) == 1 else {"images": images})
    record["question"] = question.question
    if question.audio:
        record["audio"] = relative_to(question.audio, base)
    if question.options:
        record["options"] = list(question.options)
    record["answer"] = question.answer
    if question.answer_type != "choice":
        record["answer_type"] = question.answer_type
    record["modality"] = question.modality
    if question.modality_raw != question.modality:
        record["modality_raw"] = question.modality_raw
    record["question_type"] = question.question_type
    record["dataset"] = question.dataset
    if question.source:
        record["source"] = question.source
    return record


def relative_to(image: str, base: str) -> str:
    if os.path.isabs(image) and os.path.commonpath([base, image]) == base:
        return Path(os.path.relpath(image, base)).as_posix()
    return image


def write_jsonl(questions: Iterable[Question], path: Path, image_root: str | None = None) -> int:
    """Write questions atomically (all or nothing); returns how many were written."""
    path = Path(path)
    base = os.path.abspath(image_root if image_root is not None else path.parent)
    lines = [json.dumps(to_record(q, base), ensure_ascii=False) + "\n" for q in questions]
    atomic_write_text(path, "".join(lines))
    return len(lines)

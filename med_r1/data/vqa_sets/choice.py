"""Multiple-choice medical VQA sets: PMC-VQA (its CSVs or a parquet snapshot) and MedXpertQA MM (JSONL).

The answer is stored as the option letter; a record whose answer names no option is a problem, not a question.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Collection
from pathlib import Path

from med_r1.data.collector import Collector
from med_r1.data.omnimedvqa import answer_letter
from med_r1.data.vqa_sets.files import (
    ImageStore,
    absolute,
    existing_images,
    first_existing,
    parquet_rows,
    question_id,
)
from med_r1.records import LETTERS, LoadResult, Problem, Question

_LETTER_PREFIX = re.compile(r"^\s*([A-J])\s*:\s*")
_EMBEDDED_CHOICES = re.compile(r"\s*Answer Choices:\s*\(A\).*\Z", re.S)


def _strip_letter(text: object) -> str:
    return _LETTER_PREFIX.sub("", str(text)).strip()


def choice_question(
    dataset: str,
    qid: str,
    images: tuple[str, ...],
    question: object,
    options: list[str],
    label: object,
    answer: object,
    source: str,
    question_type: str,
) -> Question | Problem:
    """A multiple-choice record: the answer is `label` (a letter) when valid, else `answer` as a letter or text."""
    where = f"{source} ({qid})"
    if question in (None, "") or len(options) < 2:
        return Problem("bad_record", where, "missing question, or fewer than two options")
    given = [str(a).strip() for a in (label, answer) if a is not None]
    letter = next((g for g in given if len(g) == 1 and g in LETTERS[: len(options)]), None)
    if letter is None and answer not in (None, ""):
        letter = answer_letter(_strip_letter(answer), options)
    if letter is None:
        shown = ", ".join(f"{LETTERS[i]}={t!r}" for i, t in enumerate(options))
        return Problem("answer_not_in_options", where, f"answer {label or answer!r} matches none of ({shown})")
    return Question(
        question_id=qid,
        dataset=dataset,
        images=images,
        question=str(question).strip(),
        options=tuple(options),
        answer=letter,
        modality="unknown",
        question_type=question_type or "unknown",
        source=source,
    )


def load_pmc_vqa(path: Path, image_root: str | None = None, *, splits: Collection[str] | None = None) -> LoadResult:
    """PMC-VQA, four-option multiple choice: the v1/v2 CSVs + image folder, else the OctoMed parquet snapshot.

    CSV: options are `Choice A..D` with their "A:" prefix stripped; the answer is `Answer_label` (a letter), falling
    back to `Answer` (`Anwser` in some copies) matched as text. Splits are the CSV stems; `test_clean` (a subset of
    `test`) is loaded only when named in `splits`. v1 and v2 are different question sets: pick one with `splits`.
    Modality and question_type are "unknown": PMC figures mix every modality and the CSVs carry neither field.
    """
    path = absolute(path)
    files = [path] if path.suffix == ".csv" else sorted(path.glob("*.csv")) if path.is_dir() else []
    if not files:
        return _load_pmc_vqa_parquet(path, image_root, splits)
    out, folder = Collector(), files[0].parent
    subfolders = ("images", "figures", "images_2", "images2", "")
    roots = [absolute(image_root)] if image_root else [folder / d for d in subfolders]
    for file in files:
        split = file.stem
        if (splits and split not in splits) or (not splits and split == "test_clean" and len(files) > 1):
            continue
        try:
            with open(file, newline="", encoding="utf-8-sig") as f:
                rows = [{k.strip(): v for k, v in r.items() if k} for r in csv.DictReader(f)]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            out.add(Problem("bad_file", file.name, f"cannot read CSV: {exc}"))
            continue
        for index, row in enumerate(rows):
            source, qid = f"{file.name}[{index}]", question_id("pmc-vqa", None, split, index)
            if not row.get("Figure_path"):
                out.add(Problem("bad_record", f"{source} ({qid})", "missing Figure_path"))
                continue
            images = existing_images([first_existing(row["Figure_path"].strip(), roots)], f"{source} ({qid})")
            if isinstance(images, Problem):
                out.add(images)
                continue
            options = []
            for letter in "ABCD":
                text = _strip_letter(row.get(f"Choice {letter}") or "")
                if not text:
                    break
                options.append(text)
            label = row.get("Answer_label") or row.get("Anwser_label")
            answer = row.get("Answer") or row.get("Anwser")
            out.add(choice_question("PMC-VQA", qid, images, row.get("Question"), options, label, answer, source, ""))
    return out.result


def _load_pmc_vqa_parquet(path: Path, image_root: str | None, splits: Collection[str] | None) -> LoadResult:
    out, folder = Collector(), path if path.is_dir() else path.parent
    store = ImageStore(folder, image_root)
    columns = ["id", "image", "question", "options", "answer"]
    for split, index, source, row in parquet_rows(path, splits, columns, out):
        qid = question_id("pmc-vqa", row.get("id"), split, index)
        images = store.paths(row.get("image"), f"{source} ({qid})")
        if isinstance(images, Problem):
            out.add(images)
            continue
        options = [_strip_letter(o) for o in row.get("options") or []]
        answer = row.get("answer")
        out.add(choice_question("PMC-VQA", qid, images, row.get("question"), options, None, answer, source, ""))
    return out.result


def load_medxpertqa(path: Path, image_root: str | None = None, *, splits: Collection[str] | None = None) -> LoadResult:
    """MedXpertQA MM (`MM/{dev,test}.jsonl` + `images/`): five-option multiple choice, `label` is the letter.

    The question text embeds its options ("... Answer Choices: (A) x (B) y ..."); that trailing list is cut from
    `question` so prompts do not show the options twice. question_type is `medical_task` (Diagnosis, Treatment, Basic
    Science); MedXpertQA's own `question_type` (Reasoning/Understanding) and `body_system` are not kept. Modality is
    "unknown": MM has no modality field. Records without images (e.g. Text-subset lines) are reported and skipped.
    """
    path = absolute(path)
    mm = path.parent if path.is_file() else path / "MM" if (path / "MM").is_dir() else path
    files = [path] if path.is_file() else sorted(mm.glob("*.jsonl"))
    root = mm.parent if mm.name == "MM" else mm
    folders = [absolute(image_root)] if image_root else [root / "images", mm / "images"]
    out = Collector()
    if not files:
        out.add(Problem("bad_file", str(path), "no MM/*.jsonl files here"))
    for file in files:
        split, rel = file.stem, file.relative_to(root).as_posix()
        if splits and split not in splits:
            continue
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            out.add(Problem("bad_file", rel, f"cannot read: {exc}"))
            continue
        for number, line in enumerate(lines, start=1):
            source = f"{rel}:{number}"
            if line.strip():
                out.add(_medxpertqa_record(line, source, split, number - 1, folders))
    return out.result


def _medxpertqa_record(line: str, source: str, split: str, index: int, folders: list[Path]) -> Question | Problem:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return Problem("bad_record", source, f"malformed JSON: {exc}")
    if not isinstance(record, dict):
        return Problem("bad_record", source, "line is not a JSON object")
    qid = question_id("medxpertqa", record.get("id"), split, index)
    options = record.get("options")
    letters = sorted(options) if isinstance(options, dict) else []
    if not letters or letters != list(LETTERS[: len(letters)]):
        return Problem("bad_record", f"{source} ({qid})", "'options' must be an object keyed A, B, ... without gaps")
    names = record.get("images")
    if not names or not isinstance(names, list):
        return Problem("missing_image", f"{source} ({qid})", "no 'images' list (MedXpertQA MM records have one)")
    images = existing_images([first_existing(str(n), folders) for n in names], f"{source} ({qid})")
    if isinstance(images, Problem):
        return images
    question = _EMBEDDED_CHOICES.sub("", str(record.get("question") or ""))
    options = [str(options[k]) for k in letters]
    label, task = record.get("label"), str(record.get("medical_task") or "")
    return choice_question("MedXpertQA", qid, images, question, options, label, None, source, task)

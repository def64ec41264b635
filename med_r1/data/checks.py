"""`med-r1 data stats|validate`: what a dataset holds, and what is wrong with it; and the same checks before training.

`validate` finds bad records (answers not among the options, missing keys), missing and unreadable images, duplicate
question ids and, given a test set, images shared between train and test. Each problem names its file and record.
Before training, `training_problems` (no image decoding) gates the data, `drop_bad_rows` keeps the good rows when
`data.skip_bad_rows` asks for it, and `overlap_warnings` says when evaluation questions or images are also trained on.

`stats` describes the rows that loaded; rows the loader skipped (malformed JSON, missing keys, an answer naming no
option, a repeated id, an unreadable file) are counted per file and kind under `skipped`, with the first few by
file:line and reason, and `format_stats` opens with a warning line when there are any. `stats` never fails on them
(exit 0): `validate` is the gate (exit 2).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from med_r1.data.medical import load_frames
from med_r1.data.selection import image_overlap
from med_r1.records import Problem, Question


def stats(questions: list[Question], indexing: list[Problem] = (), shown: int = 5) -> dict:
    """Counts over the questions that loaded; `indexing` (the loader's problems) are the rows it skipped."""
    table: dict[str, Counter] = defaultdict(Counter)
    for q in questions:
        table[q.modality][q.question_type] += 1
    choice = [q for q in questions if q.answer_type == "choice"]
    images = {path for q in questions for path in q.images}
    return {
        "questions": len(questions),
        "images": len(images),
        "images_found": sum(Path(path).exists() for path in images),
        "modalities": dict(sorted(Counter(q.modality for q in questions).items())),
        "datasets": dict(sorted(Counter(q.dataset for q in questions).items())),
        "modality_x_question_type": {m: dict(sorted(c.items())) for m, c in sorted(table.items())},
        "question_types": dict(sorted(Counter(q.question_type for q in questions).items())),
        "answer_types": dict(sorted(Counter(q.answer_type for q in questions).items())),
        "options_per_question": {str(k): v for k, v in sorted(Counter(len(q.options) for q in choice).items())},
        "answer_letters": dict(sorted(Counter(q.answer for q in choice).items())),
        "skipped": skipped_rows(list(indexing), shown),
    }


# `file.jsonl:12 (id)`, `file.json[3] (id)`, `file.csv`: the file part of a Problem's `where`.
_WHERE_FILE = re.compile(r"^(?P<file>.*?)(?::\d+|\[\d+\])?(?: \(.*\))?$")


def _file_of(where: str) -> str:
    found = _WHERE_FILE.match(where)  # always matches: every part but the file is optional
    return (found.group("file") if found else "") or where


def skipped_rows(indexing: list[Problem], shown: int = 5) -> dict:
    """The rows a loader skipped: how many, per file and per kind, and the first `shown` (where and why)."""
    files = Counter(_file_of(p.where) for p in indexing)
    return {
        "rows": len(indexing),
        "by_file": dict(sorted(files.items())),
        "by_kind": dict(sorted(Counter(p.kind for p in indexing).items())),
        "examples": [{"where": p.where, "kind": p.kind, "message": p.message} for p in indexing[:shown]],
    }


def skipped_warning(skipped: dict, path: str = "PATH") -> str:
    """One line saying how many rows `stats` left out, where, and how to list them all ('' when none)."""
    if not skipped["rows"]:
        return ""
    n = skipped["rows"]
    files = ", ".join(f"{f} {k}" for f, k in skipped["by_file"].items())
    kinds = ", ".join(f"{k} {v}" for k, v in skipped["by_kind"].items())
    return (
        f"warning: {n} malformed row{'s' if n != 1 else ''} skipped ({files}; {kinds}); the stats below count the "
        f"rows that loaded. `med-r1 data validate {path}` lists every one"
    )


def validate(
    questions: list[Question],
    indexing: list[Problem],
    test: list[Question] | None = None,
    decode: bool = True,
    frames: int = 8,
    window: str = "auto",
) -> list[Problem]:
    """Every problem found: indexing problems, then per-question ones, then train/test image overlap."""
    problems = list(indexing)
    first: dict[str, str] = {}
    checked: dict[str, str | None] = {}  # image path -> reason it is bad (None = fine)
    for q in questions:
        where = q.source or q.question_id
        if q.question_id in first:
            message = f"question_id {q.question_id} is also used by {first[q.question_id]}"
            problems.append(Problem("duplicate_id", where, message, question_id=q.question_id))
        first.setdefault(q.question_id, where)
        for path in q.images:
            if path not in checked:
                checked[path] = _image_problem(path, decode, frames, window)
            if checked[path] is not None:
                kind = "missing_image" if checked[path] == "missing" else "unreadable_image"
                text = (
                    f"image not found: {path}" if kind == "missing_image" else f"cannot read {path}: {checked[path]}"
                )
                problems.append(Problem(kind, where, text, question_id=q.question_id))
    if test is not None:
        for path in image_overlap(questions, test):
            problems.append(Problem("image_overlap", path, "image used by both the train and the test set"))
    return problems


def _image_problem(path: str, decode: bool, frames: int, window: str) -> str | None:
    if not Path(path).exists():
        return "missing"
    if not decode:
        return None
    try:
        load_frames(path, frames=frames, window=window)
    except (OSError, ValueError) as exc:
        return str(exc)
    return None


def training_problems(questions: list[Question], indexing: list[Problem]) -> list[Problem]:
    """Problems that stop training: bad records, missing images, duplicate ids (images are not decoded here)."""
    return [p for p in validate(questions, indexing, decode=False) if p.severity == "error"]


def drop_bad_rows(questions: list[Question], problems: list[Problem]) -> list[Question]:
    """The questions without problems; of duplicated ids the first occurrence stays."""
    bad = {p.question_id for p in problems if p.question_id and p.kind != "duplicate_id"}
    kept, seen = [], set()
    for q in questions:
        if q.question_id not in bad and q.question_id not in seen:
            kept.append(q)
        seen.add(q.question_id)
    return kept


def problem_summary(where: str, problems: list[Problem]) -> str:
    """One line saying how many problems of each kind `where` has, and what to do about them."""
    counts = ", ".join(f"{n} {k}" for k, n in sorted(Counter(p.kind for p in problems).items()))
    return (
        f"{where} has data errors ({counts}); the first are listed below. Run `med-r1 data validate PATH` for the "
        "full report, fix the data, or set data.skip_bad_rows=true to train on the good rows."
    )


def overlap_warnings(train: list[Question], evaluated: list[Question]) -> list[str]:
    """Evaluation questions (or images) that training also sees: fine for a sanity check, fatal for a claim."""
    if not evaluated:
        return []
    warnings = []
    shared = {q.question_id for q in train} & {q.question_id for q in evaluated}
    if shared:
        warnings.append(
            f"{len(shared)} of {len(evaluated)} evaluation questions are also training questions (e.g. "
            f"{sorted(shared)[0]}); give data.train and data.eval opposite sides of data.split (train / test)"
        )
    images = image_overlap(train, evaluated)
    if images and not shared:
        warnings.append(
            f"{len(images)} images appear in both training and evaluation questions (question-level splits, as "
            "Med-R1's, do this); data.split.by: image keeps them apart"
        )
    return warnings


def summary(problems: list[Problem], shown: int = 20) -> dict:
    errors = [p for p in problems if p.severity == "error"]
    return {
        "errors": len(errors),
        "warnings": len(problems) - len(errors),
        "counts": dict(sorted(Counter(p.kind for p in problems).items())),
        "problems": [
            {
                "kind": p.kind,
                "where": p.where,
                "question_id": p.question_id,
                "message": p.message,
                "severity": p.severity,
            }
            for p in problems[:shown]
        ],
    }


def format_stats(report: dict, path: str = "PATH", image_root: str | None = None) -> str:
    """The stats as text; `image_root` is where the image names were looked up (for the hint on missing ones)."""
    lines = []
    skipped = report.get("skipped") or {"rows": 0}
    if skipped["rows"]:
        lines.append(skipped_warning(skipped, path))
        lines += [f"  {e['where']}: {e['message']}" for e in skipped["examples"]]
        if skipped["rows"] > len(skipped["examples"]):
            lines.append(f"  ... and {skipped['rows'] - len(skipped['examples'])} more")
    lines += [f"{report['questions']} questions, {report['images']} images, {len(report['datasets'])} datasets"]
    found, named = report["images_found"], report["images"]
    line = f"images on disk: {found} of {named}"
    if found < named:
        where = f" under {image_root}" if image_root else ""
        line += (
            f" ({named - found} not found{where}; `med-r1 data validate {path} --quick` lists them; set "
            "--image-root to the folder the image paths are relative to: the OmniMedVQA root for Med-R1's files)"
        )
    lines.append(line)
    lines.append("by modality: " + ", ".join(f"{k} {v}" for k, v in report["modalities"].items()))
    lines.append("by dataset: " + ", ".join(f"{k} {v}" for k, v in report["datasets"].items()))
    types = list(report["question_types"])
    width = max([len(m) for m in report["modality_x_question_type"]] + [8])
    lines.append(" " * width + " | " + " | ".join(types) + " | total")
    for modality, row in report["modality_x_question_type"].items():
        cells = " | ".join(f"{row.get(t, 0):>{len(t)}}" for t in types)
        lines.append(f"{modality:<{width}} | {cells} | {sum(row.values())}")
    lines.append("options per question: " + ", ".join(f"{k}: {v}" for k, v in report["options_per_question"].items()))
    lines.append("answer letters: " + ", ".join(f"{k}: {v}" for k, v in report["answer_letters"].items()))
    lines.append("answer types: " + ", ".join(f"{k}: {v}" for k, v in report["answer_types"].items()))
    return "\n".join(lines)


def format_summary(report: dict, n_questions: int) -> str:
    head = f"{n_questions} questions: {report['errors']} errors, {report['warnings']} warnings"
    counts = ", ".join(f"{n} {kind}" for kind, n in report["counts"].items())
    lines = [head + (f" ({counts})" if counts else "")]
    lines += [f"  {p['kind']}: {p['where']}: {p['message']}" for p in report["problems"]]
    return "\n".join(lines)

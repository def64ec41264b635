"""`med-r1 data stats|validate`: what a dataset holds, and what is wrong with it.

`validate` finds bad records (answers not among the options, missing keys), missing and unreadable images, duplicate
question ids and, given a test set, images shared between train and test. Each problem names its file and record.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from med_r1.records import Problem, Question


def stats(questions: list[Question]) -> dict:
    table: dict[str, Counter] = defaultdict(Counter)
    for q in questions:
        table[q.modality][q.question_type] += 1
    choice = [q for q in questions if q.answer_type == "choice"]
    return {
        "questions": len(questions),
        "images": len({path for q in questions for path in q.images}),
        "datasets": dict(sorted(Counter(q.dataset for q in questions).items())),
        "modality_x_question_type": {m: dict(sorted(c.items())) for m, c in sorted(table.items())},
        "question_types": dict(sorted(Counter(q.question_type for q in questions).items())),
        "answer_types": dict(sorted(Counter(q.answer_type for q in questions).items())),
        "options_per_question": {str(k): v for k, v in sorted(Counter(len(q.options) for q in choice).items())},
        "answer_letters": dict(sorted(Counter(q.answer for q in choice).items())),
    }


def validate(
    questions: list[Question],
    indexing: list[Problem],
    test: list[Question] | None = None,
    decode: bool = True,
    frames: int = 8,
    window: str = "auto",
) -> list[Problem]:
    """Every problem found: indexing problems, then per-question ones, then train/test image overlap."""
    from med_r1.data.medical import load_frames

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
                checked[path] = _image_problem(path, decode, frames, window, load_frames)
            if checked[path] is not None:
                kind = "missing_image" if checked[path] == "missing" else "unreadable_image"
                text = (
                    f"image not found: {path}" if kind == "missing_image" else f"cannot read {path}: {checked[path]}"
                )
                problems.append(Problem(kind, where, text, question_id=q.question_id))
    if test is not None:
        train_images = {path for q in questions for path in q.images}
        shared = sorted({path for q in test for path in q.images} & train_images)
        for path in shared:
            problems.append(Problem("image_overlap", path, "image used by both the train and the test set"))
    return problems


def _image_problem(path: str, decode: bool, frames: int, window: str, load_frames) -> str | None:
    if not Path(path).exists():
        return "missing"
    if not decode:
        return None
    try:
        load_frames(path, frames=frames, window=window)
    except (OSError, ValueError) as exc:
        return str(exc)
    return None


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


def format_stats(report: dict) -> str:
    lines = [f"{report['questions']} questions, {report['images']} images, {len(report['datasets'])} datasets"]
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

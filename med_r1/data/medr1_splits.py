"""Med-R1's split files: JSON lists of `{"image", "problem", "solution"}` records.

    {"image": "Images/NLM- Malaria Data/.../cell_168.png",
     "problem": "Is there any evidence ... in this image? A)Yes, B)No.",
     "solution": "<answer> B </answer>"}

`problem` is the question, a space and the options as `A)text, B)text` (option text may itself contain commas, so the
parser cuts on the ordered letter boundaries, never on commas). The file name carries the domain:
`Splits/modality/test/CT(Computed Tomography)_test.json`, `Splits/question_type/train/Lesion Grading_train.json`.
Image paths are relative to the OmniMedVQA root (`image_root`). When that root also holds `QA_information/`, each
record is joined back to its OmniMedVQA record to recover question id, dataset, modality and question type.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from med_r1.data.collector import Collector
from med_r1.data.omnimedvqa import OPEN, find_root, parse_record
from med_r1.data.taxonomy import MODALITIES, OMNIMEDVQA_MODALITIES, QUESTION_TYPES, canonical_modality
from med_r1.io import atomic_write_text
from med_r1.prompts import format_problem
from med_r1.records import LETTERS, LoadResult, Problem, Question

_SOLUTION = re.compile(r"<answer>\s*(\w+)\s*</answer>")
_SPLIT_SUFFIX = re.compile(r"_(train|test|filtered_test)$")


def is_medr1_file(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.lstrip().startswith("[") and '"problem"' in head and '"solution"' in head


def parse_problem(problem: str) -> tuple[str, list[str]] | None:
    """Split Med-R1's `problem` into (question, option texts). None when no `A)` option list is present."""
    start = re.search(r"(?:^| )A\)", problem)
    if start is None:
        return None
    question = problem[: start.start()]
    rest = problem[start.end() :]
    options = []
    for letter in LETTERS[1:]:
        boundary = rest.find(f", {letter})")
        if boundary < 0:
            break
        options.append(rest[:boundary])
        rest = rest[boundary + len(f", {letter})") :]
    options.append(rest)
    return question, options


def domain_from_filename(path: Path) -> tuple[str | None, str | None]:
    """(modality raw string, question type) named by a split file's stem, e.g. 'X-Ray_test.json' -> ('X-Ray', None)."""
    stem = _SPLIT_SUFFIX.sub("", path.stem)
    if stem in OMNIMEDVQA_MODALITIES or canonical_modality(stem) in MODALITIES:
        return stem, None
    if stem in QUESTION_TYPES:
        return None, stem
    return None, None


def load_medr1(path: Path, image_root: str | None = None) -> LoadResult:
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    root = Path(image_root).expanduser() if image_root else (path if path.is_dir() else path.parent)
    omni_root = find_root(root)
    index = _omnimedvqa_index(omni_root) if omni_root else {}
    out = Collector(refuse_duplicates=False)
    for file in files:
        where_file = file.as_posix()
        modality_raw, question_type = domain_from_filename(file)
        for i, record in enumerate(out.read_json_list(file, where_file) or []):
            where = f"{where_file}[{i}]"
            question, problem = _parse(record, where, root, index, modality_raw, question_type, f"{file.stem}_{i:05d}")
            out.add(question or problem)
    return out.result


def _parse(record, where, root, index, modality_raw, question_type, fallback_id):
    if not isinstance(record, dict) or not all(
        isinstance(record.get(k), str) for k in ("image", "problem", "solution")
    ):
        return None, Problem("bad_record", where, 'expected {"image": str, "problem": str, "solution": str}')
    parsed = parse_problem(record["problem"])
    match = _SOLUTION.search(record["solution"])
    if parsed is None:
        return None, Problem("bad_record", where, "problem has no 'A)' option list")
    if match is None:
        return None, Problem("bad_record", where, f"solution {record['solution']!r} has no <answer>LETTER</answer>")
    text, options = parsed
    letter = match.group(1).strip().upper()
    if letter not in LETTERS[: len(options)]:
        return None, Problem(
            "answer_not_in_options", where, f"answer {letter!r} is not among the {len(options)} options"
        )
    known = index.get((record["image"], text))
    dataset = record["image"].split("/")[1] if record["image"].startswith("Images/") else ""
    raw = (known.modality_raw if known else None) or modality_raw or "unknown"
    return Question(
        question_id=known.question_id if known else fallback_id,
        dataset=known.dataset if known else dataset,
        images=(str(root / record["image"]),),
        question=text,
        options=tuple(options),
        answer=letter,
        modality=canonical_modality(raw),
        modality_raw=raw,
        question_type=(known.question_type if known else None) or question_type or "unknown",
        source=where,
    ), None


def _omnimedvqa_index(root: Path) -> dict[tuple[str, str], Question]:
    """(image_path relative to the root, question text) -> the OmniMedVQA record, to recover ids and domains."""
    index = {}
    folder = root / "QA_information" / OPEN
    for qa_file in sorted(folder.glob("*.json")):
        try:
            records = json.loads(qa_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for i, record in enumerate(records if isinstance(records, list) else []):
            question, _ = parse_record(record, f"{qa_file.name}[{i}]", root)
            if question is not None:
                index[(str(record["image_path"]), question.question)] = question
    return index


def to_medr1_record(question: Question, image_root: Path) -> dict[str, str]:
    if question.answer_type != "choice":
        raise ValueError(f"{question.question_id}: Med-R1 split files hold multiple-choice questions only")
    image = Path(question.images[0])
    try:
        image_rel = image.relative_to(image_root).as_posix()
    except ValueError:
        image_rel = image.as_posix()
    return {
        "image": image_rel,
        "problem": format_problem(question.question, question.options),
        "solution": f"<answer> {question.answer} </answer>",
    }


def write_medr1(questions: list[Question], path: Path, image_root: Path) -> int:
    """Write one Med-R1 split file (atomically); returns the number of records written."""
    records = [to_medr1_record(q, image_root) for q in questions]
    atomic_write_text(path, json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    return len(records)

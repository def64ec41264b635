"""OmniMedVQA: `QA_information/{Open-access,Restricted-access}/*.json` records with images under `Images/`.

Handles the format's quirks: the one record keyed `modality` instead of `modality_type`, optional `option_C`/`option_D`,
`gt_answer` given as option text (matched after normalising case, whitespace and a trailing period), and paths with
spaces, `&` and parentheses (never split or quoted). Restricted-access images live in the user's own copies of the
source datasets: `roots` maps a dataset name to that local folder. Indexing reads JSON only; no image is opened.
"""

from __future__ import annotations

import re
from pathlib import Path

from med_r1.data.collector import Collector
from med_r1.data.taxonomy import canonical_modality, canonical_question_type
from med_r1.records import LETTERS, LoadResult, Problem, Question

OPEN, RESTRICTED = "Open-access", "Restricted-access"


def find_root(path: Path) -> Path | None:
    """The OmniMedVQA root (the folder holding QA_information/), given it or its parent."""
    for candidate in (path, path / "OmniMedVQA"):
        if (candidate / "QA_information").is_dir():
            return candidate
    return None


def load_omnimedvqa(path: Path, roots: dict[str, str] | None = None) -> LoadResult:
    root = find_root(path)
    out = Collector(refuse_duplicates=False)
    if root is None:
        out.add(Problem("bad_file", str(path), "no QA_information/ folder: not an OmniMedVQA root"))
        return out.result
    roots = roots or {}
    for access in (OPEN, RESTRICTED):
        folder = root / "QA_information" / access
        if not folder.is_dir():
            continue
        for qa_file in sorted(folder.glob("*.json")):
            rel = qa_file.relative_to(root).as_posix()
            for index, record in enumerate(out.read_json_list(qa_file, rel) or []):
                question, problem = parse_record(record, f"{rel}[{index}]", root, access, roots)
                out.add(question or problem)
    return out.result


def parse_record(
    record: dict, where: str, root: Path, access: str = OPEN, roots: dict[str, str] | None = None
) -> tuple[Question | None, Problem | None]:
    if not isinstance(record, dict):
        return None, Problem("bad_record", where, "record is not a JSON object")
    qid = record.get("question_id")
    if qid:
        where = f"{where} ({qid})"
    missing = [k for k in ("question_id", "question", "gt_answer", "image_path", "option_A") if not record.get(k)]
    if missing:
        return None, Problem("bad_record", where, f"missing key(s): {', '.join(missing)}", question_id=str(qid or ""))
    options = option_texts(record)
    letter = answer_letter(str(record["gt_answer"]), options)
    if letter is None:
        shown = ", ".join(f"{LETTERS[i]}={t!r}" for i, t in enumerate(options))
        return None, Problem(
            "answer_not_in_options",
            where,
            f"gt_answer {record['gt_answer']!r} matches none of the options ({shown})",
            question_id=str(qid),
        )
    raw_modality = record.get("modality_type", record.get("modality", "unknown"))  # one record uses 'modality'
    dataset = str(record.get("dataset", ""))
    image = resolve_image(str(record["image_path"]), dataset, root, access, roots or {})
    if image is None:
        return None, Problem(
            "missing_image",
            where,
            f"restricted-access dataset {dataset!r} has no local root; set data.<split>.roots.{dataset}: /path/to/it",
            question_id=str(qid),
        )
    return Question(
        question_id=str(qid),
        dataset=dataset,
        images=(image,),
        question=str(record["question"]),
        options=tuple(options),
        answer=letter,
        modality=canonical_modality(str(raw_modality)),
        modality_raw=str(raw_modality),
        question_type=canonical_question_type(str(record.get("question_type", ""))),
        source=where,
    ), None


def option_texts(record: dict) -> list[str]:
    """option_A, option_B, ... in letter order, stopping at the first absent letter."""
    options = []
    for letter in LETTERS:
        value = record.get(f"option_{letter}")
        if value is None or (isinstance(value, str) and not value.strip()):
            break
        options.append(str(value))
    return options


def normalise_answer(text: str) -> str:
    text = re.sub(r"\s+", " ", text.strip().strip('"').strip()).casefold()
    return text.rstrip(".").strip()


def answer_letter(gt_answer: str, options: list[str]) -> str | None:
    """The letter of the option whose text is `gt_answer` (exact first, then normalised); None if none matches."""
    for i, text in enumerate(options):
        if text == gt_answer:
            return LETTERS[i]
    wanted = normalise_answer(gt_answer)
    for i, text in enumerate(options):
        if normalise_answer(text) == wanted:
            return LETTERS[i]
    return None


def resolve_image(image_path: str, dataset: str, root: Path, access: str, roots: dict[str, str]) -> str | None:
    if access == OPEN:
        return str(root / image_path)
    if dataset not in roots:
        return None
    base = Path(roots[dataset]).expanduser()
    # Restricted records point into the source dataset's own layout, sometimes behind an Images/<dataset>/ prefix.
    for prefix in (f"Images/{dataset}/", "Images/"):
        if image_path.startswith(prefix):
            image_path = image_path[len(prefix) :]
            break
    return str(base / image_path)

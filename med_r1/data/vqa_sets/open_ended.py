"""Open-ended medical VQA sets: VQA-RAD, PathVQA (HF parquet snapshots) and SLAKE (its JSON release or a snapshot).

Answers are free text or yes/no (`answer_type` open / closed); there are no options.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from med_r1.data.collector import Collector
from med_r1.data.jsonl import is_yes_no
from med_r1.data.taxonomy import canonical_modality
from med_r1.data.vqa_sets.files import (
    ImageStore,
    absolute,
    existing_images,
    parquet_rows,
    question_id,
    split_of,
)
from med_r1.records import LoadResult, Problem, Question


def open_question(
    row: dict, dataset: str, qid: str, images: tuple[str, ...], source: str, modality: str
) -> Question | Problem:
    """An open-ended record; SLAKE's own `answer_type`, `modality`, `content_type` win over the derived values."""
    question, answer = row.get("question"), row.get("answer")
    if question in (None, "") or answer in (None, ""):
        return Problem("bad_record", f"{source} ({qid})", "missing question or answer")
    declared = str(row.get("answer_type") or "").strip().lower()
    answer_type = declared if declared in ("open", "closed") else ("closed" if is_yes_no(str(answer)) else "open")
    raw = str(row.get("modality") or "")
    return Question(
        question_id=qid,
        dataset=dataset,
        images=images,
        question=str(question),
        options=(),
        answer=str(answer),
        modality=canonical_modality(raw) if raw else modality,
        question_type=str(row.get("content_type") or answer_type),
        answer_type=answer_type,
        modality_raw=raw,
        source=source,
    )


def _load_parquet(
    path: Path,
    image_root: str | None,
    splits: Collection[str] | None,
    dataset: str,
    slug: str,
    modality: str,
    lang: str | None = None,
) -> LoadResult:
    out, folder = Collector(), path if path.is_dir() else path.parent
    store = ImageStore(folder, image_root)
    columns = ["qid", "id", "image", "question", "answer", "answer_type", "modality", "content_type", "q_lang"]
    for split, index, source, row in parquet_rows(path, splits, columns, out):
        if lang and row.get("q_lang", lang) != lang:
            continue
        qid = question_id(slug, row.get("qid", row.get("id")), split, index)
        images = store.paths(row.get("image"), f"{source} ({qid})")
        out.add(images if isinstance(images, Problem) else open_question(row, dataset, qid, images, source, modality))
    return out.result


def load_vqa_rad(path: Path, image_root: str | None = None, *, splits: Collection[str] | None = None) -> LoadResult:
    """VQA-RAD parquet (`image`, `question`, `answer`), open-ended.

    answer_type and question_type are "closed" for a yes/no answer, else "open" (the HF copy drops the original
    answer_type field). Modality is "unknown": the HF copy has no modality field, and guessing it from question text
    would mislabel rows.
    """
    return _load_parquet(absolute(path), image_root, splits, "VQA-RAD", "vqa-rad", "unknown")


def load_pathvqa(path: Path, image_root: str | None = None, *, splits: Collection[str] | None = None) -> LoadResult:
    """PathVQA parquet (`image`, `question`, `answer`), open-ended; answer/question type as in `load_vqa_rad`.

    Modality "Microscopy": every image is pathology (textbook figures and PEIR, mostly micrographs; some gross photos).
    """
    return _load_parquet(absolute(path), image_root, splits, "PathVQA", "pathvqa", "Microscopy")


def load_slake(
    path: Path, image_root: str | None = None, *, splits: Collection[str] | None = None, lang: str | None = "en"
) -> LoadResult:
    """SLAKE: the original JSON + `imgs/` release, else a parquet snapshot. English rows only unless `lang` says.

    Keeps SLAKE's own fields: `modality` (CT/MRI/X-Ray, canonicalised; raw kept), `answer_type` OPEN/CLOSED ->
    "open"/"closed" (SLAKE's CLOSED includes two-way choices such as "heart or lung?", not only yes/no), and
    `content_type` (Organ, Position, Abnormality, KG, ...) as question_type. Ids are `slake_<qid>`. Rows in other
    languages are skipped silently (they are not errors); images are `imgs/<img_name>` or `image_root/<img_name>`.
    """
    path = absolute(path)
    names = ("train.json", "validation.json", "validate.json", "test.json")
    files = [path] if path.suffix == ".json" else [path / n for n in names if (path / n).is_file()]
    if not files:
        return _load_parquet(path, image_root, splits, "SLAKE", "slake", "unknown", lang=lang)
    out = Collector()
    imgs = absolute(image_root) if image_root else files[0].parent / "imgs"
    for file in files:
        split = split_of(file)
        if splits and split not in splits:
            continue
        for index, row in enumerate(out.read_json_list(file, file.name) or []):
            source = f"{file.name}[{index}]"
            if not isinstance(row, dict):
                out.add(Problem("bad_record", source, "record is not a JSON object"))
                continue
            if lang and row.get("q_lang", lang) != lang:
                continue
            qid = question_id("slake", row.get("qid"), split, index)
            if not row.get("img_name"):
                out.add(Problem("bad_record", f"{source} ({qid})", "missing key: img_name"))
                continue
            images = existing_images([str(imgs / row["img_name"])], f"{source} ({qid})")
            out.add(
                images if isinstance(images, Problem) else open_question(row, "SLAKE", qid, images, source, "unknown")
            )
    return out.result

"""Assembly: every image with its questions, the OmniMedVQA records (answer positions balanced), and the build
itself; `compare_trees` checks a rebuild byte for byte."""

from __future__ import annotations

import importlib.metadata as metadata
import io
import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .encode import MAX_SIDE, jpeg_bytes, png_bytes, stable_order
from .questions import MODALITY_ANSWER, MODALITY_TEMPLATES, MR_Q, TEMPLATES, Item, modality_qa
from .real_dicom import real_dicom_items
from .real_files import real_skimage_items, real_volume_items
from .sources import BUILT_WITH, missing_requirements
from .synthetic import synthetic_dermoscopy_items, synthetic_oct_items
from .texts import notice_text, readme_text, sources_json

RECORD_KEYS = ("dataset", "question_id", "question_type", "question", "gt_answer", "image_path")


class Positions:
    """Deterministic position of the correct answer, balanced per option count: the k-th n-option question takes
    slot k % n of a permutation of 0..n-1 that is fixed by (n, k // n), so every block of n questions uses each
    letter once and the order carries no pattern."""

    def __init__(self) -> None:
        self.counters: dict[int, int] = {}

    def __call__(self, n_options: int) -> int:
        k = self.counters.get(n_options, 0)
        self.counters[n_options] = k + 1
        block = stable_order([str(i) for i in range(n_options)], f"answer-position:{n_options}:{k // n_options}")
        return int(block[k % n_options])


def make_records(items: list[Item]) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    positions = Positions()
    per_dataset: dict[str, list[dict]] = {}
    evidence: dict[str, list[dict]] = {}
    for item in items:
        image_path = f"Images/{item.dataset}/{item.file}"
        records = per_dataset.setdefault(item.dataset, [])
        for qa in item.questions:
            options = list(qa.distractors)
            if qa.answer in options or len(set(options)) != len(options) or not 1 <= len(options) <= 3:
                raise RuntimeError(f"{image_path}: bad options for {qa.question!r}")
            options.insert(positions(len(options) + 1), qa.answer)
            qid = f"{item.dataset}_{len(records) + 1:04d}"
            record = dict(
                zip(
                    RECORD_KEYS, (item.dataset, qid, qa.question_type, qa.question, qa.answer, image_path), strict=True
                )
            )
            for letter, text in zip("ABCD", options, strict=False):
                record[f"option_{letter}"] = text
            record["modality_type"] = item.modality
            records.append(record)
            evidence.setdefault(image_path, []).append(
                {"question_id": qid, "question_type": qa.question_type, "answer": qa.answer, "evidence": qa.evidence}
            )
    return per_dataset, evidence


def add_second_modality_question(item: Item) -> None:
    """Real images get two paraphrased modality questions (4 and 3 options, both answer phrasings)."""
    asked = [qa for qa in item.questions if qa.question_type == MR_Q]
    if len(asked) != 1:
        return
    variant = 1 if asked[0].answer == MODALITY_ANSWER[item.modality][0] else 0
    n_options = 3 if len(asked[0].distractors) == 3 else 4
    extra = modality_qa(item.modality, asked[0].evidence, f"{item.file}#2", n_options=n_options, variant=variant)
    # A different paraphrase than the first question's: the template half a cycle further on.
    first = MODALITY_TEMPLATES.index(asked[0].question)
    extra.question = MODALITY_TEMPLATES[(first + len(MODALITY_TEMPLATES) // 2) % len(MODALITY_TEMPLATES)]
    item.questions.insert(item.questions.index(asked[0]) + 1, extra)


def all_items() -> list[Item]:
    items = real_dicom_items() + real_skimage_items() + real_volume_items()
    for item in items:
        add_second_modality_question(item)
    items += synthetic_oct_items() + synthetic_dermoscopy_items()
    items.sort(key=lambda it: (it.dataset, it.file))
    seen = set()
    for item in items:
        key = (item.dataset, item.file)
        if key in seen:
            raise RuntimeError(f"duplicate image {key}")
        seen.add(key)
        if max(item.pixels.shape[:2]) > MAX_SIDE:
            raise RuntimeError(f"{key}: larger than {MAX_SIDE} px")
    return items


def json_text(data, sort_keys: bool) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=sort_keys) + "\n"


def build(out: Path) -> dict:
    """Write the whole dataset into `out` (created; must be empty or absent). Returns a small summary."""
    missing = missing_requirements()
    if missing:
        raise SystemExit(f"missing packages {missing}: pip install -r tools/requirements-bundle.txt")
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise SystemExit(f"{out} is not empty")
    TEMPLATES.counters.clear()
    items = all_items()
    per_dataset, evidence = make_records(items)
    for item in items:
        path = out / "Images" / item.dataset / item.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(item.pixels) if item.fmt == "png" else jpeg_bytes(item.pixels))
    qa_dir = out / "QA_information" / "Open-access"
    qa_dir.mkdir(parents=True)
    for dataset in sorted(per_dataset):
        (qa_dir / f"{dataset}.json").write_text(json_text(per_dataset[dataset], sort_keys=False), encoding="utf-8")
    (out / "SOURCES.json").write_text(json_text(sources_json(items, evidence), sort_keys=True), encoding="utf-8")
    (out / "NOTICE").write_text(notice_text(items), encoding="utf-8")
    (out / "README.md").write_text(readme_text(items, per_dataset), encoding="utf-8")
    return {
        "images": len(items),
        "synthetic_images": sum(it.synthetic for it in items),
        "questions": sum(len(v) for v in per_dataset.values()),
    }


def tree_files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def compare_trees(expected: Path, actual: Path) -> list[str]:
    """Differences between two folders, file by file and byte by byte (empty list: identical)."""
    want, got = tree_files(expected), tree_files(actual)
    problems = [f"only in the committed copy: {rel}" for rel in sorted(set(want) - set(got))]
    problems += [f"only in the rebuild: {rel}" for rel in sorted(set(got) - set(want))]
    for rel in sorted(set(want) & set(got)):
        a, b = want[rel].read_bytes(), got[rel].read_bytes()
        if a == b:
            continue
        note = ""
        if rel.lower().endswith((".png", ".jpg")):
            try:
                same = np.array_equal(np.asarray(Image.open(io.BytesIO(a))), np.asarray(Image.open(io.BytesIO(b))))
                note = " (decoded pixels identical: encoder difference)" if same else " (decoded pixels differ)"
            except Exception as exc:  # noqa: BLE001 - report, never crash the comparison
                note = f" (cannot decode: {exc})"
        problems.append(f"bytes differ: {rel} ({len(a)} vs {len(b)} bytes){note}")
    return problems


def environment_note() -> str:
    now = {"pillow": metadata.version("pillow"), "numpy": np.__version__, "python-zlib": zlib.ZLIB_RUNTIME_VERSION}
    diffs = [f"{k} {now[k]} (built with {v})" for k, v in BUILT_WITH.items() if now[k] != v]
    return "environment differs from the committed build: " + ", ".join(diffs) if diffs else ""

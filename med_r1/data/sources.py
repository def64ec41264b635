"""From a recipe's `data.train` / `data.eval` entry to a list of questions: find the format, load, split, filter.

`path: bundled` is the small OmniMedVQA-format set shipped inside the package (all eight modalities, real images
where a pip package carries one). Indexing reads metadata only; images are decoded when a row is used.
"""

from __future__ import annotations

import functools
import os
import typing
from dataclasses import replace
from pathlib import Path

from med_r1.config import DataSource, SplitConfig
from med_r1.data import selection
from med_r1.data.jsonl import load_jsonl
from med_r1.data.medr1_splits import is_medr1_file, load_medr1
from med_r1.data.omnimedvqa import find_root, load_omnimedvqa
from med_r1.data.vqa_sets import LOADERS
from med_r1.errors import DataError
from med_r1.records import LoadResult

BUNDLED = Path(__file__).parent / "bundled" / "omnimedvqa_mini"
FORMATS = tuple(f for f in typing.get_args(typing.get_type_hints(DataSource)["format"]) if f != "auto")
"""The formats `data.*.format` names (the recipe schema's own list, less 'auto')."""


def resolve_path(path: str) -> Path:
    return BUNDLED if path == "bundled" else Path(path).expanduser()


def detect_format(path: Path) -> str | None:
    """Guess the format of a local dataset; None when unsure (then the recipe must name `format`)."""
    if path.is_dir():
        if find_root(path):
            return "omnimedvqa"
        if (path / "MM").is_dir() or (path.name == "MM" and (path / "test.jsonl").exists()):
            return "medxpertqa"
        if any(path.glob("*.jsonl")):
            return "jsonl"
        files = sorted(path.rglob("*.json"))
        if files and is_medr1_file(files[0]):
            return "medr1"
        return None
    suffixes = "".join(path.suffixes).lower()
    if suffixes.endswith(".jsonl"):
        return "jsonl"
    if suffixes.endswith(".json") and is_medr1_file(path):
        return "medr1"
    return None


@functools.lru_cache(maxsize=8)
def _load_cached(fmt: str, path: str, image_root: str | None, roots: tuple[tuple[str, str], ...]) -> LoadResult:
    p = Path(path)
    base = Path(image_root) if image_root else (p if p.is_dir() else p.parent)
    if fmt == "omnimedvqa":
        return _with_image_ids(load_omnimedvqa(p, dict(roots)), find_root(p) or p)
    if fmt == "medr1":
        return _with_image_ids(load_medr1(p, image_root), base)
    if fmt == "jsonl":
        return _with_image_ids(load_jsonl(p, image_root), base)
    return _with_image_ids(LOADERS[fmt](p, image_root), base)


def load_source(source: DataSource, where: str = "data.train") -> LoadResult:
    """Every question of a source, unfiltered, with the problems found while indexing it."""
    path = resolve_path(source.path)
    if not path.exists():
        raise DataError(f"{where}.path: {source.path} does not exist; point it at a dataset folder or file")
    fmt = source.format
    if fmt == "auto":
        fmt = detect_format(path)
        if fmt is None:
            raise DataError(f"{where}.path: cannot tell the format of {path}; set {where}.format to one of {FORMATS}")
    result = _load_cached(fmt, str(path.resolve()), source.image_root, tuple(sorted(source.roots.items())))
    return LoadResult(list(result.questions), list(result.problems))


def _with_image_ids(result: LoadResult, base: Path) -> LoadResult:
    """Name every image relative to the dataset's root, so splits hash the same wherever the data is copied."""
    base_text = str(base.resolve()) + os.sep
    questions = [
        replace(q, image_ids=tuple(p[len(base_text) :] if p.startswith(base_text) else p for p in q.images))
        for q in result.questions
    ]
    return LoadResult(questions, result.problems)


def select(source: DataSource, split: SplitConfig, where: str = "data.train") -> LoadResult:
    """Load a source, take its side of the split, filter its domains and apply its limit."""
    result = load_source(source, where)
    questions = selection.take_side(result.questions, source.split, split.by, split.test_ratio, split.seed)
    questions = selection.filter_questions(
        questions, source.modalities, source.question_types, source.datasets, where=where
    )
    questions = selection.limit(questions, source.limit, split.seed)
    if source.open_ended:
        questions = [selection.as_open(q) for q in questions]
    if not questions:
        raise DataError(f"{where}: no questions left after splitting and filtering {source.path}")
    # Problems found while indexing (bad records) have no question to filter on, so all of them are kept.
    return LoadResult(questions, result.problems)

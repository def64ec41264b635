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
from med_r1.data import selection, speech
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


def _base(fmt: str, path: Path, image_root: str | None) -> Path:
    """The folder image names are relative to, for resolved `path` and `image_root`."""
    if fmt == "omnimedvqa":
        return find_root(path) or path
    return Path(image_root) if image_root else (path if path.is_dir() else path.parent)


@functools.lru_cache(maxsize=8)
def _load_cached(fmt: str, path: str, image_root: str | None, roots: tuple[tuple[str, str], ...]) -> LoadResult:
    p = Path(path)
    if fmt == "omnimedvqa":
        result = load_omnimedvqa(p, dict(roots))
    elif fmt == "medr1":
        result = load_medr1(p, image_root)
    elif fmt == "jsonl":
        result = load_jsonl(p, image_root)
    else:
        result = LOADERS[fmt](p, image_root)
    return _with_image_ids(result, _base(fmt, p, image_root))


def key(where: str, name: str) -> str:
    """How a message names a source's setting: `data.train.format` in a recipe, `--format` on the command line
    (where `where` is the argument's name, e.g. PATH)."""
    if where.startswith("data."):
        return f"{where}.{name}"
    return where if name == "path" else f"--{name.replace('_', '-')}"


def _resolved(source: DataSource, where: str) -> tuple[str, Path, str | None]:
    """(format, path, image_root) of a source with both paths resolved, once: what the files name never depends on
    how the paths were spelled or on the working directory."""
    path = resolve_path(source.path)
    if not path.exists():
        raise DataError(f"{key(where, 'path')}: {source.path} does not exist; point it at a dataset folder or file")
    path = path.resolve()
    fmt = source.format
    if fmt == "auto":
        fmt = detect_format(path)
        if fmt is None:
            raise DataError(
                f"{key(where, 'path')}: cannot tell the format of {path}; set {key(where, 'format')} to one of "
                f"{', '.join(FORMATS)}"
            )
    image_root = str(Path(source.image_root).expanduser().resolve()) if source.image_root else None
    return fmt, path, image_root


def image_root_of(source: DataSource, where: str = "data.train") -> Path:
    """The folder a source's images are named relative to (resolved): image_root, the OmniMedVQA root, or the
    input's folder. Converted files name their images relative to it."""
    fmt, path, image_root = _resolved(source, where)
    return _base(fmt, path, image_root)


def load_source(source: DataSource, where: str = "data.train") -> LoadResult:
    """Every question of a source, unfiltered, with the problems found while indexing it."""
    fmt, path, image_root = _resolved(source, where)
    result = _load_cached(fmt, str(path), image_root, tuple(sorted(source.roots.items())))
    if not result.questions and all(p.kind == "bad_file" for p in result.problems):
        raise _nothing_found(path, fmt, source.format, where, result)
    return LoadResult(list(result.questions), list(result.problems))


def _nothing_found(path: Path, fmt: str, asked: str, where: str, result: LoadResult) -> DataError:
    """A format that matches nothing: say what the path holds and which format would read it."""
    if path.is_dir():
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
        found = f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'}: {', '.join(entries[:5])}"
        found += ", ..." if len(entries) > 5 else ""
        found = found if entries else "an empty folder"
    else:
        found = f"a {path.suffix or 'suffix-less'} file"
    guess = detect_format(path)
    fix = f"; it looks like format {guess!r}: set {key(where, 'format')} {guess} (or auto)" if guess != fmt else ""
    how = f"format {fmt!r}" + (" (detected)" if asked == "auto" else "")
    reasons = [str(p) for p in result.problems[:3]]
    return DataError(
        f"{key(where, 'path')}: {path} holds no questions in {how}; it holds {found}{fix if guess else ''}", reasons
    )


def _with_image_ids(result: LoadResult, base: Path) -> LoadResult:
    """Name every image relative to the dataset's root, so splits hash the same wherever the data is copied."""
    base_text = os.path.normpath(base) + os.sep
    questions = []
    for q in result.questions:
        paths = [os.path.normpath(p) for p in q.images]
        ids = tuple(Path(p[len(base_text) :]).as_posix() if p.startswith(base_text) else p for p in paths)
        questions.append(replace(q, image_ids=ids))
    return LoadResult(questions, result.problems)


def select(source: DataSource, split: SplitConfig, where: str = "data.train") -> LoadResult:
    """Load a source, take its side of the split, filter its domains and apply its limit."""
    result = load_source(source, where)
    questions = selection.take_side(result.questions, source.split, split.by, split.test_ratio, split.seed)
    questions = selection.filter_questions(
        questions, source.modalities, source.question_types, source.datasets, where=where
    )
    questions = selection.limit(questions, source.limit, split.seed)
    questions = speech.with_transcripts(questions, source.asr_model, where)  # spoken questions: only those selected
    if source.open_ended:
        questions = [selection.as_open(q) for q in questions]
    if not questions:
        raise DataError(f"{where}: no questions left after splitting and filtering {source.path}")
    # Problems found while indexing (bad records) have no question to filter on, so all of them are kept.
    return LoadResult(questions, result.problems)

"""Loaders for local copies of VQA-RAD, SLAKE, PathVQA, PMC-VQA and MedXpertQA (MM), each returning a `LoadResult`.

`path` is the dataset folder (or one data file). Layouts accepted (shared/reference/datasets.md §3):
- HF parquet snapshot, `data/<split>-*.parquet` (or `*.parquet` in `path`): VQA-RAD, PathVQA, SLAKE (OctoMed/SLAKE),
  PMC-VQA (OctoMed/PMC-VQA). Read with pyarrow, projecting only the columns used.
- SLAKE original: `train.json`, `validation.json` (or `validate.json`), `test.json` + `imgs/xmlab<N>/source.jpg`.
- PMC-VQA CSVs: `train.csv`, `test.csv`, `test_clean.csv` (v1), `train_2.csv`, `test_2.csv` (v2; any *.csv is read);
  images in `images/`, `figures/`, `images_2/`, `images2/` or beside the CSVs (the first folder holding the file wins).
- MedXpertQA: `MM/{dev,test}.jsonl` + `images/` (given the snapshot root or the `MM` folder).

Images: parquet cells embed bytes, but `Question.images` holds paths, so each distinct image is written once to
`<dataset folder>/.med_r1_images/` (`~/.cache/med_r1/images/<sha1 of the folder path>/` when that is not writable),
named `<first 16 hex of sha256><extension from the magic bytes>`. A file already there is never rewritten, so a second
load writes nothing. Nothing is decoded while indexing: bytes are hashed, files only checked to exist. `image_root`
overrides where image files are looked up and, for parquet, where extracted images go.

Ids: the dataset's own id (SLAKE `qid`, `id`), prefixed `<dataset>_` when it is a bare number (`slake_11934`, so ids
stay unique across datasets), else `<dataset>_<split>_<row>` (`vqa-rad_test_12`). `source` is `<file>[<row>]` (0-based)
or `<file>:<line>` (JSONL). The split is the parquet file name before its first `-`, else the file stem; `splits=`
loads only those. A bad record becomes a `Problem` naming the file and row (and id) and is skipped; nothing raises.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Collection, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from med_r1.data.jsonl import is_yes_no
from med_r1.data.omnimedvqa import answer_letter
from med_r1.data.records import LoadResult, Problem, Question
from med_r1.data.taxonomy import canonical_modality
from med_r1.io import atomic_write_bytes
from med_r1.prompts import LETTERS

CACHE_FOLDER = ".med_r1_images"
_MAGIC = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg", b"GIF8": ".gif", b"BM": ".bmp"}
_MAGIC |= {b"II*\x00": ".tif", b"MM\x00*": ".tif"}  # TIFF, little- and big-endian
_LETTER_PREFIX = re.compile(r"^\s*([A-J])\s*:\s*")
_EMBEDDED_CHOICES = re.compile(r"\s*Answer Choices:\s*\(A\).*\Z", re.S)


class _Collector:
    """Questions and problems of one load; a repeated question id is reported and skipped."""

    def __init__(self) -> None:
        self.result, self._seen = LoadResult(), set()

    def add(self, item: Question | Problem) -> None:
        if isinstance(item, Problem):
            self.result.problems.append(item)
        elif item.question_id in self._seen:
            self.add(Problem("duplicate_id", f"{item.source} ({item.question_id})", "question id seen before"))
        else:
            self._seen.add(item.question_id)
            self.result.questions.append(item)


# ---------------------------------------------------------------- images


def image_extension(data: bytes, hint: str = "") -> str:
    """The extension the bytes' magic number says; else the hint's suffix; else '.bin'."""
    for magic, ext in _MAGIC.items():
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return Path(hint).suffix.lower() or ".bin"


def image_cache_dir(folder: Path) -> Path:
    """`<folder>/.med_r1_images/` when it can be created there, else a per-folder cache under the home directory."""
    local = folder / CACHE_FOLDER
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local
    except OSError:
        pass
    digest = hashlib.sha1(str(folder).encode()).hexdigest()
    fallback = Path.home() / ".cache" / "med_r1" / "images" / digest
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


class _ImageStore:
    """Turns parquet image cells ({bytes, path} or a path string) into file paths."""

    def __init__(self, folder: Path, image_root: str | None) -> None:
        self.base = Path(os.path.abspath(image_root)) if image_root else folder
        self._root, self._folder, self._cache, self._known = image_root, folder, None, set()

    def paths(self, cell: object, where: str) -> tuple[str, ...] | Problem:
        data, name = (cell.get("bytes"), cell.get("path")) if isinstance(cell, dict) else (None, cell)
        if isinstance(cell, bytes):
            data, name = cell, None
        if data:
            try:
                return (self._put(data, name or ""),)
            except OSError as exc:
                return Problem("image_write_failed", where, f"cannot write the embedded image: {exc}")
        if isinstance(name, str) and name:
            return _existing([str(self.base / name)], where)
        return Problem("missing_image", where, "the image cell holds neither bytes nor a path")

    def _put(self, data: bytes, hint: str) -> str:
        if self._cache is None:  # chosen at the first embedded image: a load without bytes creates no folder
            self._cache = self.base if self._root else image_cache_dir(self._folder)
            self._cache.mkdir(parents=True, exist_ok=True)
        target = self._cache / (hashlib.sha256(data).hexdigest()[:16] + image_extension(data, hint))
        if target.name not in self._known:
            if not target.exists():
                atomic_write_bytes(target, data)
            self._known.add(target.name)
        return str(target)


def _existing(images: list[str], where: str) -> tuple[str, ...] | Problem:
    missing = [i for i in images if not os.path.isfile(i)]
    if missing:
        return Problem("missing_image", where, f"image file(s) not found: {', '.join(missing)}")
    return tuple(images)


def _find(name: str, folders: list[Path]) -> str:
    """The first folder's copy of `name` that exists; else the first candidate (reported missing by `_existing`)."""
    candidates = [str(folder / name) for folder in folders]
    return next((c for c in candidates if os.path.isfile(c)), candidates[0])


# ---------------------------------------------------------------- records


def split_of(file: Path) -> str:
    if file.suffix == ".parquet":
        return file.stem.split("-")[0]
    return "validation" if file.stem == "validate" else file.stem


def _question_id(slug: str, own: object, split: str, row: int) -> str:
    own = "" if own is None else str(own).strip()
    if not own:
        return f"{slug}_{split}_{row}"
    return f"{slug}_{own}" if own.isdigit() else own


def _open_question(
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


def _strip_letter(text: object) -> str:
    return _LETTER_PREFIX.sub("", str(text)).strip()


def _choice_question(
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


# ---------------------------------------------------------------- parquet snapshots


def _parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    for folder in (path / "data", path):
        files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        if files:
            return files
    return []


def _parquet_rows(
    path: Path, splits: Collection[str] | None, columns: list[str], out: _Collector
) -> Iterator[tuple[str, int, str, dict]]:
    """(split, row, source, record) for every row, reading only `columns`; unreadable files become problems."""
    files = _parquet_files(path)
    if not files:
        out.add(Problem("bad_file", str(path), "no parquet files here (expected data/<split>-*.parquet)"))
    folder = path if path.is_dir() else path.parent
    for file in files:
        split, rel, index = split_of(file), file.relative_to(folder).as_posix(), 0
        if splits and split not in splits:
            continue
        try:
            parquet = pq.ParquetFile(file)
            wanted = [c for c in columns if c in parquet.schema_arrow.names]
            for batch in parquet.iter_batches(batch_size=256, columns=wanted):
                for record in batch.to_pylist():
                    yield split, index, f"{rel}[{index}]", record
                    index += 1
        except (OSError, pa.ArrowException) as exc:
            out.add(Problem("bad_file", f"{rel}[{index}]", f"cannot read parquet: {exc}"))


def _load_parquet_open(
    path: Path,
    image_root: str | None,
    splits: Collection[str] | None,
    dataset: str,
    slug: str,
    modality: str,
    lang: str | None = None,
) -> LoadResult:
    out, folder = _Collector(), path if path.is_dir() else path.parent
    store = _ImageStore(folder, image_root)
    columns = ["qid", "id", "image", "question", "answer", "answer_type", "modality", "content_type", "q_lang"]
    for split, index, source, row in _parquet_rows(path, splits, columns, out):
        if lang and row.get("q_lang", lang) != lang:
            continue
        qid = _question_id(slug, row.get("qid", row.get("id")), split, index)
        images = store.paths(row.get("image"), f"{source} ({qid})")
        out.add(images if isinstance(images, Problem) else _open_question(row, dataset, qid, images, source, modality))
    return out.result


def _absolute(path: Path | str) -> Path:
    return Path(os.path.abspath(path))


# ---------------------------------------------------------------- public loaders


def load_vqa_rad(path: Path, image_root: str | None = None, *, splits: Collection[str] | None = None) -> LoadResult:
    """VQA-RAD parquet (`image`, `question`, `answer`), open-ended.

    answer_type and question_type are "closed" for a yes/no answer, else "open" (the HF copy drops the original
    answer_type field). Modality is "unknown": the HF copy has no modality field, and guessing it from question text
    would mislabel rows.
    """
    return _load_parquet_open(_absolute(path), image_root, splits, "VQA-RAD", "vqa-rad", "unknown")


def load_pathvqa(path: Path, image_root: str | None = None, *, splits: Collection[str] | None = None) -> LoadResult:
    """PathVQA parquet (`image`, `question`, `answer`), open-ended; answer/question type as in `load_vqa_rad`.

    Modality "Microscopy": every image is pathology (textbook figures and PEIR, mostly micrographs; some gross photos).
    """
    return _load_parquet_open(_absolute(path), image_root, splits, "PathVQA", "pathvqa", "Microscopy")


def load_slake(
    path: Path, image_root: str | None = None, *, splits: Collection[str] | None = None, lang: str | None = "en"
) -> LoadResult:
    """SLAKE: the original JSON + `imgs/` release, else a parquet snapshot. English rows only unless `lang` says.

    Keeps SLAKE's own fields: `modality` (CT/MRI/X-Ray, canonicalised; raw kept), `answer_type` OPEN/CLOSED ->
    "open"/"closed" (SLAKE's CLOSED includes two-way choices such as "heart or lung?", not only yes/no), and
    `content_type` (Organ, Position, Abnormality, KG, ...) as question_type. Ids are `slake_<qid>`. Rows in other
    languages are skipped silently (they are not errors); images are `imgs/<img_name>` or `image_root/<img_name>`.
    """
    path = _absolute(path)
    names = ("train.json", "validation.json", "validate.json", "test.json")
    files = [path] if path.suffix == ".json" else [path / n for n in names if (path / n).is_file()]
    if not files:
        return _load_parquet_open(path, image_root, splits, "SLAKE", "slake", "unknown", lang=lang)
    out = _Collector()
    imgs = _absolute(image_root) if image_root else files[0].parent / "imgs"
    for file in files:
        split = split_of(file)
        if splits and split not in splits:
            continue
        try:
            records = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            out.add(Problem("bad_file", file.name, f"cannot read JSON: {exc}"))
            continue
        for index, row in enumerate(records if isinstance(records, list) else []):
            source = f"{file.name}[{index}]"
            if not isinstance(row, dict):
                out.add(Problem("bad_record", source, "record is not a JSON object"))
                continue
            if lang and row.get("q_lang", lang) != lang:
                continue
            qid = _question_id("slake", row.get("qid"), split, index)
            if not row.get("img_name"):
                out.add(Problem("bad_record", f"{source} ({qid})", "missing key: img_name"))
                continue
            images = _existing([str(imgs / row["img_name"])], f"{source} ({qid})")
            if isinstance(images, Problem):
                out.add(images)
                continue
            out.add(_open_question(row, "SLAKE", qid, images, source, "unknown"))
        if not isinstance(records, list):
            out.add(Problem("bad_file", file.name, "expected a JSON list of records"))
    return out.result


def load_pmc_vqa(path: Path, image_root: str | None = None, *, splits: Collection[str] | None = None) -> LoadResult:
    """PMC-VQA, four-option multiple choice: the v1/v2 CSVs + image folder, else the OctoMed parquet snapshot.

    CSV: options are `Choice A..D` with their "A:" prefix stripped; the answer is `Answer_label` (a letter), falling
    back to `Answer` (`Anwser` in some copies) matched as text. Splits are the CSV stems; `test_clean` (a subset of
    `test`) is loaded only when named in `splits`. v1 and v2 are different question sets: pick one with `splits`.
    Modality and question_type are "unknown": PMC figures mix every modality and the CSVs carry neither field.
    """
    path = _absolute(path)
    files = [path] if path.suffix == ".csv" else sorted(path.glob("*.csv")) if path.is_dir() else []
    if not files:
        return _load_pmc_vqa_parquet(path, image_root, splits)
    out, folder = _Collector(), files[0].parent
    subfolders = ("images", "figures", "images_2", "images2", "")
    roots = [_absolute(image_root)] if image_root else [folder / d for d in subfolders]
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
            source, qid = f"{file.name}[{index}]", _question_id("pmc-vqa", None, split, index)
            if not row.get("Figure_path"):
                out.add(Problem("bad_record", f"{source} ({qid})", "missing Figure_path"))
                continue
            images = _existing([_find(row["Figure_path"].strip(), roots)], f"{source} ({qid})")
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
            out.add(_choice_question("PMC-VQA", qid, images, row.get("Question"), options, label, answer, source, ""))
    return out.result


def _load_pmc_vqa_parquet(path: Path, image_root: str | None, splits: Collection[str] | None) -> LoadResult:
    out, folder = _Collector(), path if path.is_dir() else path.parent
    store = _ImageStore(folder, image_root)
    columns = ["id", "image", "question", "options", "answer"]
    for split, index, source, row in _parquet_rows(path, splits, columns, out):
        qid = _question_id("pmc-vqa", row.get("id"), split, index)
        images = store.paths(row.get("image"), f"{source} ({qid})")
        if isinstance(images, Problem):
            out.add(images)
            continue
        options = [_strip_letter(o) for o in row.get("options") or []]
        answer = row.get("answer")
        out.add(_choice_question("PMC-VQA", qid, images, row.get("question"), options, None, answer, source, ""))
    return out.result


def load_medxpertqa(path: Path, image_root: str | None = None, *, splits: Collection[str] | None = None) -> LoadResult:
    """MedXpertQA MM (`MM/{dev,test}.jsonl` + `images/`): five-option multiple choice, `label` is the letter.

    The question text embeds its options ("... Answer Choices: (A) x (B) y ..."); that trailing list is cut from
    `question` so prompts do not show the options twice. question_type is `medical_task` (Diagnosis, Treatment, Basic
    Science); MedXpertQA's own `question_type` (Reasoning/Understanding) and `body_system` are not kept. Modality is
    "unknown": MM has no modality field. Records without images (e.g. Text-subset lines) are reported and skipped.
    """
    path = _absolute(path)
    mm = path.parent if path.is_file() else path / "MM" if (path / "MM").is_dir() else path
    files = [path] if path.is_file() else sorted(mm.glob("*.jsonl"))
    root = mm.parent if mm.name == "MM" else mm
    folders = [_absolute(image_root)] if image_root else [root / "images", mm / "images"]
    out = _Collector()
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
    qid = _question_id("medxpertqa", record.get("id"), split, index)
    options = record.get("options")
    letters = sorted(options) if isinstance(options, dict) else []
    if not letters or letters != list(LETTERS[: len(letters)]):
        return Problem("bad_record", f"{source} ({qid})", "'options' must be an object keyed A, B, ... without gaps")
    names = record.get("images")
    if not names or not isinstance(names, list):
        return Problem("missing_image", f"{source} ({qid})", "no 'images' list (MedXpertQA MM records have one)")
    images = _existing([_find(str(n), folders) for n in names], f"{source} ({qid})")
    if isinstance(images, Problem):
        return images
    question = _EMBEDDED_CHOICES.sub("", str(record.get("question") or ""))
    options = [str(options[k]) for k in letters]
    label, task = record.get("label"), str(record.get("medical_task") or "")
    return _choice_question("MedXpertQA", qid, images, question, options, label, None, source, task)


LOADERS = {
    "vqa-rad": load_vqa_rad,
    "slake": load_slake,
    "pathvqa": load_pathvqa,
    "pmc-vqa": load_pmc_vqa,
    "medxpertqa": load_medxpertqa,
}

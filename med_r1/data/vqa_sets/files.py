"""What the VQA-set loaders share: image files (parquet bytes written once to a cache, paths checked to exist),
parquet rows read column by column, splits and question ids."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Iterator
from pathlib import Path

from med_r1.data.collector import Collector
from med_r1.io import atomic_write_bytes
from med_r1.records import Problem

CACHE_FOLDER = ".med_r1_images"
_MAGIC = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg", b"GIF8": ".gif", b"BM": ".bmp"}
_MAGIC |= {b"II*\x00": ".tif", b"MM\x00*": ".tif"}  # TIFF, little- and big-endian


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


class ImageStore:
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
            return existing_images([str(self.base / name)], where)
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


def existing_images(images: list[str], where: str) -> tuple[str, ...] | Problem:
    missing = [i for i in images if not os.path.isfile(i)]
    if missing:
        return Problem("missing_image", where, f"image file(s) not found: {', '.join(missing)}")
    return tuple(images)


def first_existing(name: str, folders: list[Path]) -> str:
    """The first folder's copy of `name` that exists; else the first candidate (reported missing later)."""
    candidates = [str(folder / name) for folder in folders]
    return next((c for c in candidates if os.path.isfile(c)), candidates[0])


def absolute(path: Path | str) -> Path:
    return Path(os.path.abspath(path))


# ---------------------------------------------------------------- records


def split_of(file: Path) -> str:
    if file.suffix == ".parquet":
        return file.stem.split("-")[0]
    return "validation" if file.stem == "validate" else file.stem


def question_id(slug: str, own: object, split: str, row: int) -> str:
    own = "" if own is None else str(own).strip()
    if not own:
        return f"{slug}_{split}_{row}"
    return f"{slug}_{own}" if own.isdigit() else own


# ---------------------------------------------------------------- parquet snapshots


def _parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    for folder in (path / "data", path):
        files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        if files:
            return files
    return []


def parquet_rows(
    path: Path, splits: Collection[str] | None, columns: list[str], out: Collector
) -> Iterator[tuple[str, int, str, dict]]:
    """(split, row, source, record) for every row, reading only `columns`; unreadable files become problems."""
    import pyarrow as pa  # lazy: pyarrow takes a third of a second to import, and only parquet snapshots need it
    import pyarrow.parquet as pq

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

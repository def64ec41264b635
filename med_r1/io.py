"""Small file helpers: atomic writes, so an interrupted run never leaves a half-written file in place, and the check
that a command writing a folder does not write over files already there."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from med_r1.errors import DataError, UserError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path, repair: bool = False) -> list[dict]:
    """Read a JSON-lines file of objects; a line that is no JSON object is a DataError naming the file and line.

    A last line without its newline is kept when it is whole JSON (a file written by hand) and dropped when it is not
    (a torn append: the writer died mid-line); with `repair`, such a torn line is cut off the file.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    rows, good_end = [], 0
    lines = data.splitlines(keepends=True)
    for number, line in enumerate(lines, 1):
        if not line.endswith(b"\n"):
            try:
                row = json.loads(line) if line.strip() else None
            except ValueError:
                break  # torn: the writer died mid-line
            if isinstance(row, dict):
                rows.append(row)
                good_end += len(line)
            break
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}); fix or remove that line") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: a line must be a JSON object, got {type(row).__name__}")
            rows.append(row)
        good_end += len(line)
    if repair and good_end != len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return rows


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one JSON line and flush it to disk, so a crash loses at most the line being written."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def safetensors_whole(path: Path) -> bool:
    """The file is as long as its header says (a save cut short by a crash or a full disk is not)."""
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(length))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size >= 8 + length + end
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def check_output_folder(path: Path, force: bool, what: str) -> None:
    """`path` may be written by `what`: it is new, an empty folder, or `force` says its files may be replaced.
    A file in its place is an error even with `force` (a folder cannot be written there)."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{what}: {path} is a file, not a folder; give a folder to write to")
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise UserError(f"{what}: {path} cannot be created, {above} is a file; give a folder to write to")
    held = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if held and not force:
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise UserError(
            f"{what}: {path} already holds files ({shown}); nothing was written. Give a new or empty folder, or pass "
            "--force to write into it anyway (files of the same name are replaced)"
        )

"""Small file helpers: atomic writes, so an interrupted run never leaves a half-written file in place, the check that a
command writing a folder does not write over files already there, and YAML read strictly (a key given twice is an
error, not the last one silently kept)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from med_r1.errors import ConfigError, DataError, UserError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    with atomic_writer(path, binary=True) as f:
        f.write(data)


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


class StrictYamlLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, refusing a key given twice in one mapping (SafeLoader silently keeps the last one)."""

    def construct_document(self, node):
        duplicates = list(_duplicate_keys(node, ""))
        if duplicates:
            raise ConfigError(f"{self.name}: keys given twice (YAML keeps only the last; remove one):", duplicates)
        return super().construct_document(node)


def _duplicate_keys(node: yaml.Node, path: str):
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{path}[{i}]")
    elif isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            name = f"{path}.{key.value}" if path else key.value
            line = key.start_mark.line + 1
            if key.value in first:
                yield f"{name}: line {first[key.value]} and line {line}"
            first.setdefault(key.value, line)
            yield from _duplicate_keys(value, name)


def read_yaml(path: Path):
    """A YAML file as Python data: UTF-8 text, no key given twice; a ConfigError naming the file and line if not."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    loader = StrictYamlLoader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    finally:
        loader.dispose()


@contextlib.contextmanager
def atomic_writer(path: str | Path, newline: str | None = None, binary: bool = False):
    """A text file opened for writing beside `path` and renamed over it only when the block ends without an error,
    so a large file written row by row is never left half-written in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        text = {} if binary else {"encoding": "utf-8", "newline": newline}
        with os.fdopen(fd, "wb" if binary else "w", **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""Strict conversion of parsed YAML into typed dataclasses: every unknown key, wrong type and bad choice is collected
(with its dotted path and a did-you-mean hint) instead of raising at the first one.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def build(cls: type, raw: Any, path: str, errors: list[str]) -> Any:
    if not isinstance(raw, dict):
        errors.append(f"{path or 'recipe'}: expected a mapping, got {_show(raw)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    ok = True
    for key in raw:
        if key not in fields:
            errors.append(unknown_key(_join(path, str(key)), str(key), list(fields)))
            ok = False
    for name, f in fields.items():
        sub = _join(path, name)
        if name in raw:
            before = len(errors)
            kwargs[name] = convert(raw[name], hints[name], sub, errors)
            ok &= len(errors) == before
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            errors.append(f"{sub}: required key is missing")
            ok = False
    return cls(**kwargs) if ok else None


def convert(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            errors.append(f"{path}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            trial: list[str] = []
            result = convert(value, option, path, trial)
            if not trial:
                return result
        if len(options) == 1:
            return convert(value, options[0], path, errors)
        errors.append(f"{path}: expected {' or '.join(_name(a) for a in options)}, got {_show(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path, errors)
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {_show(value)}")
            return value
        return [convert(v, args[0] if args else Any, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {_show(value)}")
            return value
        return {str(k): convert(v, args[1] if args else Any, f"{path}.{k}", errors) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            return float(value)  # YAML 1.1 reads 5e-7 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(f"{path}: expected a number, got {_show(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {_show(value)}")
        return value
    return value


def accepts_str_not_bool(tp: Any) -> bool:
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return str in args and bool not in args


def is_simple(tp: Any) -> bool:
    if tp in (int, float, bool, str):
        return True
    if typing.get_origin(tp) is Literal:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return all(is_simple(a) or a is type(None) for a in typing.get_args(tp))
    return False


def wants_raw_text(tp: Any) -> bool:
    """Fields that only take strings (str, Optional[str], string Literals)."""
    if tp is None:
        return False
    if typing.get_origin(tp) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    args = [a for a in args if a is not type(None)]
    return bool(args) and all(a is str or typing.get_origin(a) is Literal for a in args)


def unknown_key(path: str, key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {path}{hint}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return "a list"
    if typing.get_origin(tp) is dict:
        return "a mapping"
    if typing.get_origin(tp) is Literal:
        return ", ".join(repr(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, dict | list) else type(value).__name__


def deepcopy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: deepcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deepcopy(v) for v in value]
    return value

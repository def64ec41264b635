"""Where reward names resolve: built-ins, installed entry points, `package.module:function`, `path/file.py:function`.

    >>> from med_r1.rewards import get_reward
    >>> get_reward("format")([[{"role": "assistant", "content": "<think>x</think><answer>A</answer>"}]])
    [1.0]

Reward kwargs from a recipe are checked against the function's keyword parameters when the recipe is validated, so a
typo fails at start-up, not after hours of training.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from med_r1.errors import ConfigError
from med_r1.records import COLUMNS, IMAGES
from med_r1.strict import convert

Kind = Literal["format", "accuracy", "judged", "shaping", "other"]
"""judged: an accuracy a model judges (logged per modality like accuracy, but probed before training rather than
gold-checked, since a judge is not a rule)."""
ENTRY_POINT_GROUP = "med_r1.rewards"
TRL_ARGUMENTS = (
    "prompts",
    "completions",
    "completion_ids",
    "trainer_state",
    "log_extra",
    "log_metric",
    "environments",
)
"""What TRL passes every reward besides the dataset columns."""
RESERVED = frozenset(TRL_ARGUMENTS) | set(COLUMNS) | {IMAGES, "image"}
"""Passed by TRL or taken from dataset columns (`med_r1.records.COLUMNS`, the images): never settable as recipe kwargs."""


@dataclass(frozen=True)
class Reward:
    """A reward: its name (the TRL log key `rewards/<name>/mean`), the function, and what kind of score it gives."""

    name: str
    fn: Callable
    kind: Kind = "other"

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.fn) or "").split("\n")[0]


_BUILTINS: dict[str, Reward] = {}


def register_reward(name: str, kind: Kind = "other") -> Callable[[Callable], Callable]:
    """Register a built-in reward under a short name (duplicates are a bug, so they raise)."""

    def decorate(fn: Callable) -> Callable:
        if name in _BUILTINS:
            raise ValueError(f"reward {name!r} is registered twice")
        _BUILTINS[name] = Reward(name, fn, kind)
        return fn

    return decorate


def available() -> dict[str, Reward]:
    """Built-in rewards by name."""
    return dict(sorted(_BUILTINS.items()))


def resolve(spec: str) -> Reward:
    """Find the reward a name points to; a ConfigError lists the built-ins and suggests the closest name."""
    if spec in _BUILTINS:
        return _BUILTINS[spec]
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == spec:
            fn = ep.load()
            return Reward(spec, fn, getattr(fn, "reward_kind", "other"))
    if ":" in spec:
        target, _, attr = spec.rpartition(":")
        module = _load_file(target) if target.endswith(".py") else _import(target, spec)
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise ConfigError(f"reward {spec!r}: {target} has no function {attr!r}")
        return Reward(fn.__name__, fn, getattr(fn, "reward_kind", "other"))
    close = difflib.get_close_matches(spec, list(_BUILTINS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"unknown reward {spec!r}{hint}; built-ins: {', '.join(sorted(_BUILTINS))}; "
        "or name a plugin as 'package.module:function', 'path/to/file.py:function' or an installed entry point"
    )


def build_reward(spec: str, kwargs: dict[str, Any], label: str | None = None) -> Reward:
    """The reward a spec names with `kwargs` bound (checked against its signature first), logged as `label`.

    An unknown name raises resolve's ConfigError; bad kwargs a ConfigError whose problems are keyed `kwargs.<name>`.
    """
    reward = resolve(spec)
    problems = check_kwargs(reward.fn, kwargs)
    if problems:
        raise ConfigError(f"reward {spec!r}: bad kwargs", problems)
    # A partial keeps the function's name, which TRL logs the reward under when called bare.
    fn = functools.partial(reward.fn, **kwargs) if kwargs else reward.fn
    return Reward(label or reward.name, fn, reward.kind)


def get_reward(spec: str, **kwargs: Any) -> Callable:
    """The callable for a reward spec, with `kwargs` bound (checked against its signature first)."""
    return build_reward(spec, kwargs).fn


def check_kwargs(fn: Callable, kwargs: dict[str, Any]) -> list[str]:
    """Recipe kwargs must be named keyword parameters of the function, of the annotated type."""
    params = inspect.signature(fn).parameters
    settable = [
        n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in RESERVED
    ]
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations in a plugin: skip the type check, keep the name check
        hints = {}
    problems = []
    for key, value in kwargs.items():
        if key not in settable:
            close = difflib.get_close_matches(key, settable, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = f"; it takes: {', '.join(settable)}" if settable else "; it takes no kwargs"
            problems.append(f"kwargs.{key}: not a parameter of {fn.__name__}{hint}{known}")
        elif key in hints:
            convert(value, hints[key], f"kwargs.{key}", problems)
    return problems


def _import(module_name: str, spec: str):
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"reward {spec!r}: cannot import module {module_name!r} ({exc}); is it installed?") from None


def _load_file(path: str):
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise ConfigError(f"reward file not found: {path}")
    # A stable, unique module name per file, so two plugin files called rewards.py do not collide.
    name = f"med_r1_plugin_{file.stem}_{hashlib.sha1(str(file).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # so the reward pickles (multi-process data loading, async trainers)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"reward file {path} failed to import: {type(exc).__name__}: {exc}") from None
    return module


def settings_of(cls, kwargs: dict, where: str, noun: str):
    """A reward's settings dataclass from a recipe's kwargs (judge, embedding_similarity); unknown keys and values
    its own checks refuse are a ConfigError naming `where`."""
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown {noun} setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: bad {noun} settings", exc.problems) from None

"""Reward functions and their registry.

Each reward follows TRL's contract, `fn(completions, **columns) -> list[float | None]`, where the columns are the
dataset's (`solution`, `options`, `answer_type`, `modality`, ...) and None means "cannot score this row".
"""

if __name__ != "med_r1.rewards":
    raise ImportError("import med_r1.rewards, not the top-level 'rewards' folder (it installs as med_r1.rewards)")

from med_r1.rewards import accuracy, embedding, format, judge, shaping  # noqa: E402,F401  (registers the built-ins)
from med_r1.rewards.registry import (  # noqa: E402
    Reward,
    available,
    build_reward,
    get_reward,
    register_reward,
    resolve,
)

__all__ = ["Reward", "available", "build_reward", "get_reward", "register_reward", "resolve"]

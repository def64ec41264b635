"""Shaping rewards: penalties that keep completions short and free of loops. Combine with a small weight."""

from __future__ import annotations

from med_r1.answers import completion_text
from med_r1.rewards.registry import register_reward


@register_reward("length", kind="shaping")
def length_reward(completions, completion_ids=None, *, budget: int = 256, window: int = 64, **kwargs) -> list[float]:
    """0 up to `budget` tokens, then falls linearly to -1 at `budget + window` (DAPO's soft overlong penalty).

    Counts tokens from `completion_ids` when TRL passes them, else whitespace-separated words.

    >>> length_reward(["x"] * 3, completion_ids=[[1] * 10, [1] * 20, [1] * 40], budget=10, window=20)
    [0.0, -0.5, -1.0]
    """
    scores = []
    for i, completion in enumerate(completions):
        n = len(completion_ids[i]) if completion_ids is not None else len(completion_text(completion).split())
        scores.append(-min(1.0, (n - budget) / max(window, 1)) if n > budget else 0.0)
    return scores


@register_reward("repetition", kind="shaping")
def repetition_reward(completions, completion_ids=None, *, ngram: int = 3, max_penalty: float = 1.0, **kwargs):
    """-max_penalty x the share of repeated n-grams (0 for a completion with no repeats; loops approach -max_penalty).

    >>> repetition_reward(["the lesion is small", "a b c a b c a b c"], ngram=3)
    [0.0, -0.571...]
    """
    scores = []
    for i, completion in enumerate(completions):
        units = list(completion_ids[i]) if completion_ids is not None else completion_text(completion).split()
        grams = [tuple(units[j : j + ngram]) for j in range(len(units) - ngram + 1)]
        repeated = 1 - len(set(grams)) / len(grams) if grams else 0.0
        scores.append(-max_penalty * repeated if repeated else 0.0)
    return scores

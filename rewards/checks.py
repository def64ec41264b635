"""Checks run before training starts, so a broken reward fails in seconds instead of after hours of GPU time.

1. Every reward is called on a few real rows and must return one float-or-None per completion.
2. Gold self-check: each row's correct answer, written in the style the prompt template asks for, must get full
   marks from every format and accuracy reward. A mismatch between template, parser and data is the most common
   cause of a reward stuck at zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from med_r1.prompts import resolve_template
from med_r1.rewards.guard import raised_at
from med_r1.rewards.registry import Reward


def gold_completion(answer: str, template: str) -> str:
    """The ideal completion for a template: think + answer tags, answer tag only, or the bare answer."""
    text = resolve_template(template)
    if "<think>" in text:
        return f"<think>The image and the options point to one answer.</think><answer>{answer}</answer>"
    if "<answer>" in text:
        return f"<answer>{answer}</answer>"
    return answer


def check_rewards(
    rewards: list[Reward],
    rows: dict[str, list],
    template: str,
    smoke_rows: dict[str, list] | None = None,
    tokenize: Callable[[str], list[int]] | None = None,
) -> tuple[list[str], list[str]]:
    """Return (errors, warnings). `rows` are dataset columns without images; `smoke_rows` a few rows with images.

    `tokenize` gives realistic `completion_ids`; without it, character codes stand in for token ids.
    """
    tokenize = tokenize or (lambda text: [ord(c) for c in text])
    errors, warnings = [], []
    smoke = smoke_rows or {k: v[:4] for k, v in rows.items()}
    n_smoke = len(smoke["solution"])
    for reward in rewards:
        junk = [[{"role": "assistant", "content": "no answer here"}]] * n_smoke
        ids = [tokenize("no answer here")] * n_smoke
        try:
            scores = list(
                reward.fn(prompts=smoke.get("prompt"), completions=junk, completion_ids=ids, **_columns(smoke))
            )
        except Exception as exc:
            errors.append(
                f"reward {reward.name!r} raised on rows {_ids(smoke)}: {type(exc).__name__}: {exc} (at {raised_at(exc)})"
            )
            continue
        if len(scores) != n_smoke or not all(s is None or isinstance(s, int | float) for s in scores):
            errors.append(f"reward {reward.name!r} must return one float or None per completion, got {scores!r}")
        elif _non_finite(scores):
            errors.append(_non_finite_message(reward, scores, smoke))

    checked = [r for r in rewards if r.kind in ("format", "accuracy")]
    if not checked:
        return errors, warnings
    texts = [gold_completion(a, template) for a in rows["solution"]]
    gold = [[{"role": "assistant", "content": text}] for text in texts]
    gold_ids = [tokenize(text) for text in texts]
    columns = _columns(rows)
    for reward in checked:
        try:
            scores = list(reward.fn(prompts=rows.get("prompt"), completions=gold, completion_ids=gold_ids, **columns))
        except Exception as exc:
            errors.append(
                f"reward {reward.name!r} raised on the gold answers: {type(exc).__name__}: {exc} (at {raised_at(exc)})"
            )
            continue
        bad = [i for i, s in enumerate(scores) if s is not None and math.isfinite(s) and s < 1.0]
        if _non_finite(scores):
            errors.append(_non_finite_message(reward, scores, rows, "on the gold answers"))
        elif bad:
            ids = ", ".join(rows["question_id"][i] for i in bad[:5])
            errors.append(
                f"gold self-check: reward {reward.name!r} gave the correct answer, written as the template "
                f"{template!r} asks, less than full marks on {len(bad)} of {len(scores)} rows ({ids}, ...): the "
                "prompt template, the reward and the data disagree (e.g. a think-format reward with a no-think "
                "template, or a multiple-choice reward on open-ended data)"
            )
        elif all(s is None for s in scores):
            warnings.append(f"reward {reward.name!r} scores None on every row: it does not apply to this data")
    return errors, warnings


def _non_finite(scores: list) -> list[int]:
    return [i for i, s in enumerate(scores) if isinstance(s, float) and not math.isfinite(s)]


def _non_finite_message(reward: Reward, scores: list, rows: dict[str, list], where: str = "on rows") -> str:
    bad = _non_finite(scores)
    ids = ", ".join(rows["question_id"][i] for i in bad[:5])
    return (
        f"reward {reward.name!r} returned non-finite scores ({', '.join(sorted({str(scores[i]) for i in bad}))}) "
        f"{where} {ids}: return None for a completion it cannot score, never NaN or inf (a NaN for every "
        "completion trains nothing)"
    )


def _columns(rows: dict[str, list]) -> dict[str, list]:
    return {k: v for k, v in rows.items() if k != "prompt"}


def _ids(rows: dict[str, list]) -> str:
    return ", ".join(rows.get("question_id", [])[:4])

"""Wraps each reward for training: errors are counted and logged (never hidden), accuracy is logged per modality.

TRL calls rewards without a try/except; one raising reward stops the run (and, with several processes, can leave
the others waiting on a collective). Under `reward_errors: none` a failing batch is re-scored row by row, and only
the rows that raise score None (excluded from the group statistics by TRL).
"""

from __future__ import annotations

import logging
import math
import traceback
from collections import defaultdict

from med_r1.errors import UserError
from med_r1.rewards.registry import Reward

logger = logging.getLogger(__name__)


class RewardError(UserError):
    """A reward raised, or no reward scored a step, during training (the message names the reward and what to do)."""


def raised_at(exc: BaseException) -> str:
    """Where an exception was raised, as 'file:line in function' (the innermost frame), for messages without a
    traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else "unknown location"


class GuardedReward:
    """A `Reward` as TRL calls it during training: errors counted (or raised), accuracy logged per modality."""

    def __init__(self, reward: Reward, on_error: str = "raise"):
        self.reward, self.on_error = reward, on_error
        self.fn, self.kind = reward.fn, reward.kind
        self.__name__ = reward.name  # TRL logs rewards/<__name__>/mean
        self.errors = 0
        self.calls = 0

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs):
        self.calls += 1
        log_metric = kwargs.get("log_metric")
        try:
            scores = list(self.fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs))
        except Exception as exc:
            if self.on_error == "raise":
                ids = sorted(set(kwargs.get("question_id") or []))[:5]
                raise RewardError(
                    f"reward {self.__name__!r} raised {type(exc).__name__}: {exc} (questions {', '.join(ids)}; at "
                    f"{raised_at(exc)}). Fix the reward, or set reward_errors=none to score such rows None and keep "
                    "training."
                ) from exc
            scores = self._row_by_row(prompts, completions, completion_ids, kwargs)
        if len(scores) != len(completions):
            raise RewardError(
                f"reward {self.__name__!r} returned {len(scores)} scores for {len(completions)} completions"
            )
        if log_metric is not None:
            if self.errors:
                log_metric(f"rewards/{self.__name__}/errors", float(self.errors))
            if self.kind in ("accuracy", "judged") and kwargs.get("modality"):
                for modality, mean in per_group_mean(scores, kwargs["modality"]).items():
                    log_metric(f"rewards/{self.__name__}/{modality}", mean)
        return scores

    def _row_by_row(self, prompts, completions, completion_ids, kwargs):
        scores = []
        for i in range(len(completions)):
            row = {
                k: (v[i : i + 1] if isinstance(v, list) and len(v) == len(completions) else v)
                for k, v in kwargs.items()
            }
            try:
                scores += list(
                    self.fn(
                        prompts=prompts[i : i + 1] if prompts is not None else None,
                        completions=completions[i : i + 1],
                        completion_ids=completion_ids[i : i + 1] if completion_ids is not None else None,
                        **row,
                    )
                )
            except Exception as exc:
                self.errors += 1
                if self.errors <= 3:
                    qid = row.get("question_id", ["?"])[0]
                    logger.warning(
                        "reward %s raised on question %s: %s: %s", self.__name__, qid, type(exc).__name__, exc
                    )
                scores.append(None)
        return scores


def per_group_mean(scores: list[float | None], groups: list[str]) -> dict[str, float]:
    sums: dict[str, list[float]] = defaultdict(list)
    for score, group in zip(scores, groups, strict=True):
        if score is not None and not math.isnan(score):
            sums[group].append(score)
    return {group: sum(values) / len(values) for group, values in sorted(sums.items())}

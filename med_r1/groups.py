"""GRPO groups without learning signal: when every completion of a question scores the same, the group's advantages are
all zero and GRPO learns nothing from it (the question is always or never solved). Measured per domain, and, with
`dynamic_sampling.enabled`, replaced by freshly sampled groups (DAPO's dynamic sampling).

- `zero_signal`: per group, whether its weighted total rewards are all equal (rows every reward scored None are left
  out; a group with no two scored rows has no signal either). TRL logs the overall share as `frac_reward_zero_std`;
  med-r1 adds `frac_reward_zero_std/<modality>`.
- `merge_rounds`: one generation batch built from the kept groups of several generation rounds, each a dict as TRL's
  `_generate_and_score_completions` returns it: rows re-padded (prompts on the left, completions on the right), image
  tensors split and re-joined with TRL's own helpers. A key whose layout is not known here returns None, and the
  caller keeps the first round unchanged.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

PROMPT_SIDE = {"prompt_ids": None, "prompt_mask": 0}
"""Left-padded to the longest prompt (None: the tokenizer's pad id)."""
COMPLETION_SIDE = {
    "completion_ids": None,
    "completion_mask": 0,
    "tool_mask": 1,
    "old_per_token_logps": 0.0,
    "ref_per_token_logps": 0.0,
    "sampling_per_token_logps": 0.0,
    "importance_sampling_ratio": 0.0,
}
"""Right-padded to the longest completion (padding is masked out by completion_mask)."""
WHOLE_SEQUENCE = {"token_type_ids", "mm_token_type_ids"}
"""Prompt part then completion part (TRL extends the processor's ids with zeros for the completion)."""
PER_ROW = {"advantages"}
RECOMPUTED = {"num_items_in_batch"}


def zero_signal(rewards_per_func: torch.Tensor, weights: torch.Tensor, group_size: int) -> torch.Tensor:
    """A bool per group: True when its completions' weighted total rewards are all equal (within 1e-6)."""
    rewards = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    grouped = rewards.view(-1, group_size)
    high = torch.nan_to_num(grouped, nan=-torch.inf).amax(dim=1)
    low = torch.nan_to_num(grouped, nan=torch.inf).amin(dim=1)
    return ~((high - low) > 1e-6)


def no_advantage(advantages: torch.Tensor, group_size: int) -> torch.Tensor:
    """A bool per group of a (local, whole-group) batch: True when every advantage is zero."""
    return advantages.view(-1, group_size).abs().amax(dim=1) < 1e-6


def share_by_domain(flags: list[bool], domains: list[str]) -> dict[str, float]:
    """The share of True flags per domain (one flag and one domain per group)."""
    tally: dict[str, list[bool]] = defaultdict(list)
    for flag, domain in zip(flags, domains, strict=True):
        tally[domain].append(flag)
    return {domain: sum(f) / len(f) for domain, f in sorted(tally.items())}


def merge_rounds(rounds: list[dict], picks: list[tuple[int, int]], pad_token_id: int) -> dict | None:
    """The rows `picks` ((round, row) pairs) of several generation rounds as one batch; None for an unknown layout.

    `num_items_in_batch` is left out: it counts tokens over every process and the caller recomputes it.
    """
    split = [split_pixel_values_by_grid(r) for r in rounds]
    by_round = [[row for r, row in picks if r == index] for index in range(len(rounds))]
    prompt_width = max(r["prompt_ids"].size(1) for r in rounds)
    completion_width = max(r["completion_ids"].size(1) for r in rounds)
    merged = {}
    for key, first in split[0].items():
        if key in RECOMPUTED:
            continue
        if first is None or (torch.is_tensor(first) and first.ndim == 0):
            merged[key] = first
        elif isinstance(first, list):
            merged[key] = [r[key][row] for r, rows in zip(split, by_round, strict=True) for row in rows]
        elif key in PER_ROW:
            merged[key] = torch.cat([r[key][rows] for r, rows in zip(split, by_round, strict=True)])
        elif key in PROMPT_SIDE or key in COMPLETION_SIDE:
            left = key in PROMPT_SIDE
            fill = (PROMPT_SIDE if left else COMPLETION_SIDE)[key]
            width = prompt_width if left else completion_width
            if first.size(1) == 1 and not left:  # sequence-level importance ratios: one value per row
                width = 1
            fill = pad_token_id if fill is None else fill
            merged[key] = torch.cat(
                [_pad(r[key][rows], width, left, fill) for r, rows in zip(split, by_round, strict=True)]
            )
        elif key in WHOLE_SEQUENCE:
            parts = []
            for r, rows in zip(split, by_round, strict=True):
                cut = r["prompt_ids"].size(1)
                values = r[key][rows]
                parts.append(
                    torch.cat(
                        [
                            _pad(values[:, :cut], prompt_width, True, 0),
                            _pad(values[:, cut:], completion_width, False, 0),
                        ],
                        dim=1,
                    )
                )
            merged[key] = torch.cat(parts)
        else:
            return None
    return unsplit_pixel_values_by_grid(merged)


def _pad(values: torch.Tensor, width: int, left: bool, fill) -> torch.Tensor:
    missing = width - values.size(1)
    if missing <= 0:
        return values
    padding = values.new_full((values.size(0), missing, *values.shape[2:]), fill)
    return torch.cat([padding, values] if left else [values, padding], dim=1)

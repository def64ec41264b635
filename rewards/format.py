"""Format rewards: does the completion follow the think/answer layout the prompt asks for?"""

from __future__ import annotations

import re

from med_r1.answers import completion_text
from med_r1.rewards.registry import register_reward

# Med-R1's own patterns, used with re.fullmatch: any text before or after the tags (even a newline) fails.
THINK_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
NOTHINK_FORMAT = re.compile(r"\s*<answer>.*?</answer>", re.DOTALL)
THINK_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


@register_reward("format", kind="format")
def format_reward(completions, **kwargs) -> list[float]:
    """1.0 if the completion is exactly <think>...</think> then <answer>...</answer> (Med-R1's fullmatch), else 0.0.

    >>> format_reward(["<think>x</think><answer>A</answer>", "<think>x</think><answer>A</answer>\\n"])
    [1.0, 0.0]
    """
    return [1.0 if THINK_FORMAT.fullmatch(completion_text(c)) else 0.0 for c in completions]


@register_reward("format_nothink", kind="format")
def format_nothink_reward(completions, **kwargs) -> list[float]:
    """1.0 if the completion is only <answer>...</answer> (leading whitespace allowed, as in Med-R1), else 0.0.

    >>> format_nothink_reward([" <answer>B</answer>", "<think>x</think><answer>B</answer>"])
    [1.0, 0.0]
    """
    return [1.0 if NOTHINK_FORMAT.fullmatch(completion_text(c)) else 0.0 for c in completions]


@register_reward("format_partial", kind="shaping")
def format_partial_reward(completions, *, tags: list[str] | None = None, **kwargs) -> list[float]:
    """Equal credit for each tag present in order (shaping for weak policies that never produce the full format).

    >>> format_partial_reward(["<think>a</think> b", "</think><think>", "<think>a</think><answer>C</answer>"])
    [0.5, 0.25, 1.0]
    """
    tags = tags or THINK_TAGS
    scores = []
    for completion in completions:
        text, position, found = completion_text(completion), 0, 0
        for tag in tags:
            index = text.find(tag, position)
            if index >= 0:
                found += 1
                position = index + len(tag)
        scores.append(found / len(tags))
    return scores

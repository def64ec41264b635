"""Accuracy rewards: is the answer right? All but `accuracy_medr1` parse with `med_r1.answers`, the parser that
evaluation reports with, so the training signal and the reported metric cannot drift apart.

Columns used (TRL passes dataset columns as kwargs): `solution` (the correct letter, or the answer text for open
questions), `options` (option texts) and `answer_type` (choice | closed | open).
"""

from __future__ import annotations

import re

from med_r1.answers import (
    bare_letter,
    closed_correct,
    completion_text,
    extract_answer,
    is_correct,
    normalise_text,
    parse_choice,
    token_f1,
)
from med_r1.rewards.registry import register_reward

_MEDR1_TAG = re.compile(r"<answer>(.*?)</answer>")  # no DOTALL, as in Med-R1: a multi-line answer tag does not match


def _rows(completions, solution, options, answer_type):
    n = len(completions)
    options = options if options is not None else [None] * n
    answer_type = answer_type if answer_type is not None else ["choice"] * n
    return zip(completions, solution, options, answer_type, strict=True)


@register_reward("accuracy_medr1", kind="accuracy")
def accuracy_medr1_reward(completions, solution, **kwargs) -> list[float]:
    """Med-R1's string equality: the stripped text in <answer> (single line) must equal the gold exactly.

    Gold may be a bare letter or Med-R1's "<answer> C </answer>". Without a tag the whole completion is compared.
    Med-R1 first tries math-verify; that pass is for math expressions and is left out here.

    >>> accuracy_medr1_reward(["<answer>C</answer>", "<answer>C) CT</answer>", "<answer>\\nC\\n</answer>"], ["C"] * 3)
    [1.0, 0.0, 0.0]
    """
    scores = []
    for completion, gold in zip(completions, solution, strict=True):
        text = completion_text(completion)
        gold_match = _MEDR1_TAG.search(gold)
        gold = (gold_match.group(1) if gold_match else gold).strip()
        match = _MEDR1_TAG.search(text)
        answer = (match.group(1) if match else text).strip()
        scores.append(1.0 if answer == gold else 0.0)
    return scores


@register_reward("accuracy", kind="accuracy")
def accuracy_reward(completions, solution, options=None, answer_type=None, **kwargs) -> list[float | None]:
    """1.0 if the parsed option letter equals `solution`, else 0.0; None for open-ended rows (see `open_answer`).

    >>> accuracy_reward(["<answer>(b)</answer>", "<think>..</think><answer>\\nB) MRI\\n</answer>", "no tags"], ["B"] * 3)
    [1.0, 1.0, 0.0]
    >>> accuracy_reward(["<answer>MRI</answer>"], ["B"], options=[["CT", "MRI"]], answer_type=["choice"])
    [1.0]
    """
    scores = []
    for completion, gold, opts, kind in _rows(completions, solution, options, answer_type):
        if kind != "choice":
            scores.append(None)
            continue
        scores.append(1.0 if is_correct(completion_text(completion), gold, opts, "choice") else 0.0)
    return scores


@register_reward("accuracy_graded", kind="accuracy")
def accuracy_graded_reward(completions, solution, options=None, answer_type=None, **kwargs) -> list[float | None]:
    """MedVLM-R1's graded score: 1.0 for exactly the right letter in <answer>, 0.5 for it with extra text, else 0.

    >>> accuracy_graded_reward(["<answer>B</answer>", "<answer>B) MRI</answer>", "<answer>A</answer>"], ["B"] * 3)
    [1.0, 0.5, 0.0]
    """
    scores = []
    for completion, gold, opts, kind in _rows(completions, solution, options, answer_type):
        if kind != "choice":
            scores.append(None)
            continue
        extracted = extract_answer(completion_text(completion))
        gold = gold.strip().upper()
        if not extracted.tagged:
            scores.append(0.0)
        elif extracted.text.upper() == gold or bare_letter(extracted.text) == gold:
            scores.append(1.0)
        elif parse_choice(extracted.text, opts) == gold:
            scores.append(0.5)
        else:
            scores.append(0.0)
    return scores


@register_reward("open_answer", kind="accuracy")
def open_answer_reward(completions, solution, answer_type=None, **kwargs) -> list[float | None]:
    """Open-ended rows: exact match for yes/no (closed) answers, token F1 for free text; None for multiple choice.

    >>> open_answer_reward(["<answer>Yes.</answer>", "<answer>left lung</answer>", "<answer>A</answer>"],
    ...                    ["yes", "the left lung", "A"], answer_type=["closed", "open", "choice"])
    [1.0, 1.0, None]
    """
    scores = []
    kinds = answer_type if answer_type is not None else ["open"] * len(completions)
    for completion, gold, kind in zip(completions, solution, kinds, strict=True):
        answer = extract_answer(completion_text(completion)).text
        if kind == "choice":
            scores.append(None)
        elif kind == "closed":
            scores.append(1.0 if closed_correct(answer, gold) else 0.0)
        else:
            scores.append(token_f1(answer, gold) if normalise_text(answer) else 0.0)
    return scores

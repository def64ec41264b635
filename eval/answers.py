"""The one answer parser: training rewards and evaluation metrics both call it, so they cannot drift apart.

`extract_answer` finds what a completion answers: the text inside `<answer>...</answer>` when present (multi-line
too; the last tag wins), else the text after `</think>`, else the whole completion. `parse_choice` turns that into
an option letter, accepting `B`, `(B)`, `B.`, `B) text`, `b`, "the answer is B", the option's text instead of its
letter, and yes/no for yes/no options. It never raises; None means nothing parseable was there.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

LETTERS = "ABCDEFGHIJ"
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_OPEN_TAG = re.compile(r"<answer>(.*)$", re.DOTALL | re.IGNORECASE)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_BARE_LETTER = re.compile(r"^\(?\s*([A-Ja-j])\s*\)?\s*[.):]?$")
_LEADING_LETTER = re.compile(r"^\(?([A-J])\s*(?:\)|\.|:|\s-\s)\s*\S")
_PHRASED = re.compile(
    r"(?:answer|option|choice)\s*(?:is|:)?\s*(?:option\s*)?[:\s]\s*\(?([A-J])\)?(?![A-Za-z])", re.IGNORECASE
)
_YES = {"yes", "y", "true", "correct", "present"}
_NO = {"no", "n", "false", "incorrect", "absent"}


@dataclass(frozen=True)
class Extracted:
    text: str
    """The answer text found (stripped)."""
    tagged: bool
    """Whether it came from a closed <answer>...</answer> tag."""


def completion_text(completion) -> str:
    """The text of a completion in either TRL form: a string, or a list of chat messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content", "") if isinstance(completion[-1], dict) else completion[-1]
        if isinstance(content, list):  # content blocks
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    return ""


def extract_answer(text: str) -> Extracted:
    tags = _ANSWER_TAG.findall(text)
    if tags:
        return Extracted(tags[-1].strip(), True)
    after_think = _THINK.sub(" ", text)
    opened = _OPEN_TAG.search(after_think)
    if opened:
        return Extracted(opened.group(1).strip(), False)
    if "</think>" in after_think.lower():
        after_think = re.split(r"</think>", after_think, flags=re.IGNORECASE)[-1]
    return Extracted(after_think.strip(), False)


def normalise_text(text: str) -> str:
    """Lower case, no surrounding quotes/punctuation, single spaces: for comparing answer texts."""
    text = text.strip().strip("\"'`").strip()
    text = re.sub(r"\s+", " ", text).casefold()
    return text.strip(" .!;:,")


def yes_no(text: str) -> str | None:
    """'yes' or 'no' when the text is a yes/no answer ('Yes.', 'no, it is normal'), else None."""
    words = normalise_text(text).replace(",", " ").split()
    if not words:
        return None
    if words[0] in _YES:
        return "yes"
    if words[0] in _NO:
        return "no"
    return None


def parse_choice(text: str, options: list[str] | tuple[str, ...] | None = None) -> str | None:
    """The option letter a piece of answer text names, or None. Letters beyond the options count as unparseable."""
    valid = LETTERS[: len(options)] if options else LETTERS
    span = text.strip()
    if not span:
        return None
    found = None
    if m := _BARE_LETTER.match(span):
        found = m.group(1).upper()
    elif m := _LEADING_LETTER.match(span):
        found = m.group(1)
    elif m := _PHRASED.search(span):
        found = m.group(1).upper()
    if found is not None:
        return found if found in valid else None
    if options:
        by_text = _match_option_text(span, options)
        if by_text is not None:
            return by_text
    # A lone capital letter standing as a word ("I pick C because ..."); "A lesion"/"I think" are words, not letters.
    candidates = {
        m.group(1)
        for m in re.finditer(r"(?<![A-Za-z])([A-J])(?![A-Za-z])", span)
        if not (m.group(1) in "AI" and re.match(r" [a-z]", span[m.end() : m.end() + 2]))
    } & set(valid)
    if len(candidates) == 1:
        return candidates.pop()
    return None


def _match_option_text(span: str, options) -> str | None:
    wanted = normalise_text(span)
    normalised = [normalise_text(o) for o in options]
    exact = [i for i, o in enumerate(normalised) if o and o == wanted]
    if len(exact) == 1:
        return LETTERS[exact[0]]
    answer = yes_no(span)
    if answer is not None:
        yn = [i for i, o in enumerate(options) if yes_no(o) == answer]
        if len(yn) == 1:
            return LETTERS[yn[0]]
    # The answer quotes one option's text inside a sentence; longest unique match wins.
    contained = [
        i for i, o in enumerate(normalised) if len(o) >= 3 and re.search(rf"(?<!\w){re.escape(o)}(?!\w)", wanted)
    ]
    if contained:
        longest = max(len(normalised[i]) for i in contained)
        best = [i for i in contained if len(normalised[i]) == longest]
        if len(best) == 1:
            return LETTERS[best[0]]
    return None


def is_correct(completion: str, solution: str, options=None, answer_type: str = "choice") -> bool | None:
    """Whether a completion answers correctly; None when nothing parseable is there (counted as wrong in metrics)."""
    answer = extract_answer(completion).text
    if answer_type == "choice":
        letter = parse_choice(answer, options)
        return None if letter is None else letter == solution.strip().upper()
    if answer_type == "closed":
        said = yes_no(answer)
        return None if said is None else said == yes_no(solution)
    if not answer:
        return None
    return normalise_text(answer) == normalise_text(solution)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 between two free-text answers (articles and punctuation ignored)."""
    pred, ref = _tokens(prediction), _tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _tokens(text: str) -> list[str]:
    text = normalise_text(text).translate(str.maketrans("", "", string.punctuation))
    return [w for w in text.split() if w not in {"a", "an", "the"}]

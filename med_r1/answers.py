"""The one answer parser: training rewards and evaluation metrics both call it, so they cannot drift apart.

`extract_answer` finds what a completion answers: the text inside `<answer>...</answer>` when present (multi-line
too; a nested `<answer><answer>A</answer></answer>` reads `A`; tags outside `<think>...</think>` take precedence over
tags the reasoning quotes), else the last `\boxed{...}` (the form R1-style and harness reasoning prompts ask for),
else the text after `</think>`, else the whole completion. `parse_choice` turns that into
an option letter, accepting `B`, `(B)`, `B.`, `B) text`, `b`, "the answer is B", the option's text instead of its
letter, and yes/no for yes/no options. `choice_letter` reads a completion's letter: several answer tags count once
when they name the same option and not at all when they disagree. Nothing here raises; None means nothing parseable.

`medr1_eval_answer` is the other scorer: exactly what Med-R1's evaluation scripts count (`accuracy_medr1` in every
metrics file), so a result can be set beside the paper's table.

Never credited: hedges naming two or more options (`B or C`, `either A or B`, `A/B`, `A, B`, in any order), negations
(`not A`, `B, not A`), and reasoning cut off before an answer.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

from med_r1.records import LETTERS

# The innermost tag: its text holds no other <answer>, so a nested <answer><answer>A</answer></answer> reads "A".
_ANSWER_TAG = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL | re.IGNORECASE)
_OPEN_TAG = re.compile(r"<answer>(.*)$", re.DOTALL | re.IGNORECASE)
_STRAY_TAG = re.compile(r"</?answer>", re.IGNORECASE)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")  # \boxed{B}, \boxed{\text{B}}: one nesting level
_BARE_LETTER = re.compile(r"^\(?\s*([A-Ja-j])\s*\)?\s*[.):]?$")
# "B) text", "B. text", "(B) text", "B: text", "B - text"; and "B because ..." (not "A lesion ...": an article).
_LEADING_LETTER = re.compile(r"^\(?([A-J])\s*(?:\)|\.|:|\s-\s)\s*(.*)$", re.DOTALL)
_LEADING_WORD = re.compile(r"^(?:([B-HJ])\s+[a-z]|(A)\s+(?:because|since|as)\b)")
# "the answer is B", "option C", "choice: D": the letter must be a capital, so "the answer is a cyst" is no letter.
_PHRASED = re.compile(r"(?i:answer|option|choice)\s*(?i:is|:)?\s*(?i:option\s*)?[:\s]\s*\(?([A-J])\)?(?![A-Za-z])")
_MARKED = re.compile(r"\(([A-J])\)|(?<![A-Za-z(])([A-J])\)")
_OTHER_MARKERS = re.compile(r"(?<![A-Za-z])\(?([A-J])[).:](?=\s|$)")
# Two option letters joined by or / and / "/" / "&" / "," ("B or C", "either D or A", "A/B", "A, B"): a hedge.
# (A lookahead, so every adjacent pair of a chain "A or A or B" is seen.)
_LETTER_LIST = re.compile(
    r"(?<![A-Za-z])(?=\(?([A-J])\)?[.:]?(?:\s*(?:,|/|&|\+|\bor\b|\band\b|\bvs\b\.?))+\s*(?:option\s+)?\(?([A-J])(?![A-Za-z]))"
)
_NEGATION = re.compile(
    r"\b(?:not|isn't|isnt|never|neither|nor|except|unlikely|rather than|instead of|ruled? out)\b", re.IGNORECASE
)
_UNSURE = ("no idea", "not sure", "no clue", "unsure", "unknown", "don't know", "do not know", "cannot tell")
# Med-R1's evaluation scripts read the answer with this regex (src/eval_vqa/test_qwen2vl_vqa.py and siblings): a
# single word inside the tags, first match, case-sensitive, no DOTALL needed since \s spans newlines.
_MEDR1_EVAL_TAG = re.compile(r"<answer>\s*(\w+)\s*</answer>")
MEDR1_RULES = {
    "tag": "the first <answer>\\s*(\\w+)\\s*</answer> match (Med-R1's think scripts)",
    "raw": "the raw output (Med-R1's no-think Qwen2-VL and zero-shot scripts)",
    "tag_if_answer": "the first <answer>\\s*(\\w+)\\s*</answer> match if 'answer' is in the output, else the raw "
    "output (Med-R1's no-think Qwen2.5-VL script)",
}
"""How a Med-R1 evaluation script reads the model's answer (see `med_r1.prompts.medr1_eval_rule` for which)."""
_YES = {"yes", "y", "true", "correct", "present"}
_NO = {"no", "n", "false", "incorrect", "absent"}


@dataclass(frozen=True)
class Extracted:
    text: str
    """The answer text found (stripped); empty when several answer tags hold different texts."""
    tagged: bool
    """Whether it came from a closed <answer>...</answer> tag."""
    texts: tuple[str, ...] = ()
    """Every answer tag's text, in order (one entry when there is one tag or none)."""


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
    after_think = _THINK.sub(" ", text)
    # Tags after the reasoning are the answer; tags only inside it (a model that answers within <think>) still count.
    tags = [t.strip() for t in _ANSWER_TAG.findall(after_think) or _ANSWER_TAG.findall(text)]
    if tags:
        agreed = {normalise_text(t) for t in tags}
        return Extracted(tags[0] if len(agreed) == 1 else "", True, tuple(tags))
    opened = _OPEN_TAG.search(after_think)
    if opened:
        return _single(_STRAY_TAG.sub(" ", opened.group(1)).strip(), False)
    if re.search(r"<think>", after_think, re.IGNORECASE):
        return _single("", False)  # reasoning cut off before </think>: there is no answer yet, only musings
    if "</think>" in after_think.lower():
        after_think = re.split(r"</think>", after_think, flags=re.IGNORECASE)[-1]
    boxed = [re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", b).strip() for b in _BOXED.findall(after_think)]
    if boxed:  # several boxes count as several tags do: once when they agree, not at all when they differ
        return Extracted(boxed[-1] if len({normalise_text(b) for b in boxed}) == 1 else "", False, tuple(boxed))
    return _single(after_think.strip(), False)


def _single(text: str, tagged: bool) -> Extracted:
    return Extracted(text, tagged, (text,))


def choice_letter(extracted: Extracted, options: list[str] | tuple[str, ...] | None = None) -> str | None:
    """The option letter a completion's answer names: several tags must all name the same option, else None."""
    letters = {parse_choice(text, options) for text in extracted.texts or (extracted.text,)}
    return letters.pop() if len(letters) == 1 else None


def bare_letter(text: str) -> str | None:
    """The letter when the text is nothing but one ('B', '(b)', 'C.', 'D)'), upper-cased; else None."""
    m = _BARE_LETTER.match(text)
    return m.group(1).upper() if m else None


def normalise_text(text: str) -> str:
    """Lower case, no surrounding quotes/punctuation, single spaces: for comparing answer texts."""
    text = text.strip().strip("\"'`").strip()
    text = re.sub(r"\s+", " ", text).casefold()
    return text.strip(" .!;:,")


def yes_no(text: str) -> str | None:
    """'yes' or 'no' when the text is a yes/no answer ('Yes.', 'no, it is normal'), else None ('No idea' too)."""
    normalised = normalise_text(text)
    if normalised.startswith(_UNSURE):
        return None
    words = normalised.replace(",", " ").split()
    if not words:
        return None
    if words[0] in _YES:
        return "yes"
    if words[0] in _NO:
        return "no"
    return None


def parse_choice(text: str, options: list[str] | tuple[str, ...] | None = None) -> str | None:
    """The option letter a piece of answer text names, or None when it names none, several, or negates one.

    Letters beyond the options count as unparseable. Hedged answers ("A or B", "A. B. C.", "B, not A") name no letter.
    """
    valid = LETTERS[: len(options)] if options else LETTERS
    span = text.strip()
    if not span:
        return None
    if letter := bare_letter(span):
        return _valid(letter, valid)
    normalised = [normalise_text(o) for o in options or []]
    wanted = normalise_text(span)
    exact = [i for i, o in enumerate(normalised) if o and o == wanted]
    if len(exact) == 1:  # the option's own text, even when it starts like a letter ("E. coli")
        return LETTERS[exact[0]]
    m = _LEADING_LETTER.match(span)
    if m:
        letter, rest = m.group(1), normalise_text(m.group(2))
        index = LETTERS.index(letter)
        if index < len(normalised) and rest and (rest == normalised[index] or normalised[index].startswith(rest)):
            return _valid(letter, valid)  # "B) MRI" with option B = MRI
    if _names_several_letters(span, options or [], valid):
        return None  # "B or C", "either A or B", "A/B": a hedge is never credited, whatever the order
    negated = bool(_NEGATION.search(span))
    if m:
        letter = m.group(1)
        others = {x for x in _OTHER_MARKERS.findall(m.group(2)) if x != letter}
        return None if others or negated else _valid(letter, valid)
    if negated:
        return None
    if m := _LEADING_WORD.match(span):
        return _valid(m.group(1) or m.group(2), valid)
    phrased = set(_PHRASED.findall(span))
    if phrased:
        return _valid(phrased.pop(), valid) if len(phrased) == 1 else None
    if options:
        by_text = _match_option_text(span, options)
        if by_text is not None:
            return by_text
    marked = {a or b for a, b in _MARKED.findall(span)}  # "I choose (C) because ..."
    return _valid(marked.pop(), valid) if len(marked) == 1 else None


def _valid(letter: str, valid: str) -> str | None:
    return letter if letter in valid else None


def _names_several_letters(span: str, options, valid: str) -> bool:
    """Whether the span joins two different option letters ("B or C", "A/B"), option texts quoted in it aside
    (an option may itself read "Hepatitis A or B")."""
    for option in sorted(options, key=len, reverse=True):
        if len(option.strip()) >= 3:
            span = re.sub(re.escape(option.strip()), " ", span, flags=re.IGNORECASE)
    return any(a != b and a in valid and b in valid for a, b in _LETTER_LIST.findall(span))


def _match_option_text(span: str, options) -> str | None:
    wanted = normalise_text(span)
    answer = yes_no(span)
    if answer is not None:
        yn = [i for i, o in enumerate(options) if yes_no(o) == answer]
        if len(yn) == 1:
            return LETTERS[yn[0]]
    # The answer quotes one option's text inside a sentence; the longest quoted option wins if it is the only one.
    normalised = [normalise_text(o) for o in options]
    contained = [
        i for i, o in enumerate(normalised) if len(o) >= 2 and re.search(rf"(?<!\w){re.escape(o)}(?!\w)", wanted)
    ]
    if contained:
        longest = max(len(normalised[i]) for i in contained)
        best = [i for i in contained if len(normalised[i]) == longest]
        # another option quoted outside the longest one means the answer mentions several: no single choice
        rest = wanted.replace(normalised[best[0]], " ") if len(best) == 1 else wanted
        if len(best) == 1 and not any(
            re.search(rf"(?<!\w){re.escape(normalised[i])}(?!\w)", rest) for i in contained if i != best[0]
        ):
            return LETTERS[best[0]]
    return None


def is_correct(completion: str, solution: str, options=None, answer_type: str = "choice") -> bool | None:
    """Whether a completion answers correctly; None when nothing parseable is there (counted as wrong in metrics)."""
    extracted = extract_answer(completion)
    if answer_type == "choice":
        letter = choice_letter(extracted, options)
        return None if letter is None else letter == solution.strip().upper()
    answer = extracted.text  # empty when several tags disagree: nothing to credit
    if answer_type == "closed":
        return closed_correct(answer, solution)
    if not answer:
        return None
    return normalise_text(answer) == normalise_text(solution)


def closed_correct(answer: str, solution: str) -> bool | None:
    """Closed questions: yes/no compared as such; other closed answers ('Lung' of 'heart or lung?') by their text."""
    gold = yes_no(solution)
    if gold is None:
        return None if not normalise_text(answer) else normalise_text(answer) == normalise_text(solution)
    said = yes_no(answer)
    return None if said is None else said == gold


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


def medr1_eval_answer(output: str, rule: str = "tag") -> str | None:
    """The answer Med-R1's evaluation scripts take from a model's output (None: they find none).

    - "tag" (the think scripts): the first `<answer>\\s*(\\w+)\\s*</answer>` match.
    - "raw" (the no-think Qwen2-VL and zero-shot scripts): the decoded output itself, compared as is (not stripped).
    - "tag_if_answer" (the no-think Qwen2.5-VL script): the first match if the output contains "answer", else raw.

    >>> [medr1_eval_answer("<think>x</think><answer> B </answer>"), medr1_eval_answer("<answer>B) MRI</answer>")]
    ['B', None]
    >>> [medr1_eval_answer("B", "raw"), medr1_eval_answer("<answer>B</answer>", "raw")]
    ['B', '<answer>B</answer>']
    """
    if rule not in MEDR1_RULES:
        raise ValueError(f"unknown Med-R1 scoring rule {rule!r}; one of {', '.join(MEDR1_RULES)}")
    if rule == "raw" or (rule == "tag_if_answer" and "answer" not in output):
        return output
    match = _MEDR1_EVAL_TAG.search(output)
    return match.group(1) if match else None


def medr1_eval_correct(output: str, solution: str, rule: str = "tag") -> bool:
    """Whether Med-R1's evaluation would count the output correct: its answer equals the gold letter exactly.

    The gold may be a letter or Med-R1's `<answer> C </answer>` (read with the same regex, as the scripts do).
    """
    gold = _MEDR1_EVAL_TAG.search(solution)
    answer = medr1_eval_answer(output, rule)
    return answer is not None and answer == (gold.group(1) if gold else solution)

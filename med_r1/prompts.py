"""Prompt templates. Med-R1 trains and evaluates with different wordings; each is here by name, word for word.

`{Question}` is the question followed by its options as Med-R1 writes them: ``What is shown? A)CT, B)MRI``.
"""

from __future__ import annotations

from med_r1.records import LETTERS

THINK_FIELDS = ("modality", "question_type", "answer", "options", "options_to_answer")
"""The fields a warm-up's think template (`warmup.think`) may use; med_r1.warmup fills them in per question."""

TEMPLATES: dict[str, str] = {
    # Med-R1 src/r1-v/src/open_r1/grpo_vqa.py (= MedVLM-R1's multiple-choice template).
    "medr1_think": (
        "{Question} Your task: 1. Think through the question step by step, enclose your reasoning process in "
        "<think>...</think> tags. 2. Then provide the correct single-letter choice (A, B, C, D,...) inside "
        "<answer>...</answer> tags. 3. No extra information or text outside of these tags."
    ),
    # Med-R1 grpo_vqa_nothink.py
    "medr1_nothink": (
        "{Question} Your task: 1. Provide the correct single-letter choice (A, B, C, D,...) inside "
        "<answer>...</answer> tags. 2. No extra information or text outside of this tag."
    ),
    # Med-R1 src/eval_vqa/test_qwen2vl_vqa.py
    "medr1_eval_think": (
        "{Question} Think through the question step by step in <think>...</think> tags. Then provide the correct "
        "single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags."
    ),
    # Med-R1 src/eval_vqa/test_qwen2vl_vqa_nothink.py
    "medr1_eval_nothink": "{Question} Provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags.",
    # Med-R1 src/eval_vqa/test_qwen2vl_vqa_zero_shot.py. It asks for no tags, and the script compares the raw output
    # with the letter (no <answer> extraction), so only a bare "B" counts there (accuracy_medr1).
    "medr1_zeroshot": "{Question} Provide the correct single-letter choice (A, B, C, D,...).",
    # Open-ended questions (no options): same think/answer contract, a free-text answer.
    "open_think": (
        "{Question} Think through the question step by step inside <think>...</think> tags, then give a short final "
        "answer inside <answer>...</answer> tags."
    ),
}

# Med-R1 trains with one wording and evaluates with another: the evaluation template for each training template.
EVAL_TEMPLATES: dict[str, str] = {"medr1_think": "medr1_eval_think", "medr1_nothink": "medr1_eval_nothink"}


# Which Med-R1 evaluation script each prompt comes from decides how `accuracy_medr1` reads an answer
# (`med_r1.answers.medr1_eval_answer`; Yuxiang-Lai117/Med-R1 src/eval_vqa/ at 88d76c7):
#   test_qwen2vl_vqa.py, test_qwen2_5vl_vqa.py (think): "tag", the first <answer>\s*(\w+)\s*</answer> match
#   test_qwen2vl_vqa_nothink.py, test_qwen2vl_vqa_zero_shot.py: "raw", the output itself (`model_answer =
#       original_output`; the extraction line is commented out)
#   test_qwen2_5vl_vqa_nothink.py: "tag_if_answer", the first match if "answer" is in the output, else the output
# Prompts no Med-R1 script uses (custom templates, open_think) are read as the think scripts read them.
_RAW_PROMPTS = ("medr1_eval_nothink", "medr1_nothink", "medr1_zeroshot")


def medr1_eval_rule(prompt: str, model_type: str | None = None) -> str:
    """How Med-R1's evaluation script for this prompt (and model family, e.g. 'qwen2_vl') reads the answer."""
    if prompt not in _RAW_PROMPTS:
        return "tag"
    if prompt == "medr1_zeroshot" or model_type == "qwen2_vl":
        return "raw"  # Med-R1 has a zero-shot script for Qwen2-VL only
    return "tag_if_answer"  # the Qwen2.5-VL no-think script; later families (Qwen3-VL) follow the newest script


def eval_template(training_template: str) -> str:
    """The template evaluation asks with, given the training one: Med-R1's evaluation wording, else the same."""
    return EVAL_TEMPLATES.get(training_template, training_template)


def resolve_template(name_or_text: str) -> str:
    """A template name from TEMPLATES, or a custom template (it must contain {Question})."""
    return TEMPLATES.get(name_or_text, name_or_text)


def format_problem(question: str, options: list[str] | tuple[str, ...]) -> str:
    """Med-R1's `problem` string: the question, a space, then `A)text, B)text` (no space after the parenthesis)."""
    if not options:
        return question
    return question + " " + ", ".join(f"{LETTERS[i]}){text}" for i, text in enumerate(options))


def options_to(options: list[str] | tuple[str, ...], letter: str) -> str:
    """The options as `format_problem` lists them, read up to `letter` (its text left out): `A)CT, B)` for B."""
    k = LETTERS.index(letter)
    return ", ".join([f"{LETTERS[i]}){text}" for i, text in enumerate(options[:k])] + [f"{letter})"])


def render_prompt(template: str, question: str, options: list[str] | tuple[str, ...]) -> str:
    # str.replace, not str.format: user templates may contain other braces (JSON examples, LaTeX).
    return resolve_template(template).replace("{Question}", format_problem(question, options))

"""Filtering, deterministic train/test splits and leakage checks over loaded questions.

Splits hash each question (Med-R1's scheme) or each image (no image on both sides) with the seed, so a row's side
never depends on which other rows were loaded or filtered: training on CT and testing on all modalities with the same
seed and ratio can never put one question on both sides.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import replace

from med_r1.data.jsonl import is_yes_no
from med_r1.data.taxonomy import canonical_modality, canonical_question_type
from med_r1.errors import DataError
from med_r1.records import LETTERS, Question


def _unit(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def side(key: str, test_ratio: float, seed: int) -> str:
    """'test' or 'train' for one split key (a question id, or the images of a group of questions)."""
    return "test" if _unit(seed, key) < test_ratio else "train"


def split_keys(questions: list[Question], by: str) -> list[str]:
    """The key each question is split by. By image, questions sharing any image form one group with one key (so a
    two-image question and a one-image question on the same scan always land on the same side)."""
    if by == "question":
        return [q.question_id for q in questions]
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for q in questions:
        first = find(q.image_key[0]) if q.image_key else find(q.question_id)
        for image in q.image_key[1:]:
            root = find(image)
            if root != first:
                parent[max(root, first)] = min(root, first)  # the smaller name leads: independent of load order
                first = min(root, first)
    return [find(q.image_key[0]) if q.image_key else find(q.question_id) for q in questions]


def take_side(questions: list[Question], wanted: str, by: str, test_ratio: float, seed: int) -> list[Question]:
    if wanted == "all":
        return list(questions)
    keys = split_keys(questions, by)
    return [q for q, key in zip(questions, keys, strict=True) if side(key, test_ratio, seed) == wanted]


def filter_questions(
    questions: list[Question],
    modalities: Iterable[str] = (),
    question_types: Iterable[str] = (),
    datasets: Iterable[str] = (),
    where: str = "data",
) -> list[Question]:
    """Keep questions in the given domains (any spelling). A requested value that matches nothing is an error."""
    wanted_mod = {canonical_modality(m): m for m in modalities}
    wanted_qt = {canonical_question_type(t): t for t in question_types}
    wanted_ds = {d.casefold(): d for d in datasets}
    problems = []
    for key, wanted, present in (
        ("modalities", wanted_mod, {q.modality for q in questions}),
        ("question_types", wanted_qt, {q.question_type for q in questions}),
        ("datasets", wanted_ds, {q.dataset.casefold() for q in questions}),
    ):
        for canon, given in wanted.items():
            if canon not in present:
                shown = sorted(
                    {q.modality for q in questions}
                    if key == "modalities"
                    else {q.question_type for q in questions}
                    if key == "question_types"
                    else {q.dataset for q in questions}
                )
                problems.append(f"{where}.{key}: {given!r} matches no question; present: {', '.join(shown)}")
    if problems:
        raise DataError("data selection matches nothing:", problems)
    return [
        q
        for q in questions
        if (not wanted_mod or q.modality in wanted_mod)
        and (not wanted_qt or q.question_type in wanted_qt)
        and (not wanted_ds or q.dataset.casefold() in wanted_ds)
    ]


def limit(questions: list[Question], n: int | None, seed: int) -> list[Question]:
    """At most n questions, chosen by hash (stable under reordering), kept in their original order."""
    if n is None or n >= len(questions):
        return questions
    chosen = set(sorted(range(len(questions)), key=lambda i: _unit(seed, questions[i].question_id))[:n])
    return [q for i, q in enumerate(questions) if i in chosen]


def image_overlap(train: list[Question], test: list[Question]) -> list[str]:
    """Images used on both sides (sorted), compared by identity: the name relative to the dataset root, so two split
    files in different folders that name 'Images/X/a.png' share it, whether or not the image root is known (or the
    files are on disk). Med-R1's question-level splits share images; by-image splits never do."""
    train_images = {image for q in train for image in q.image_key}
    return sorted({image for q in test for image in q.image_key} & train_images)


def as_open(question: Question) -> Question:
    """A multiple-choice question asked without its options: the correct option's text becomes the reference answer
    ('closed' for a yes/no answer, else 'open'). Open questions are returned as they are."""
    index = LETTERS.find(question.answer) if len(question.answer) == 1 else -1
    if not 0 <= index < len(question.options):
        return question  # open already, or an answer the data checks report
    answer = question.options[index]
    kind = "closed" if is_yes_no(answer) else "open"
    return replace(question, options=(), answer=answer, answer_type=kind)

"""The one in-memory form every dataset loader produces: a `Question`, plus the `Problem`s found while loading."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

AnswerType = Literal["choice", "closed", "open"]
"""choice: multiple choice, `answer` is a letter; closed: yes/no; open: free text."""


@dataclass(frozen=True, slots=True)
class Question:
    question_id: str
    dataset: str
    images: tuple[str, ...]
    """Image files (absolute paths). A volume, DICOM series folder or cine is one entry that decodes to many frames."""
    question: str
    options: tuple[str, ...]
    """Option texts in letter order (A, B, ...); empty for open-ended questions."""
    answer: str
    """The correct letter for multiple choice; the answer text otherwise."""
    modality: str
    """Canonical modality (CT, MRI, X-Ray, Ultrasound, Dermoscopy, Fundus, OCT, Microscopy) or the source's own."""
    question_type: str
    answer_type: AnswerType = "choice"
    modality_raw: str = ""
    """The modality string exactly as the source wrote it (OmniMedVQA's typos included)."""
    source: str = ""
    """Where the record came from, for messages: 'QA_information/Open-access/ACRIMA.json[12]'."""
    image_ids: tuple[str, ...] = ()
    """The images named relative to their dataset's root ('Images/ACRIMA/x.png'): the same wherever the data lives."""

    @property
    def image_key(self) -> tuple[str, ...]:
        """What identifies this question's images for by-image splits (stable across machines and folders)."""
        return self.image_ids or self.images


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    """missing_image | unreadable_image | answer_not_in_options | duplicate_id | bad_record | image_overlap | ..."""
    where: str
    """File and record (question_id or index) the problem is in."""
    message: str
    severity: Literal["error", "warning"] = "error"
    question_id: str = ""
    """The question the problem belongs to, when there is one (used to drop bad rows)."""

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class LoadResult:
    questions: list[Question] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def extend(self, other: LoadResult) -> None:
        self.questions += other.questions
        self.problems += other.problems


def read_record_list(path: Path, where: str, result: LoadResult) -> list | None:
    """A JSON file holding a list of records; on failure a `bad_file` problem is added and None returned."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        result.problems.append(Problem("bad_file", where, f"cannot read JSON: {exc}"))
        return None
    if not isinstance(records, list):
        result.problems.append(Problem("bad_file", where, "expected a JSON list of records"))
        return None
    return records

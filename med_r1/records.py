"""The one in-memory form every dataset loader produces (`Question`, plus the `Problem`s found while loading), the
option letters, and the dataset columns each training row hands to the rewards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

AnswerType = Literal["choice", "closed", "open"]
"""choice: multiple choice, `answer` is a letter; closed: yes/no; open: free text."""

LETTERS = "ABCDEFGHIJ"
"""Option letters, in order: a question has at most ten options (A-J)."""


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
    audio: str = ""
    """The spoken question (an absolute path to a WAV file), or ''. Its transcript becomes `question` when the source is
    selected (`med_r1.data.speech`)."""

    @property
    def image_key(self) -> tuple[str, ...]:
        """What identifies this question's images for by-image splits (stable across machines and folders)."""
        return self.image_ids or self.images


# The dataset-column contract: the columns of every training row that reach each reward as keyword arguments
# (TRL passes a row's columns through), and the Question field each comes from. Rows also carry `prompt` and the
# images; the reward registry refuses these names as recipe kwargs.
COLUMNS: dict[str, str] = {
    "question_id": "question_id",
    "solution": "answer",
    "options": "options",
    "answer_type": "answer_type",
    "modality": "modality",
    "question_type": "question_type",
    "dataset": "dataset",
    "question": "question",
}
IMAGES = "images"
"""The column of decoded frames (a list of PIL images per row), filled in when a row is read."""


def column_values(questions: list[Question]) -> dict[str, list[Any]]:
    """The reward columns of `questions`, one list per column (options as lists, as a dataset stores them)."""

    def value(question: Question, name: str) -> Any:
        found = getattr(question, name)
        return list(found) if isinstance(found, tuple) else found

    return {column: [value(q, name) for q in questions] for column, name in COLUMNS.items()}


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

"""Questions -> the rows TRL's GRPOTrainer reads: a conversational `prompt`, the images, and the reward columns.

Rows carry image *paths*; a transform decodes them into RGB frames only when a row is read, so a dataset of 89k
questions costs no image decoding up front. The reward columns (`med_r1.records.COLUMNS`) reach every reward function
as keyword arguments.
"""

from __future__ import annotations

import logging

from PIL import Image

from med_r1.config import DataConfig, PromptConfig
from med_r1.data.medical import load_frames
from med_r1.errors import DataError
from med_r1.prompts import render_prompt
from med_r1.records import IMAGES, Question, column_values

logger = logging.getLogger(__name__)

IMAGE_PATHS = "image_paths"
"""The column of image files a row holds until it is read; `TrainingRows` turns it into `IMAGES`."""


def build_prompt(question: Question, prompt: PromptConfig) -> list[dict]:
    messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
    return messages + [
        {"role": "user", "content": render_prompt(prompt.template, question.question, question.options)}
    ]


def to_records(questions: list[Question], prompt: PromptConfig) -> dict[str, list]:
    """Dataset columns: `prompt`, the image paths and the reward columns, one list each."""
    return {
        "prompt": [build_prompt(q, prompt) for q in questions],
        IMAGE_PATHS: [list(q.images) for q in questions],
        **column_values(questions),
    }


def to_dataset(records: dict[str, list], rows: TrainingRows):
    """A `datasets.Dataset` whose rows decode their images on access (column `images`: a list of PIL images)."""
    import datasets  # lazy: datasets pulls in pyarrow and pandas; only training builds a dataset

    return datasets.Dataset.from_dict(records).with_transform(rows)


class ImageLoader:
    """Decodes a question's image paths into RGB frames, as the recipe's `data:` asks (picklable, for dataloader
    workers)."""

    def __init__(self, frames: int = 8, window: str = "auto", image_size: int | None = None):
        self.frames, self.window, self.image_size = frames, window, image_size

    @classmethod
    def from_config(cls, data: DataConfig) -> ImageLoader:
        """The loader for a recipe's `data:` settings (frames per volume, DICOM window, square resize)."""
        return cls(data.frames, data.window, data.image_size)

    def load(self, paths: list[str], question_id: str) -> list[Image.Image]:
        frames = []
        for path in paths:
            try:
                frames += load_frames(path, frames=self.frames, window=self.window)
            except (OSError, ValueError) as exc:
                raise DataError(f"question {question_id}: cannot read image {path}: {exc}") from None
        if self.image_size:
            size = (self.image_size, self.image_size)  # Med-R1 resizes to a square (384x384), aspect not kept
            frames = [f.resize(size, Image.Resampling.BICUBIC) for f in frames]
        return frames


def unreadable(exc: DataError) -> DataError:
    """An unreadable training image without data.skip_bad_rows, as training reports it: what happened, what to do."""
    return DataError(
        f"{exc}. data.skip_bad_rows is false, so training stopped: fix or remove that image (`med-r1 data validate "
        "PATH` decodes every image and lists those that fail), or set data.skip_bad_rows=true to skip rows whose "
        "images fail to decode"
    )


class TrainingRows:
    """The transform of a training dataset: each row's images decoded when the row is read.

    The checks before training do not decode images (89k of them would take long), so an image can still fail here.
    Without `data.skip_bad_rows` that stops the run. With it, the row is skipped: it is replaced by the next row whose
    images decode (GRPO batches have a fixed size, and the G copies of a row must stay one group), logged, and
    counted; once more than `max_bad_share` of the rows have failed, the data is taken to be wrong and the run stops.
    The replacement is deterministic, so a resumed run reads the same rows.
    """

    def __init__(self, images: ImageLoader, records: dict[str, list], skip_bad_rows: bool, max_bad_share: float):
        self.images, self.records, self.skip_bad_rows = images, records, skip_bad_rows
        self.index = {qid: i for i, qid in enumerate(records["question_id"])}
        self.max_bad = max(1, int(max_bad_share * len(self.index)))
        self.bad: dict[str, str] = {}
        """question id -> why its images failed (rows skipped)."""
        self._replacement: dict[str, int] = {}

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if IMAGE_PATHS not in batch:
            return batch
        rows = [{key: batch[key][i] for key in batch} for i in range(len(batch["question_id"]))]
        read = [self._read(row) for row in rows]
        return {key: [row[key] for row in read] for key in read[0]} if read else {}

    def _read(self, row: dict) -> dict:
        qid = row["question_id"]
        if qid not in self.bad:
            try:
                return self._decoded(row)
            except DataError as exc:
                if not self.skip_bad_rows:
                    raise unreadable(exc) from None
                self._skip(qid, str(exc))
        return self._next_readable(qid)

    def _decoded(self, row: dict) -> dict:
        out = {key: value for key, value in row.items() if key != IMAGE_PATHS}
        out[IMAGES] = self.images.load(row[IMAGE_PATHS], row["question_id"])
        return out

    def _skip(self, qid: str, reason: str) -> None:
        self.bad[qid] = reason
        logger.warning("data.skip_bad_rows: skipping %s (%d rows skipped so far)", reason, len(self.bad))
        if len(self.bad) > self.max_bad:
            raise DataError(
                f"{len(self.bad)} of the {len(self.index)} training rows have images that fail to decode (more than "
                f"guards.max_bad_rows allows): the data or its image_root is probably wrong. Run `med-r1 data "
                "validate PATH` to list every unreadable image. First ones:",
                [self.bad[q] for q in list(self.bad)[:5]],
            )

    def _next_readable(self, qid: str) -> dict:
        """The first row after `qid` (wrapping around) whose images decode, always the same one for `qid`."""
        n = len(self.index)
        start = self._replacement.get(qid, self.index[qid] + 1)
        for step in range(n):
            j = (start + step) % n
            row = {key: values[j] for key, values in self.records.items()}
            if row["question_id"] in self.bad:
                continue
            try:
                decoded = self._decoded(row)
            except DataError as exc:
                self._skip(row["question_id"], str(exc))
                continue
            self._replacement[qid] = j
            return decoded
        raise DataError("no training row has images that decode; run `med-r1 data validate PATH`")

"""Questions -> the rows TRL's GRPOTrainer reads: a conversational `prompt`, the images, and the reward columns.

Rows carry image *paths*; a transform decodes them into RGB frames only when a row is read, so a dataset of 89k
questions costs no image decoding up front. The reward columns (`med_r1.records.COLUMNS`) reach every reward function
as keyword arguments.
"""

from __future__ import annotations

from PIL import Image

from med_r1.config import DataConfig, PromptConfig
from med_r1.data.medical import load_frames
from med_r1.errors import DataError
from med_r1.prompts import render_prompt
from med_r1.records import IMAGES, Question, column_values

IMAGE_PATHS = "image_paths"
"""The column of image files a row holds until it is read; `ImageLoader` turns it into `IMAGES`."""


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


def to_dataset(records: dict[str, list], images: ImageLoader):
    """A `datasets.Dataset` whose rows decode their images on access (column `images`: a list of PIL images)."""
    import datasets  # lazy: datasets pulls in pyarrow and pandas; only training builds a dataset

    return datasets.Dataset.from_dict(records).with_transform(images)


class ImageLoader:
    """Decodes the image paths of a batch of rows into `images` (picklable, for dataloader workers)."""

    def __init__(self, frames: int = 8, window: str = "auto", image_size: int | None = None):
        self.frames, self.window, self.image_size = frames, window, image_size

    @classmethod
    def from_config(cls, data: DataConfig) -> ImageLoader:
        """The loader for a recipe's `data:` settings (frames per volume, DICOM window, square resize)."""
        return cls(data.frames, data.window, data.image_size)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out = {key: value for key, value in batch.items() if key != IMAGE_PATHS}
        if IMAGE_PATHS in batch:
            out[IMAGES] = [
                self.load(paths, qid) for paths, qid in zip(batch[IMAGE_PATHS], batch["question_id"], strict=True)
            ]
        return out

    def load(self, paths: list[str], question_id: str) -> list[Image.Image]:
        frames = []
        for path in paths:
            try:
                frames += load_frames(path, frames=self.frames, window=self.window)
            except (OSError, ValueError) as exc:
                raise DataError(
                    f"question {question_id}: cannot read image {path}: {exc}. Run `med-r1 data validate` on the "
                    "dataset, and set data.skip_bad_rows=true to train on the readable rows."
                ) from None
        if self.image_size:
            size = (self.image_size, self.image_size)  # Med-R1 resizes to a square (384x384), aspect not kept
            frames = [f.resize(size, Image.Resampling.BICUBIC) for f in frames]
        return frames

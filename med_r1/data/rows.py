"""Questions -> the rows TRL's GRPOTrainer reads: a conversational `prompt`, `images`, and the columns rewards use.

Rows carry image *paths*; a transform decodes them into RGB frames only when a row is read, so a dataset of 89k
questions costs no image decoding up front. Extra columns reach every reward function as keyword arguments.
"""

from __future__ import annotations

from PIL import Image

from med_r1.config import DataConfig, PromptConfig
from med_r1.errors import DataError
from med_r1.prompts import render_prompt
from med_r1.records import Question

COLUMNS = ("question_id", "solution", "options", "answer_type", "modality", "question_type", "dataset")


def build_prompt(question: Question, prompt: PromptConfig) -> list[dict]:
    messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
    return messages + [
        {"role": "user", "content": render_prompt(prompt.template, question.question, question.options)}
    ]


def to_records(questions: list[Question], prompt: PromptConfig) -> dict[str, list]:
    return {
        "question_id": [q.question_id for q in questions],
        "prompt": [build_prompt(q, prompt) for q in questions],
        "image_paths": [list(q.images) for q in questions],
        "solution": [q.answer for q in questions],
        "options": [list(q.options) for q in questions],
        "answer_type": [q.answer_type for q in questions],
        "modality": [q.modality for q in questions],
        "question_type": [q.question_type for q in questions],
        "dataset": [q.dataset for q in questions],
    }


def to_dataset(questions: list[Question], prompt: PromptConfig, data: DataConfig):
    """A `datasets.Dataset` whose rows decode their images on access (column `images`: a list of PIL images)."""
    import datasets

    dataset = datasets.Dataset.from_dict(to_records(questions, prompt))
    return dataset.with_transform(ImageLoader(data.frames, data.window, data.image_size))


class ImageLoader:
    """Decodes the `image_paths` of a batch of rows into `images` (picklable, for dataloader workers)."""

    def __init__(self, frames: int = 8, window: str = "auto", image_size: int | None = None):
        self.frames, self.window, self.image_size = frames, window, image_size

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out = {key: value for key, value in batch.items() if key != "image_paths"}
        if "image_paths" in batch:
            out["images"] = [
                self.load(paths, qid) for paths, qid in zip(batch["image_paths"], batch["question_id"], strict=True)
            ]
        return out

    def load(self, paths: list[str], question_id: str) -> list[Image.Image]:
        from med_r1.data.medical import load_frames

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

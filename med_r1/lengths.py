"""Prompt lengths before training: image tokens + text tokens + max_completion_length must fit the model.

A prompt that does not fit fails deep inside generation, hours into a run, with an error about mismatched image
tokens. Counting up front needs no model weights: text tokens come from the tokenizer, image tokens from the image
processor's own patch arithmetic and each image's size (read from its header, or `data.image_size`).
"""

from __future__ import annotations

from PIL import Image

from med_r1.config import Recipe
from med_r1.data.rows import build_prompt
from med_r1.prompts import format_problem
from med_r1.records import Question

MARKER = "\u2063MEDR1\u2063"


def prompt_tokens(questions: list[Question], recipe: Recipe, processor) -> list[int]:
    """Prompt length in tokens for each question, as the policy will see it (images included)."""
    from trl.data_utils import prepare_multimodal_messages

    tokenizer = processor.tokenizer
    image_processor = processor.image_processor
    merge = getattr(image_processor, "merge_size", 1) ** 2
    template_cache: dict[int, int] = {}
    size_cache: dict[str, tuple[int, int]] = {}
    lengths = []
    for q in questions:
        n_images = sum(_frame_count(path, recipe.data.frames) for path in q.images)
        if n_images not in template_cache:  # the chat template around the question costs the same for every row
            messages = prepare_multimodal_messages(
                build_prompt_with_marker(recipe), [Image.new("RGB", (28, 28))] * n_images
            )
            text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            # Tokens around the question (chat template, prompt template, one pad per image); a token may merge
            # across the seam, which the margin in `too_long` absorbs.
            template_cache[n_images] = len(tokenizer(text.replace(MARKER, ""), add_special_tokens=False).input_ids)
        text_tokens = len(tokenizer(format_problem(q.question, q.options), add_special_tokens=False).input_ids)
        image_tokens = 0
        for path in q.images:
            height, width = _size(path, recipe, size_cache)
            per_image = image_processor.get_number_of_image_patches(height, width, {}) // merge
            image_tokens += (per_image - 1) * _frame_count(path, recipe.data.frames)  # -1: the pad already counted
        lengths.append(template_cache[n_images] + text_tokens + image_tokens)
    return lengths


def build_prompt_with_marker(recipe: Recipe) -> list[dict]:
    marker = Question("", "", (), MARKER, (), "", "", "")
    return build_prompt(marker, recipe.prompt)


def too_long(questions: list[Question], lengths: list[int], limit: int, completion: int) -> list[str]:
    return [
        f"question {q.question_id} ({q.source}): {n} prompt tokens + {completion} completion tokens > {limit}, the "
        "model's limit; lower model.max_pixels or data.image_size, or grpo.max_completion_length"
        for q, n in zip(questions, lengths, strict=True)
        if n + completion + 2 > limit
    ]


def _frame_count(path: str, frames: int) -> int:
    from med_r1.data.medical import is_dicom, is_nifti

    suffix = path.lower()
    if is_nifti(path) or suffix.endswith(".npy"):
        return frames
    if is_dicom(path):
        return frames  # an upper bound: single-frame files decode to one
    return 1


def _size(path: str, recipe: Recipe, cache: dict) -> tuple[int, int]:
    if recipe.data.image_size:
        return recipe.data.image_size, recipe.data.image_size
    if path not in cache:
        try:
            with Image.open(path) as image:  # reads the header only
                cache[path] = (image.height, image.width)
        except (OSError, ValueError):
            from med_r1.data.medical import load_frames

            try:
                frame = load_frames(path, frames=1, window=recipe.data.window)[0]
                cache[path] = (frame.height, frame.width)
            except (OSError, ValueError):
                cache[path] = (28, 28)  # unreadable: `med-r1 data validate` reports it
    return cache[path]

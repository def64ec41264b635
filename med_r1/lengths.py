"""Token counts before training: every prompt fits the model, and vLLM would see the images as training does.

A prompt that does not fit fails deep inside generation, hours into a run, with an error about mismatched image
tokens. Counting up front needs no model weights: text tokens come from the tokenizer, image tokens from the image
processor's own patch arithmetic and each image's size (read from its header, or `data.image_size`). These are checks:
they read the processor the plan built and return problems; they build nothing.
"""

from __future__ import annotations

from PIL import Image

from med_r1.config import Recipe
from med_r1.data.dicom import is_dicom
from med_r1.data.medical import is_nifti, load_frames
from med_r1.data.rows import build_prompt
from med_r1.model import resolve_model_path
from med_r1.prompts import format_problem
from med_r1.records import Question

MARKER = "\u2063MEDR1\u2063"


def length_problems(recipe: Recipe, questions: list[Question], processor, args) -> tuple[list[str], int]:
    """(one problem per question whose prompt + grpo.max_completion_length exceeds the model, the longest prompt)."""
    from transformers import AutoConfig  # lazy: transformers takes seconds to import

    trust = {"trust_remote_code": True} if recipe.model.trust_remote_code else {}
    config = AutoConfig.from_pretrained(resolve_model_path(recipe.model.name_or_path), **trust).get_text_config()
    limit = getattr(config, "max_position_embeddings", None)
    if args.use_vllm and args.vllm_max_model_length:
        limit = min(limit or args.vllm_max_model_length, args.vllm_max_model_length)
    lengths = prompt_tokens(questions, recipe, processor)
    if not limit:
        return [], max(lengths)
    return too_long(questions, lengths, limit, args.max_completion_length), max(lengths)


def vllm_pixel_problems(recipe: Recipe, own, processor, args) -> tuple[list[str], list[str]]:
    """(errors, warnings): vLLM re-processes each image with the model's own image processor (`own`, as saved with
    the model), which must give the same image tokens as the trainer's (`processor`, with the recipe's bounds)."""
    ours = processor.image_processor
    if dict(own.size) == dict(ours.size):
        return [], []
    if args.vllm_mode == "server":
        size = dict(ours.size)
        return [], [
            "start `vllm serve` with --mm-processor-kwargs "
            f'\'{{"min_pixels": {size.get("shortest_edge")}, "max_pixels": {size.get("longest_edge")}}}\' so its image '
            "tokens match the trainer's (model.min_pixels/max_pixels)"
        ]
    side = recipe.data.image_size
    if side and own.get_number_of_image_patches(side, side, {}) == ours.get_number_of_image_patches(side, side, {}):
        return [], []  # every image is resized to side x side first, and both settings give it the same tokens
    return [
        "grpo.use_vllm (colocate): vLLM processes images with the model's own pixel bounds, which differ from "
        "model.min_pixels/max_pixels, so its prompts would carry other image tokens than training's (a known TRL "
        "failure). Set data.image_size (e.g. 384) to a size both settings treat alike, or drop model.min_pixels/"
        "max_pixels."
    ], []


def prompt_tokens(questions: list[Question], recipe: Recipe, processor) -> list[int]:
    """Prompt length in tokens for each question, as the policy will see it (images included)."""
    from trl.data_utils import prepare_multimodal_messages  # lazy: trl imports torch

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
            try:
                frame = load_frames(path, frames=1, window=recipe.data.window)[0]
                cache[path] = (frame.height, frame.width)
            except (OSError, ValueError):
                cache[path] = (28, 28)  # unreadable: `med-r1 data validate` reports it
    return cache[path]

"""Everything checked before a model is loaded: recipe, data, rewards, GRPOConfig. Shared by `validate` and `train`.

Errors of every kind are collected and raised together, so one `med-r1 validate` run lists all that needs fixing.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Any

from med_r1.config import Recipe
from med_r1.errors import ConfigError, DataError, UserError
from med_r1.records import Problem, Question

logger = logging.getLogger(__name__)


@dataclass
class Plan:
    recipe: Recipe
    train: list[Question]
    eval: list[Question]
    rewards: list  # GuardedReward
    grpo_kwargs: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    skipped: int = 0
    longest_prompt: int | None = None
    """Tokens of the longest training prompt, images included (None when not checked)."""
    processor: Any = None
    """The processor the checks used (pixel bounds applied); training reuses it instead of loading it again."""


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def grpo_kwargs(recipe: Recipe, cuda: bool) -> tuple[dict[str, Any], list[str]]:
    """GRPOConfig keyword arguments: the recipe's `grpo:` plus the values med-r1 owns, adjusted to the machine."""
    kwargs = dict(recipe.grpo)
    notes = []
    kwargs["output_dir"] = recipe.output_dir
    kwargs["reward_weights"] = [spec.weight for spec in recipe.rewards]
    if not cuda:
        if kwargs.get("bf16") or kwargs.get("fp16"):
            notes.append("no CUDA GPU here: grpo.bf16/fp16 turned off, training runs in float32 on the CPU")
        kwargs["bf16"] = False  # TRL defaults to bf16, which raises on a CPU-only machine
        kwargs["fp16"] = False
        kwargs["use_cpu"] = True  # also what makes several CPU processes (torchrun) train together over gloo
    return kwargs, notes


def build_grpo_config(kwargs: dict[str, Any]):
    from trl import GRPOConfig

    try:
        return GRPOConfig(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"grpo: trl.GRPOConfig rejected the settings: {exc}") from None


def build_rewards(recipe: Recipe):
    """Resolve every reward of the recipe into a guarded callable; all problems are reported together."""
    from med_r1.rewards.guard import GuardedReward
    from med_r1.rewards.registry import bind, check_kwargs, resolve

    rewards, problems = [], []
    for i, spec in enumerate(recipe.rewards):
        try:
            reward = resolve(spec.name)
        except ConfigError as exc:
            problems.append(f"rewards[{i}].name: {exc}")
            continue
        problems += [f"rewards[{i}].{p}" for p in check_kwargs(reward.fn, spec.kwargs)]
        fn = bind(reward.fn, spec.kwargs)
        rewards.append(GuardedReward(fn, spec.label or reward.name, reward.kind, recipe.reward_errors))
    if problems:
        raise ConfigError("rewards: problems:", problems)
    return rewards


def data_problems(questions: list[Question], indexing: list[Problem]) -> list[Problem]:
    """Problems that stop training: bad records, missing images, duplicate ids (images are not decoded here)."""
    from med_r1.data.checks import validate

    return [p for p in validate(questions, indexing, decode=False) if p.severity == "error"]


def overlap_warnings(train: list[Question], evaluated: list[Question]) -> list[str]:
    """Evaluation questions (or images) that training also sees: fine for a sanity check, fatal for a claim."""
    from med_r1.data.selection import image_overlap

    if not evaluated:
        return []
    warnings = []
    shared = {q.question_id for q in train} & {q.question_id for q in evaluated}
    if shared:
        warnings.append(
            f"{len(shared)} of {len(evaluated)} evaluation questions are also training questions (e.g. "
            f"{sorted(shared)[0]}); give data.train and data.eval opposite sides of data.split (train / test)"
        )
    images = image_overlap(train, evaluated)
    if images and not shared:
        warnings.append(
            f"{len(images)} images appear in both training and evaluation questions (question-level splits, as "
            "Med-R1's, do this); data.split.by: image keeps them apart"
        )
    return warnings


def drop_bad_rows(questions: list[Question], problems: list[Problem]) -> list[Question]:
    """The questions without problems; of duplicated ids the first occurrence stays."""
    bad = {p.question_id for p in problems if p.question_id and p.kind != "duplicate_id"}
    kept, seen = [], set()
    for q in questions:
        if q.question_id not in bad and q.question_id not in seen:
            kept.append(q)
        seen.add(q.question_id)
    return kept


def prepare(recipe: Recipe, cuda: bool | None = None) -> Plan:
    from med_r1.data import rows, sources
    from med_r1.model import check_model_path
    from med_r1.rewards.checks import CheckedReward, check_rewards

    cuda = cuda_available() if cuda is None else cuda
    failures: list[UserError] = []
    kwargs, warnings = grpo_kwargs(recipe, cuda)
    rewards = _collect(failures, build_rewards, recipe)
    _collect(failures, check_model_path, recipe.model.name_or_path)
    args = _collect(failures, build_grpo_config, kwargs)
    if kwargs.get("use_vllm") and (not cuda or importlib.util.find_spec("vllm") is None):
        warnings.append("grpo.use_vllm needs vLLM and a CUDA GPU (pip install 'med-r1[vllm]'); not available here")
    selected = _collect(failures, sources.select, recipe.data.train, recipe.data.split, "data.train")
    if recipe.data.eval is not None:
        evaluated = _collect(failures, sources.select, recipe.data.eval, recipe.data.split, "data.eval")
    if failures:
        if len(failures) == 1:
            raise failures[0]
        raise UserError(f"{len(failures)} problems:", [str(f) for f in failures])

    problems = data_problems(selected.questions, selected.problems)
    train, skipped = selected.questions, 0
    if problems:
        if not recipe.data.skip_bad_rows:
            raise DataError(_summary("data.train", problems), [str(p) for p in problems[:10]])
        train = drop_bad_rows(train, problems)
        unindexed = sum(1 for p in selected.problems if p.severity == "error")  # records that never became rows
        skipped = len(selected.questions) - len(train) + unindexed
        logger.warning("data.skip_bad_rows: skipping %d bad rows of data.train", skipped)
    eval_questions = evaluated.questions if recipe.data.eval is not None else []
    warnings += overlap_warnings(train, eval_questions)

    processor = _processor(recipe)
    records = rows.to_records(train, recipe.prompt)
    loader = rows.ImageLoader(recipe.data.frames, recipe.data.window, recipe.data.image_size)
    smoke = {k: v[:4] for k, v in records.items() if k != "image_paths"}
    smoke["images"] = [
        loader.load(paths, qid) for paths, qid in zip(records["image_paths"][:4], smoke["question_id"], strict=True)
    ]
    records.pop("image_paths")
    tokenize = (lambda text: processor.tokenizer.encode(text, add_special_tokens=False)) if processor else None
    checked = [CheckedReward(r.__name__, r.fn, r.kind) for r in rewards]
    errors, notes = check_rewards(checked, records, recipe.prompt.template, smoke_rows=smoke, tokenize=tokenize)
    longest = None
    if processor is not None and args is not None and args.use_vllm:
        errors += _vllm_pixel_problems(recipe, processor, args, warnings)
    if processor is None:
        notes.append("the processor could not be loaded without weights here: prompt lengths were not checked")
    elif recipe.guards.check_prompt_length:
        length_errors, longest = _length_problems(recipe, train, processor, args)
        errors += length_errors
    if errors:
        more = [f"... {len(errors) - 20} more"] if len(errors) > 20 else []
        raise UserError("checks before training failed:", errors[:20] + more)
    return Plan(recipe, train, eval_questions, rewards, kwargs, warnings + notes, skipped, longest, processor)


def _collect(failures: list[UserError], fn, *args):
    """Run one independent check; keep its UserError so every problem of a recipe is reported in one go."""
    try:
        return fn(*args)
    except UserError as exc:
        failures.append(exc)
        return None


def _processor(recipe: Recipe):
    """The policy's processor when it is at hand without a download (no weights are loaded); None otherwise."""
    from med_r1.model import load_processor

    try:
        return load_processor(recipe.model.name_or_path, recipe.model)
    except Exception:  # a hub id that is not cached, offline
        return None


def _vllm_pixel_problems(recipe: Recipe, processor, args, warnings: list[str]) -> list[str]:
    """vLLM re-processes each image with the model's own processor settings; they must give the trainer's tokens."""
    from med_r1.model import load_processor

    own = load_processor(recipe.model.name_or_path).image_processor  # the model folder's saved settings
    ours = processor.image_processor
    if dict(own.size) == dict(ours.size):
        return []
    if args.vllm_mode == "server":
        size = dict(ours.size)
        warnings.append(
            "start `vllm serve` with --mm-processor-kwargs "
            f'\'{{"min_pixels": {size.get("shortest_edge")}, "max_pixels": {size.get("longest_edge")}}}\' so its image '
            "tokens match the trainer's (model.min_pixels/max_pixels)"
        )
        return []
    side = recipe.data.image_size
    if side and own.get_number_of_image_patches(side, side, {}) == ours.get_number_of_image_patches(side, side, {}):
        return []  # every image is resized to side x side first, and both settings give it the same tokens
    return [
        "grpo.use_vllm (colocate): vLLM processes images with the model's own pixel bounds, which differ from "
        "model.min_pixels/max_pixels, so its prompts would carry other image tokens than training's (a known TRL "
        "failure). Set data.image_size (e.g. 384) to a size both settings treat alike, or drop model.min_pixels/"
        "max_pixels."
    ]


def _length_problems(recipe: Recipe, questions: list[Question], processor, args) -> tuple[list[str], int]:
    from transformers import AutoConfig

    from med_r1.lengths import prompt_tokens, too_long
    from med_r1.model import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(recipe.model.name_or_path)).get_text_config()
    limit = getattr(config, "max_position_embeddings", None)
    if args.use_vllm and args.vllm_max_model_length:
        limit = min(limit or args.vllm_max_model_length, args.vllm_max_model_length)
    lengths = prompt_tokens(questions, recipe, processor)
    if not limit:
        return [], max(lengths)
    return too_long(questions, lengths, limit, args.max_completion_length), max(lengths)


def _summary(where: str, problems: list[Problem]) -> str:
    kinds: dict[str, int] = {}
    for p in problems:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    counts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return (
        f"{where} has data errors ({counts}); the first are listed below. Run `med-r1 data validate PATH` for the "
        "full report, fix the data, or set data.skip_bad_rows=true to train on the good rows."
    )

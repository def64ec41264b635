"""The recipe's own rules, checked after its types: the `grpo:` keys against TRL's GRPOConfig (renamed and owned keys,
numbers YAML read as strings, values outside their obvious domain) and the rules across sections (templates, reward
labels, LoRA, sampling, pixel bounds, splits, guards, the pass-rate band). Each check returns every problem it finds,
with the dotted key and what to do, so `med_r1.config.parse_recipe` reports them all at once. `recipe` is a
`med_r1.config.Recipe` (not imported: config imports this module)."""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any

from med_r1.prompts import TEMPLATES, THINK_FIELDS
from med_r1.strict import accepts_str_not_bool, convert, is_simple, unknown_key

# Keys that recipes from other tools carry but TRL 1.16 no longer has, with what to do instead.
_GRPO_RENAMED = {
    "max_prompt_length": "removed in TRL 0.28; med-r1 never truncates multimodal prompts, so delete it",
    "use_liger_loss": "renamed to use_liger_kernel in TRL 0.25",
    "vllm_device": "removed; colocate mode shares the training GPU, server mode runs `vllm serve` on its own GPUs",
    "use_transformers_paged": "renamed to use_transformers_continuous_batching",
    "vllm_importance_sampling_cap": "renamed to vllm_importance_sampling_clip_max",
}
# GRPOConfig fields that med-r1 sets from elsewhere in the recipe, so a value has exactly one home.
_GRPO_OWNED = {
    "output_dir": "set the top-level `output_dir` instead",
    "reward_weights": "set `rewards[i].weight` instead",
    "model_init_kwargs": "set `model.dtype` / `model.attn_implementation` instead",
    "trust_remote_code": "set `model.trust_remote_code` instead",
}


def eval_images(recipe) -> tuple[int | None, int | None, int | None]:
    """(square side, min_pixels, max_pixels) of evaluation images: the eval.* value where set, else training's.

    A side of None means images keep their own size (eval.image_size: native, or no data.image_size): the bounds
    then decide their tokens. Bounds of None leave the processor's own.
    """
    e, side = recipe.eval, recipe.eval.image_size
    side = recipe.data.image_size if side is None else None if side == "native" else side
    low = e.min_pixels if e.min_pixels is not None else recipe.model.min_pixels
    high = e.max_pixels if e.max_pixels is not None else recipe.model.max_pixels
    return side, low, high


def _positive(v) -> bool:
    return v > 0


def _non_negative(v) -> bool:
    return v >= 0


def _at_least_one(v) -> bool:
    return v >= 1


def _share(v) -> bool:
    return 0 < v <= 1


# GRPOConfig values with an obvious domain: (check, what the value must be). TRL and Trainer check few of these, and a
# value outside its domain either trains silently without effect (learning_rate: 0) or fails deep inside torch.
_GRPO_DOMAINS: dict[str, tuple[Any, str]] = {
    "learning_rate": (_positive, "greater than 0"),
    "temperature": (_positive, "greater than 0"),
    "top_p": (_share, "in (0, 1]"),
    "min_p": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "top_k": (_non_negative, "0 (off) or more"),
    "repetition_penalty": (_positive, "greater than 0"),
    "beta": (_non_negative, "0 or more"),
    "epsilon": (_non_negative, "0 or more"),
    "epsilon_high": (_non_negative, "0 or more"),
    "delta": (_positive, "greater than 0"),
    "num_generations": (lambda v: v >= 2, "at least 2 (GRPO compares completions of the same prompt)"),
    "num_generations_eval": (_at_least_one, "at least 1"),
    "num_iterations": (_at_least_one, "at least 1"),
    "per_device_train_batch_size": (_at_least_one, "at least 1"),
    "per_device_eval_batch_size": (_at_least_one, "at least 1"),
    "gradient_accumulation_steps": (_at_least_one, "at least 1"),
    "steps_per_generation": (_at_least_one, "at least 1"),
    "generation_batch_size": (_at_least_one, "at least 1"),
    "max_completion_length": (_at_least_one, "at least 1"),
    "max_steps": (lambda v: v == -1 or v >= 1, "at least 1 (or -1: train for num_train_epochs)"),
    "num_train_epochs": (_positive, "greater than 0"),
    "logging_steps": (_positive, "greater than 0"),
    "save_steps": (_positive, "greater than 0"),
    "eval_steps": (_positive, "greater than 0"),
    "save_total_limit": (_at_least_one, "at least 1 (or null: keep every checkpoint)"),
    "warmup_steps": (_non_negative, "0 or more"),
    "weight_decay": (_non_negative, "0 or more"),
    "max_grad_norm": (_non_negative, "0 or more"),
    "adam_beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_beta2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_epsilon": (_positive, "greater than 0"),
    "top_entropy_quantile": (_share, "in (0, 1]"),
    "vllm_gpu_memory_utilization": (_share, "in (0, 1]"),
}


def _grpo_domain_problems(grpo: dict[str, Any]) -> list[str]:
    """Every `grpo:` value outside its obvious domain (types were checked first; other values are TRL's to judge)."""
    problems = []
    for key, (ok, wanted) in _GRPO_DOMAINS.items():
        value = grpo.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and not (math.isfinite(value) and ok(value)):
            problems.append(f"grpo.{key}: must be {wanted}, got {value}")
    return problems


def check_grpo(grpo: dict[str, Any]) -> list[str]:
    """Check `grpo:` keys and simple value types against trl.GRPOConfig's fields; fix numbers YAML read as strings."""
    from trl import GRPOConfig  # lazy: trl imports torch, and `--help` never needs it

    hints = typing.get_type_hints(GRPOConfig)
    names = [f.name for f in dataclasses.fields(GRPOConfig) if f.init]
    errors = []
    for key in list(grpo):
        path = f"grpo.{key}"
        if key in _GRPO_OWNED:
            errors.append(f"{path}: {_GRPO_OWNED[key]}")
        elif key in _GRPO_RENAMED:
            errors.append(f"{path}: {_GRPO_RENAMED[key]}")
        elif key not in names:
            errors.append(unknown_key(path, key, names) + " (a trl.GRPOConfig field)")
        elif grpo[key] is False and accepts_str_not_bool(hints[key]):
            grpo[key] = "no"  # YAML 1.1 reads a bare `no` as false: `save_strategy: no` means the string
        elif is_simple(hints[key]):
            trial: list[str] = []
            converted = convert(grpo[key], hints[key], path, trial)
            errors += trial
            if not trial:
                grpo[key] = converted
    return errors + _grpo_domain_problems(grpo)


def check_recipe(recipe) -> list[str]:
    errors = []
    for key, template in (("prompt.template", recipe.prompt.template), ("eval.prompt", recipe.eval.prompt)):
        if template is not None and template not in TEMPLATES and "{Question}" not in template:
            close = difflib.get_close_matches(template, list(TEMPLATES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(
                f"{key}: {template!r} is neither a template name{hint} nor a template containing {{Question}}; "
                f"names: {', '.join(TEMPLATES)}"
            )
    labels = [spec.label or spec.name for spec in recipe.rewards]
    for label in sorted({x for x in labels if labels.count(x) > 1}):
        errors.append(f"rewards: {label!r} is used twice; give one of them a `label` so their logs stay apart")
    if not recipe.rewards:
        errors.append("rewards: at least one reward is needed")
    lora = recipe.model.lora
    if recipe.model.finetune == "lora" and recipe.model.freeze_vision:
        errors.append("model.freeze_vision: applies to full fine-tuning; LoRA leaves the vision tower frozen already")
    if lora.r <= 0:
        errors.append(f"model.lora.r: must be positive, got {lora.r}")
    if lora.alpha <= 0:
        errors.append(f"model.lora.alpha: must be positive, got {lora.alpha}")
    if not 0.0 <= lora.dropout < 1.0:
        errors.append(f"model.lora.dropout: must be at least 0 and below 1 (a probability), got {lora.dropout}")
    if not str(recipe.output_dir).strip():
        errors.append("output_dir: must name a folder for the run (e.g. runs/my-run)")
    if recipe.data.image_size is not None and recipe.data.image_size < 1:
        errors.append(
            f"data.image_size: must be at least 1 (or null to keep the images' own size), got {recipe.data.image_size}"
        )
    if recipe.eval.do_sample and recipe.eval.temperature <= 0:
        errors.append(f"eval.temperature: must be positive when eval.do_sample is true, got {recipe.eval.temperature}")
    if not 0.0 < recipe.eval.top_p <= 1.0:
        errors.append(f"eval.top_p: must be above 0 and at most 1, got {recipe.eval.top_p}")
    if (
        recipe.eval.open_scorer == "judge"
        and not recipe.eval.judge
        and not any(spec.name == "judge" for spec in recipe.rewards)
    ):
        errors.append(
            "eval.open_scorer: judge needs the judge's settings: set eval.judge: {base_url: ..., model: ...}, or add "
            "a `judge` reward to rewards (its kwargs are used)"
        )
    if (
        recipe.eval.open_scorer == "embedding"
        and not recipe.eval.embedding
        and not any(spec.name == "embedding_similarity" for spec in recipe.rewards)
    ):
        errors.append(
            "eval.open_scorer: embedding needs an encoder: set eval.embedding: {encoder: ...}, or add an "
            "`embedding_similarity` reward to rewards (its kwargs are used)"
        )
    split = recipe.data.split
    if not 0.0 < split.test_ratio < 1.0:
        errors.append(f"data.split.test_ratio: must be between 0 and 1, got {split.test_ratio}")
    if recipe.eval.num_samples > 1 and not recipe.eval.do_sample:
        errors.append("eval.num_samples: more than one sample needs eval.do_sample=true (greedy gives one answer)")
    for key, source in (("data.train", recipe.data.train), ("data.eval", recipe.data.eval)):
        if source is not None and source.limit is not None and source.limit < 1:
            errors.append(f"{key}.limit: must be at least 1 (or null for no limit), got {source.limit}")
    for key in ("batch_size", "max_new_tokens", "num_samples"):
        if getattr(recipe.eval, key) < 1:
            errors.append(f"eval.{key}: must be at least 1, got {getattr(recipe.eval, key)}")
    if isinstance(recipe.eval.image_size, int) and recipe.eval.image_size < 1:
        errors.append(f"eval.image_size: must be at least 1 (or native), got {recipe.eval.image_size}")
    for section, config in (("model", recipe.model), ("eval", recipe.eval)):
        for key in ("min_pixels", "max_pixels"):
            if getattr(config, key) is not None and getattr(config, key) < 1:
                errors.append(f"{section}.{key}: must be at least 1, got {getattr(config, key)}")
    _, low, high = eval_images(recipe)
    if low is not None and high is not None and low > high:
        keys = [
            f"{'eval' if getattr(recipe.eval, k) is not None else 'model'}.{k}" for k in ("min_pixels", "max_pixels")
        ]
        errors.append(
            f"{keys[0]}: {low} exceeds {keys[1]} {high} (evaluation uses eval.* where set, else model.*); lower "
            f"{keys[0]} or raise {keys[1]}"
        )
    if recipe.matrix.min_questions < 1:
        errors.append(f"matrix.min_questions: must be at least 1, got {recipe.matrix.min_questions}")
    if not 0.0 <= recipe.guards.max_bad_rows <= 1.0:
        errors.append(
            f"guards.max_bad_rows: must be between 0 and 1 (a share of the rows), got {recipe.guards.max_bad_rows}"
        )
    if recipe.guards.max_nonfinite_steps < 1:
        errors.append(f"guards.max_nonfinite_steps: must be at least 1, got {recipe.guards.max_nonfinite_steps}")
    if recipe.data.frames < 1:
        errors.append(f"data.frames: must be at least 1, got {recipe.data.frames}")
    errors += _check_selection(recipe)
    errors += check_warmup(recipe.warmup)
    return errors


# trl.SFTConfig fields med-r1 sets for the warm-up from elsewhere in the recipe, so each value has one home.
SFT_OWNED = {
    "output_dir": "the warm-up writes into output_dir/warmup/",
    "num_train_epochs": "set warmup.epochs",
    "learning_rate": "set warmup.learning_rate",
    "per_device_train_batch_size": "set warmup.batch_size",
    "gradient_accumulation_steps": "set warmup.gradient_accumulation_steps",
    "seed": "the warm-up takes grpo.seed",
}


def check_warmup(warmup) -> list[str]:
    """The `warmup:` section: numbers in their domains, the think template's fields, `sft:` keys against
    trl.SFTConfig (checked only when the warm-up is on, so trl is imported only then)."""
    errors = []
    for key, (ok, wanted) in {
        "epochs": (_positive, "greater than 0"),
        "learning_rate": (_positive, "greater than 0"),
        "batch_size": (_at_least_one, "at least 1"),
        "gradient_accumulation_steps": (_at_least_one, "at least 1"),
        "option_orders": (_at_least_one, "at least 1"),
    }.items():
        value = getattr(warmup, key)
        if not (math.isfinite(value) and ok(value)):
            errors.append(f"warmup.{key}: must be {wanted}, got {value}")
    try:
        warmup.think.format(**dict.fromkeys(THINK_FIELDS, ""))
    except (KeyError, IndexError, ValueError) as exc:
        fields = ", ".join("{" + name + "}" for name in THINK_FIELDS)
        errors.append(
            f"warmup.think: {warmup.think!r} is not a think template ({type(exc).__name__}: {exc}); fields: "
            f"{fields} (write {{{{ and }}}} for braces)"
        )
    if warmup.enabled and warmup.sft:
        from trl import SFTConfig  # lazy: trl imports torch

        names = [f.name for f in dataclasses.fields(SFTConfig) if f.init]
        for key in warmup.sft:
            if key in SFT_OWNED:
                errors.append(f"warmup.sft.{key}: {SFT_OWNED[key]}")
            elif key not in names:
                errors.append(unknown_key(f"warmup.sft.{key}", key, names) + " (a trl.SFTConfig field)")
    return errors


def _check_selection(recipe) -> list[str]:
    """The pass-rate band, and dynamic sampling's rounds."""
    errors = []
    band = recipe.data.train.pass_rate
    if band is not None and (len(band) != 2 or not 0.0 <= band[0] <= band[1] <= 1.0):
        errors.append(f"data.train.pass_rate: must be [low, high] with 0 <= low <= high <= 1, got {band}")
    if recipe.data.eval is not None and recipe.data.eval.pass_rate is not None:
        errors.append("data.eval.pass_rate: the pass-rate band selects training questions; set data.train.pass_rate")
    if recipe.dynamic_sampling.max_rounds < 1:
        errors.append(f"dynamic_sampling.max_rounds: must be at least 1, got {recipe.dynamic_sampling.max_rounds}")
    return errors

"""The recipe: one typed, nested YAML config, validated strictly.

    med-r1 train recipes/quickstart.yaml grpo.learning_rate=5.0e-7 model.finetune=full

Every unknown key, wrong type and bad choice is collected and reported together, each with its dotted path (and a
did-you-mean hint for typos). The ``grpo:`` section is passed verbatim to ``trl.GRPOConfig`` after its keys and simple
value types are checked against GRPOConfig's own fields, so every TRL knob is reachable without being re-declared here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from med_r1.errors import ConfigError
from med_r1.io import atomic_write_text
from med_r1.prompts import TEMPLATES
from med_r1.strict import (
    accepts_str_not_bool,
    build,
    convert,
    deepcopy,
    is_simple,
    unknown_key,
    wants_raw_text,
)

# --------------------------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraConfig:
    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    """'all-linear' or module names such as [q_proj, k_proj, v_proj, o_proj]; matched inside the language model."""
    include_vision: bool = False
    """Also adapt the vision tower (excluded by default: Med-R1 and most VLM recipes tune the language side)."""


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str
    """A Hugging Face model id or local folder of any image-text-to-text model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL)."""
    finetune: Literal["lora", "full"] = "lora"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """'auto' = bfloat16 on a CUDA GPU, float32 on CPU."""
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3"] | None = None
    freeze_vision: bool = False
    """Full fine-tuning only: keep the vision tower frozen."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    min_pixels: int | None = None
    """Image pixel bounds applied to the processor, so training and evaluation see the same image tokens."""
    max_pixels: int | None = None
    save_merged: bool = False
    """LoRA only: also save a merged full model next to the adapter."""
    share_prompt: bool = True
    """Compute each prompt and its images once per group of rollouts, not once per rollout (same results, faster).
    Qwen2/2.5/3-VL with eager or sdpa attention; anything else falls back to TRL's unshared passes, logged once."""


@dataclass(frozen=True)
class DataSource:
    path: str
    """A dataset folder or file, or 'bundled' for the small OmniMedVQA-format set shipped with med-r1."""
    format: Literal["auto", "omnimedvqa", "medr1", "jsonl", "vqa-rad", "slake", "pathvqa", "pmc-vqa", "medxpertqa"] = (
        "auto"
    )
    modalities: list[str] = field(default_factory=list)
    """Keep only these modalities (canonical names or raw OmniMedVQA strings); empty = all."""
    question_types: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    """Keep only these source datasets; empty = all."""
    split: Literal["all", "train", "test"] = "all"
    """Which side of `data.split` to take; 'all' takes every row (e.g. Med-R1's own split files)."""
    image_root: str | None = None
    """Folder that relative image paths are resolved against (Med-R1 split files: the OmniMedVQA root)."""
    roots: dict[str, str] = field(default_factory=dict)
    """OmniMedVQA restricted-access: dataset name -> local folder holding that dataset's images."""
    limit: int | None = None
    """Keep at most this many rows (after filtering and splitting), chosen deterministically."""
    open_ended: bool = False
    """Ask multiple-choice questions without their options: the correct option's text becomes the reference answer
    (answer type 'closed' for yes/no answers, else 'open'), as in closed-to-open curricula."""
    pass_rate: list[float] | None = None
    """data.train only: keep questions whose pass rate (`med-r1 data difficulty`) lies in [low, high]; null = all."""


@dataclass(frozen=True)
class SplitConfig:
    by: Literal["question", "image"] = "image"
    """'image' keeps every image on one side (no leakage); 'question' is Med-R1's scheme (images shared)."""
    test_ratio: float = 0.2
    seed: int = 42


@dataclass(frozen=True)
class DataConfig:
    train: DataSource
    eval: DataSource | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    image_size: int | None = None
    """Resize every image to image_size x image_size before the processor (Med-R1 trains at 384)."""
    frames: int = 8
    """Frames taken, evenly spaced, from a volume, DICOM series or cine."""
    window: str = "auto"
    """DICOM/CT window: 'auto' (from the file), or a preset: brain, soft-tissue, lung, bone."""
    skip_bad_rows: bool = False
    """Train on the good rows when `med-r1 data validate` finds errors (the count skipped is logged)."""
    order: Literal["shuffle", "easy_to_hard"] = "shuffle"
    """Training order within each epoch: TRL's shuffle, or by pass rate from most to least often solved."""
    balance: Literal["none", "modality", "question_type"] = "none"
    """Each epoch draws the domains of this axis equally (N // domains questions each: a small domain repeats, a
    large one rotates through its questions across epochs), deterministically from grpo.seed; none = as loaded."""
    pass_rates: str | None = None
    """The pass-rate file `med-r1 data difficulty` writes (read by data.train.pass_rate and data.order:
    easy_to_hard); default: output_dir/difficulty/pass_rates.jsonl."""


@dataclass(frozen=True)
class PromptConfig:
    template: str = "medr1_think"
    """A template name (see `med_r1.prompts.TEMPLATES`) or a custom template containing {Question}."""
    system: str | None = None


@dataclass(frozen=True)
class EvalConfig:
    model: str | None = None
    """What to evaluate: a model, LoRA adapter, checkpoint or run folder, or 'base' for model.name_or_path. Default:
    the run's final model (output_dir/model) when it exists, else the base model."""
    prompt: str | None = None
    """Prompt template; default: Med-R1's evaluation wording for the training template (medr1_think -> medr1_eval_think)."""
    name: str | None = None
    """Results go to output_dir/eval/<name>/; default: the prompt name, with '-base' for the base model."""
    backend: Literal["auto", "hf", "vllm"] = "auto"
    """'auto' uses vLLM when it is installed and a CUDA GPU is present, else batched transformers generation."""
    batch_size: int = 16
    max_new_tokens: int = 256
    """Med-R1 evaluates greedily with 256 new tokens."""
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    num_samples: int = 1
    """Completions per question; > 1 (with do_sample) adds pass@k and majority-vote accuracy."""
    seed: int = 0
    vllm_gpu_memory_utilization: float = 0.85
    image_size: int | Literal["native"] | None = None
    """Evaluation images resized to image_size x image_size (as training does), or 'native': kept at their own size
    and sized by qwen-vl-utils within eval.min_pixels/max_pixels (Med-R1's evaluation). Default: data.image_size."""
    min_pixels: int | None = None
    """Pixel bounds of evaluation images (the processor's, vLLM's and qwen-vl-utils'). Default: model.min_pixels.
    Med-R1 evaluates within Qwen's own bounds, 3136 - 12845056."""
    max_pixels: int | None = None
    """Default: model.max_pixels."""
    open_scorer: Literal["none", "judge"] = "none"
    """Open questions: 'judge' adds a judged accuracy next to exact match and token F1."""
    judge: dict[str, Any] = field(default_factory=dict)
    """The judge's settings (the `judge` reward's kwargs); default: those of the recipe's `judge` reward."""


@dataclass(frozen=True)
class MatrixConfig:
    axis: Literal["modality", "question_type"] = "modality"
    """Train one policy per domain on this axis, evaluate each on every domain (Med-R1's generalization tables)."""
    train_domains: list[str] = field(default_factory=list)
    """Domains to train on; empty = every domain present in data.train."""
    test_domains: list[str] = field(default_factory=list)
    """Domains reported as columns; empty = every domain present in data.eval."""
    baseline: bool = True
    """Also evaluate the untrained base model (the baseline row)."""
    min_questions: int = 50
    """Training domains found in data.train with fewer questions are skipped (listed in the plan), e.g. the single
    record Med-R1's files leave without a modality. Domains named in train_domains are always trained."""
    metric: Literal["accuracy", "accuracy_medr1"] = "accuracy"
    """Which accuracy the heatmaps and matrix.csv show: med-r1's parser, or exactly Med-R1's evaluation scorer.
    matrix.md and matrix.json hold both."""


@dataclass(frozen=True)
class GuardsConfig:
    max_nonfinite_steps: int = 3
    """Optimizer steps with a non-finite loss or gradient norm are skipped; this many in a row stop the run."""
    check_prompt_length: bool = True
    """Before training, fail on any question whose image + text tokens + max_completion_length exceed the model."""
    max_bad_rows: float = 0.05
    """With data.skip_bad_rows: the share of training rows whose images may fail to decode during training (each is
    skipped and logged) before the run stops; at least one is always allowed."""


@dataclass(frozen=True)
class DynamicSamplingConfig:
    enabled: bool = False
    """Replace groups whose rewards are all equal (no learning signal) by freshly sampled ones (DAPO)."""
    max_rounds: int = 3
    """Generation rounds per batch at most (the first included); groups still without signal then stay."""


@dataclass(frozen=True)
class RewardSpec:
    name: str
    """A built-in name, an entry point (group med_r1.rewards), 'package.module:function' or 'path/file.py:function'."""
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    """Log name (rewards/<label>/mean); needed only when one reward is used twice."""


@dataclass(frozen=True)
class Recipe:
    model: ModelConfig
    data: DataConfig
    output_dir: str
    prompt: PromptConfig = field(default_factory=PromptConfig)
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec("format"), RewardSpec("accuracy")])
    reward_errors: Literal["raise", "none"] = "raise"
    """What a reward that raises does: stop the run ('raise') or score None for the rows it failed on ('none')."""
    grpo: dict[str, Any] = field(default_factory=dict)
    """Passed to trl.GRPOConfig (learning_rate, num_generations, beta, loss_type, use_vllm, ...)."""
    resume: bool | str = False
    """true: continue from the last checkpoint in output_dir; a path: from that checkpoint."""
    verbose: bool = False
    """Print every metric at each logging step (TRL's dictionary) instead of one compact line; metrics.jsonl always
    holds them all."""
    guards: GuardsConfig = field(default_factory=GuardsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    matrix: MatrixConfig = field(default_factory=MatrixConfig)
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------

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
}


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, refusing a key given twice in one mapping (SafeLoader silently keeps the last one)."""

    def construct_document(self, node):
        duplicates = list(_duplicate_keys(node, ""))
        if duplicates:
            raise ConfigError(f"{self.name}: keys given twice (YAML keeps only the last; remove one):", duplicates)
        return super().construct_document(node)


def _duplicate_keys(node: yaml.Node, path: str):
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{path}[{i}]")
    elif isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            name = f"{path}.{key.value}" if path else key.value
            line = key.start_mark.line + 1
            if key.value in first:
                yield f"{name}: line {first[key.value]} and line {line}"
            first.setdefault(key.value, line)
            yield from _duplicate_keys(value, name)


def read_yaml(path: Path):
    """A YAML file as Python data: UTF-8 text, no key given twice; a ConfigError naming the file and line if not."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    loader = RecipeLoader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file, apply `key.sub=value` overrides and validate it; raise ConfigError listing all problems."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"recipe file not found: {path}. Pass the path of a YAML recipe, e.g. recipes/quickstart.yaml."
        )
    return parse_recipe(read_yaml(path) or {}, overrides, source=str(path))


def parse_recipe(raw: Any, overrides: list[str] | None = None, source: str = "recipe") -> Recipe:
    errors: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the recipe must be a mapping of keys to values")
    raw = apply_overrides(raw, overrides or [], errors)
    recipe = build(Recipe, raw, "", errors)
    grpo = recipe.grpo if recipe is not None else raw.get("grpo")
    if isinstance(grpo, dict):  # checked even when other sections are wrong: every problem in one list
        errors += _check_grpo(grpo)
    if recipe is not None:
        errors += _check_recipe(recipe)
    if errors:
        noun = "problem" if len(errors) == 1 else "problems"
        raise ConfigError(f"{source}: {len(errors)} {noun}:", errors)
    return recipe


def apply_overrides(raw: dict, overrides: list[str], errors: list[str]) -> dict:
    """Return a copy of `raw` with each `a.b.c=value` applied; the value is parsed as YAML (`[CT, MRI]`, `5.0e-7`)."""
    raw = deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            errors.append(f"override {item!r} must look like key.sub=value (e.g. grpo.learning_rate=5.0e-7)")
            continue
        parts = key.split(".")
        if not all(parts):
            errors.append(f"override {item!r}: {key!r} has an empty part (two dots, or one at an end)")
            continue
        if wants_raw_text(_leaf_type(parts)):
            value = text  # a string field keeps what was typed: '#', ':' and 'no' are not YAML here
        else:
            try:
                value = yaml.safe_load(text) if text else ""
            except yaml.YAMLError:
                value = text
        node: Any = raw
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    errors.append(f"override {key}: {'.'.join(parts[:i]) or 'recipe'} has no item {part}")
                    break
                part = int(part)
            elif not isinstance(node, dict):
                errors.append(f"override {key}: {'.'.join(parts[:i])} is not a mapping")
                break
            if last:
                node[part] = value
                break
            if isinstance(node, dict) and not isinstance(node.get(part), dict | list):
                if parts[i + 1].isdigit():
                    prefix = ".".join(parts[: i + 1])
                    errors.append(
                        f"override {key}: the recipe has no list {prefix} to index; set it whole: {prefix}=[...]"
                    )
                    break
                node[part] = {}
            node = node[part]
    return raw


def _leaf_type(parts: list[str]) -> Any:
    """The declared type at a dotted recipe path (GRPOConfig's for grpo.*), or None when there is none."""
    tp: Any = Recipe
    for i, part in enumerate(parts):
        if tp is Recipe and part == "grpo" and len(parts) == i + 2:
            from trl import GRPOConfig  # lazy: trl imports torch; only grpo.* overrides need its field types

            return typing.get_type_hints(GRPOConfig).get(parts[i + 1])
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = options[0] if len(options) == 1 else None
            origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            tp = typing.get_type_hints(tp).get(part)
        elif origin is list and part.isdigit():
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
        if tp is None:
            return None
    return tp


def eval_images(recipe: Recipe) -> tuple[int | None, int | None, int | None]:
    """(square side, min_pixels, max_pixels) of evaluation images: the eval.* value where set, else training's.

    A side of None means images keep their own size (eval.image_size: native, or no data.image_size): the bounds
    then decide their tokens. Bounds of None leave the processor's own.
    """
    e, side = recipe.eval, recipe.eval.image_size
    side = recipe.data.image_size if side is None else None if side == "native" else side
    low = e.min_pixels if e.min_pixels is not None else recipe.model.min_pixels
    high = e.max_pixels if e.max_pixels is not None else recipe.model.max_pixels
    return side, low, high


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


RESOLVED_HEADER = "# med-r1: the resolved recipe of this run, every default filled in\n"
"""The first line of every recipe.yaml med-r1 writes into a run folder (so a user's own recipe.yaml is never taken for
one)."""


def dump_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the resolved recipe (every default filled in), atomically."""
    text = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, allow_unicode=True)
    atomic_write_text(path, RESOLVED_HEADER + text)


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


def _check_grpo(grpo: dict[str, Any]) -> list[str]:
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


def _check_recipe(recipe: Recipe) -> list[str]:
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
    return errors


def _check_selection(recipe: Recipe) -> list[str]:
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

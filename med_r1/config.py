"""The recipe: one typed, nested YAML config, validated strictly.

    med-r1 train recipes/quickstart.yaml grpo.learning_rate=5.0e-7 model.finetune=full

Every unknown key, wrong type and bad choice is collected and reported together, each with its dotted path (and a
did-you-mean hint for typos). The ``grpo:`` section is passed verbatim to ``trl.GRPOConfig`` after its keys and simple
value types are checked against GRPOConfig's own fields, so every TRL knob is reachable without being re-declared here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from med_r1.errors import ConfigError
from med_r1.io import atomic_write_text, read_yaml
from med_r1.recipe_checks import check_grpo, check_recipe, eval_images  # noqa: F401  (eval_images: re-exported)
from med_r1.strict import (
    build,
    deepcopy,
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
    trust_remote_code: bool = False
    """Load a model that ships its own Python code (an auto_map in config.json, e.g. Hulu-Med): runs that code, so
    only for models you trust. Passed to the Auto classes only when true."""


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
    asr_model: str | None = None
    """Spoken questions: a speech-recognition model (transformers pipeline; a folder or hub id) that transcribes each
    row's `audio` file into its question text at loading time; transcripts are cached under $MED_R1_CACHE/transcripts."""


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
    open_scorer: Literal["none", "judge", "embedding"] = "none"
    """Open questions: 'judge' adds a judged accuracy next to exact match and token F1; 'embedding' the answers'
    embedding similarity to the reference."""
    judge: dict[str, Any] = field(default_factory=dict)
    """The judge's settings (the `judge` reward's kwargs); default: those of the recipe's `judge` reward."""
    embedding: dict[str, Any] = field(default_factory=dict)
    """The embedding scorer's settings (the `embedding_similarity` reward's kwargs: encoder, max_length, batch_size,
    device, floor); default: those of the recipe's `embedding_similarity` reward."""


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
class WarmupConfig:
    """A short supervised warm-up on the training questions before GRPO (TRL's SFTTrainer), as several R1 recipes do:
    the policy first learns to answer in the recipe's format, then GRPO starts from that model. Off by default."""

    enabled: bool = False
    epochs: float = 1.0
    """Passes over the warm-up rows (every training question, times option_orders)."""
    learning_rate: float = 1.0e-5
    batch_size: int = 8
    """Rows per device per step."""
    gradient_accumulation_steps: int = 1
    option_orders: int = 1
    """Rows per question: its own option order, plus option_orders - 1 random reorderings (the target letter follows
    its option), so the letter is learned from the options' content rather than from its position."""
    think: str = ""
    """What the targets hold inside <think>...</think> (think templates): fixed text, or with fields filled in per
    question (med_r1.prompts.THINK_FIELDS): {modality}, {question_type}, {answer} (the answer's text), {options} (the
    options as the prompt lists them: `A)CT, B)MRI`) and {options_to_answer} (that list read up to the answer's
    letter: `A)CT, B)` when B is right)."""
    eval_prompt: bool = False
    """Also train on the evaluation wording of the prompt (eval.prompt, else the template's evaluation template),
    alternating with the training wording; neither wording carries evaluation data."""
    sft: dict[str, Any] = field(default_factory=dict)
    """More trl.SFTConfig settings (lr_scheduler_type, warmup_steps, weight_decay, ...), checked against its fields."""


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
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    """The supervised warm-up before GRPO (`med_r1.warmup`), into output_dir/warmup/."""
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
        errors += check_grpo(grpo)
    if recipe is not None:
        errors += check_recipe(recipe)
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


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


RESOLVED_HEADER = "# med-r1: the resolved recipe of this run, every default filled in\n"
"""The first line of every recipe.yaml med-r1 writes into a run folder (so a user's own recipe.yaml is never taken for
one)."""


def dump_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the resolved recipe (every default filled in), atomically."""
    text = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, allow_unicode=True)
    atomic_write_text(path, RESOLVED_HEADER + text)

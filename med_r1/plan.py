"""One plan per command: everything a run needs, built once from the recipe, with every problem in one list.

    plan = build_plan(recipe, "train")     # or "validate", "eval", "matrix"

The plan holds the questions (train, eval), the dataset rows, the guarded rewards, GRPOConfig (its keyword arguments
and the object) and the processor; each is built exactly once, here, and `train.build_trainer` only assembles them.
What a command does not need is not built (`NEEDS`): `eval` and `matrix` need questions only; `validate` builds all
that `train` does, but a Hugging Face model that is not downloaded while the Hub is offline is a warning there (the
checks that need its processor are skipped); `validate` also checks the run folder and `resume` without touching
them. No weights are loaded here: `build_trainer` loads them.

Problems of every kind (recipe, rewards, data, processor, the checks before training) go into one list, raised
together, so one `med-r1 validate` lists everything that needs fixing. A check whose input could not be built (rewards
that did not resolve, data with errors) is skipped rather than reported twice.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from med_r1 import run_folder, vllm_engine
from med_r1.config import Recipe
from med_r1.data import checks, rows, sources
from med_r1.data.frames import window_params
from med_r1.data.schedule import Schedule, build_schedule
from med_r1.errors import ConfigError, DataError, UserError
from med_r1.lengths import length_problems, vllm_pixel_problems
from med_r1.model import (
    apply_pixel_bounds,
    check_model_path,
    cuda_available,
    hub_problem,
    load_processor,
    model_config,
)
from med_r1.policies import check_policy_model
from med_r1.records import IMAGES, Question
from med_r1.rewards import build_reward
from med_r1.rewards.checks import check_rewards
from med_r1.rewards.guard import GuardedReward
from med_r1.rewards.judge import get_judge, settings_from
from med_r1.shared_prompt import plan_note

logger = logging.getLogger(__name__)

Purpose = Literal["validate", "train", "eval", "matrix", "difficulty"]


@dataclass(frozen=True)
class Needs:
    """What a command needs built; the rest of its plan stays empty."""

    train_data: bool = True
    """data.train's questions."""
    eval_required: bool = False
    """data.eval must be set (it is loaded whenever the recipe names it)."""
    training: bool = True
    """GRPOConfig, guarded rewards, processor, training rows, gated training data and the checks before training."""
    offline_ok: bool = False
    """A Hub model that is not downloaded while offline is a warning, not an error."""


NEEDS: dict[str, Needs] = {
    "validate": Needs(offline_ok=True),
    "train": Needs(),
    "eval": Needs(train_data=False, eval_required=True, training=False),
    "matrix": Needs(eval_required=True, training=False),
    "difficulty": Needs(training=False),  # every training question, before the pass-rate band
}


@dataclass
class Plan:
    recipe: Recipe
    purpose: str
    train: list[Question] = field(default_factory=list)
    eval: list[Question] = field(default_factory=list)
    skipped: int = 0
    """Training rows left out by data.skip_bad_rows (records that never became questions included)."""
    grpo_kwargs: dict[str, Any] = field(default_factory=dict)
    """GRPOConfig's keyword arguments: the recipe's `grpo:` plus the values med-r1 owns, adjusted to the machine."""
    grpo_config: Any = None
    """The trl.GRPOConfig built from `grpo_kwargs`."""
    rewards: list[GuardedReward] = field(default_factory=list)
    processor: Any = None
    """The policy's processor with the recipe's pixel bounds (None where validate could not get it offline)."""
    images: rows.ImageLoader | None = None
    train_reader: rows.TrainingRows | None = None
    """Decodes the training rows' images as they are read (and skips unreadable ones with data.skip_bad_rows)."""
    train_rows: dict[str, list] | None = None
    """Dataset columns of the training questions: prompt, image paths and the reward columns."""
    eval_rows: dict[str, list] | None = None
    """The same for data.eval, when TRL's periodic evaluation (grpo.eval_strategy) scores it."""
    eval_reader: rows.TrainingRows | None = None
    share_prompt: str = ""
    """What `model.share_prompt` will do with this model (validate prints it)."""
    policy: str = ""
    """Why the trainer accepts this model (`med_r1.policies`); empty when its config.json is not here to read."""
    longest_prompt: int | None = None
    """Tokens of the longest training prompt, images included (None when not checked)."""
    schedule: Schedule | None = None
    """The pass-rate band, order and balance of the training questions (`plan.train` is what the band kept)."""
    warnings: list[str] = field(default_factory=list)


def build_plan(recipe: Recipe, purpose: Purpose = "train", cuda: bool | None = None) -> Plan:
    """Build what `purpose` needs from `recipe`; raise one UserError listing every problem found."""
    needs = NEEDS[purpose]
    plan = Plan(recipe, purpose)
    errors: list[UserError] = []
    processor_ready = False
    if needs.training:
        cuda = cuda_available() if cuda is None else cuda
        plan.grpo_kwargs, plan.warnings = grpo_kwargs(recipe, cuda)
        plan.grpo_config = _attempt(errors, build_grpo_config, plan.grpo_kwargs)
        if plan.grpo_kwargs.get("use_vllm"):
            errors += _vllm_problems(plan, purpose, cuda)
        plan.rewards = _attempt(errors, build_rewards, recipe) or []
        before = len(errors)
        errors += judge_problems(plan)
        judges_ok = len(errors) == before
        before = len(errors)
        _attempt(
            errors, check_model_path, recipe.model.name_or_path, "model.name_or_path", recipe.model.trust_remote_code
        )
        if len(errors) == before:
            verdict = _attempt(errors, check_policy_model, recipe.model.name_or_path, recipe.model.trust_remote_code)
            plan.policy = verdict.reason if verdict else ""
        processor_ready = len(errors) == before and _hub(plan, needs, errors)
        _attempt(errors, run_folder.check_writable, Path(recipe.output_dir))
        if purpose == "validate":  # train checks these itself, first, and may tidy the folder while doing so
            _attempt(errors, _check_resume, plan)
    if recipe.data.window not in (None, "auto"):
        _attempt(errors, _check_window, recipe.data.window)

    train_ok = False
    if needs.train_data:
        selected = _attempt(errors, sources.select, recipe.data.train, recipe.data.split, "data.train")
        if selected is not None:
            plan.train = selected.questions
            train_ok = _gate(plan, selected, errors) if needs.training else True
    if recipe.data.eval is not None:
        evaluated = _attempt(errors, sources.select, recipe.data.eval, recipe.data.split, "data.eval")
        plan.eval = evaluated.questions if evaluated is not None else []
    elif needs.eval_required:
        errors.append(
            UserError("data.eval is not set: name the evaluation data, e.g. data.eval.path=... data.eval.split=test")
        )

    if needs.training:
        plan.warnings += checks.overlap_warnings(plan.train, plan.eval)
        own = _processor(plan, needs, errors) if processor_ready else None
        if plan.processor is not None:
            plan.share_prompt = plan_note(recipe.model)
        if train_ok:
            plan.schedule = _attempt(errors, build_schedule, recipe, plan.train, plan.grpo_kwargs.get("seed", 42))
            train_ok = plan.schedule is not None
        if plan.grpo_config is not None:
            errors += dynamic_sampling_problems(recipe, plan.grpo_config)
        if train_ok:
            plan.train = plan.schedule.questions
            plan.images = rows.ImageLoader.from_config(recipe.data)
            plan.train_rows = rows.to_records(plan.train, recipe.prompt)
            plan.train_reader = rows.TrainingRows(
                plan.images, plan.train_rows, recipe.data.skip_bad_rows, recipe.guards.max_bad_rows
            )
            if plan.eval and plan.grpo_config is not None and plan.grpo_config.eval_strategy != "no":
                plan.eval_rows = rows.to_records(plan.eval, recipe.prompt)
                plan.eval_reader = rows.TrainingRows(
                    plan.images, plan.eval_rows, recipe.data.skip_bad_rows, recipe.guards.max_bad_rows
                )
            if plan.rewards and judges_ok:  # a judge that is down is reported once, by its probe
                errors += _reward_problems(plan)
            if plan.processor is not None and plan.grpo_config is not None:
                errors += _token_problems(plan, own)
    if errors:
        raise errors[0] if len(errors) == 1 else UserError(f"{len(errors)} problems:", [str(e) for e in errors])
    return plan


# -- what the plan holds -------------------------------------------------------------------------------------------


def grpo_kwargs(recipe: Recipe, cuda: bool) -> tuple[dict[str, Any], list[str]]:
    """GRPOConfig keyword arguments: the recipe's `grpo:` plus the values med-r1 owns, adjusted to the machine."""
    kwargs = dict(recipe.grpo)
    notes = []
    kwargs["output_dir"] = recipe.output_dir
    kwargs["reward_weights"] = [spec.weight for spec in recipe.rewards]
    if recipe.model.trust_remote_code:  # TRL loads the reference model (beta > 0, full fine-tuning) with it
        kwargs["trust_remote_code"] = True
    if not cuda:
        if kwargs.get("bf16") or kwargs.get("fp16"):
            notes.append("no CUDA GPU here: grpo.bf16/fp16 turned off, training runs in float32 on the CPU")
        kwargs["bf16"] = False  # TRL defaults to bf16, which raises on a CPU-only machine
        kwargs["fp16"] = False
        kwargs["use_cpu"] = True  # also what makes several CPU processes (torchrun) train together over gloo
    return kwargs, notes


def build_grpo_config(kwargs: dict[str, Any]):
    from trl import GRPOConfig  # lazy: trl imports torch

    try:
        return GRPOConfig(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"grpo: trl.GRPOConfig rejected the settings: {exc}") from None


def build_rewards(recipe: Recipe) -> list[GuardedReward]:
    """Every reward of the recipe, resolved, kwargs checked and bound, guarded; all problems reported together."""
    rewards, problems = [], []
    for i, spec in enumerate(recipe.rewards):
        try:
            reward = build_reward(spec.name, spec.kwargs, spec.label)
        except ConfigError as exc:
            problems += [f"rewards[{i}].{p}" for p in exc.problems] or [f"rewards[{i}].name: {exc}"]
            continue
        rewards.append(GuardedReward(reward, recipe.reward_errors))
    if problems:
        raise ConfigError("rewards: problems:", problems)
    return rewards


def _gate(plan: Plan, selected, errors: list[UserError]) -> bool:
    """Training data with errors stops the run, unless data.skip_bad_rows keeps the good rows. True: data usable."""
    problems = checks.training_problems(selected.questions, selected.problems)
    if not problems:
        return True
    if not plan.recipe.data.skip_bad_rows:
        errors.append(DataError(checks.problem_summary("data.train", problems), [str(p) for p in problems[:10]]))
        return False
    plan.train = checks.drop_bad_rows(selected.questions, problems)
    plan.skipped = len(selected.questions) - len(plan.train) + len(selected.errors)  # + records never indexed
    logger.warning("data.skip_bad_rows: skipping %d bad rows of data.train", plan.skipped)
    return True


def _hub(plan: Plan, needs: Needs, errors: list[UserError]) -> bool:
    """Whether the model can be had (in seconds: a Hub that is offline or out of reach is found out, not waited on).
    False when its processor cannot be loaded; validate only warns about a Hub model that is offline and not cached."""
    error, warning, loadable = hub_problem(plan.recipe.model.name_or_path, offline_ok=needs.offline_ok)
    if error:
        errors.append(UserError(error))
    if warning:
        plan.warnings.append(warning)
    return loadable


def _check_resume(plan: Plan) -> None:
    """What `train` would say about output_dir and `resume`, without changing anything there; a folder that holds a
    run (which train refuses without resume) is a warning here, so validate still checks the rest of the recipe."""
    try:
        run_folder.resume_checkpoint(plan.recipe, is_main=False)
    except run_folder.FolderInUse as exc:
        plan.warnings.append(f"{exc} (med-r1 train would refuse it)")


def _processor(plan: Plan, needs: Needs, errors: list[UserError]):
    """Load the processor into the plan; return the model's own image processor (before the recipe's pixel bounds),
    which vLLM would use, when vLLM is asked for."""
    model = plan.recipe.model
    plan.processor = _attempt(errors, load_processor, model.name_or_path, None, model.trust_remote_code)
    if plan.processor is None:
        return None
    own = copy.deepcopy(plan.processor.image_processor) if plan.grpo_kwargs.get("use_vllm") else None
    apply_pixel_bounds(plan.processor, model.min_pixels, model.max_pixels)
    return own


# -- the checks before training (they read the plan; the checks themselves live with what they check) -------------


def _reward_problems(plan: Plan) -> list[UserError]:
    """Every reward called on real rows (four with their images), and the gold self-check on all of them."""
    columns = {k: v for k, v in plan.train_rows.items() if k != rows.IMAGE_PATHS}
    try:
        picked, images = _readable_rows(plan, 4)
    except DataError as exc:
        return [exc]
    smoke = {k: [v[i] for i in picked] for k, v in columns.items()}
    smoke[IMAGES] = images
    processor = plan.processor
    tokenize = (lambda text: processor.tokenizer.encode(text, add_special_tokens=False)) if processor else None
    found, notes = check_rewards(
        [r.reward for r in plan.rewards], columns, plan.recipe.prompt.template, smoke_rows=smoke, tokenize=tokenize
    )
    plan.warnings += notes
    return [UserError("rewards fail their checks on real rows:", found)] if found else []


def _readable_rows(plan: Plan, n: int, tries: int = 50) -> tuple[list[int], list]:
    """The first `n` training rows whose images decode, and their images. An unreadable one stops the check, unless
    data.skip_bad_rows (training skips such rows too)."""
    picked, images = [], []
    paths, ids = plan.train_rows[rows.IMAGE_PATHS], plan.train_rows["question_id"]
    for i in range(min(len(ids), tries)):
        try:
            images.append(plan.images.load(paths[i], ids[i]))
        except DataError as exc:
            if not plan.recipe.data.skip_bad_rows:
                raise rows.unreadable(exc) from None
            logger.warning("data.skip_bad_rows: %s (not used for the reward checks)", exc)
            continue
        picked.append(i)
        if len(picked) == n:
            break
    if not picked:
        raise DataError(
            f"data.train: none of the first {tries} rows has images that decode; run `med-r1 data validate`"
        )
    return picked, images


def dynamic_sampling_problems(recipe: Recipe, args) -> list[UserError]:
    """Dynamic sampling replaces whole groups on each process, so a process must hold whole groups, and a group's
    advantages must say alone whether it carries signal (per-group normalisation)."""
    if not recipe.dynamic_sampling.enabled:
        return []
    problems = []
    local = args.per_device_train_batch_size * args.steps_per_generation
    if local % args.num_generations:
        problems.append(
            f"dynamic_sampling: each process generates {local} completions per batch (grpo.per_device_train_batch_size "
            f"x steps_per_generation), not a multiple of grpo.num_generations={args.num_generations}, so groups would "
            "span processes; make it a multiple"
        )
    if args.multi_objective_aggregation != "sum_then_normalize":
        problems.append("dynamic_sampling: needs grpo.multi_objective_aggregation=sum_then_normalize (TRL's default)")
    return [UserError(p) for p in problems]


def judge_problems(plan: Plan) -> list[UserError]:
    """Every `judge` reward's settings checked and its judge asked one test question (past the cache), so a judge
    that is down, misnamed or refusing the key fails here with its URL, not at the first training step. `validate`
    does not load a local judge's weights; it checks the model path only."""
    errors: list[UserError] = []
    for i, spec in enumerate(plan.recipe.rewards):
        if spec.name != "judge":
            continue
        where = f"rewards[{i}] (judge)"
        try:
            settings = settings_from(spec.kwargs, where)
            if settings.backend == "local" and plan.purpose == "validate":
                if not settings.model.startswith("builtin:"):
                    check_model_path(settings.model, f"{where}.kwargs.model")
                continue
            found, notes = get_judge(settings).probe()
        except UserError as exc:
            errors.append(exc if str(exc).startswith(where) else UserError(f"{where}: {exc}"))
            continue
        errors += [UserError(f"{where}: {problem}") for problem in found]
        plan.warnings += [f"{where}: {note}" for note in notes]
    return errors


def _vllm_problems(plan: Plan, purpose: Purpose, cuda: bool) -> list[UserError]:
    """grpo.use_vllm on this machine: vLLM installed in a build that runs here (a warning for validate, which may
    check a GPU recipe on a laptop), and what vLLM's CPU build cannot do."""
    reason = vllm_engine.unusable_reason(cuda)
    if reason:
        if purpose == "validate":
            plan.warnings.append(f"grpo.use_vllm: {reason} (med-r1 train would refuse it here)")
            return []
        return [UserError(f"grpo.use_vllm: {reason}; or set grpo.use_vllm=false")]
    if not vllm_engine.on_cpu():
        return []
    config = model_config(plan.recipe.model.name_or_path, plan.recipe.model.trust_remote_code)
    return [UserError(p) for p in vllm_engine.cpu_build_problems(plan.grpo_kwargs, config)]


def _token_problems(plan: Plan, own) -> list[UserError]:
    """vLLM's image tokens (with grpo.use_vllm) and every prompt's length against the model's limit."""
    recipe, args, errors = plan.recipe, plan.grpo_config, []
    if args.use_vllm and own is not None:
        found, notes = vllm_pixel_problems(recipe, own, plan.processor, args)
        plan.warnings += notes
        errors += [UserError(problem) for problem in found]
    if recipe.guards.check_prompt_length:
        found, plan.longest_prompt = length_problems(recipe, plan.train, plan.processor, args)
        if found:
            more = [f"... {len(found) - 20} more"] if len(found) > 20 else []
            errors.append(UserError("prompts too long for the model:", found[:20] + more))
    return errors


def _check_window(window) -> None:
    """data.window names a preset (or is a [width, level] pair), before any DICOM is read."""
    try:
        window_params(window)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"data.window: {exc}") from None


def _attempt(errors: list[UserError], fn, *args):
    """Run one independent step; keep its UserError so every problem of a recipe is reported in one go."""
    try:
        return fn(*args)
    except UserError as exc:
        errors.append(exc)
        return None

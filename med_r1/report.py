"""Human-readable summaries printed by the CLI."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def plan_summary(plan) -> str:
    """What `med-r1 validate` found: data per modality, rewards and weights, the effective GRPO batch."""
    recipe, kw = plan.recipe, plan.grpo_kwargs
    lines = [f"recipe OK: {recipe.model.name_or_path} ({recipe.model.finetune}), output_dir {recipe.output_dir}"]
    lines.append(
        f"train: {len(plan.train)} questions" + (f" ({plan.skipped} bad rows skipped)" if plan.skipped else "")
    )
    lines += _counts(plan.train)
    if plan.schedule is not None and (plan.schedule.custom or plan.schedule.rates is not None):
        lines += plan.schedule.lines()
    if plan.eval:
        lines.append(f"eval: {len(plan.eval)} questions")
        lines += _counts(plan.eval)
    lines.append(f"prompt: {recipe.prompt.template if len(recipe.prompt.template) < 40 else 'custom template'}")
    if plan.longest_prompt is not None:
        lines.append(f"longest prompt: {plan.longest_prompt} tokens with its images")
    lines.append("rewards: " + ", ".join(f"{s.label or s.name} x{s.weight:g}" for s in recipe.rewards))
    if recipe.warmup.enabled:
        warm = recipe.warmup
        lines.append(
            f"warm-up: {len(plan.train)} questions x {warm.option_orders} option orders, {warm.epochs:g} epochs of "
            f"supervised answers (TRL's SFTTrainer, lr {warm.learning_rate:g}) before GRPO, into output_dir/warmup/"
        )
    if plan.policy:
        lines.append(f"policy: {plan.policy}")
    if plan.share_prompt:
        lines.append(f"share_prompt: {plan.share_prompt}")
    shown = {k: v for k, v in kw.items() if k not in ("output_dir", "reward_weights")}
    lines.append("grpo: " + ", ".join(f"{k}={v}" for k, v in sorted(shown.items())))
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def _counts(questions) -> list[str]:
    by_modality = Counter(q.modality for q in questions)
    by_type = Counter(q.question_type for q in questions)
    return [
        "  modalities: " + ", ".join(f"{k} {v}" for k, v in sorted(by_modality.items())),
        "  question types: " + ", ".join(f"{k} {v}" for k, v in sorted(by_type.items())),
    ]


def training_summary(
    rows: list[dict], accuracy: str | None, counts: dict[str, int], plot: Path, model: Path
) -> list[str]:
    """How a finished run went, in a few lines: the total reward (and accuracy) of its first fifth of logged steps and
    of its last fifth, anything counted along the way, and where its plot and model are."""
    lines = []
    trend = _fifths([r.get("reward") for r in rows])
    if trend:
        lines.append(f"{len(rows)} steps logged; reward {trend} (mean of the first fifth of steps -> the last fifth)")
    acc = _fifths([r.get(f"rewards/{accuracy}/mean") for r in rows]) if accuracy else None
    if acc:
        lines.append(f"accuracy ({accuracy} reward on the training rollouts) {acc}")
    lines += [f"{n} {what}" for what, n in counts.items() if n]
    if plot.exists():
        lines.append(f"reward plot: {plot}")
    lines.append(f"model: {model}")
    return lines


def _fifths(values: list) -> str | None:
    values = [v for v in values if isinstance(v, int | float)]
    if not values:
        return None
    fifth = max(1, len(values) // 5)
    first, last = sum(values[:fifth]) / fifth, sum(values[-fifth:]) / fifth
    return f"{first:.2f} -> {last:.2f}"

"""Human-readable summaries printed by the CLI."""

from __future__ import annotations

from collections import Counter


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

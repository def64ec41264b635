"""`med-r1 train RECIPE [key=value ...]`: build TRL's GRPOTrainer from a recipe, run it, write the run folder.

    med-r1 train recipes/quickstart.yaml
    accelerate launch --config_file recipes/accelerate/zero2.yaml -m med_r1 train recipes/med-r1/think_lora.yaml

Run folder: recipe.yaml (resolved), metrics.jsonl, rewards.png, checkpoint-*/, model/ (final model or LoRA adapter,
with the processor) and, when `model.save_merged`, merged/. A folder that already holds a run is never overwritten:
pass resume=true to continue it, or another output_dir.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from med_r1.config import Recipe, dump_recipe
from med_r1.errors import Interrupted, UserError

logger = logging.getLogger(__name__)


def holds_run(out: Path) -> bool:
    """A training run was started here (evaluation results of a base model alone do not count)."""
    return any((out / name).exists() for name in ("recipe.yaml", "model", "metrics.jsonl")) or any(
        out.glob("checkpoint-*")
    )


def last_complete_checkpoint(out: Path, remove_partial: bool = True) -> str | None:
    """The newest checkpoint whose save finished; newer, half-written ones (a crash mid-save) are removed."""
    from med_r1.trainer import COMPLETE

    def step(path: Path) -> int:
        return int(path.name.split("-")[-1])

    folders = sorted((p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()), key=step)
    complete = [p for p in folders if (p / COMPLETE).exists()]
    last = complete[-1] if complete else None
    for partial in folders:
        if remove_partial and partial not in complete and (last is None or step(partial) > step(last)):
            logger.warning("removing %s: its save never finished", partial)
            shutil.rmtree(partial, ignore_errors=True)
    return str(last) if last else None


def resume_checkpoint(recipe: Recipe, is_main: bool = True) -> str | None:
    """The checkpoint to resume from, or None for a fresh run (refusing to reuse a folder that holds a run)."""
    out = Path(recipe.output_dir)
    if recipe.resume is False:
        if holds_run(out):
            raise UserError(
                f"output_dir {out} already holds an earlier run; nothing in it is overwritten. Pass "
                "resume=true to continue that run from its last checkpoint, or output_dir=<new folder> for a new run."
            )
        return None
    if recipe.resume is True:
        last = last_complete_checkpoint(out, remove_partial=is_main) if out.is_dir() else None
        if last is None:
            raise UserError(f"resume=true but {out} holds no complete checkpoint-*/ folder to resume from")
        return last
    path = Path(recipe.resume)
    if not (path / "trainer_state.json").exists():
        raise UserError(f"resume={recipe.resume}: not a checkpoint folder (no trainer_state.json)")
    from med_r1.trainer import COMPLETE

    if not (path / COMPLETE).exists():
        logger.warning("resume=%s: no %s marker; the folder may come from an interrupted save", path, COMPLETE)
    if holds_run(out) and Path(path).resolve().parent != out.resolve():
        raise UserError(f"output_dir {out} holds another run; resume a checkpoint into a new output_dir")
    return str(path)


def build_trainer(recipe: Recipe, plan, cuda: bool, callbacks: list | None = None):
    """A GRPOTrainer wired from the recipe: policy, processor, guarded rewards and weights, dataset, GRPOConfig."""
    from med_r1.callbacks import MetricsFile, RewardPlot
    from med_r1.data.rows import to_dataset
    from med_r1.model import load_model, load_processor, lora_config
    from med_r1.preflight import build_grpo_config
    from med_r1.trainer import MedR1GRPOTrainer

    out = Path(recipe.output_dir)
    args = build_grpo_config(plan.grpo_kwargs)
    processor = plan.processor or load_processor(recipe.model.name_or_path, recipe.model)
    model = load_model(recipe.model, cuda)
    train_dataset = to_dataset(plan.train, recipe.prompt, recipe.data)
    eval_dataset = (
        to_dataset(plan.eval, recipe.prompt, recipe.data) if plan.eval and args.eval_strategy != "no" else None
    )
    return MedR1GRPOTrainer(
        model=model,
        reward_funcs=plan.rewards,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=lora_config(recipe.model) if recipe.model.finetune == "lora" else None,
        callbacks=[MetricsFile(out / "metrics.jsonl"), RewardPlot(out / "metrics.jsonl", out / "rewards.png")]
        + (callbacks or []),
        max_nonfinite_steps=recipe.guards.max_nonfinite_steps,
        share_prompt=recipe.model.share_prompt,
    )


def save_final(trainer, recipe: Recipe) -> Path:
    """Save the final model (or LoRA adapter) and processor into model/, atomically; merged/ too when asked."""
    out = Path(recipe.output_dir)
    final = out / "model"
    tmp = out / "model.tmp"
    if trainer.accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover of an interrupted save
    trainer.accelerator.wait_for_everyone()  # no process deletes what another is writing
    trainer.save_model(str(tmp))
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(tmp))
        shutil.rmtree(final, ignore_errors=True)
        tmp.replace(final)
        if recipe.model.finetune == "lora" and recipe.model.save_merged:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(str(out / "merged"))
            trainer.processing_class.save_pretrained(str(out / "merged"))
    return final


def train(recipe: Recipe) -> Path:
    """Check, train, save. Under `accelerate launch`/`torchrun` every process runs this; only the main one writes."""
    from accelerate import PartialState

    from med_r1.callbacks import GracefulStop
    from med_r1.preflight import cuda_available, prepare

    cuda = cuda_available()
    state = PartialState(cpu=not cuda)  # joins the process group when launched with several processes
    checkpoint = resume_checkpoint(recipe, state.is_main_process)  # read-only: same answer on every process
    plan = prepare(recipe, cuda)
    for warning in plan.warnings:
        logger.warning(warning)
    state.wait_for_everyone()  # no process looks at output_dir after the main one starts writing to it
    out = Path(recipe.output_dir)
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        dump_recipe(recipe, out / "recipe.yaml")
    logger.info(
        "training on %d questions (%d skipped), rewards: %s",
        len(plan.train),
        plan.skipped,
        ", ".join(r.__name__ for r in plan.rewards),
    )
    stopper = GracefulStop()
    trainer = build_trainer(recipe, plan, cuda, callbacks=[stopper])
    stopper.accelerator = trainer.accelerator
    stopper.install()
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        stopper.restore()
    errors = {r.__name__: r.errors for r in plan.rewards if r.errors}
    if errors:
        logger.warning("reward errors during training (rows scored None): %s", errors)
    if stopper.stopped_at is not None:
        import signal

        name = signal.Signals(stopper.signal_number).name
        checkpoint = out / f"checkpoint-{stopper.stopped_at}"
        saved = f"checkpoint saved in {checkpoint}" if checkpoint.is_dir() else "no checkpoint could be saved"
        raise Interrupted(
            f"{name}: stopped after step {stopper.stopped_at}; {saved}. Continue with: med-r1 train RECIPE resume=true",
            stopper.signal_number,
        )
    return save_final(trainer, recipe)

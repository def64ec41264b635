"""`med-r1 train RECIPE [key=value ...]`: build TRL's GRPOTrainer from a recipe, run it, write the run folder.

    med-r1 train recipes/quickstart.yaml
    accelerate launch --config_file recipes/accelerate/zero2.yaml -m med_r1 train recipes/med-r1/think_lora.yaml

Run folder (`med_r1.run_folder`): recipe.yaml (resolved), metrics.jsonl, rewards.png, checkpoint-*/, model/ (final
model or LoRA adapter, with the processor) and, when `model.save_merged`, merged/. A folder that already holds a run
is never overwritten: pass resume=true to continue it, or another output_dir.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

from med_r1 import run_folder
from med_r1.config import Recipe
from med_r1.data.rows import to_dataset
from med_r1.errors import Interrupted
from med_r1.model import cuda_available, load_model, lora_config
from med_r1.plan import Plan, build_plan

logger = logging.getLogger(__name__)


def build_trainer(recipe: Recipe, plan: Plan, cuda: bool, callbacks: list | None = None):
    """A GRPOTrainer wired from the plan: policy (loaded here), processor, guarded rewards, datasets, GRPOConfig."""
    # Lazy: these two modules subclass transformers/trl classes at import, which costs seconds of start-up time.
    from med_r1.callbacks import MetricsFile, RewardPlot
    from med_r1.trainer import MedR1GRPOTrainer

    out = Path(recipe.output_dir)
    return MedR1GRPOTrainer(
        model=load_model(recipe.model, cuda),
        reward_funcs=plan.rewards,
        args=plan.grpo_config,
        train_dataset=to_dataset(plan.train_rows, plan.images),
        eval_dataset=to_dataset(plan.eval_rows, plan.images) if plan.eval_rows is not None else None,
        processing_class=plan.processor,
        peft_config=lora_config(recipe.model) if recipe.model.finetune == "lora" else None,
        callbacks=[MetricsFile(out / run_folder.METRICS), RewardPlot(out / run_folder.METRICS, out / "rewards.png")]
        + (callbacks or []),
        max_nonfinite_steps=recipe.guards.max_nonfinite_steps,
        share_prompt=recipe.model.share_prompt,
        schedule=plan.schedule,
        dynamic_sampling=recipe.dynamic_sampling,
    )


def train(recipe: Recipe) -> Path:
    """Plan, train, save. Under `accelerate launch`/`torchrun` every process runs this; only the main one writes."""
    from accelerate import PartialState  # lazy: accelerate imports torch

    from med_r1.callbacks import GracefulStop  # lazy: subclasses a transformers class at import

    cuda = cuda_available()
    state = PartialState(cpu=not cuda)  # joins the process group when launched with several processes
    checkpoint = run_folder.resume_checkpoint(recipe, state.is_main_process)  # read-only: same answer everywhere
    plan = build_plan(recipe, "train", cuda)
    for warning in plan.warnings:
        logger.warning(warning)
    state.wait_for_everyone()  # no process looks at output_dir after the main one starts writing to it
    if state.is_main_process:
        run_folder.start(recipe)
        if plan.schedule is not None:
            run_folder.record_schedule(Path(recipe.output_dir), plan.schedule)
    for line in plan.schedule.lines() if plan.schedule is not None else []:
        logger.info("%s", line)
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
        name = signal.Signals(stopper.signal_number).name
        checkpoint = Path(recipe.output_dir) / f"checkpoint-{stopper.stopped_at}"
        saved = f"checkpoint saved in {checkpoint}" if checkpoint.is_dir() else "no checkpoint could be saved"
        raise Interrupted(
            f"{name}: stopped after step {stopper.stopped_at}; {saved}. Continue with: med-r1 train RECIPE resume=true",
            stopper.signal_number,
        )
    return run_folder.save_final(trainer, recipe)

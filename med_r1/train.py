"""`med-r1 train RECIPE [key=value ...]`: build TRL's GRPOTrainer from a recipe, run it, write the run folder.

    med-r1 train recipes/quickstart.yaml
    accelerate launch --config_file recipes/accelerate/zero2.yaml -m med_r1 train recipes/med-r1/think_lora.yaml

Run folder (`med_r1.run_folder`): recipe.yaml (resolved), metrics.jsonl, rewards.png, checkpoint-*/, model/ (final
model or LoRA adapter, with the processor) and, when `model.save_merged`, merged/. A folder that holds a run worth
keeping (a complete checkpoint or a final model) is never overwritten: pass resume=true to continue it, or another
output_dir. A failure the user can fix once training has started (a reward that raises, an unreadable image, a full
disk) first saves a checkpoint of the steps trained, then says how to continue.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from med_r1 import run_folder, warmup
from med_r1.config import Recipe
from med_r1.data.rows import to_dataset
from med_r1.errors import Interrupted, UserError
from med_r1.io import read_jsonl
from med_r1.model import cuda_available, load_model, lora_config
from med_r1.plan import Plan, build_plan
from med_r1.report import training_summary

logger = logging.getLogger(__name__)

# Errors of the disk, not of med-r1: full, over quota, read-only, not permitted, file too large.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


@dataclass(frozen=True)
class Trained:
    model: Path
    """The final model (or LoRA adapter) folder."""
    summary: list[str]
    """What the run did, in a few lines (reward trend, accuracy, anything skipped, where the files are)."""


def build_trainer(recipe: Recipe, plan: Plan, cuda: bool, callbacks: list | None = None):
    """A GRPOTrainer wired from the plan: policy (loaded here), processor, guarded rewards, datasets, GRPOConfig."""
    # Lazy: these two modules subclass transformers/trl classes at import, which costs seconds of start-up time.
    from med_r1.callbacks import MetricsFile, RewardPlot, compact_logging
    from med_r1.trainer import MedR1GRPOTrainer  # lazy: subclasses trl's GRPOTrainer

    out = Path(recipe.output_dir)
    trainer = MedR1GRPOTrainer(
        model=load_model(recipe.model, cuda),
        reward_funcs=plan.rewards,
        args=plan.grpo_config,
        train_dataset=to_dataset(plan.train_rows, plan.train_reader),
        eval_dataset=to_dataset(plan.eval_rows, plan.eval_reader) if plan.eval_rows is not None else None,
        processing_class=plan.processor,
        peft_config=lora_config(recipe.model) if recipe.model.finetune == "lora" else None,
        callbacks=[MetricsFile(out / run_folder.METRICS), RewardPlot(out / run_folder.METRICS, out / "rewards.png")]
        + (callbacks or []),
        max_nonfinite_steps=recipe.guards.max_nonfinite_steps,
        share_prompt=recipe.model.share_prompt,
        reward_errors=recipe.reward_errors,
        schedule=plan.schedule,
        dynamic_sampling=recipe.dynamic_sampling,
    )
    if not recipe.verbose:
        compact_logging(trainer, [r.__name__ for r in plan.rewards])
    return trainer


def train(recipe: Recipe, run_args: str = "RECIPE") -> Trained:
    """Plan, train, save. Under `accelerate launch`/`torchrun` every process runs this; only the main one writes.

    `run_args` is the recipe and overrides the user started this run with; messages that say how to continue repeat
    them (`med-r1 train <run_args> resume=true`).
    """
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
    policy, warm_lines = _warm_up(recipe, plan, cuda, checkpoint) if recipe.warmup.enabled else (recipe, [])
    stopper = GracefulStop()
    trainer = build_trainer(policy, plan, cuda, callbacks=[stopper])
    stopper.accelerator = trainer.accelerator
    stopper.install()
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    except UserError as exc:  # a reward that raised or scored nothing, an unreadable image
        raise _keep_what_was_trained(trainer, recipe, run_args, str(exc)) from None
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        raise _keep_what_was_trained(
            trainer, recipe, run_args, f"cannot write to {recipe.output_dir}: {exc}"
        ) from None
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
            f"{name}: stopped after step {stopper.stopped_at}; {saved}. Continue with: med-r1 train {run_args} resume=true",
            stopper.signal_number,
        )
    try:
        final = run_folder.save_final(trainer, recipe)
    except OSError as exc:  # a full disk, a folder made read-only: the trained weights are still in memory
        reason = f"the final model could not be saved in {Path(recipe.output_dir) / run_folder.FINAL}: {exc}"
        raise _keep_what_was_trained(trainer, recipe, run_args, reason, final=True) from None
    accuracy = next((r.__name__ for r in plan.rewards if r.kind == "accuracy"), None)
    counts = {
        "steps with no reward signal (every reward None or NaN)": trainer.no_signal_steps,
        "steps skipped for a non-finite loss or gradient": trainer.nonfinite_skipped,
        "rows skipped during training: images that failed to decode": len(plan.train_reader.bad),
        **{f"reward errors in {name} (rows scored None)": n for name, n in errors.items()},
    }
    out = Path(recipe.output_dir)
    state.wait_for_everyone()  # the main process has written metrics.jsonl and the final model
    rows = [r for r in read_jsonl(out / run_folder.METRICS) if "reward" in r]
    return Trained(final, warm_lines + training_summary(rows, accuracy, counts, out / "rewards.png", final))


def leave_process_group() -> None:
    """Leave the process group torchrun/accelerate started this process in, after its last collective. Left to the
    interpreter's exit, gloo's threads can outlive it, and a complete run then ends with "terminate called without an
    active exception" (exit -6) on one rank. A no-op in a single process."""
    from accelerate import PartialState  # lazy: accelerate imports torch

    PartialState().destroy_process_group()


def _warm_up(recipe: Recipe, plan: Plan, cuda: bool, checkpoint: str | None) -> tuple[Recipe, list[str]]:
    """The supervised warm-up (`med_r1.warmup`), or the one an earlier run of the same recipe and data left; returns
    the recipe GRPO trains (its policy: the warmed-up model) and a line for the end-of-run summary."""
    from med_r1.callbacks import MetricsFile  # lazy: subclasses a transformers class at import

    out = Path(recipe.output_dir)
    folder = warmup.done(out, warmup.fingerprint(recipe, plan.train))
    if folder is None and checkpoint is not None:  # GRPO resumes: the checkpoint's weights replace the policy's
        return recipe, []
    if folder is not None:
        logger.info("warm-up: reusing %s (same recipe and data)", folder)
        line = f"warm-up: reused {folder}"
    else:
        peft = lora_config(recipe.model) if recipe.model.finetune == "lora" else None
        folder, log = warmup.run(
            recipe,
            plan.train,
            plan.processor,
            load_model(recipe.model, cuda),
            plan.grpo_kwargs,
            peft,
            callbacks=[MetricsFile(out / warmup.FOLDER / run_folder.METRICS)],
        )
        losses = [row["loss"] for row in log]
        trend = f", loss {losses[0]:.2f} -> {losses[-1]:.2f}" if losses else ""
        line = f"warm-up: {recipe.warmup.epochs:g} epochs of supervised answers{trend}; model in {folder}"
    model = dataclasses.replace(recipe.model, name_or_path=str(folder.resolve()))
    return dataclasses.replace(recipe, model=model), [line]


def _keep_what_was_trained(trainer, recipe: Recipe, run_args: str, reason: str, final: bool = False) -> UserError:
    """A failure the user can fix, once training has started: save a checkpoint of the steps trained since the last
    one (so none is lost), and say how to continue."""
    out = Path(recipe.output_dir)
    step, steps = trainer.state.global_step, trainer.state.max_steps
    trainer.save_rescue_checkpoint()
    last = run_folder.last_complete_checkpoint(out, remove_partial=False)
    if last is not None:
        done = int(Path(last).name.split("-")[-1])
        what = "saves the final model from it" if done >= steps else f"trains steps {done + 1}-{steps} again"
        then = (
            f"{last} holds the training up to step {done} of {steps}, so nothing is lost; after fixing this, "
            f"continue with: med-r1 train {run_args} resume=true (it {what})"
        )
        if final:
            then += f"; or evaluate that checkpoint as it is: med-r1 eval {run_args} eval.model={last}"
    elif step == 0:
        then = f"no step was trained yet; after fixing this, run the same command again: med-r1 train {run_args}"
    else:
        then = (
            f"no checkpoint could be saved, so the {step} steps trained are lost; after fixing this, run the same "
            f"command again: med-r1 train {run_args}"
        )
    return UserError(f"{reason}\n{then}")

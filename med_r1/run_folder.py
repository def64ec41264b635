"""The run folder (`output_dir`): what a training run writes there, and how a later command finds its way in it.

    output_dir/recipe.yaml      the resolved recipe, written first: a folder holding it (or the rest) holds a run
    output_dir/metrics.jsonl    one line per logging step; rewards.png drawn from it when training ends
    output_dir/data_schedule.json   the questions' band, order and balance (per-domain counts per epoch); with pass
                                rates, a copy of the pass-rate file used as pass_rates.jsonl
    output_dir/checkpoint-N/    Trainer's checkpoints; `med_r1_complete` inside once every file of it is on disk
    output_dir/model/           the final model or LoRA adapter, with its processor (merged/ too with save_merged)
    output_dir/eval/<name>/     evaluation results (`med-r1 eval`)

A folder that holds a run is never trained into again unless the run is resumed; a checkpoint without its marker
(a save that was interrupted) is never resumed from.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import yaml

from med_r1.config import Recipe, dump_recipe, recipe_to_dict
from med_r1.data.schedule import PASS_RATES, Schedule
from med_r1.errors import UserError
from med_r1.io import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

COMPLETE = "med_r1_complete"
"""Written into a checkpoint folder after every file of it is on disk; resume ignores folders without it."""
FINAL = "model"
RECIPE = "recipe.yaml"
METRICS = "metrics.jsonl"
SCHEDULE = "data_schedule.json"


def holds_run(out: Path) -> bool:
    """A training run was started here (evaluation results of a base model alone do not count)."""
    return any((out / name).exists() for name in (RECIPE, FINAL, METRICS)) or any(out.glob("checkpoint-*"))


def final_model(out: Path) -> Path | None:
    """The run's final model folder, once training has finished and saved it."""
    return out / FINAL if (out / FINAL).is_dir() else None


def start(recipe: Recipe) -> Path:
    """Create the run folder and write the resolved recipe into it (main process only)."""
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_recipe(recipe, out / RECIPE)
    return out


def record_schedule(out: Path, schedule: Schedule) -> None:
    """Write data_schedule.json, and copy the pass-rate file the selection read (unless it already lies here)."""
    atomic_write_json(out / SCHEDULE, schedule.summary())
    if schedule.source is not None and Path(schedule.source).resolve() != (out / PASS_RATES).resolve():
        atomic_write_bytes(out / PASS_RATES, Path(schedule.source).read_bytes())


def last_complete_checkpoint(out: Path, remove_partial: bool = True) -> str | None:
    """The newest checkpoint whose save finished; newer, half-written ones (a crash mid-save) are removed."""

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
    if not (path / COMPLETE).exists():
        logger.warning("resume=%s: no %s marker; the folder may come from an interrupted save", path, COMPLETE)
    if holds_run(out) and Path(path).resolve().parent != out.resolve():
        raise UserError(f"output_dir {out} holds another run; resume a checkpoint into a new output_dir")
    return str(path)


def mark_complete(checkpoint: Path, step: int) -> None:
    """Mark a checkpoint whose files are all written; the marker itself reaches the disk before this returns."""
    marker = checkpoint / COMPLETE
    marker.write_text(f"{step}\n")
    with open(marker) as f:
        os.fsync(f.fileno())


def save_final(trainer, recipe: Recipe) -> Path:
    """Save the final model (or LoRA adapter) and processor into model/, atomically; merged/ too when asked."""
    out = Path(recipe.output_dir)
    final = out / FINAL
    tmp = out / f"{FINAL}.tmp"
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


def recipe_changes(out: Path, recipe: Recipe) -> list[str]:
    """Recipe keys whose value differs from what the run in `out` was trained with (empty: none, or no run)."""
    saved = out / RECIPE
    if not saved.exists():
        return []
    before, now = _flat(yaml.safe_load(saved.read_text())), _flat(recipe_to_dict(recipe))
    return sorted(k for k in set(before) | set(now) if k != "resume" and before.get(k) != now.get(k))


def set_aside(out: Path) -> Path:
    """Move a run that died before its first checkpoint out of the way (moved, not deleted: nothing is lost)."""
    aside = out.with_name(f"{out.name}.incomplete-{int(time.time())}")
    shutil.move(str(out), aside)
    return aside


def _flat(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}

"""The run folder (`output_dir`): what a training run writes there, and how a later command finds its way in it.

    output_dir/recipe.yaml      the resolved recipe, written first: a folder holding it (or the rest) holds a run
    output_dir/metrics.jsonl    one line per logging step; rewards.png drawn from it when training ends
    output_dir/data_schedule.json   the questions' band, order and balance (per-domain counts per epoch); with pass
                                rates, a copy of the pass-rate file used as pass_rates.jsonl
    output_dir/checkpoint-N/    Trainer's checkpoints; `med_r1_complete` inside once every file of it is on disk
    output_dir/model/           the final model or LoRA adapter, with its processor (merged/ too with save_merged)
    output_dir/eval/<name>/     evaluation results (`med-r1 eval`)

A folder that holds a run worth keeping (a complete checkpoint or a final model) is never trained into again unless
the run is resumed; a checkpoint without its marker (a save that was interrupted) is never resumed from. A folder that
holds only what a failed run left before its first checkpoint (recipe.yaml, metrics.jsonl, half-written checkpoints)
holds nothing to resume or keep, so a new run starts there and says so: a failed run never blocks its own retry.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import zipfile
from pathlib import Path

import yaml

from med_r1.config import RESOLVED_HEADER, Recipe, dump_recipe, recipe_to_dict
from med_r1.data.schedule import PASS_RATES, Schedule
from med_r1.errors import UserError
from med_r1.io import atomic_write_bytes, atomic_write_json, safetensors_whole

logger = logging.getLogger(__name__)

COMPLETE = "med_r1_complete"
"""Written into a checkpoint folder after every file of it is on disk; resume ignores folders without it."""
FINAL = "model"
RECIPE = "recipe.yaml"
METRICS = "metrics.jsonl"
SCHEDULE = "data_schedule.json"


class FolderInUse(UserError):
    """output_dir holds a run worth keeping, and this one would start afresh there."""


def holds_run(out: Path) -> bool:
    """A run worth keeping is here: a final model or a complete checkpoint. What a run leaves before its first
    checkpoint (recipe.yaml, metrics.jsonl, half-written checkpoints) and evaluation results do not count."""
    return final_model(out) is not None or bool(complete_checkpoints(out))


def started_here(out: Path) -> bool:
    """A training run was started here at some point (its recipe, metrics or checkpoints are present)."""
    return holds_run(out) or any((out / name).exists() for name in (RECIPE, METRICS)) or any(out.glob("checkpoint-*"))


def final_model(out: Path) -> Path | None:
    """The run's final model folder, once training has finished and saved it."""
    return out / FINAL if (out / FINAL).is_dir() else None


def check_writable(out: Path) -> None:
    """output_dir is a folder, or can be made one, that this process may write to (nothing is created here)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out} is a file, not a folder: set output_dir=<a folder> (it is created)")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"output_dir {out} cannot be created: {existing} is a file; set output_dir=<another folder>")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "it" if existing == out else f"{existing}, where it would be created,"
        raise UserError(
            f"output_dir {out}: {where} is not writable (read-only); make it writable or set output_dir=<a folder "
            "you can write to>"
        )


def start(recipe: Recipe) -> Path:
    """Create the run folder and write the resolved recipe into it (main process only).

    A folder that holds only what an earlier run left before its first checkpoint is taken over, in one logged line;
    its half-written checkpoints (never resumable) are removed so they cannot be mistaken for this run's.
    """
    out = Path(recipe.output_dir)
    theirs = out / RECIPE
    if recipe.resume is False and theirs.is_file() and not holds_run(out):
        with open(theirs, encoding="utf-8", errors="replace") as f:
            written_by_us = f.readline() == RESOLVED_HEADER or (out / METRICS).exists()
        if not written_by_us:
            raise UserError(
                f"output_dir {out} holds a recipe.yaml that med-r1 did not write (your own recipe?); a run writes its "
                "resolved recipe there, so nothing was started or overwritten. Set output_dir=<another folder>, e.g. "
                "runs/my-run"
            )
    if recipe.resume is False and started_here(out):
        logger.warning(
            "output_dir %s holds an earlier run that saved no complete checkpoint and no final model: nothing to "
            "resume or keep there, so a new run starts in it",
            out,
        )
        last_complete_checkpoint(out, remove_partial=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        dump_recipe(recipe, out / RECIPE)
    except OSError as exc:
        raise UserError(
            f"cannot write the run folder {out}: {exc.strerror}; set output_dir=<a writable folder>"
        ) from None
    return out


def _step(path: Path) -> int:
    return int(path.name.split("-")[-1])


def _checkpoints(out: Path) -> list[Path]:
    """Every checkpoint-N/ folder, oldest first."""
    found = (p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit())
    return sorted(found, key=_step)


def complete_checkpoints(out: Path) -> list[Path]:
    """The checkpoints whose save finished (their marker is written last), oldest first."""
    return [p for p in _checkpoints(out) if (p / COMPLETE).exists()]


def record_schedule(out: Path, schedule: Schedule) -> None:
    """Write data_schedule.json, and copy the pass-rate file the selection read (unless it already lies here)."""
    atomic_write_json(out / SCHEDULE, schedule.summary())
    if schedule.source is not None and Path(schedule.source).resolve() != (out / PASS_RATES).resolve():
        atomic_write_bytes(out / PASS_RATES, Path(schedule.source).read_bytes())


def last_complete_checkpoint(out: Path, remove_partial: bool = True) -> str | None:
    """The newest checkpoint whose save finished; newer, half-written ones (a crash mid-save) are removed."""
    complete = complete_checkpoints(out)
    last = complete[-1] if complete else None
    for partial in _checkpoints(out):
        if remove_partial and partial not in complete and (last is None or _step(partial) > _step(last)):
            logger.warning("removing %s: its save never finished", partial)
            shutil.rmtree(partial, ignore_errors=True)
    return str(last) if last else None


def checkpoint_problems(folder: Path) -> list[str]:
    """What is missing or cut short in a checkpoint folder: file sizes and headers only, nothing is loaded."""
    problems = []
    state = folder / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except FileNotFoundError:
        problems.append("trainer_state.json is missing")
    except (OSError, ValueError):
        problems.append("trainer_state.json is not readable JSON")
    weights = [folder / "model.safetensors", folder / "adapter_model.safetensors"]
    weights = [w for w in weights + sorted(folder.glob("model-*-of-*.safetensors")) if w.exists()]
    other = ("pytorch_model.bin", "pytorch_model_fsdp_0", "model.safetensors.index.json")
    if not weights and not any((folder / name).exists() for name in other) and not any(folder.glob("global_step*")):
        problems.append("model.safetensors is missing")
    problems += [f"{w.name} is cut short" for w in weights if not safetensors_whole(w)]
    for name in ("optimizer.pt", "scheduler.pt"):  # torch.save writes zip archives; a cut one loses its directory
        if (folder / name).exists() and not zipfile.is_zipfile(folder / name):
            problems.append(f"{name} is cut short or corrupt")
    return problems


def _checked(checkpoint: Path, out: Path) -> str:
    """The checkpoint, if it is whole; else a UserError naming what is wrong and the whole ones to use instead."""
    problems = checkpoint_problems(checkpoint)
    if not problems:
        return str(checkpoint)
    others = [p for p in complete_checkpoints(out) if p.resolve() != checkpoint.resolve()] if out.is_dir() else []
    whole = [p for p in others if not checkpoint_problems(p)]
    if whole:
        advice = f"Resume from the previous complete checkpoint instead: resume={whole[-1]}"
    else:
        advice = (
            "No other complete checkpoint is left to resume from: move this one away and train again "
            "(or restore its files from a backup)"
        )
    listed = [f"{p}: {'; '.join(checkpoint_problems(p)) or 'complete'}" for p in others]
    raise UserError(
        f"checkpoint {checkpoint} is damaged ({'; '.join(problems)}). {advice}."
        + (" The other complete checkpoints:" if listed else ""),
        listed,
    )


def resume_checkpoint(recipe: Recipe, is_main: bool = True) -> str | None:
    """The checkpoint to resume from, or None for a fresh run (refusing to reuse a folder that holds a run)."""
    out = Path(recipe.output_dir)
    final = final_model(out) if out.is_dir() else None
    last = last_complete_checkpoint(out, remove_partial=False) if out.is_dir() else None
    if recipe.resume is False:
        if final is not None:
            further = ", or train it further with resume=true grpo.max_steps=<more steps>" if last else ""
            raise FolderInUse(
                f"output_dir {out} holds a finished run (its final model is in {final}); nothing in it is "
                f"overwritten. Start a new run with output_dir=<new folder>{further}."
            )
        if last is not None:
            raise FolderInUse(
                f"output_dir {out} holds an unfinished run (last complete checkpoint: {Path(last).name}); nothing in "
                "it is overwritten. Continue it with resume=true, or start a new run with output_dir=<new folder>."
            )
        return None
    if recipe.resume is True:
        last = last_complete_checkpoint(out, remove_partial=is_main) if out.is_dir() else None
        if last is None:
            done = f" (it holds a finished model in {final})" if final else ""
            raise UserError(
                f"resume=true but {out} holds no complete checkpoint-*/ folder to resume from{done}; leave out "
                "resume=true to start a new run"
                + (" in another output_dir" if final else " there (nothing in it is worth keeping)")
            )
        return _checked(Path(last), out)
    path = Path(recipe.resume)
    if not path.is_dir() or not (path.name.startswith("checkpoint-") or (path / "trainer_state.json").exists()):
        raise UserError(
            f"resume={recipe.resume}: not a checkpoint folder; use resume=true (the last complete checkpoint of "
            "output_dir), resume=false, or the path of a checkpoint-N/ folder"
        )
    if not (path / COMPLETE).exists():
        logger.warning("resume=%s: no %s marker; the folder may come from an interrupted save", path, COMPLETE)
    if holds_run(out) and Path(path).resolve().parent != out.resolve():
        raise UserError(f"output_dir {out} holds another run; resume a checkpoint into a new output_dir")
    return _checked(path, out)


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
    try:
        trainer.save_model(str(tmp))
        if trainer.accelerator.is_main_process:
            trainer.processing_class.save_pretrained(str(tmp))
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk: give back what the half-written copy took
        raise
    if trainer.accelerator.is_main_process:
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
    ignored = ("resume", "verbose")  # how the run is continued and shown, not what it trains
    return sorted(k for k in set(before) | set(now) if k not in ignored and before.get(k) != now.get(k))


def set_aside(out: Path) -> Path:
    """Move a run that died before its first checkpoint out of the way (moved, not deleted: nothing is lost)."""
    aside = out.with_name(f"{out.name}.incomplete-{int(time.time())}")
    shutil.move(str(out), aside)
    return aside


def _flat(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}

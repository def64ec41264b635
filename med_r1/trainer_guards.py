"""The trainer's guards: an optimizer step with a non-finite loss or gradient norm is skipped (all processes agree),
too many in a row stop the run; checkpoints count only once fully written (the marker), old ones are pruned after
that, resumed full-model weights load through `from_pretrained`, and a failed run saves what it trained since the
last checkpoint. A mixin of `MedR1GRPOTrainer` (`med_r1.trainer`), before TRL's `GRPOTrainer` in its bases; it
reads the attributes that class sets (`max_nonfinite_steps`, `nonfinite_skipped`, `_bad_step`, ...)."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import torch

from med_r1.errors import RunError
from med_r1.run_folder import COMPLETE, mark_complete

logger = logging.getLogger("med_r1.trainer")


class GuardHooks:
    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            self._step_has_nonfinite_loss = True
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        # Called once per optimizer step, right before it: the place to decide whether that step may run.
        grad_norm = super()._get_grad_norm(model, grad_norm)
        self._last_grad_norm = float(grad_norm) if grad_norm is not None else None
        self._bad_step = self._step_has_nonfinite_loss or (
            self._last_grad_norm is not None and not math.isfinite(self._last_grad_norm)
        )
        self._step_has_nonfinite_loss = False  # even if the optimizer step itself is skipped (fp16 scaler)
        return grad_norm

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        step = optimizer.step

        def guarded_step(*step_args, **step_kwargs):
            if self._skip_this_step():
                return None
            return step(*step_args, **step_kwargs)

        optimizer.step = guarded_step
        return optimizer

    def _skip_this_step(self) -> bool:
        bad, self._bad_step = self._bad_step, False
        if self.accelerator.num_processes > 1:  # every process must take the same decision, or weights diverge
            flag = torch.tensor(float(bad), device=self.accelerator.device)
            bad = bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
        if not bad:
            self._nonfinite_in_a_row = 0
            return False
        self.nonfinite_skipped += 1
        self._nonfinite_in_a_row += 1
        logger.warning(
            "step %d: non-finite loss or gradient norm (%s); optimizer step skipped (%d in a row, %d in all)",
            self.state.global_step + 1,
            self._last_grad_norm,
            self._nonfinite_in_a_row,
            self.nonfinite_skipped,
        )
        if self._nonfinite_in_a_row >= self.max_nonfinite_steps:
            raise RunError(
                f"{self._nonfinite_in_a_row} optimizer steps in a row had a non-finite loss or gradient norm; training "
                f"stopped at step {self.state.global_step}. Lower grpo.learning_rate, check the rewards for inf/NaN, "
                "or raise guards.max_nonfinite_steps."
            )
        return True

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Load full-model weights through `from_pretrained`, which maps checkpoint key names to module names.

        transformers 5 saves Qwen2-VL under its legacy key names (`model.layers.*`, `visual.*`) while the modules are
        `model.language_model.*` / `model.visual.*`; Trainer's own resume loads the file with `load_state_dict(...,
        strict=False)`, matches nothing but lm_head, only warns, and training silently continues from the base
        weights. Loading through `from_pretrained` applies the same key conversion as saving, and strict loading makes
        any remaining mismatch an error. PEFT, FSDP and DeepSpeed checkpoints keep Trainer's own loader.
        """
        model = model if model is not None else self.model
        folder = Path(resume_from_checkpoint)
        plain = not (self.is_fsdp_enabled or self.is_deepspeed_enabled or hasattr(model, "peft_config"))
        if not plain or not (folder / "config.json").exists():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        unwrapped = self.accelerator.unwrap_model(model)
        dtype = next(unwrapped.parameters()).dtype
        saved = type(unwrapped).from_pretrained(str(folder), dtype=dtype).state_dict()
        unwrapped.load_state_dict(saved, strict=True)
        logger.info("resumed model weights from %s", folder)

    def save_rescue_checkpoint(self) -> Path | None:
        """After a failure the user can fix: a checkpoint of the steps trained since the last one, so none is lost.

        Single process only: with several, the others may be waiting in a collective that never completes, and the
        save would wait with them. A save that fails (a full disk) is removed again, leaving the last complete one.
        """
        step = self.state.global_step
        folder = Path(self._get_output_dir(trial=None)) / f"checkpoint-{step}"
        if step == 0 or self.accelerator.num_processes > 1 or (folder / COMPLETE).exists():
            return None
        try:
            self._save_checkpoint(self.model_wrapped, trial=None)
        except Exception as exc:  # whatever stopped the run may stop the save too
            logger.warning("could not save a checkpoint of step %d: %s: %s", step, type(exc).__name__, exc)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        logger.warning("saved %s before stopping", folder)
        return folder

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import rotate_checkpoints

        # Old checkpoints are pruned only once the new one is complete: Trainer would prune before the marker is
        # written, and a crash in between could leave no complete checkpoint at all.
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()  # every rank's shards are written
        if self.args.should_save:
            run_dir = self._get_output_dir(trial=trial)
            mark_complete(Path(run_dir) / f"checkpoint-{self.state.global_step}", self.state.global_step)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )

"""`GRPOTrainer` plus the few hooks TRL lacks: phase timings and throughput in the logs, a non-finite step guard,
and checkpoints marked complete only once fully written.

Everything else (generation, vLLM, loss, distributed training) is TRL's own, untouched.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from pathlib import Path

import torch
from trl import GRPOTrainer

from med_r1.errors import RunError
from med_r1.run_folder import mark_complete

logger = logging.getLogger(__name__)


class MedR1GRPOTrainer(GRPOTrainer):
    def __init__(self, *args, max_nonfinite_steps: int = 3, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_skipped = 0
        self._nonfinite_in_a_row = 0
        self._step_has_nonfinite_loss = False
        self._bad_step = False
        self._last_grad_norm: float | None = None
        self._last_log = (time.perf_counter(), 0.0)

    # -- phase timings -------------------------------------------------------------------------------------------

    def _generate(self, prompts):
        start = time.perf_counter()
        result = super()._generate(prompts)
        self._metrics["train" if self.model.training else "eval"]["timing/generate_s"].append(
            time.perf_counter() - start
        )
        return result

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        start = time.perf_counter()
        result = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._metrics["train" if self.model.training else "eval"]["timing/rewards_s"].append(
            time.perf_counter() - start
        )
        return result

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training and "loss" in logs:
            self._add_perf_metrics(logs)
        super().log(logs, start_time)

    def _add_perf_metrics(self, logs: dict) -> None:
        metrics = self._metrics["train"]
        mean = lambda key: sum(metrics[key]) / len(metrics[key]) if metrics.get(key) else 0.0  # noqa: E731
        steps = metrics.get("step_time") or []
        if steps:
            # One optimizer step = generation + reward scoring + the policy update (forward, backward, step).
            gen_per_step = sum(metrics.get("timing/generate_s") or []) / len(steps)
            reward_per_step = sum(metrics.get("timing/rewards_s") or []) / len(steps)
            logs["timing/update_s"] = max(0.0, mean("step_time") - gen_per_step - reward_per_step)
        now, tokens = time.perf_counter(), float(self.state.num_input_tokens_seen)
        last_time, last_tokens = self._last_log
        if now > last_time and tokens > last_tokens:
            logs["perf/tokens_per_s"] = (tokens - last_tokens) / (now - last_time)
        self._last_log = (now, tokens)
        if torch.cuda.is_available():
            logs["perf/peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        logs["perf/peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
        logs["guards/nonfinite_skipped"] = float(self.nonfinite_skipped)

    # -- non-finite guard ----------------------------------------------------------------------------------------

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

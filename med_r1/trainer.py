"""`GRPOTrainer` plus the few hooks TRL lacks: shared-prompt passes (each prompt and its images computed once per
group, `med_r1.shared_prompt`), phase timings and throughput in the logs, a non-finite step guard, checkpoints
marked complete only once fully written, the recipe's question order (`med_r1.sampler`), the share of groups without
signal per modality, and dynamic sampling (`med_r1.groups`).

Everything else (generation, vLLM, loss, distributed training) is TRL's own. The private TRL 1.16 methods overridden
here, and what an upgrade risks, are listed in each method's docstring; every override calls TRL's own method for what
it does not change, so a changed signature fails loudly rather than silently.
"""

from __future__ import annotations

import logging
import math
import resource
import shutil
import time
from pathlib import Path

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer

from med_r1 import groups, shared_prompt
from med_r1.config import DynamicSamplingConfig
from med_r1.data.schedule import Schedule
from med_r1.errors import RunError
from med_r1.rewards.guard import RewardError
from med_r1.run_folder import COMPLETE, mark_complete
from med_r1.sampler import ScheduledSampler

logger = logging.getLogger(__name__)


class MedR1GRPOTrainer(GRPOTrainer):
    def __init__(
        self,
        *args,
        max_nonfinite_steps: int = 3,
        share_prompt: bool = True,
        reward_errors: str = "raise",
        schedule: Schedule | None = None,
        dynamic_sampling: DynamicSamplingConfig | None = None,
        **kwargs,
    ):
        self.schedule = schedule
        """The recipe's order of training questions (None or not custom: TRL's shuffle)."""
        self.dynamic_sampling = dynamic_sampling or DynamicSamplingConfig()
        self._unmergeable: str | None = None
        super().__init__(*args, **kwargs)
        self.reward_errors = reward_errors
        """The recipe's `reward_errors`: a step whose rewards are all None/NaN stops the run ('raise') or is counted."""
        self.no_signal_steps = 0
        self.share_prompt_fallback = self._share_prompt_fallback(share_prompt)
        """Why the shared-prompt passes are off (None when they are on); logged once."""
        if share_prompt and self.share_prompt_fallback:
            logger.warning("model.share_prompt: using TRL's unshared passes, because %s", self.share_prompt_fallback)
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_skipped = 0
        self._nonfinite_in_a_row = 0
        self._step_has_nonfinite_loss = False
        self._bad_step = False
        self._last_grad_norm: float | None = None
        self._last_log = (time.perf_counter(), 0.0)

    # -- shared-prompt passes ------------------------------------------------------------------------------------

    def _share_prompt_fallback(self, share_prompt: bool) -> str | None:
        if not share_prompt:
            return "model.share_prompt is false"
        if self.tools or self.environment_factories is not None:
            return "tool calls put images and tool output into completions, which are not shared"
        if self.rollout_func is not None:
            return "a custom rollout_func builds its own prompts"
        return shared_prompt.unsupported_reason(self._base(self.model).config)

    def _base(self, model):
        """The PreTrainedModel inside accelerate's and PEFT's wrappers (adapters stay injected in its layers)."""
        model = self.accelerator.unwrap_model(model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        pixel_values=None,
        image_grid_thw=None,
        num_images=None,
        mm_token_type_ids=None,
        **others,
    ):
        """TRL's log-prob pass (old policy, reference, and the policy with gradients all come through here), with the
        rows of each chunk that share a prompt packed into one sequence per group (`med_r1.shared_prompt`).

        Overrides TRL 1.16's private `GRPOTrainer._get_per_token_logps_and_entropies`; same arguments, same return
        (per-token log-probs and entropies of shape (rows, logits_to_keep), zero where the completion is padding;
        aux loss None). Chunks without a shared prompt, models or settings the packed path does not cover (MoE aux
        loss, processors with other image fields) and malformed rows go to TRL's method unchanged. Upgrade risk: TRL
        renaming the method or its arguments (the call then bypasses or breaks here), or changing how it lays out
        rows (left-padded prompt ++ right-padded completion) — `well_formed` guards the layout.
        """

        rows = shared_prompt.Rows(
            input_ids, attention_mask, logits_to_keep, pixel_values, image_grid_thw, num_images, mm_token_type_ids
        )

        def trl(chunk: shared_prompt.Rows, chunk_size=None):
            return super(MedR1GRPOTrainer, self)._get_per_token_logps_and_entropies(
                model,
                logits_to_keep=logits_to_keep,
                batch_size=chunk_size,
                compute_entropy=compute_entropy,
                compute_aux_loss=compute_aux_loss,
                **chunk.as_kwargs(),
                **others,
            )

        if self.share_prompt_fallback or compute_aux_loss or any(v is not None for v in others.values()):
            return trl(rows, batch_size)
        base = self._base(model)
        if shared_prompt.unsupported_reason(base.config) or not shared_prompt.well_formed(rows):
            return trl(rows, batch_size)  # e.g. a reference model loaded differently, or rows TRL did not build
        backbone = getattr(base, base.base_model_prefix)
        positions = shared_prompt.row_positions(backbone, rows)
        step = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), step):
            chunk = rows.select(start, min(start + step, input_ids.size(0)))
            chunk_logps, chunk_entropies = self._shared_chunk(model, base, chunk, positions[:, start : start + step])
            if chunk_logps is None:
                chunk_logps, chunk_entropies, _ = trl(chunk)
            logps.append(chunk_logps)
            entropies.append(chunk_entropies)
        return torch.cat(logps), (torch.cat(entropies) if compute_entropy else None), None

    def _shared_chunk(self, model, base, rows, positions):
        """(log-probs, entropies) of one chunk through the packed path, or (None, None) when it would not pay."""
        groups = shared_prompt.find_groups(rows)
        if len(groups) == rows.input_ids.size(0):
            return None, None  # no prompt twice in this chunk
        packed = shared_prompt.pack(rows, groups, positions, self._tokenizer.pad_token_id)
        if not shared_prompt.worth_packing(rows, groups, packed.input_ids.size(1), base.config.get_text_config()):
            return None, None
        attention = base.config.get_text_config()._attn_implementation
        mask = shared_prompt.tree_mask(packed.segments, attention, base.dtype)
        with self.accelerator.autocast():
            outputs = model(
                input_ids=packed.input_ids,
                attention_mask=mask,
                position_ids=packed.position_ids,
                pixel_values=packed.pixel_values,
                image_grid_thw=packed.image_grid_thw,
                mm_token_type_ids=packed.mm_token_type_ids,
                shift_labels=packed.shift_labels,
                fused_lm_head=True,
            )
        shape = (rows.input_ids.size(0), rows.logits_to_keep)

        def scatter(values):
            if values is None:
                return None
            return values.new_zeros(shape).index_put(packed.target, values[packed.source])

        return scatter(outputs.log_probs), scatter(outputs.entropy)

    def _prepare_inputs(self, generation_batch):
        """TRL's buffering of a generation batch into micro-batches, with each optimizer step's rows reordered so the
        rows of a prompt share micro-batches (`shared_prompt.regroup`); TRL's row-level shuffle would scatter them.

        Wraps TRL 1.16's `GRPOTrainer._prepare_inputs`: after TRL refills `_buffered_inputs` (a list of
        `steps_per_generation` micro-batches), the list is regrouped and the current micro-batch re-read. Only when
        the accumulated gradient cannot depend on the split: `loss_type` normalised per sequence or per generation
        batch (not bnpo), no entropy bonus and no per-micro-batch entropy quantile. Upgrade risk: TRL renaming
        `_buffered_inputs` or changing its indexing; the wrapper then regroups nothing.
        """
        buffered = getattr(self, "_buffered_inputs", None)
        inputs = super()._prepare_inputs(generation_batch)
        fresh = getattr(self, "_buffered_inputs", None)
        window = self.args.gradient_accumulation_steps
        if (
            self.model.training
            and fresh is not buffered
            and isinstance(fresh, list)
            and len(fresh) > 1
            and window > 1
            and self._regroup_allowed()
        ):
            self._buffered_inputs = shared_prompt.regroup(fresh, min(window, len(fresh)))
            inputs = self._buffered_inputs[self._step % self.args.steps_per_generation]
        return inputs

    def _regroup_allowed(self) -> bool:
        return (
            self.share_prompt_fallback is None
            and self.loss_type != "bnpo"
            and self.top_entropy_quantile >= 1.0
            and not getattr(self, "_entropy_bonus_enabled", False)
            and self.args.steps_per_generation % self.args.gradient_accumulation_steps == 0
        )

    def _generate_and_score_completions(self, inputs):
        """TRL's step up to the advantages, with the image processor run once per distinct image
        (`shared_prompt.dedupe_images`); TRL processes every image of all B*G rows, twice.

        Wraps TRL 1.16's private `GRPOTrainer._generate_and_score_completions` without changing it. Upgrade risk: none
        beyond the method's name; the wrapper only swaps `processing_class.image_processor` for the call's duration.
        With `dynamic_sampling.enabled`, further rounds replace the groups without signal (`_refill_groups`).
        """
        output = self._generate_and_score_round(inputs)
        if self.dynamic_sampling.enabled and self.model.training:
            output = self._refill_groups(inputs, output)
        return output

    def _generate_and_score_round(self, inputs):
        if self.share_prompt_fallback:
            return super()._generate_and_score_completions(inputs)
        with shared_prompt.dedupe_images(self.processing_class):
            return super()._generate_and_score_completions(inputs)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """TRL's generation, where on the transformers-generate path the rollouts of a prompt start from one prefill
        (`shared_prompt.shared_prefill_generate`). vLLM (its own prefix cache) and continuous batching are untouched.

        Wraps TRL 1.16's private `GRPOTrainer._generate_single_turn`. Upgrade risk: TRL calling something other than
        `unwrapped_model.generate(input_ids=..., attention_mask=..., <multimodal fields>, generation_config=...)`, in
        which case the patched `generate` passes the call through unchanged.
        """
        if self.share_prompt_fallback or self.use_vllm or self.use_transformers_continuous_batching:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        base = self._base(self.model)
        with shared_prompt.shared_prefill_generate(base, getattr(base, base.base_model_prefix)):
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )

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
        self._log_zero_signal(inputs, result)
        if self.model.training and torch.isnan(result).all():  # gathered: every process takes the same decision
            self._no_signal(result.size(0))
        return result

    def _no_signal(self, completions: int) -> None:
        """Every reward scored None (or NaN) for every completion of the step: all advantages are zero."""
        self.no_signal_steps += 1
        step = self.state.global_step + 1
        if self.reward_errors == "raise":
            raise RewardError(
                f"step {step}: every reward scored None or NaN for all {completions} completions, so the step has no "
                "training signal. Score a completion by hand to see why (med-r1 rewards check NAME --completion ... "
                "--solution ...), or set reward_errors=none to count such steps and keep training."
            )
        logger.warning(
            "step %d: every reward scored None or NaN for all %d completions: no training signal (%d such steps)",
            step,
            completions,
            self.no_signal_steps,
        )

    # -- groups without signal -----------------------------------------------------------------------------------

    def _log_zero_signal(self, inputs, rewards_per_func) -> None:
        """`frac_reward_zero_std/<modality>`: per modality, the share of groups whose rewards are all equal.

        `rewards_per_func` is TRL's, gathered over every process (B*G rows, G per group in a row), so the modality of
        each group comes gathered too."""
        mode = "train" if self.model.training else "eval"
        size = self.num_generations if mode == "train" else self.num_generations_eval
        if size < 2 or rewards_per_func.size(0) % size:
            return
        flags = groups.zero_signal(rewards_per_func, self.reward_weights, size).tolist()
        modalities = gather_object([str(row.get("modality") or "unknown") for row in inputs])
        for modality, share in groups.share_by_domain(flags, modalities[::size]).items():
            self._metrics[mode][f"frac_reward_zero_std/{modality}"].append(share)

    def _refill_groups(self, inputs, output):
        """Dynamic sampling (DAPO): groups of this batch whose advantages are all zero are replaced by groups of
        further generation rounds, on questions drawn from the training set (deterministic in the seed, the step, the
        round and the process), until none is left or `dynamic_sampling.max_rounds` rounds have run; groups still
        without signal then stay. Every process runs the same number of rounds (generation and reward gathering are
        collective); each replaces only its own groups (the plan requires whole groups per process).

        Calls TRL's own `_generate_and_score_completions` once per round and merges the rounds' outputs
        (`groups.merge_rounds`), so TRL's step is not copied. Upgrade risk: TRL adding an output key whose layout
        `merge_rounds` does not know; dynamic sampling then logs why and keeps the first round as it is.
        """
        size = self.num_generations
        wanted = len(inputs) // size
        kept = [
            (0, g) for g, empty in enumerate(groups.no_advantage(output["advantages"], size).tolist()) if not empty
        ]
        rounds = [output]
        while len(rounds) < self.dynamic_sampling.max_rounds and self._any_process(len(kept) < wanted):
            rounds.append(self._generate_and_score_round(self._fresh_rows(wanted, len(rounds))))
            flags = groups.no_advantage(rounds[-1]["advantages"], size).tolist()
            kept += [(len(rounds) - 1, g) for g, empty in enumerate(flags) if not empty]
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/rounds"].append(float(len(rounds)))
        metrics["dynamic_sampling/zero_signal_kept"].append(max(0, wanted - len(kept)) / wanted)
        if len(rounds) == 1:
            return output
        chosen = kept[:wanted]
        empty_first = [(0, g) for g in range(wanted) if (0, g) not in kept]
        chosen += empty_first[: wanted - len(chosen)]
        picks = [(r, g * size + j) for r, g in chosen for j in range(size)]
        merged = groups.merge_rounds(rounds, picks, self._tokenizer.pad_token_id)
        if merged is None:
            if self._unmergeable is None:
                self._unmergeable = ", ".join(sorted(output))
                logger.warning("dynamic_sampling: TRL's batch holds keys not merged here (%s); off", self._unmergeable)
            return output
        mask = merged["completion_mask"] * merged.get("tool_mask", 1)
        merged["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
        return merged

    def _any_process(self, flag: bool) -> bool:
        if self.accelerator.num_processes == 1:
            return flag
        total = self.accelerator.reduce(torch.tensor(float(flag), device=self.accelerator.device), reduction="sum")
        return bool(total.item() > 0)

    def _fresh_rows(self, questions: int, round_number: int) -> list[dict]:
        """`questions` training rows, each `num_generations` times in a row, as TRL's sampler lays them out."""
        seed = hash((self.args.seed, self.state.global_step, round_number, self.accelerator.process_index))
        generator = torch.Generator().manual_seed(seed & 0x7FFFFFFF)
        indices = torch.randint(len(self.train_dataset), (questions,), generator=generator).tolist()
        batch = self.train_dataset[indices]
        rows = [{key: values[i] for key, values in batch.items()} for i in range(questions)]
        return [dict(row) for row in rows for _ in range(self.num_generations)]

    # -- question order ------------------------------------------------------------------------------------------

    def _get_train_sampler(self, dataset=None):
        """TRL's sampler, or, when the recipe orders or balances its questions, TRL's layout over the schedule's order
        (`med_r1.sampler.ScheduledSampler`): TRL's own sampler shuffles, so an order would not survive it.

        Overrides TRL 1.16's `GRPOTrainer._get_train_sampler` (transformers' `Trainer._get_train_sampler` hook) and
        reads the `mini_repeat_count`, `batch_size` and `repeat_count` of the sampler TRL builds. Upgrade risk: TRL
        renaming those attributes (an AttributeError at the start of training) or laying batches out another way.
        """
        sampler = super()._get_train_sampler(dataset)
        if self.schedule is None or not self.schedule.custom:
            return sampler
        return ScheduledSampler(sampler, self.schedule)

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
        logs["guards/no_signal_steps"] = float(self.no_signal_steps)

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

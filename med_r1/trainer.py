"""`GRPOTrainer` plus the few hooks TRL lacks: shared-prompt passes (each prompt and its images computed once per
group, `med_r1.shared_prompt`), vLLM's setup on either build (`med_r1.vllm_engine`), phase timings and throughput in
the logs; with two mixins, `trainer_sampling.SignalHooks` (steps and groups without signal, dynamic sampling, the
recipe's question order) and `trainer_guards.GuardHooks` (the non-finite step guard, complete checkpoints).

Everything else (generation, vLLM, loss, distributed training) is TRL's own. The private TRL 1.16 methods overridden
here and in the mixins, and what an upgrade risks, are listed in each method's docstring; every override calls TRL's
own method for what it does not change, so a changed signature fails loudly rather than silently.
"""

from __future__ import annotations

import logging
import resource
import time

import torch
from trl import GRPOTrainer

from med_r1 import segment_attention, shared_inputs, shared_prompt, vllm_engine
from med_r1.config import DynamicSamplingConfig
from med_r1.data.schedule import Schedule
from med_r1.trainer_guards import GuardHooks
from med_r1.trainer_sampling import SignalHooks

logger = logging.getLogger(__name__)


class MedR1GRPOTrainer(SignalHooks, GuardHooks, GRPOTrainer):
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
        with vllm_engine.trainer_setup(kwargs["args"], kwargs["model"], kwargs.get("processing_class")):
            super().__init__(*args, **kwargs)
        vllm_engine.install_sync(self)
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
        text_config = base.config.get_text_config()
        if not shared_prompt.worth_packing(rows, packed, text_config):
            return None, None
        segment_attention.install(text_config._attn_implementation or "eager")
        layout = packed.layout(text_config)
        with self.accelerator.autocast():
            outputs = model(
                input_ids=packed.input_ids,
                attention_mask=layout.placeholder_mask(),
                position_ids=packed.position_ids,
                pixel_values=packed.pixel_values,
                image_grid_thw=packed.image_grid_thw,
                mm_token_type_ids=packed.mm_token_type_ids,
                shift_labels=packed.shift_labels,
                fused_lm_head=True,
                **{segment_attention.KEYWORD: layout},
            )
        if layout.calls < text_config.num_hidden_layers:
            raise RuntimeError(
                f"the segment attention served {layout.calls} of {text_config.num_hidden_layers} text layers: this "
                "transformers version does not pass forward keywords to the attention function; set "
                "model.share_prompt=false"
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
        (`shared_inputs.dedupe_images`); TRL processes every image of all B*G rows, twice.

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
        with shared_inputs.dedupe_images(self.processing_class):
            return super()._generate_and_score_completions(inputs)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """TRL's generation, where on the transformers-generate path the rollouts of a prompt start from one prefill
        (`shared_inputs.shared_prefill_generate`). vLLM (its own prefix cache) and continuous batching are untouched.

        Wraps TRL 1.16's private `GRPOTrainer._generate_single_turn`. Upgrade risk: TRL calling something other than
        `unwrapped_model.generate(input_ids=..., attention_mask=..., <multimodal fields>, generation_config=...)`, in
        which case the patched `generate` passes the call through unchanged.
        """
        if self.share_prompt_fallback or self.use_vllm or self.use_transformers_continuous_batching:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        base = self._base(self.model)
        with shared_inputs.shared_prefill_generate(base, getattr(base, base.base_model_prefix)):
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

"""The trainer's hooks for the learning signal and the questions drawn: steps whose rewards are all None, the share of
groups without signal per modality, dynamic sampling's further rounds, and the recipe's question order. A mixin of
`MedR1GRPOTrainer` (`med_r1.trainer`), before TRL's `GRPOTrainer` in its bases, so `super()` is TRL's method; it reads
the attributes that class sets (`dynamic_sampling`, `schedule`, `reward_errors`, `no_signal_steps`)."""

from __future__ import annotations

import logging

import torch
from accelerate.utils import gather_object

from med_r1 import groups
from med_r1.rewards.guard import RewardError
from med_r1.sampler import ScheduledSampler

logger = logging.getLogger("med_r1.trainer")


class SignalHooks:
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

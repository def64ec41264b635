"""The training sampler when a recipe orders or balances its questions (`med_r1.data.schedule`).

TRL's `RepeatSampler` does two things: it shuffles the questions, and it lays each batch out the way GRPO needs (every
question `num_generations` times in a row, each generation batch repeated for `steps_per_generation x num_iterations`
steps). `ScheduledSampler` keeps the second and replaces the first: it runs a `RepeatSampler` of TRL's own settings,
unshuffled, over positions 0..epoch_size-1 and maps each position through the schedule's order for the epoch.
"""

from __future__ import annotations

from trl.trainer.utils import RepeatSampler

from med_r1.data.schedule import Schedule


class ScheduledSampler:
    """Yields question indices epoch by epoch in the schedule's order, repeated as TRL's sampler repeats them.

    Transformers' Trainer calls `set_epoch` before each epoch (also when resuming), so the order depends only on the
    seed and the epoch number; without it, each new iteration is the next epoch.
    """

    def __init__(self, trl_sampler: RepeatSampler, schedule: Schedule):
        self.schedule = schedule
        self.layout = RepeatSampler(
            range(schedule.epoch_size),
            mini_repeat_count=trl_sampler.mini_repeat_count,
            batch_size=trl_sampler.batch_size,
            repeat_count=trl_sampler.repeat_count,
            shuffle=False,
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = self.schedule.epoch(self.epoch)
        self.epoch += 1
        return (order[position] for position in self.layout)

    def __len__(self) -> int:
        return len(self.layout)

"""Trainer callbacks: metrics.jsonl (one line per logging step), the reward plot, one compact line per logging step on
the terminal, and the SIGINT/SIGTERM stop."""

from __future__ import annotations

import json
import logging
import math
import signal
from pathlib import Path

from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from med_r1.io import append_jsonl, atomic_write_text, read_jsonl

logger = logging.getLogger(__name__)


class MetricsFile(TrainerCallback):
    """Appends `{"step": N, **metrics}` to metrics.jsonl at each logging step, on the main process only.

    On resume, lines logged after the checkpoint being resumed are dropped first, so the file never holds a step twice.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists():
            return
        rows = [r for r in read_jsonl(self.path, repair=True) if r.get("step", 0) <= state.global_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            row = {"step": state.global_step, **{k: _plain(v) for k, v in logs.items()}}
            append_jsonl(self.path, row)


class RewardPlot(TrainerCallback):
    """Draws rewards.png (total reward and each reward's mean per step) when training ends."""

    def __init__(self, metrics_path: str | Path, out_path: str | Path):
        self.metrics_path, self.out_path = Path(metrics_path), Path(out_path)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_rewards(self.metrics_path, self.out_path)


def plot_rewards(metrics_path: Path, out_path: Path) -> bool:
    import matplotlib  # lazy: matplotlib takes a second to import; only the end of training draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_jsonl(metrics_path) if "reward" in r]
    if not rows:
        return False
    keys = ["reward"] + sorted(k for k in rows[0] if k.startswith("rewards/") and k.endswith("/mean"))
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
        if points:
            ax.plot(
                *zip(*points, strict=True),
                label=key.removeprefix("rewards/").removesuffix("/mean"),
                lw=2 if key == "reward" else 1,
            )
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_path)
    return True


def compact_logging(trainer, rewards: list[str]) -> None:
    """Replace Trainer's dictionary of every metric at each logging step (six lines of ~40 metrics, which bury the
    progress bar) with one line (`CompactLog`); the progress bar stays. metrics.jsonl still gets every metric."""
    trainer.remove_callback(PrinterCallback)  # what Trainer prints with disable_tqdm
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(QuietProgress)
    trainer.add_callback(CompactLog(rewards))


class QuietProgress(ProgressCallback):
    """Trainer's progress bar, without the metric dictionaries it writes above itself."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


class CompactLog(TrainerCallback):
    """One line per logging step: step, total reward and each reward's mean, KL, seconds per step (and the same for
    periodic evaluation), written above the progress bar."""

    def __init__(self, rewards: list[str]):
        self.rewards = rewards

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        line = compact_line(logs, state.global_step, state.max_steps, self.rewards)
        if line is None:
            return
        if args.disable_tqdm:
            print(line, flush=True)
        else:
            tqdm.write(line)  # above the bar, which is redrawn below it


def compact_line(logs: dict, step: int, max_steps: int, rewards: list[str]) -> str | None:
    """`step 12/200 | reward 0.531 | format_partial 0.4 format 0 accuracy 0.125 | kl 0.0012 | 1.9 s/step`; None for
    a log without a reward (the end-of-training totals)."""
    prefix = "eval_" if "eval_reward" in logs else ""
    if f"{prefix}reward" not in logs:
        return None
    parts = [f"{'eval at ' if prefix else ''}step {step}/{max_steps}", f"reward {_short(logs[f'{prefix}reward'])}"]
    means = [(name, logs.get(f"{prefix}rewards/{name}/mean")) for name in rewards]
    parts.append(" ".join(f"{name} {_short(value)}" for name, value in means if value is not None))
    if f"{prefix}kl" in logs:
        parts.append(f"kl {_short(logs[f'{prefix}kl'])}")
    if logs.get("step_time") is not None:
        parts.append(f"{logs['step_time']:.1f} s/step")
    return " | ".join(p for p in parts if p)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else str(value)


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, int | float | str | bool | type(None)) else str(value)


class GracefulStop(TrainerCallback):
    """SIGINT/SIGTERM: finish the current step, save a checkpoint, stop. A second signal stops at once.

    With several processes the decision is all-reduced every step, so all of them stop after the same step even when
    only one received the signal.
    """

    def __init__(self):
        self.signal_number: int | None = None
        self.stopped_at: int | None = None
        self.accelerator = None
        self._previous: dict = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        if self.signal_number is not None:
            self.restore()
            raise KeyboardInterrupt
        self.signal_number = signum
        logger.warning(
            "%s received: saving a checkpoint after this step, then stopping (send it again to stop at once)",
            signal.Signals(signum).name,
        )

    def on_step_end(self, args, state, control, **kwargs):
        stop = self.signal_number is not None
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            import torch

            flag = torch.tensor(float(stop), device=self.accelerator.device)
            stop = bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
        if stop:
            self.signal_number = self.signal_number or 15
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control

"""med-r1's GRPO step time against bare `trl.GRPOTrainer` on the identical tiny configuration, in one run.

    python bench/overhead.py [--steps 30] [--rounds 3]

Both trainers get the same tiny Qwen2-VL, the same bundled questions and prompts, the same rewards (format +
accuracy) and the same GRPOConfig; the bare one reads images through a `datasets.Image` column, as a plain TRL
script would. Rounds alternate (med-r1, bare, med-r1, ...) so machine noise hits both; the first steps of each run
(cold caches) are dropped. Prints the median step time of each and the ratio (target: <= 1.05).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MED_R1_LOG_LEVEL", "ERROR")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WARMUP = 5


class StepTimer:
    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                timer.times.append(time.perf_counter() - timer.start)

        self.times: list[float] = []
        self.callback = Callback()


def recipe_for(model: Path, out: Path, steps: int):
    from med_r1.config import parse_recipe

    return parse_recipe(
        {
            "model": {"name_or_path": str(model), "finetune": "full"},
            "data": {"train": {"path": "bundled", "limit": 64}, "image_size": 112},
            "output_dir": str(out),
            "rewards": [{"name": "format"}, {"name": "accuracy"}],
            "grpo": {
                "max_steps": steps,
                "per_device_train_batch_size": 8,
                "num_generations": 4,
                "max_completion_length": 32,
                "learning_rate": 1e-3,
                "logging_steps": 1,
                "save_strategy": "no",
                "report_to": "none",
                "seed": 0,
                "disable_tqdm": True,
                "gradient_checkpointing": False,
            },
        }
    )


def run_med_r1(model: Path, out: Path, steps: int) -> list[float]:
    from med_r1.plan import build_plan
    from med_r1.train import build_trainer

    recipe = recipe_for(model, out, steps)
    timer = StepTimer()
    trainer = build_trainer(recipe, build_plan(recipe, cuda=False), cuda=False, callbacks=[timer.callback])
    trainer.train()
    return timer.times[WARMUP:]


def run_bare_trl(model: Path, out: Path, steps: int) -> list[float]:
    import datasets
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOTrainer

    from med_r1.data import sources
    from med_r1.data.rows import build_prompt
    from med_r1.plan import build_grpo_config, grpo_kwargs
    from med_r1.rewards.accuracy import accuracy_reward
    from med_r1.rewards.format import format_reward

    recipe = recipe_for(model, out, steps)
    questions = sources.select(recipe.data.train, recipe.data.split).questions
    dataset = datasets.Dataset.from_dict(
        {
            "prompt": [build_prompt(q, recipe.prompt) for q in questions],
            "image": [q.images[0] for q in questions],
            "solution": [q.answer for q in questions],
            "options": [list(q.options) for q in questions],
        }
    ).cast_column("image", datasets.Image())

    def resize(batch):  # the same 112x112 images med-r1 feeds (data.image_size)
        batch["image"] = [image.convert("RGB").resize((112, 112)) for image in batch["image"]]
        return batch

    dataset = dataset.with_transform(resize)
    timer = StepTimer()
    trainer = GRPOTrainer(
        model=AutoModelForImageTextToText.from_pretrained(model),
        reward_funcs=[format_reward, accuracy_reward],
        args=build_grpo_config(grpo_kwargs(recipe, cuda=False)[0]),
        train_dataset=dataset,
        processing_class=AutoProcessor.from_pretrained(model, padding_side="left"),
        callbacks=[timer.callback],
    )
    trainer.train()
    return timer.times[WARMUP:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from med_r1.tiny import build_tiny_qwen2vl

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_qwen2vl(Path(tmp) / "tiny")
        times = {"med-r1": [], "bare TRL": []}
        for round_ in range(args.rounds):
            times["med-r1"] += run_med_r1(model, Path(tmp) / f"medr1-{round_}", args.steps)
            times["bare TRL"] += run_bare_trl(model, Path(tmp) / f"bare-{round_}", args.steps)
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name, values in times.items():
            print(
                f"{name:>9}: median step {1000 * medians[name]:.1f} ms over {len(values)} steps "
                f"(p10 {1000 * statistics.quantiles(values, n=10)[0]:.1f}, p90 {1000 * statistics.quantiles(values, n=10)[-1]:.1f})"
            )
        print(f"ratio med-r1 / bare TRL: {medians['med-r1'] / medians['bare TRL']:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()

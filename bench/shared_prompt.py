"""Shared-prompt passes against TRL's unshared ones, side by side, at Qwen2-VL-2B's real widths on the CPU.

    python bench/shared_prompt.py [--rounds 3] [--steps 3] [--generations 4 8] [--lengths 64 256 512]
                                  [--text-layers 1] [--vision-layers 1]

A random Qwen2-VL with Qwen2-VL-2B's widths (text 1536 wide, 8960 MLP, 12 heads / 2 KV heads; vision 1280 wide, 16
heads, patch 14, merge 2) and only as many layers as a CPU step needs. The vocabulary is scaled with the text depth
(151,936 x layers / 28) so the LM head keeps the share of the text compute it has in the real 28-layer model; at one
layer the real vocabulary would make the head most of the step, all the more on a CPU, where TRL's fused head scores
every position, prompt included (`--vocab 151936` for the real one). 384x384 images, 2 prompts
per step, G rollouts of exactly `--lengths` tokens each (64 by default), Med-R1's beta 0.04 (so the reference pass runs), full fine-tuning
through med-r1's own trainer with `model.share_prompt` on and off. Every run is its own process (so its peak RSS is
its own), and rounds alternate on/off so machine noise hits both. Prints per G and completion length: median whole-step
time, median update phase (reference and policy log-prob passes plus backward), peak RSS, and the ratios unshared /
shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MED_R1_LOG_LEVEL", "ERROR")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from random_qwen2vl import build  # noqa: E402  (bench/ is on sys.path when this script runs)

PROMPTS = 2


def worker(model: Path, share: bool, generations: int, length: int, steps: int, out: Path) -> dict:
    """One training run; returns per-step timings (the first step is a warm-up and dropped) and the peak RSS."""
    from transformers import TrainerCallback

    from med_r1.config import parse_recipe
    from med_r1.plan import build_plan
    from med_r1.train import build_trainer

    recipe = parse_recipe(
        {
            "model": {"name_or_path": str(model), "finetune": "full", "share_prompt": share},
            "data": {"train": {"path": "bundled"}, "image_size": 384},
            "output_dir": str(out),
            "rewards": [{"name": "format"}, {"name": "accuracy"}],
            "guards": {"check_prompt_length": False},
            "grpo": {
                "max_steps": steps + 1,
                "per_device_train_batch_size": PROMPTS * generations,
                "num_generations": generations,
                "max_completion_length": length,
                "generation_kwargs": {"min_new_tokens": length},
                "learning_rate": 1e-6,
                "beta": 0.04,
                "loss_type": "grpo",
                "gradient_checkpointing": False,
                "logging_steps": 1,
                "save_strategy": "no",
                "report_to": "none",
                "disable_tqdm": True,
                "seed": 0,
            },
        }
    )
    trainer = build_trainer(recipe, build_plan(recipe, cuda=False), cuda=False)
    assert (trainer.share_prompt_fallback is None) == share, trainer.share_prompt_fallback
    # The update phase: the whole step minus generation and scoring, plus the log-prob passes run inside scoring.
    clock = dict.fromkeys(("logps", "score", "logps_in_score", "step", "cpu"), 0.0)
    logps, score = trainer._get_per_token_logps_and_entropies, trainer._generate_and_score_completions

    def timed_logps(*args, **kwargs):
        start = time.perf_counter()
        try:
            return logps(*args, **kwargs)
        finally:
            clock["logps"] += time.perf_counter() - start

    def timed_score(inputs):
        start, before = time.perf_counter(), clock["logps"]
        try:
            return score(inputs)
        finally:
            clock["score"] += time.perf_counter() - start
            clock["logps_in_score"] += clock["logps"] - before

    trainer._get_per_token_logps_and_entropies = timed_logps
    trainer._generate_and_score_completions = timed_score
    rows = []

    class Steps(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            clock.update(logps=0.0, score=0.0, logps_in_score=0.0, step=time.perf_counter(), cpu=time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            step = time.perf_counter() - clock["step"]
            rows.append(
                {
                    "step_s": step,
                    "update_s": step - clock["score"] + clock["logps_in_score"],
                    "step_cpu_s": time.process_time() - clock["cpu"],
                }
            )

    trainer.add_callback(Steps())
    trainer.train()
    return {"steps": rows[1:], "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def run_worker(model: Path, share: bool, generations: int, length: int, steps: int, tmp: Path) -> dict:
    out = tmp / f"run-{share}-{generations}-{length}-{time.monotonic_ns()}"
    command = [
        sys.executable,
        __file__,
        "--worker",
        str(model),
        "--share",
        "on" if share else "off",
        "--generations",
        str(generations),
        "--lengths",
        str(length),
        "--steps",
        str(steps),
        "--out",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(results: dict) -> None:
    """Medians (min-max) per (G, completion length) and the ratios. Wall times on a shared machine swing with its load; the process CPU
    time of a step (both cores) is the steadier figure, so both are printed."""
    print(
        f"\n{'G':<3}{'tokens':<8}{'passes':<10}"
        + "".join(f"{h:<24}" for h in ("step s", "update s", "step CPU s", "peak RSS GB"))
    )
    for (generations, length), by_share in results.items():
        medians = {}
        for share in (False, True):
            runs = by_share[share]
            columns = [[s[key] for r in runs for s in r["steps"]] for key in ("step_s", "update_s", "step_cpu_s")]
            columns.append([r["peak_rss_gb"] for r in runs])
            medians[share] = [statistics.median(c) for c in columns]
            name = "shared" if share else "unshared"
            print(f"{generations:<3}{length:<8}{name:<10}" + "".join(f"{_span(c):<24}" for c in columns))
        off, on = medians[False], medians[True]
        print(
            f"ratio unshared/shared at G={generations}, {length} tokens: whole step {off[0] / on[0]:.2f}x, update phase "
            f"{off[1] / on[1]:.2f}x, step CPU time {off[2] / on[2]:.2f}x; peak RSS {on[3] / off[3]:.2f} of unshared\n"
        )


def _read_log(path: Path) -> dict:
    """The results of a --log file, by G and sharing; a G with runs of only one kind is left out."""
    results: dict = {}
    for line in path.read_text().splitlines():
        if line.strip():
            run = json.loads(line)
            key = (run["generations"], run.get("length", 64))
            results.setdefault(key, {False: [], True: []})[run["share"]].append(run)
    return {g: runs for g, runs in sorted(results.items()) if runs[False] and runs[True]}


def _span(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (after one warm-up step)")
    parser.add_argument("--generations", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64], help="completion lengths (tokens)")
    parser.add_argument("--text-layers", type=int, default=1)
    parser.add_argument("--vision-layers", type=int, default=1)
    parser.add_argument("--vocab", type=int, help="vocabulary size (default: 151,936 x text layers / 28)")
    parser.add_argument("--model", help="where to build (or find) the random model; default: a temporary folder")
    parser.add_argument(
        "--log",
        help="append every run's figures to this JSON-lines file as it ends (an interrupted benchmark keeps them)",
    )
    parser.add_argument("--summarise", metavar="LOG", help="print the table from a --log file and exit (runs nothing)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--share", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(
            json.dumps(
                worker(
                    Path(args.worker),
                    args.share == "on",
                    args.generations[0],
                    args.lengths[0],
                    args.steps,
                    Path(args.out),
                )
            )
        )
        return
    if args.summarise:
        summarise(_read_log(Path(args.summarise)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build(
            Path(args.model or tmp / "model"),
            text_layers=args.text_layers,
            vision_layers=args.vision_layers,
            device="cpu",
            dtype="float32",
            vocab_size=args.vocab or round(151936 * args.text_layers / 28),
        )
        cases = [(g, n) for g in args.generations for n in args.lengths]
        results = {case: {False: [], True: []} for case in cases}
        for round_ in range(args.rounds):
            for generations, length in cases:
                order = (True, False) if round_ % 2 == 0 else (False, True)
                for share in order:
                    result = run_worker(model, share, generations, length, args.steps, tmp)
                    results[generations, length][share].append(result)
                    if args.log:
                        with open(args.log, "a") as log:
                            record = {"generations": generations, "length": length, "share": share, **result}
                            log.write(json.dumps(record) + "\n")
                    median = statistics.median(s["step_s"] for s in result["steps"])
                    name = "shared" if share else "unshared"
                    print(
                        f"round {round_ + 1} G={generations} {length} tokens {name}: {median:.2f} s/step", flush=True
                    )
        summarise(results)


if __name__ == "__main__":
    main()

"""GPU throughput with Qwen2-VL-2B's real dimensions and random weights (no download): generation tokens/s and GRPO
step time at a few batch sizes, with the shared-prompt passes off and on. Speed does not depend on weight values when every completion runs to the same
length (min_new_tokens = max_new_tokens), so a random model measures what the real one would.

    python bench/gpu_qwen2vl_2b.py [--out bench-results] [--skip-grpo] [--vllm]
    python bench/gpu_qwen2vl_2b.py --shared-only [--attn flash_attention_2] [--new-tokens 512] [--settings 16x8]

Budget: under 10 minutes on one H200; `--shared-only` (GRPO steps with shared prompts off and on, bf16, 3 steps each)
under 5. Writes results.json into --out and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MED_R1_LOG_LEVEL", "WARNING")

from random_qwen2vl import build  # noqa: E402  (bench/ is on sys.path when this script runs)


def generation(folder: Path, batch_sizes: list[int], new_tokens: int) -> list[dict]:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from med_r1.prompts import render_prompt

    processor = AutoProcessor.from_pretrained(folder, padding_side="left")
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="sdpa")
    model = model.to("cuda").eval()
    text = render_prompt("medr1_eval_think", "Which imaging modality is shown?", ["CT", "MRI", "X-Ray", "Ultrasound"])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    results = []
    for batch in batch_sizes:
        inputs = processor(
            text=[prompt] * batch,
            images=[Image.new("RGB", (384, 384), "gray")] * batch,
            padding=True,
            return_tensors="pt",
        ).to("cuda")
        kwargs = dict(
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=True,
            top_k=0,
            suppress_tokens=[model.config.image_token_id],
        )
        with torch.inference_mode():
            model.generate(**inputs, **{**kwargs, "max_new_tokens": 8, "min_new_tokens": 8})  # warm-up
            torch.cuda.synchronize()
            start = time.perf_counter()
            model.generate(**inputs, **kwargs)
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        row = {
            "batch": batch,
            "prompt_tokens": int(inputs["input_ids"].shape[1]),
            "seconds": round(seconds, 3),
            "generated_tokens_per_s": round(batch * new_tokens / seconds, 1),
        }
        print("generate", row)
        results.append(row)
    del model
    torch.cuda.empty_cache()
    return results


def grpo(
    folder: Path, out: Path, settings: list[tuple[int, int]], steps: int, new_tokens: int, attn: str = "sdpa"
) -> list[dict]:
    """GRPO steps with `model.share_prompt` off and on, side by side, for each (completions per device, G)."""
    import torch

    from med_r1.config import parse_recipe
    from med_r1.plan import build_plan
    from med_r1.train import build_trainer

    results = []
    for batch, generations in settings:
        for share in (False, True):
            run = out / f"grpo-b{batch}-g{generations}-{'shared' if share else 'unshared'}"
            recipe = parse_recipe(
                {
                    "model": {
                        "name_or_path": str(folder),
                        "finetune": "full",
                        "dtype": "bfloat16",
                        "attn_implementation": attn,
                        "share_prompt": share,
                    },
                    "data": {"train": {"path": "bundled"}, "image_size": 384},
                    "output_dir": str(run),
                    "rewards": [{"name": "format"}, {"name": "accuracy"}],
                    "guards": {"check_prompt_length": False},
                    "grpo": {
                        "max_steps": steps,
                        "per_device_train_batch_size": batch,
                        "num_generations": generations,
                        "max_completion_length": new_tokens,
                        "generation_kwargs": {"min_new_tokens": new_tokens},
                        "learning_rate": 1e-6,
                        "beta": 0.04,
                        "loss_type": "grpo",
                        "bf16": True,
                        "gradient_checkpointing": True,
                        "logging_steps": 1,
                        "save_strategy": "no",
                        "report_to": "none",
                        "disable_tqdm": True,
                        "seed": 0,
                    },
                }
            )
            torch.cuda.reset_peak_memory_stats()
            trainer = build_trainer(recipe, build_plan(recipe, cuda=True), cuda=True)
            trainer.train()
            rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
            timed = rows[1:] or rows  # the first step warms up CUDA kernels
            row = {
                "share_prompt": share,
                "per_device_completions": batch,
                "num_generations": generations,
                "attn_implementation": attn,
                "new_tokens": new_tokens,
                "step_s": round(statistics.median(r["step_time"] for r in timed), 3),
                "generate_s": round(statistics.median(r["timing/generate_s"] for r in timed), 3),
                "update_s": round(statistics.median(r["timing/update_s"] for r in timed), 3),
                "tokens_per_s": round(statistics.median(r["perf/tokens_per_s"] for r in timed), 1),
                "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1),
            }
            print("grpo", row)
            results.append(row)
            del trainer
            torch.cuda.empty_cache()
        off, on = results[-2], results[-1]
        print(
            f"grpo b{batch} G={generations}: shared/unshared step {off['step_s'] / on['step_s']:.2f}x faster, "
            f"update {off['update_s'] / on['update_s']:.2f}x, peak memory {on['peak_gpu_gb']} vs {off['peak_gpu_gb']} GB"
        )
    return results


def vllm_generation(folder: Path, batch: int, new_tokens: int) -> dict:
    from PIL import Image
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams

    from med_r1.prompts import render_prompt

    processor = AutoProcessor.from_pretrained(folder)
    text = render_prompt("medr1_eval_think", "Which imaging modality is shown?", ["CT", "MRI", "X-Ray", "Ultrasound"])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    llm = LLM(model=str(folder), dtype="bfloat16", gpu_memory_utilization=0.8, limit_mm_per_prompt={"image": 1})
    params = SamplingParams(max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True, temperature=1.0)
    requests = [{"prompt": prompt, "multi_modal_data": {"image": Image.new("RGB", (384, 384), "gray")}}] * batch
    llm.generate(requests[:8], params, use_tqdm=False)
    start = time.perf_counter()
    llm.generate(requests, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    row = {
        "batch": batch,
        "seconds": round(seconds, 3),
        "generated_tokens_per_s": round(batch * new_tokens / seconds, 1),
    }
    print("vllm", row)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench-results")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--skip-grpo", action="store_true")
    parser.add_argument("--vllm", action="store_true")
    parser.add_argument("--shared-only", action="store_true", help="only GRPO steps, shared prompts off and on")
    parser.add_argument("--attn", default="sdpa", help="attention implementation of the GRPO runs")
    parser.add_argument("--settings", nargs="+", default=None, help="COMPLETIONSxG per GRPO run (default 16x4 64x8)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = build(Path(os.environ.get("MED_R1_BENCH_MODEL", "/tmp/qwen2vl-2b-random")))
    settings = [tuple(int(x) for x in s.split("x")) for s in args.settings] if args.settings else [(16, 4), (64, 8)]
    results = {}
    if not args.shared_only:
        results["generate"] = generation(folder, [1, 16, 64, 256], args.new_tokens)
    if not args.skip_grpo:
        steps = 3 if args.shared_only else 4
        results["grpo"] = grpo(folder, out, settings, steps=steps, new_tokens=args.new_tokens, attn=args.attn)
    if args.vllm:
        results["vllm"] = vllm_generation(folder, 256, args.new_tokens)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Evaluation throughput: batched generation against one question at a time, same questions, same model.

    python bench/eval_throughput.py [--questions 48] [--batch-size 16] [--max-new-tokens 128]

Uses the tiny Qwen2-VL and the bundled questions with med-r1's own generation backend (left padding, questions
sorted by length), greedy as in Med-R1's protocol. Prints questions/s for both and the ratio (target on CPU: >= 5x).
On a GPU with vLLM installed, `--vllm` adds the vLLM backend (expected >= 10x over batched generation).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--model", help="a model folder (default: the tiny Qwen2-VL, built here)")
    parser.add_argument("--vllm", action="store_true")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForImageTextToText

    from med_r1.config import EvalConfig, parse_recipe
    from med_r1.data import sources
    from med_r1.data.rows import ImageLoader, build_prompt
    from med_r1.eval.generate import HFBackend, VLLMBackend
    from med_r1.eval.run import _conversation
    from med_r1.model import load_processor
    from med_r1.tiny import build_tiny_qwen2vl

    with tempfile.TemporaryDirectory() as tmp:
        model_path = args.model or str(build_tiny_qwen2vl(Path(tmp) / "tiny"))
        recipe = parse_recipe(
            {
                "model": {"name_or_path": model_path},
                "data": {"train": {"path": "bundled", "limit": args.questions}, "image_size": 224},
                "output_dir": tmp,
                "prompt": {"template": "medr1_eval_think"},
            }
        )
        questions = sources.select(recipe.data.train, recipe.data.split).questions
        loader = ImageLoader(image_size=recipe.data.image_size)
        conversations = [
            _conversation(build_prompt(q, recipe.prompt), loader.load(list(q.images), q.question_id))
            for q in questions
        ]
        order = sorted(range(len(conversations)), key=lambda i: -len(str(conversations[i][-1]["content"][-1])))
        conversations = [conversations[i] for i in order]
        cuda = torch.cuda.is_available()
        processor = load_processor(model_path, recipe.model)
        model = AutoModelForImageTextToText.from_pretrained(
            model_path, dtype=torch.bfloat16 if cuda else torch.float32
        )
        model = model.to("cuda" if cuda else "cpu").eval()
        config = EvalConfig(max_new_tokens=args.max_new_tokens)
        backend = HFBackend(model, processor, config)
        backend.generate(conversations[:2])  # warm-up

        def rate(fn, size: int) -> float:
            start = time.perf_counter()
            for i in range(0, len(conversations), size):
                fn(conversations[i : i + size])
            return len(conversations) / (time.perf_counter() - start)

        single = rate(backend.generate, 1)
        batched = rate(backend.generate, args.batch_size)
        print(
            f"questions: {len(conversations)}, max_new_tokens {args.max_new_tokens}, device {'cuda' if cuda else 'cpu'}"
        )
        print(f"one at a time:        {single:8.2f} questions/s")
        print(f"batched ({args.batch_size:>3}):         {batched:8.2f} questions/s  ({batched / single:.1f}x)")
        if args.vllm:
            vllm = VLLMBackend(model_path, processor, replace(config), max_images=1)
            fast = rate(vllm.generate, len(conversations))
            print(f"vLLM:                 {fast:8.2f} questions/s  ({fast / batched:.1f}x over batched)")


if __name__ == "__main__":
    main()

"""GPU throughput with Qwen2-VL-2B's real dimensions and random weights (no download): generation tokens/s and GRPO
step time at a few batch sizes. Speed does not depend on weight values when every completion runs to the same
length (min_new_tokens = max_new_tokens), so a random model measures what the real one would.

    python bench/gpu_qwen2vl_2b.py [--out bench-results] [--skip-grpo] [--vllm]

Budget: under 10 minutes on one H200. Writes results.json into --out and prints a table.
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

TEXT = dict(
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    vocab_size=151936,
    rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
)
VISION = dict(
    depth=32,
    embed_dim=1280,
    hidden_size=1536,
    mlp_ratio=4,
    num_heads=16,
    in_chans=3,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
)


def build(folder: Path) -> Path:
    """Tokenizer with the real vocabulary size, real processor, random 2B model in bf16; saved to `folder`."""
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    from med_r1.tiny import CHAT_TEMPLATE, QWEN2VL_SPECIAL_TOKENS, REASONING_TAGS

    if (folder / "config.json").exists():
        return folder
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for i in range(TEXT["vocab_size"] - len(alphabet) - len(QWEN2VL_SPECIAL_TOKENS) - len(REASONING_TAGS)):
        vocab[f"<filler{i}>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(QWEN2VL_SPECIAL_TOKENS)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TAGS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2VL_SPECIAL_TOKENS}
    config = Qwen2VLConfig(
        text_config={
            **TEXT,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config=VISION,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2VLForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=3136, max_pixels=401408),
        video_processor=Qwen2VLVideoProcessor(),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    print(f"built {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B-parameter random Qwen2-VL in {folder}")
    del model
    torch.cuda.empty_cache()
    return folder


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


def grpo(folder: Path, out: Path, settings: list[tuple[int, int]], steps: int, new_tokens: int) -> list[dict]:
    import torch

    from med_r1.config import parse_recipe
    from med_r1.plan import build_plan
    from med_r1.train import build_trainer

    results = []
    for batch, generations in settings:
        run = out / f"grpo-b{batch}-g{generations}"
        recipe = parse_recipe(
            {
                "model": {
                    "name_or_path": str(folder),
                    "finetune": "full",
                    "dtype": "bfloat16",
                    "attn_implementation": "sdpa",
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
                    "beta": 0.0,
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
            "per_device_completions": batch,
            "num_generations": generations,
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
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = build(Path(os.environ.get("MED_R1_BENCH_MODEL", "/tmp/qwen2vl-2b-random")))
    results = {"generate": generation(folder, [1, 16, 64, 256], args.new_tokens)}
    if not args.skip_grpo:
        results["grpo"] = grpo(folder, out, [(16, 4), (64, 8)], steps=4, new_tokens=args.new_tokens)
    if args.vllm:
        results["vllm"] = vllm_generation(folder, 256, args.new_tokens)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

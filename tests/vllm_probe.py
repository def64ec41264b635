"""What the vLLM tests run in a process of their own (a vLLM engine lives as long as its process).

    python tests/vllm_probe.py colocate RECIPE OUT.json   # train with a colocated engine, then compare it with the model
    python tests/vllm_probe.py server URL MODEL OUT.json  # compare a server's log-probs with a model folder's

Both write the largest difference between the engine's log-probs of sampled tokens and the ones the transformers
model gives the same tokens, so a test can tell which weights the engine holds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROMPTS = [
    "What modality is this image? A) CT B) MRI",
    "Is there an abnormality? A) yes B) no",
    "Which organ? A) liver",
]


def images():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((56, 56 + 28 * i, 3)) * 255).astype("uint8")) for i in range(len(PROMPTS))]


def conversations():
    return [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]}] for p in PROMPTS]


def placeholders(processor) -> list[int]:
    """The image and video placeholder tokens, which the engines are asked never to sample (logit bias -100)."""
    return [processor.image_token_id, processor.video_token_id]


def hf_logprobs(model, processor, text: str, image, token_ids: list[int]) -> list[float]:
    """Log-probs the transformers model gives `token_ids` after the prompt (`text` with its image), with the same
    -100 logit bias on the placeholders as the engine (vLLM reports log-probs after the bias)."""
    import torch

    enc = processor(text=[text], images=[image], return_tensors="pt")
    ids = torch.cat([enc["input_ids"], torch.tensor([token_ids])], dim=1)
    types = torch.cat([enc["mm_token_type_ids"], torch.zeros(1, len(token_ids), dtype=torch.long)], dim=1)
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=enc["pixel_values"],
            image_grid_thw=enc["image_grid_thw"],
            mm_token_type_ids=types,
        ).logits[0]
    start = enc["input_ids"].size(1)
    logits = logits[start - 1 : -1].float()
    logits[:, placeholders(processor)] -= 100.0
    logps = torch.log_softmax(logits, dim=-1)
    return logps.gather(1, torch.tensor(token_ids)[:, None])[:, 0].tolist()


def gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def colocate(recipe_path: str, out: str) -> None:
    """Train, push the final weights into the colocated engine, sample from it: its log-probs must be the trained
    model's, not the starting model's."""
    from transformers import AutoModelForImageTextToText
    from vllm import SamplingParams

    from med_r1.config import load_recipe
    from med_r1.model import cuda_available, resolve_model_path
    from med_r1.plan import build_plan
    from med_r1.train import build_trainer

    recipe = load_recipe(recipe_path)
    plan = build_plan(recipe, "train", cuda=False)
    trainer = build_trainer(recipe, plan, cuda_available())
    trainer.train()
    trainer.vllm_generation.sync_weights()  # the weights after the last step (TRL syncs before each generation)
    llm, processor = trainer.vllm_generation.llm, trainer.processing_class
    texts = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations()]
    bias = {token: -100.0 for token in placeholders(processor)}
    params = SamplingParams(temperature=1.0, max_tokens=12, logprobs=0, seed=0, logit_bias=bias)
    pictures = images()
    requests = [{"prompt": t, "multi_modal_data": {"image": [im]}} for t, im in zip(texts, pictures, strict=True)]
    outputs = llm.generate(requests, params, use_tqdm=False)
    trained = trainer.accelerator.unwrap_model(trainer.model).eval()
    start = AutoModelForImageTextToText.from_pretrained(resolve_model_path(recipe.model.name_or_path)).eval()
    result = {"trained": 0.0, "start": 0.0, "share_prompt_fallback": trainer.share_prompt_fallback}
    for text, image, output in zip(texts, pictures, outputs, strict=True):
        sample = output.outputs[0]
        engine = [next(iter(step.values())).logprob for step in sample.logprobs]
        ids = list(sample.token_ids)
        result["trained"] = max(result["trained"], gap(engine, hf_logprobs(trained, processor, text, image, ids)))
        result["start"] = max(result["start"], gap(engine, hf_logprobs(start, processor, text, image, ids)))
    Path(out).write_text(json.dumps(result))


def server(url: str, model_path: str, out: str) -> None:
    """Sample from a running `vllm serve` (OpenAI completions, with log-probs) and compare with `model_path`."""
    import base64
    import io

    import requests
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_path)
    model = AutoModelForImageTextToText.from_pretrained(model_path).eval()
    worst = 0.0
    for conversation, image in zip(conversations(), images(), strict=True):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        url_image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        text = conversation[0]["content"][1]["text"]
        reply = requests.post(
            f"{url}/v1/chat/completions",
            json={
                "model": requests.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"],
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": url_image}},
                            {"type": "text", "text": text},
                        ],
                    }
                ],
                "max_tokens": 12,
                "temperature": 1.0,
                "logit_bias": {str(token): -100 for token in placeholders(processor)},
                "seed": 0,
                "logprobs": True,
                "top_logprobs": 0,
                "return_tokens_as_token_ids": True,
            },
            timeout=120,
        )
        reply.raise_for_status()
        steps = reply.json()["choices"][0]["logprobs"]["content"]
        ids = [int(step["token"].removeprefix("token_id:")) for step in steps]
        engine = [step["logprob"] for step in steps]
        prompt = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        worst = max(worst, gap(engine, hf_logprobs(model, processor, prompt, image, ids)))
    Path(out).write_text(json.dumps({"gap": worst}))


if __name__ == "__main__":
    if sys.argv[1] == "colocate":
        colocate(*sys.argv[2:])
    else:
        server(*sys.argv[2:])

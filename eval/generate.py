"""Generation backends for evaluation: batched transformers `generate` (any machine) and vLLM (CUDA GPU).

torch and vllm are imported inside the backends (heavy; only a running evaluation needs them).

Both render prompts exactly as training does (TRL's `prepare_multimodal_messages` + the processor's chat template) and
see images through the processor the evaluation configured (its pixel bounds are `eval.min_pixels/max_pixels`, by
default training's; vLLM is given the same bounds). Outputs are decoded as Med-R1's evaluation scripts decode them
(special tokens skipped, tokenization spaces left as generated), since its scorer compares raw outputs.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Protocol

from med_r1.config import EvalConfig
from med_r1.errors import UserError
from med_r1.model import cuda_available, pixel_bounds

logger = logging.getLogger(__name__)


class Backend(Protocol):
    def generate(self, conversations: list[list[dict]]) -> list[list[str]]:
        """One list of `num_samples` completions per conversation (images inside the messages)."""
        ...


def vllm_usable() -> bool:
    return cuda_available() and importlib.util.find_spec("vllm") is not None


def pick_backend(name: str) -> str:
    if name == "auto":
        return "vllm" if vllm_usable() else "hf"
    if name == "vllm" and not vllm_usable():
        raise UserError(
            "eval.backend=vllm needs vLLM and a CUDA GPU (pip install 'med-r1[vllm]'); use eval.backend=hf"
        )
    return name


def message_images(conversation: list[dict]) -> list:
    """The images of a conversation's messages, in order."""
    return [
        part["image"]
        for message in conversation
        if isinstance(message["content"], list)
        for part in message["content"]
        if part.get("type") == "image"
    ]


def encode(processor, conversations: list[list[dict]]):
    """The model inputs of a batch of conversations (left-padded), images taken from the messages."""
    # Render, then process: the same two steps apply_chat_template(tokenize=True) takes inside TRL, spelled out
    # so no processor keyword goes through the chat-template call (its signature differs across transformers).
    texts = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
    images = [image for c in conversations for image in message_images(c)]
    return processor(text=texts, images=images or None, padding=True, return_tensors="pt")


class HFBackend:
    """Batched `model.generate` with left padding; greedy unless `do_sample`."""

    def __init__(self, model, processor, config: EvalConfig):
        import torch

        self.model, self.processor, self.config = model, processor, config
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        self.kwargs = {"max_new_tokens": config.max_new_tokens, "do_sample": config.do_sample}
        if config.do_sample:
            self.kwargs |= {
                "temperature": config.temperature,
                "top_p": config.top_p,
                "top_k": 0,
                "num_return_sequences": config.num_samples,
            }
        else:  # plain greedy: no sampling knobs from the model's own generation_config leak in
            self.kwargs |= {"temperature": None, "top_p": None, "top_k": None}
        image_token = getattr(model.config, "image_token_id", None)
        if image_token is not None:
            self.kwargs["suppress_tokens"] = [image_token]  # a sampled image token would break the next forward

    def generate(self, conversations: list[list[dict]]) -> list[list[str]]:
        import torch

        inputs = encode(self.processor, conversations).to(self.device)
        if self.config.do_sample:
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=self.generator)))
        with torch.inference_mode():
            out = self.model.generate(**inputs, **self.kwargs)
        new = out[:, inputs["input_ids"].shape[1] :]
        texts = self.processor.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        n = self.config.num_samples if self.config.do_sample else 1
        return [texts[i * n : (i + 1) * n] for i in range(len(conversations))]


class VLLMBackend:
    """vLLM offline inference; the processor's pixel bounds are passed as mm_processor_kwargs."""

    def __init__(self, model_path: str, processor, config: EvalConfig, max_images: int, dtype: str = "bfloat16"):
        from vllm import LLM, SamplingParams

        self.processor = processor
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            seed=config.seed,
            gpu_memory_utilization=config.vllm_gpu_memory_utilization,
            limit_mm_per_prompt={"image": max(1, max_images), "video": 0},
            mm_processor_kwargs=pixel_bounds(processor),  # the evaluation's bounds, as the HF path uses
        )
        self.params = SamplingParams(
            n=config.num_samples if config.do_sample else 1,
            temperature=config.temperature if config.do_sample else 0.0,
            top_p=config.top_p if config.do_sample else 1.0,
            max_tokens=config.max_new_tokens,
            seed=config.seed,
        )

    def generate(self, conversations: list[list[dict]]) -> list[list[str]]:
        requests = []
        for conversation in conversations:
            images = message_images(conversation)
            text = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
            requests.append({"prompt": text, "multi_modal_data": {"image": images}} if images else {"prompt": text})
        outputs = self.llm.generate(requests, self.params, use_tqdm=False)
        return [[o.text for o in out.outputs] for out in outputs]

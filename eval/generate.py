"""Generation backends for evaluation: batched transformers `generate` (any machine) and vLLM (a CUDA GPU, or vLLM's
CPU build).

torch and vllm are imported inside the backends (heavy; only a running evaluation needs them).

Both render prompts exactly as training does (TRL's `prepare_multimodal_messages` + the processor's chat template) and
see images through the processor the evaluation configured (its pixel bounds are `eval.min_pixels/max_pixels`, by
default training's; vLLM is given the same bounds). Outputs are decoded as Med-R1's evaluation scripts decode them
(special tokens skipped, tokenization spaces left as generated), since its scorer compares raw outputs.
"""

from __future__ import annotations

import logging
from typing import Protocol

from med_r1 import vllm_engine
from med_r1.config import EvalConfig
from med_r1.errors import UserError
from med_r1.model import cuda_available, model_config, pixel_bounds

logger = logging.getLogger(__name__)


class Backend(Protocol):
    def generate(self, conversations: list[list[dict]]) -> list[list[str]]:
        """One list of `num_samples` completions per conversation (images inside the messages)."""
        ...


def pick_backend(name: str, model_path: str | None = None) -> str:
    """The backend `eval.backend` asks for on this machine: `auto` is vLLM where it runs (its GPU build with a CUDA GPU,
    or its CPU build with a model whose head size the CPU kernels take), else batched transformers."""
    reason = vllm_engine.unusable_reason(cuda_available())
    if reason is None and model_path is not None and vllm_engine.on_cpu():
        config = model_config(model_path)
        reason = config is not None and vllm_engine.head_size_problem(config, "eval.backend=vllm") or None
    if name == "auto":
        if reason and vllm_engine.installed_build():
            logger.info("eval.backend=auto: transformers, because %s", reason)
        return "hf" if reason else "vllm"
    if name == "vllm" and reason:
        raise UserError(f"eval.backend=vllm: {reason}; or use eval.backend=hf")
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
    """vLLM offline inference; the processor's pixel bounds are passed as mm_processor_kwargs.

    `dtype` is the one the transformers path would load (the recipe's `model.dtype`: bfloat16 on a GPU, float32 on a
    CPU by default), so both backends decode the same model. The image and video placeholders are never sampled (the
    transformers path suppresses them too). On vLLM's CPU build its settings come from `vllm_engine.cpu_environment`.
    """

    def __init__(self, model_path: str, processor, config: EvalConfig, max_images: int, dtype: str = "bfloat16"):
        from vllm import LLM, SamplingParams

        self.processor = processor
        if vllm_engine.on_cpu():
            model = model_config(model_path)
            length = getattr(model.get_text_config(), "max_position_embeddings", 4096) if model else 4096
            bytes_per_value = 4 if dtype == "float32" else 2
            vllm_engine.cpu_environment(vllm_engine.kv_cache_gib(model, length, 8, bytes_per_value) if model else 1)
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            seed=config.seed,
            gpu_memory_utilization=config.vllm_gpu_memory_utilization,
            limit_mm_per_prompt={"image": max(1, max_images), "video": 0},
            mm_processor_kwargs=pixel_bounds(processor),  # the evaluation's bounds, as the HF path uses
        )
        placeholders = [getattr(processor, name, None) for name in ("image_token_id", "video_token_id")]
        self.params = SamplingParams(
            n=config.num_samples if config.do_sample else 1,
            temperature=config.temperature if config.do_sample else 0.0,
            top_p=config.top_p if config.do_sample else 1.0,
            max_tokens=config.max_new_tokens,
            seed=config.seed,
            logit_bias={token: -100.0 for token in placeholders if isinstance(token, int)} or None,
        )

    def generate(self, conversations: list[list[dict]]) -> list[list[str]]:
        requests = []
        for conversation in conversations:
            images = message_images(conversation)
            text = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
            requests.append({"prompt": text, "multi_modal_data": {"image": images}} if images else {"prompt": text})
        outputs = self.llm.generate(requests, self.params, use_tqdm=False)
        # Decoded as the transformers backend decodes (vLLM's own text holds back a trailing partial UTF-8 sequence,
        # which the processor renders), so both backends give the scorer the same strings for the same tokens.
        return [
            self.processor.batch_decode(
                [list(o.token_ids) for o in out.outputs], skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            for out in outputs
        ]

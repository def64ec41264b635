"""A tiny random Qwen2-VL, built offline and deterministically: the test double and the quickstart's policy.

    med-r1 tiny-model runs/tiny-qwen2vl --seed 0 [--arch qwen2.5-vl | qwen3-vl]

Everything is made in code: a byte-level BPE tokenizer of 1,200 tokens trained in memory with Qwen2-VL's special tokens
and chat template (`<think>`, `</think>`, `<answer>`, `</answer>` and the option letters are single tokens), the real
`Qwen2VLProcessor` (image + video processors), and a 308k-parameter `Qwen2VLForConditionalGeneration` (1.3 MB on disk).
The tokenizer learns its words from a few fixed lines, Med-R1's prompt templates and `tiny_corpus.txt` (the
quickstart's training questions, written by tools/build_tiny_corpus.py), so a prompt is ~140 tokens rather than ~230
and most option texts one to three tokens. Nothing touches the network, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from med_r1.prompts import TEMPLATES

BUILD = 2
"""Bumped whenever the builder makes different files for a seed (2: the 1,200-token vocabulary), so a cached copy
of an older build is never taken for the current one."""
BUILTIN_NAME = "builtin:tiny-qwen2vl"
"""Recipes may name the tiny model this way; it is built on first use into the med-r1 cache (same bytes every time)."""
BUILTIN_JUDGE = "builtin:tiny-judge"
"""The tiny text-only causal LM, as a local judge (`judge` reward, backend: local) for tests and the CPU demo."""

QWEN2VL_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Not special: TRL decodes completions with skip_special_tokens=True, and the rewards must still see these tags.
REASONING_TAGS = ["<think>", "</think>", "<answer>", "</answer>"]

# Qwen2-VL-Instruct's chat template (image and video branches, default system prompt).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "What imaging modality is used to acquire this image? A)CT, B)MRI, C)X-Ray, D)Ultrasound",
    "Which organ is shown? Is there any abnormality? What is the diagnosis? Yes No",
    "Your task: 1. Think through the question step by step, enclose your reasoning process in tags.",
    "2. Then provide the correct single-letter choice (A, B, C, D,...) inside tags.",
    "3. No extra information or text outside of these tags. The answer is",
    "<think> The image shows the chest. </think><answer> A </answer>",
    "dermoscopy fundus photography optical coherence tomography microscopy retina lesion grading brain liver",
    "computed tomography magnetic resonance imaging ultrasound x-ray anatomy identification disease diagnosis",
    "0 1 2 3 4 5 6 7 8 9 . , ; : ! ? ( ) [ ] - + = / \\ ' \" & % #",
]


VOCAB_SIZE = 1200
CORPUS_FILE = Path(__file__).with_name("tiny_corpus.txt")


def corpus() -> list[str]:
    """The lines the tokenizer is trained on: fixed lines, Med-R1's templates, the quickstart's training questions."""
    lines = CORPUS_FILE.read_text(encoding="utf-8").splitlines()
    return _CORPUS + list(TEMPLATES.values()) + [line for line in lines if line and not line.startswith("#")]


def build_tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=QWEN2VL_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TAGS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


ARCHS = ("qwen2-vl", "qwen2.5-vl", "qwen3-vl")
SIZES = {"tiny": {"hidden": 64, "layers": 2}, "small": {"hidden": 128, "layers": 4}}


def build_tiny_qwen2vl(out_dir: str | Path, seed: int = 0, arch: str = "qwen2-vl", size: str = "tiny") -> Path:
    """Build and save tokenizer, processor and model to `out_dir`; return it. Deterministic in `seed`.

    `arch` picks the family: Qwen2-VL (default), Qwen2.5-VL (windowed vision attention) or Qwen3-VL (16-pixel patches,
    DeepStack features, interleaved M-RoPE); all share the tokenizer and chat template.
    """
    import torch
    import transformers

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2VL_SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=SIZES[size]["hidden"],
        intermediate_size=2 * SIZES[size]["hidden"],
        num_hidden_layers=SIZES[size]["layers"],
        # Heads of 32: the smallest size vLLM's CPU attention kernels take (med_r1.vllm_engine.CPU_HEAD_SIZES); two
        # query heads share one key/value head, so grouped-query attention is exercised too.
        num_attention_heads=SIZES[size]["hidden"] // 32,
        num_key_value_heads=SIZES[size]["hidden"] // 64,
        max_position_embeddings=4096,
        # sum(mrope_section) must equal head_dim / 2 = 64 / 2 / 2
        rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 1e4},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(depth=2, spatial_merge_size=2, temporal_patch_size=2, num_heads=2)
    patch = 16 if arch == "qwen3-vl" else 14
    if arch == "qwen2-vl":
        config_class, model_class, processor_class = (
            "Qwen2VLConfig",
            "Qwen2VLForConditionalGeneration",
            "Qwen2VLProcessor",
        )
        vision |= dict(embed_dim=32, hidden_size=text["hidden_size"], mlp_ratio=2, patch_size=14)
        video = transformers.Qwen2VLVideoProcessor()
    elif arch == "qwen2.5-vl":
        config_class, model_class = "Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration"
        processor_class = "Qwen2_5_VLProcessor"
        vision |= dict(
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=text["hidden_size"],
            patch_size=14,
            window_size=56,
            fullatt_block_indexes=[1],
        )
        video = transformers.Qwen2VLVideoProcessor()
    elif arch == "qwen3-vl":
        config_class, model_class, processor_class = (
            "Qwen3VLConfig",
            "Qwen3VLForConditionalGeneration",
            "Qwen3VLProcessor",
        )
        text |= dict(head_dim=32)
        text["rope_parameters"] = {**text["rope_parameters"], "mrope_interleaved": True}
        vision |= dict(
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=text["hidden_size"],
            patch_size=16,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0],
        )
        video = transformers.Qwen3VLVideoProcessor()
    else:
        raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")
    config = getattr(transformers, config_class)(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = ids["<|endoftext|>"]

    side = 2 * patch  # one merged patch = 2x2 patches; images of 1 to 16 merged patches (4 image tokens at 56x56)
    image_processor = transformers.Qwen2VLImageProcessor(
        patch_size=patch, min_pixels=side * side, max_pixels=(4 * side) ** 2
    )
    processor = getattr(transformers, processor_class)(
        image_processor=image_processor, video_processor=video, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def build_tiny_causal_lm(out_dir: str | Path, seed: int = 0) -> Path:
    """A ~100k-parameter random text-only Qwen2 causal LM with the same tokenizer and chat template, saved to
    `out_dir`: any Hugging Face causal LM can be a local judge, and this one is the test double. Deterministic."""
    import torch
    import transformers

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2VL_SPECIAL_TOKENS}
    config = transformers.Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def builtin_tiny_model(seed: int = 0) -> Path:
    """The tiny model in the cache ($MED_R1_CACHE, default ~/.cache/med_r1), built there on first use."""
    return _cached(f"tiny-qwen2vl-b{BUILD}-seed{seed}", lambda out: build_tiny_qwen2vl(out, seed=seed))


def builtin_tiny_judge(seed: int = 0) -> Path:
    """The tiny causal LM (`builtin:tiny-judge`) in the cache, built there on first use."""
    return _cached(f"tiny-judge-b{BUILD}-seed{seed}", lambda out: build_tiny_causal_lm(out, seed=seed))


def resolve_builtin(name_or_path: str) -> str:
    """A model name as `from_pretrained` takes it: the builtin names become their cache folders."""
    if name_or_path == BUILTIN_NAME:
        return str(builtin_tiny_model())
    if name_or_path == BUILTIN_JUDGE:
        return str(builtin_tiny_judge())
    return name_or_path


def _cached(name: str, build) -> Path:
    cache = Path(os.environ.get("MED_R1_CACHE", Path.home() / ".cache" / "med_r1"))
    path = cache / name
    if not (path / "model.safetensors").exists():
        tmp = cache / f".{name}.{os.getpid()}"
        build(tmp)
        try:
            tmp.replace(path)
        except OSError:  # another process finished first; its copy is byte-identical
            shutil.rmtree(tmp, ignore_errors=True)
    return path

"""A random-weight Qwen2-VL with Qwen2-VL-2B's real dimensions, built locally (no download), for the benchmarks.

Speed does not depend on weight values when every completion runs to the same length (min_new_tokens =
max_new_tokens), so a random model measures what the real one would. `text_layers` / `vision_layers` cut the depth
for CPU runs; widths, heads, vocabulary and the processor stay the real model's.
"""

from __future__ import annotations

from pathlib import Path

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


def build(
    folder: Path,
    text_layers: int = TEXT["num_hidden_layers"],
    vision_layers: int = VISION["depth"],
    device: str = "cuda",
    dtype: str = "bfloat16",
    vocab_size: int = TEXT["vocab_size"],
) -> Path:
    """Tokenizer with the real vocabulary size (or `vocab_size`), the real processor (pixel bounds 3,136-401,408,
    Med-R1's), a random model; saved to `folder` (reused when it is already there)."""
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

    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for i in range(vocab_size - len(alphabet) - len(QWEN2VL_SPECIAL_TOKENS) - len(REASONING_TAGS)):
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
            "num_hidden_layers": text_layers,
            "vocab_size": vocab_size,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={**VISION, "depth": vision_layers},
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration(config).to(getattr(torch, dtype))
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
    print(f"built a {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B-parameter random Qwen2-VL in {folder}")
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder

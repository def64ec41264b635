"""Load the policy and its processor from a recipe: Auto classes only (never a class picked by path substring),
dtype and attention from the recipe, LoRA or full fine-tuning, and image pixel bounds on the processor so training
and evaluation see the same image tokens.

torch, transformers, peft and huggingface_hub are imported inside the functions that use them, so importing this
module (as `med-r1 validate` does) stays cheap.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from med_r1.config import ModelConfig
from med_r1.errors import UserError
from med_r1.tiny import BUILTIN_NAME, builtin_tiny_model

logger = logging.getLogger(__name__)

# Names the vision side of image-text-to-text models goes by (Qwen2/2.5/3-VL: visual; Llava-likes: vision_tower and
# multi_modal_projector; Idefics/SmolVLM/Mllama: vision_model).
VISION_MODULES = ("visual", "vision_tower", "vision_model", "vision_encoder", "multi_modal_projector")
VISION_REGEX = rf".*(^|\.)({'|'.join(VISION_MODULES)})\..*"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_dtype(name: str, cuda: bool):
    import torch

    if name == "auto":
        return torch.bfloat16 if cuda else torch.float32
    return getattr(torch, name)


def pretrained_kwargs(config: ModelConfig, cuda: bool) -> dict:
    """`from_pretrained` keyword arguments from the recipe's `model:` (dtype, attention implementation)."""
    kwargs = {"dtype": resolve_dtype(config.dtype, cuda)}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    return kwargs


def resolve_model_path(name_or_path: str) -> str:
    """A recipe's model name as something `from_pretrained` takes: 'builtin:tiny-qwen2vl' becomes its cache folder."""
    return str(builtin_tiny_model()) if name_or_path == BUILTIN_NAME else name_or_path


def check_model_path(name_or_path: str, where: str = "model.name_or_path") -> None:
    """A local folder must hold a model; anything else must at least look like a hub id ('org/name')."""
    if name_or_path == BUILTIN_NAME:
        return
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise UserError(f"{where}: {name_or_path} holds no config.json: it is not a model folder")
        return
    if name_or_path.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.-]+/[\w.-]+", name_or_path):
        raise UserError(f"{where}: {name_or_path} does not exist; give a model folder or a Hugging Face model id")


def not_downloaded_offline(name_or_path: str) -> bool:
    """A Hugging Face model id that is not in the local cache while the Hub is offline (HF_HUB_OFFLINE=1)."""
    from huggingface_hub import is_offline_mode, try_to_load_from_cache

    if name_or_path == BUILTIN_NAME or Path(name_or_path).expanduser().exists() or not is_offline_mode():
        return False
    return not isinstance(try_to_load_from_cache(name_or_path, "config.json"), str)


def load_processor(name_or_path: str, config: ModelConfig | None = None):
    """The model's processor (left padding), with the recipe's pixel bounds when `config` is given."""
    from transformers import AutoProcessor

    name_or_path = resolve_model_path(name_or_path)
    try:
        processor = AutoProcessor.from_pretrained(name_or_path, padding_side="left")
    except (OSError, ValueError) as exc:
        raise UserError(
            f"model.name_or_path: cannot load a processor from {name_or_path}: {exc}. Point model.name_or_path at a "
            "folder holding the model's processor files (preprocessor_config.json, tokenizer files) or at a Hugging "
            "Face model id that is downloaded (or reachable: HF_HUB_OFFLINE unset)."
        ) from None
    processor.tokenizer.padding_side = "left"  # batched generation needs left padding
    if config is not None:
        apply_pixel_bounds(processor, config.min_pixels, config.max_pixels)
    return processor


def apply_pixel_bounds(processor, min_pixels: int | None, max_pixels: int | None) -> None:
    """Bound the pixels of every image the processor sees (Qwen-VL image processors: size shortest/longest edge)."""
    if min_pixels is None and max_pixels is None:
        return
    image_processor = processor.image_processor
    size = dict(image_processor.size)
    if min_pixels is not None:
        size["shortest_edge"] = min_pixels
    if max_pixels is not None:
        size["longest_edge"] = max_pixels
    size = {k: v for k, v in size.items() if v is not None and k not in ("min_pixels", "max_pixels")}
    image_processor.size = type(image_processor.size)(**size)


def pixel_bounds(processor) -> dict[str, int]:
    """The processor's image pixel bounds as `min_pixels`/`max_pixels` (the names vLLM and qwen-vl-utils take)."""
    size = dict(processor.image_processor.size)
    bounds = {"min_pixels": size.get("shortest_edge"), "max_pixels": size.get("longest_edge")}
    return {key: value for key, value in bounds.items() if value}


def load_model(config: ModelConfig, cuda: bool):
    """The policy model, frozen as the recipe asks (LoRA adapters are added later by TRL from `lora_config`)."""
    from transformers import AutoModelForImageTextToText

    try:
        model = AutoModelForImageTextToText.from_pretrained(
            resolve_model_path(config.name_or_path), **pretrained_kwargs(config, cuda)
        )
    except (OSError, ValueError) as exc:
        raise UserError(
            f"model.name_or_path: cannot load an image-text-to-text model from {config.name_or_path}: {exc}"
        ) from None
    if config.finetune == "full" and config.freeze_vision:
        frozen = freeze_vision(model)
        logger.info("froze %d vision-tower parameters", frozen)
    return model


def freeze_vision(model) -> int:
    pattern = re.compile(VISION_REGEX)
    frozen = 0
    for name, param in model.named_parameters():
        if pattern.match(name):
            param.requires_grad_(False)
            frozen += param.numel()
    if frozen == 0:
        raise UserError(f"model.freeze_vision: found no vision tower (modules named {', '.join(VISION_MODULES)})")
    return frozen


def lora_config(config: ModelConfig):
    """peft.LoraConfig from the recipe; the vision tower is excluded unless `model.lora.include_vision`."""
    from peft import LoraConfig

    lora = config.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        exclude_modules=None if lora.include_vision else VISION_REGEX,
        task_type="CAUSAL_LM",
    )

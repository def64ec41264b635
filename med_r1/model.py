"""Load the policy and its processor from a recipe: Auto classes only (never a class picked by path substring),
dtype and attention from the recipe, LoRA or full fine-tuning, and image pixel bounds on the processor so training
and evaluation see the same image tokens.

torch, transformers, peft and huggingface_hub are imported inside the functions that use them, so importing this
module (as `med-r1 validate` does) stays cheap.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import threading
from pathlib import Path

from safetensors import SafetensorError

from med_r1.config import ModelConfig
from med_r1.errors import UserError
from med_r1.io import safetensors_whole
from med_r1.policies import TRUST_HINT, policy_verdict
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
    if config.trust_remote_code:  # only when the recipe asks: it runs the model's own Python files
        kwargs["trust_remote_code"] = True
    return kwargs


def resolve_model_path(name_or_path: str) -> str:
    """A recipe's model name as something `from_pretrained` takes: 'builtin:tiny-qwen2vl' becomes its cache folder."""
    return str(builtin_tiny_model()) if name_or_path == BUILTIN_NAME else name_or_path


def model_config(name_or_path: str, trust_remote_code: bool = False):
    """The model's transformers config (config.json only, no weights), or None when it cannot be read here (a hub
    model that is not downloaded: `hub_problem` reports that)."""
    from transformers import AutoConfig  # lazy: transformers takes seconds to import

    try:
        return AutoConfig.from_pretrained(resolve_model_path(name_or_path), **_trust(trust_remote_code))
    except (OSError, ValueError):
        return None


def _trust(trust_remote_code: bool) -> dict:
    """`trust_remote_code=True` for `from_pretrained` when asked; nothing otherwise (transformers' own default)."""
    return {"trust_remote_code": True} if trust_remote_code else {}


def check_model_path(name_or_path: str, where: str = "model.name_or_path", trust_remote_code: bool = False) -> None:
    """A local folder must hold a model whose config.json transformers understands; anything else must at least look
    like a hub id ('org/name')."""
    if name_or_path == BUILTIN_NAME:
        return
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise UserError(f"{where}: {name_or_path} holds no config.json: it is not a model folder")
        check_model_config(path, where, trust_remote_code)
        return
    if name_or_path.startswith((".", "/", "~")) or not re.fullmatch(r"[\w.-]+/[\w.-]+", name_or_path):
        raise UserError(f"{where}: {name_or_path} does not exist; give a model folder or a Hugging Face model id")


def check_model_config(folder: Path, where: str = "model.name_or_path", trust_remote_code: bool = False) -> None:
    """The folder's config.json (when it has one) names a model type this transformers knows; read as JSON, so no
    weights are loaded and a bad file is reported before training rather than as a traceback at load time."""
    path = folder / "config.json"
    if not path.exists():
        return  # a LoRA adapter folder: its base model is checked where it is loaded
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{where}: {path} is not readable JSON ({exc}); restore the model's config.json") from None
    import transformers  # lazy: transformers takes seconds to import
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not model_type:
        raise UserError(
            f"{where}: {path} has no model_type, so transformers cannot tell which model it is; restore the model's "
            "config.json (a Qwen2-VL model has model_type: qwen2_vl)"
        )
    if model_type not in CONFIG_MAPPING_NAMES and config.get("auto_map"):  # the model ships its own code
        if trust_remote_code:
            return
        raise UserError(
            f"{where}: {path} has model_type {model_type!r}, which comes with its own Python code (auto_map); "
            f"med-r1 runs it only when asked: {TRUST_HINT}"
        )
    if model_type not in CONFIG_MAPPING_NAMES:
        close = difflib.get_close_matches(str(model_type), list(CONFIG_MAPPING_NAMES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(
            f"{where}: {path} has model_type {model_type!r}{hint}, which transformers {transformers.__version__} does "
            "not know: fix model_type, or install a transformers version that has this model"
        )


HUB_TIMEOUT = 5.0
"""Seconds the Hugging Face Hub has to answer before a model id that is not cached counts as out of reach."""


def hub_status(name_or_path: str) -> tuple[str, str]:
    """Where a recipe's model would come from, found in seconds, before anything waits on the Hub:

    ('local', '') a folder or the built-in tiny model; ('cached', '') in the Hugging Face cache; ('offline', '') not
    cached and HF_HUB_OFFLINE is set; ('downloadable', '') the Hub has it; ('missing', why) the Hub says no such
    model; ('unreachable', why) the Hub did not answer.
    """
    from huggingface_hub import is_offline_mode, try_to_load_from_cache

    if name_or_path == BUILTIN_NAME or Path(name_or_path).expanduser().exists():
        return "local", ""
    if isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
        return "cached", ""
    if is_offline_mode():
        return "offline", ""
    return _ask_hub(name_or_path)


def _ask_hub(repo_id: str) -> tuple[str, str]:
    """One request for the model's metadata, bounded in time (name resolution included, hence the thread)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    answer: list[tuple[str, str]] = []

    def ask() -> None:
        try:
            HfApi().model_info(repo_id, timeout=HUB_TIMEOUT)
            answer.append(("downloadable", ""))
        except GatedRepoError:
            answer.append(("downloadable", "gated: accept its licence on the Hub and log in (hf auth login)"))
        except RepositoryNotFoundError:
            answer.append(("missing", "the Hub has no such model (or it is private and you are not logged in)"))
        except Exception as exc:  # connection refused, name resolution, timeouts, proxies: all mean out of reach
            answer.append(("unreachable", f"{type(exc).__name__}: {exc}".strip()))

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(2 * HUB_TIMEOUT)
    return answer[0] if answer else ("unreachable", f"no answer within {2 * HUB_TIMEOUT:.0f} s")


def hub_problem(name_or_path: str, offline_ok: bool = False) -> tuple[str | None, str | None, bool]:
    """(error, warning, processor loadable) about getting the model from the Hub; no error or warning when it is
    local or cached. With `offline_ok` (validate), a model that is not cached while the Hub is offline is a warning."""
    from huggingface_hub import constants

    status, why = hub_status(name_or_path)
    where = f"model.name_or_path: {name_or_path} is not a local folder and not in the Hugging Face cache"
    fetch = (
        f"download it where the Hub is reachable (hf download {name_or_path}) and copy the cache "
        "(HF_HOME) here, or set model.name_or_path to a local model folder"
    )
    if status == "offline":
        message = f"{where}, and the Hub is offline (HF_HUB_OFFLINE=1): {fetch}, or unset HF_HUB_OFFLINE"
        if offline_ok:
            skipped = "its processor was not loaded, so prompt lengths and vLLM image tokens were not checked"
            return None, f"{message}. Until then {skipped}", False
        return message, None, False
    if status == "unreachable":
        return f"{where}, and the Hub ({constants.ENDPOINT}) cannot be reached ({why[:200]}): {fetch}", None, False
    if status == "missing":
        return f"{where}, and {why}: check the spelling (org/name)", None, False
    if status == "downloadable":
        note = f"; {why}" if why else ""
        warning = f"model.name_or_path: {name_or_path} is not downloaded yet; training downloads it from the Hub{note}"
        return None, warning, True
    return None, None, True


def load_processor(name_or_path: str, config: ModelConfig | None = None, trust_remote_code: bool = False):
    """The model's processor (left padding), with the recipe's pixel bounds when `config` is given."""
    from transformers import AutoProcessor

    name_or_path = resolve_model_path(name_or_path)
    trust = _trust(trust_remote_code or (config is not None and config.trust_remote_code))
    try:
        processor = AutoProcessor.from_pretrained(name_or_path, padding_side="left", **trust)
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


def auto_model_class(name_or_path: str, trust_remote_code: bool = False):
    """The transformers Auto class that loads this policy (`med_r1.policies`): AutoModelForImageTextToText, or for
    custom code whose auto_map names only AutoModelForCausalLM (Hulu-Med), that one."""
    import transformers

    verdict = policy_verdict(name_or_path, trust_remote_code)
    return getattr(transformers, verdict.auto_class if verdict else "AutoModelForImageTextToText")


def load_model(config: ModelConfig, cuda: bool):
    """The policy model, frozen as the recipe asks (LoRA adapters are added later by TRL from `lora_config`)."""
    auto_class = auto_model_class(config.name_or_path, config.trust_remote_code)
    try:
        model = auto_class.from_pretrained(resolve_model_path(config.name_or_path), **pretrained_kwargs(config, cuda))
    except SafetensorError as exc:  # a weights file cut short (an interrupted copy or download) or not safetensors
        folder = Path(resolve_model_path(config.name_or_path))
        damaged = [p.name for p in sorted(folder.glob("*.safetensors")) if not safetensors_whole(p)]
        raise UserError(
            f"model.name_or_path: the weights in {config.name_or_path} cannot be read ({exc}): "
            f"{', '.join(damaged) or 'a *.safetensors file'} is cut short or damaged; copy or download the model again"
        ) from None
    except (OSError, ValueError) as exc:
        hint = f"; {TRUST_HINT}" if "trust_remote_code" in str(exc) and not config.trust_remote_code else ""
        raise UserError(
            f"model.name_or_path: cannot load an image-text-to-text model from {config.name_or_path}: {exc}{hint}"
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

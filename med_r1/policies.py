"""Which image-text-to-text models the trainer accepts as its policy, read from the model's config.json (no weights).

    verdict = check_policy(json.loads(Path("MODEL/config.json").read_text()), trust_remote_code=False)
    verdict.accepted, verdict.reason, verdict.auto_class

- **Tested** (`TESTED`): Qwen2-VL, Qwen2.5-VL and Qwen3-VL. The tests build each one tiny in code and train and
  evaluate it; the shared-prompt passes serve them.
- **Other transformers image-text-to-text models**: a `model_type` that `AutoModelForImageTextToText` maps is
  accepted and loaded through it, untested by med-r1 (TRL's own passes are used; see `model.share_prompt`).
- **Custom code** (an `auto_map` in config.json, e.g. Hulu-Med, whose `HulumedQwen2ForCausalLM` and
  `HulumedQwen3ForCausalLM` are published with their own modeling files): refused unless the recipe sets
  `model.trust_remote_code: true`, since loading it runs the model's Python files. Then it is loaded through the
  Auto class its `auto_map` names, `AutoModelForImageTextToText` first, else `AutoModelForCausalLM`.
- **Refused**: a `model_type` transformers does not know (without `auto_map`), and known models that are no
  image-text-to-text models (text-only language models, vision encoders).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

from med_r1.errors import UserError
from med_r1.tiny import BUILTIN_NAME

TESTED = {"qwen2_vl": "Qwen2-VL", "qwen2_5_vl": "Qwen2.5-VL", "qwen3_vl": "Qwen3-VL"}
"""model_type -> family: the policies med-r1's tests train and evaluate (tiny models built in code)."""
CUSTOM_CLASSES = ("AutoModelForImageTextToText", "AutoModelForCausalLM")
"""The Auto classes a custom-code policy may be loaded through, in order of preference."""
TRUST_HINT = "set model.trust_remote_code: true in the recipe (or model.trust_remote_code=true) if you trust that code"


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str
    auto_class: str = "AutoModelForImageTextToText"
    """The transformers Auto class that loads the model."""
    custom_code: bool = False


def check_policy(config: dict, trust_remote_code: bool = False) -> Verdict:
    """Whether the trainer takes the model of this config.json (a dict), and why."""
    import transformers  # lazy: transformers takes seconds to import
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as ITT

    model_type = config.get("model_type")
    architectures = ", ".join(config.get("architectures") or []) or "none named"
    auto_map = config.get("auto_map") or {}
    if model_type in TESTED:
        return Verdict(
            True, f"{TESTED[model_type]} ({model_type}): tested (tiny models built in code), shared prompts"
        )
    if auto_map:
        named = ", ".join(f"{k}: {v}" for k, v in auto_map.items())
        if not trust_remote_code:
            return Verdict(
                False,
                f"model_type {model_type!r} comes with its own Python code (auto_map: {named}), which med-r1 runs "
                f"only when asked: {TRUST_HINT}",
                custom_code=True,
            )
        found = next((c for c in CUSTOM_CLASSES if c in auto_map), None)
        if found is None:
            return Verdict(
                False,
                f"model_type {model_type!r}: its auto_map ({named}) names no {' or '.join(CUSTOM_CLASSES)}, so no Auto "
                "class can load it as a policy",
                custom_code=True,
            )
        return Verdict(
            True,
            f"custom code ({auto_map[found]}, model_type {model_type!r}) through {found} with trust_remote_code; "
            "not tested by med-r1 beyond a tiny local model",
            found,
            True,
        )
    if model_type not in CONFIG_MAPPING_NAMES:
        close = difflib.get_close_matches(str(model_type), list(CONFIG_MAPPING_NAMES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return Verdict(
            False,
            f"model_type {model_type!r}{hint} is not one transformers {transformers.__version__} knows, and "
            "config.json has no auto_map (custom code): fix model_type, or install a transformers that has this model",
        )
    if model_type not in ITT:
        return Verdict(
            False,
            f"model_type {model_type!r} (architectures: {architectures}) is no image-text-to-text model: "
            "AutoModelForImageTextToText has no class for it (a text-only model or a vision encoder?); give a "
            "vision-language model such as Qwen/Qwen2-VL-2B-Instruct",
        )
    return Verdict(
        True,
        f"{ITT[model_type]} ({model_type}): a transformers image-text-to-text model, loaded through "
        "AutoModelForImageTextToText; not tested by med-r1",
    )


def config_json(name_or_path: str) -> dict | None:
    """The model's config.json as a dict: a local folder's, the built-in tiny model's, or a Hub model's from the
    Hugging Face cache. None when it is not here (a Hub model not downloaded)."""
    if name_or_path == BUILTIN_NAME:
        return {"model_type": "qwen2_vl"}  # built in code on first use: no need to build it to know its family
    if Path(name_or_path).expanduser().exists():
        path = Path(name_or_path).expanduser() / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json")
        path = Path(cached) if isinstance(cached, str) else None
    if path is None or not path.exists():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(
            f"model.name_or_path: {path} is not readable JSON ({exc}); restore the model's config.json"
        ) from None
    return config if isinstance(config, dict) else None


def policy_verdict(name_or_path: str, trust_remote_code: bool = False) -> Verdict | None:
    """`check_policy` on the model's config.json; None when that file is not here to read."""
    config = config_json(name_or_path)
    return None if config is None else check_policy(config, trust_remote_code)


def check_policy_model(name_or_path: str, trust_remote_code: bool = False) -> Verdict | None:
    """The verdict, raising a UserError naming model.name_or_path when the model is refused."""
    verdict = policy_verdict(name_or_path, trust_remote_code)
    if verdict is not None and not verdict.accepted:
        raise UserError(f"model.name_or_path: {name_or_path} is not a policy med-r1 trains: {verdict.reason}")
    return verdict

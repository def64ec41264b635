"""Which policies the trainer accepts (`med_r1.policies`), and `model.trust_remote_code`: a model that ships its own
code is refused unless the recipe asks, and a tiny local custom-code model (a Qwen2-VL subclass in a modeling file
beside its config.json) loads and trains offline when it does. Hulu-Med itself (custom code on the Hub) cannot be
loaded offline, so its config is checked, not its weights."""

import json
import shutil
import textwrap

import pytest

from conftest import tiny_recipe, write_recipe
from med_r1.cli import main
from med_r1.config import ModelConfig
from med_r1.model import load_model, load_processor, pretrained_kwargs
from med_r1.policies import check_policy

# Hulu-Med-7B's config.json as its published code describes it: a Qwen2 decoder class with its own modeling file,
# loaded through AutoModelForCausalLM (its auto_map names no AutoModelForImageTextToText).
HULU_MED = {
    "model_type": "hulumed_qwen2",
    "architectures": ["HulumedQwen2ForCausalLM"],
    "auto_map": {
        "AutoConfig": "configuration_hulumed_qwen2.HulumedQwen2Config",
        "AutoModelForCausalLM": "modeling_hulumed_qwen2.HulumedQwen2ForCausalLM",
    },
}


@pytest.mark.parametrize(
    "config, trust, accepted, says, auto_class",
    [
        ({"model_type": "qwen2_vl"}, False, True, "tested", "AutoModelForImageTextToText"),
        ({"model_type": "qwen2_5_vl"}, False, True, "tested", "AutoModelForImageTextToText"),
        ({"model_type": "qwen3_vl"}, False, True, "tested", "AutoModelForImageTextToText"),
        ({"model_type": "llava"}, False, True, "not tested by med-r1", "AutoModelForImageTextToText"),
        ({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}, False, False, "no image-text-to-text", None),
        ({"model_type": "qwen9_vl"}, False, False, "did you mean", None),
        (HULU_MED, False, False, "model.trust_remote_code: true", None),
        (HULU_MED, True, True, "through AutoModelForCausalLM with trust_remote_code", "AutoModelForCausalLM"),
        ({"model_type": "x", "auto_map": {"AutoConfig": "c.C"}}, True, False, "names no AutoModelForImage", None),
    ],
)
def test_which_policies_are_accepted(config, trust, accepted, says, auto_class):
    verdict = check_policy(config, trust)
    assert verdict.accepted is accepted and says in verdict.reason
    if auto_class:
        assert verdict.auto_class == auto_class


def test_trust_remote_code_reaches_from_pretrained_only_when_set():
    assert "trust_remote_code" not in pretrained_kwargs(ModelConfig("m"), cuda=False)
    assert pretrained_kwargs(ModelConfig("m", trust_remote_code=True), cuda=False)["trust_remote_code"] is True


MODELING = textwrap.dedent(
    '''
    """A custom-code model for med-r1's tests: Qwen2-VL under another model_type, loaded from this folder."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration


    class TinyCustomVLConfig(Qwen2VLConfig):
        model_type = "tiny_custom_vl"


    class TinyCustomVLForConditionalGeneration(Qwen2VLForConditionalGeneration):
        config_class = TinyCustomVLConfig
    '''
)


@pytest.fixture
def custom_model(tiny_model, tmp_path):
    """The tiny Qwen2-VL as a custom-code model: config.json's auto_map points at a modeling file in the folder."""
    folder = tmp_path / "tiny-custom"
    shutil.copytree(tiny_model, folder)
    (folder / "modeling_tiny_custom.py").write_text(MODELING)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "tiny_custom_vl"
    config["architectures"] = ["TinyCustomVLForConditionalGeneration"]
    config["auto_map"] = {
        "AutoConfig": "modeling_tiny_custom.TinyCustomVLConfig",
        "AutoModelForImageTextToText": "modeling_tiny_custom.TinyCustomVLForConditionalGeneration",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_custom_code_is_refused_without_trust_remote_code(custom_model, omni_dir, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(custom_model, omni_dir, tmp_path / "run"))
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "model.trust_remote_code" in err and "auto_map" in err and str(custom_model) in err
    assert "Traceback" not in err


def test_text_only_model_is_refused_as_policy(tmp_path, omni_dir, capsys):
    from med_r1.tiny import build_tiny_causal_lm

    model = build_tiny_causal_lm(tmp_path / "lm")
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(model, omni_dir, tmp_path / "run"))
    assert main(["validate", str(recipe)]) == 2
    assert "no image-text-to-text model" in capsys.readouterr().err


@pytest.mark.slow
def test_custom_code_model_loads_and_trains_with_trust_remote_code(custom_model, omni_dir, tmp_path, capsys):
    config = ModelConfig(str(custom_model), finetune="full", trust_remote_code=True)
    model = load_model(config, cuda=False)
    assert type(model).__name__ == "TinyCustomVLForConditionalGeneration"
    assert type(model).__module__.endswith("modeling_tiny_custom")  # the folder's own code, not transformers'
    assert load_processor(str(custom_model), config).tokenizer.padding_side == "left"

    raw = tiny_recipe(custom_model, omni_dir, tmp_path / "run", max_steps=1, beta=0.04)  # TRL loads a reference too
    raw["model"]["trust_remote_code"] = True
    recipe = str(write_recipe(tmp_path / "r.yaml", raw))
    assert main(["validate", recipe]) == 0
    assert "policy: custom code" in capsys.readouterr().out
    assert main(["train", recipe]) == 0
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["model_type"] == "tiny_custom_vl"

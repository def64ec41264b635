"""Any image-text-to-text policy through the Auto classes: Qwen2.5-VL and Qwen3-VL train and evaluate as Qwen2-VL does."""

import json

import pytest
from safetensors.torch import load_file

from conftest import tiny_recipe, write_recipe
from med_r1.cli import main


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen2.5-vl", "qwen3-vl"])
def test_other_qwen_families_train_with_lora_and_evaluate(arch, omni_dir, tmp_path):
    model = tmp_path / arch
    assert main(["tiny-model", str(model), "--arch", arch]) == 0
    raw = tiny_recipe(model, omni_dir, tmp_path / "run", max_steps=2)
    raw["model"].update(finetune="lora", lora={"r": 4})
    raw["data"]["eval"] = {"path": str(omni_dir), "limit": 4}
    raw["eval"] = {"max_new_tokens": 8}
    recipe = str(write_recipe(tmp_path / "r.yaml", raw))
    assert main(["train", recipe]) == 0
    adapter = load_file(tmp_path / "run" / "model" / "adapter_model.safetensors")
    assert adapter and not any("visual" in key for key in adapter)  # the vision tower stays out of LoRA
    assert json.loads((tmp_path / "run" / "model" / "adapter_config.json").read_text())["r"] == 4
    assert main(["eval", recipe]) == 0
    metrics = json.loads((tmp_path / "run" / "eval" / "medr1_eval_think" / "metrics.json").read_text())
    assert metrics["overall"]["count"] == 4

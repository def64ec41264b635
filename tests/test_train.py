"""`med-r1 train` end to end on the tiny model: what changed, what was written, what is refused."""

import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from conftest import tiny_recipe, write_recipe
from med_r1.cli import main

PLUGIN = Path(__file__).parent / "plugins" / "token_reward.py"


def varying_reward(tiny_model) -> dict:
    """A reward whose group std is never zero, so every step has a gradient: the share of a random model's tokens
    that have even ids (about half of them, never the same share for every rollout of a group)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    return {"name": f"{PLUGIN}:token_set_share", "kwargs": {"token_ids": list(range(0, len(tokenizer), 2))}}


def run(tmp_path, recipe) -> int:
    return main(["train", str(write_recipe(tmp_path / "recipe.yaml", recipe))])


@pytest.mark.slow
def test_full_finetune_changes_every_parameter_and_writes_the_run_folder(tiny_model, omni_dir, tmp_path):
    recipe = tiny_recipe(tiny_model, omni_dir, tmp_path / "run", max_steps=3)
    recipe["rewards"] = [varying_reward(tiny_model), {"name": "format", "weight": 0.5}]
    assert run(tmp_path, recipe) == 0

    out = tmp_path / "run"
    before, after = load_file(tiny_model / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    unchanged = [k for k in before if before[k].equal(after[k])]
    assert unchanged == []

    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert resolved["model"]["finetune"] == "full" and resolved["reward_errors"] == "raise"  # defaults filled in
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2, 3]
    assert {"rewards/token_set_share/mean", "rewards/format/mean", "loss", "grad_norm"} <= steps[0].keys()
    assert (out / "rewards.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "model" / "processor_config.json").exists()


@pytest.mark.slow
def test_freeze_vision_keeps_the_vision_tower(tiny_model, omni_dir, tmp_path):
    recipe = tiny_recipe(tiny_model, omni_dir, tmp_path / "run", max_steps=2)
    recipe["model"]["freeze_vision"] = True
    recipe["rewards"] = [varying_reward(tiny_model)]
    assert run(tmp_path, recipe) == 0
    before, after = load_file(tiny_model / "model.safetensors"), load_file(tmp_path / "run/model/model.safetensors")
    vision = [k for k in before if k.startswith("visual.")]  # checkpoint names (in memory: model.visual.*)
    assert vision and all(before[k].equal(after[k]) for k in vision)
    assert all(not before[k].equal(after[k]) for k in before if k not in vision)


@pytest.mark.slow
def test_lora_trains_only_adapters_outside_the_vision_tower(tiny_model, omni_dir, tmp_path):
    from med_r1.config import parse_recipe
    from med_r1.plan import build_plan
    from med_r1.train import build_trainer

    raw = tiny_recipe(tiny_model, omni_dir, tmp_path / "run", max_steps=3)
    raw["model"].update(finetune="lora", lora={"r": 4, "alpha": 8})
    raw["rewards"] = [varying_reward(tiny_model)]
    recipe = parse_recipe(raw)
    trainer = build_trainer(recipe, build_plan(recipe, cuda=False), cuda=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not any(".visual." in n for n in trainable)  # vision tower excluded from LoRA by default
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not p.detach().equal(before[n])}
    assert changed == trainable


@pytest.mark.slow
def test_lora_run_saves_adapter_and_merged_model(tiny_model, omni_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    recipe = tiny_recipe(tiny_model, omni_dir, tmp_path / "run", max_steps=2)
    recipe["model"].update(finetune="lora", save_merged=True, lora={"r": 4, "target_modules": ["q_proj", "v_proj"]})
    recipe["rewards"] = [varying_reward(tiny_model)]
    assert run(tmp_path, recipe) == 0
    out = tmp_path / "run"
    adapter = load_file(out / "model" / "adapter_model.safetensors")
    assert adapter and all("lora_" in k and ("q_proj" in k or "v_proj" in k) for k in adapter)
    assert json.loads((out / "model" / "adapter_config.json").read_text())["r"] == 4
    merged = AutoModelForImageTextToText.from_pretrained(out / "merged").state_dict()
    base = AutoModelForImageTextToText.from_pretrained(tiny_model).state_dict()
    q, k = (f"model.language_model.layers.0.self_attn.{m}_proj.weight" for m in "qk")
    assert not merged[q].equal(base[q]) and merged[k].equal(base[k])  # adapted modules merged in, others as they were


@pytest.mark.slow
def test_second_run_on_the_same_folder_is_refused_and_nothing_is_lost(tiny_model, omni_dir, tmp_path, capsys):
    recipe = tiny_recipe(tiny_model, omni_dir, tmp_path / "run", max_steps=1)
    assert run(tmp_path, recipe) == 0
    weights = (tmp_path / "run/model/model.safetensors").read_bytes()
    assert run(tmp_path, recipe) == 2
    err = capsys.readouterr().err
    assert "holds a finished run" in err and "output_dir=<new folder>" in err
    assert "resume=true" not in err  # no checkpoint was saved: nothing to resume (issue 13)
    assert (tmp_path / "run/model/model.safetensors").read_bytes() == weights


@pytest.mark.slow
def test_periodic_evaluation_is_logged_with_training_metrics(tiny_model, omni_dir, tmp_path):
    recipe = tiny_recipe(
        tiny_model,
        omni_dir,
        tmp_path / "run",
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
        per_device_eval_batch_size=4,
        num_generations_eval=1,
    )
    recipe["data"]["eval"] = {"path": str(omni_dir), "limit": 8}  # a small held-out subset
    assert run(tmp_path, recipe) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_reward" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert {"eval_rewards/accuracy/mean", "eval_rewards/accuracy/CT"} <= evals[0].keys()


def test_pixel_bounds_reach_the_processor_and_the_saved_model(tiny_model, tmp_path):
    from PIL import Image

    from med_r1.config import ModelConfig
    from med_r1.model import load_processor

    def image_tokens(processor):
        text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False)
        ids = processor(text=[text], images=[Image.new("RGB", (112, 112))])["input_ids"][0]
        return sum(i == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") for i in ids)

    assert image_tokens(load_processor(str(tiny_model))) == 16  # the model's own bounds: 112x112 -> 16 tokens
    bounded = load_processor(str(tiny_model), ModelConfig(str(tiny_model), max_pixels=56 * 56))
    assert image_tokens(bounded) == 4
    bounded.save_pretrained(tmp_path / "saved")
    assert image_tokens(load_processor(str(tmp_path / "saved"))) == 4  # evaluation of the run sees the same tokens

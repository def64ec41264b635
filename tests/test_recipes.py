"""Every shipped recipe is strict-valid and passes `med-r1 validate` (no model weights are loaded).

Recipes whose data lives on the user's machine (OmniMedVQA, Med-R1's split files) are validated against a small
look-alike of that format, passed as overrides of the data paths.
"""

from pathlib import Path

import pytest
from chat_server import ChatServer

from conftest import make_omnimedvqa
from med_r1.cli import main
from med_r1.config import load_recipe
from med_r1.data.medr1_splits import write_medr1
from med_r1.data.omnimedvqa import load_omnimedvqa
from med_r1.data.sources import resolve_path

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.yaml") if "accelerate" not in p.relative_to(REPO).parts)


def test_recipes_exist():
    names = {p.relative_to(REPO / "recipes").as_posix() for p in RECIPES}
    assert {
        "quickstart.yaml",
        "med-r1/think_full.yaml",
        "med-r1/think_lora.yaml",
        "med-r1/nothink_full.yaml",
        "med-r1/nothink_lora.yaml",
        "open_ended.yaml",
        "open_ended_cpu.yaml",
    } <= names


def stand_in_data(source, tmp_path: Path, key: str) -> list[str]:
    """Overrides pointing a recipe's missing data at a look-alike in the same format."""
    if source is None or resolve_path(source.path).exists():
        return []
    omni = (
        make_omnimedvqa(tmp_path / "OmniMedVQA") if not (tmp_path / "OmniMedVQA").exists() else tmp_path / "OmniMedVQA"
    )
    if source.format == "medr1":
        questions = load_omnimedvqa(omni).questions
        folder = tmp_path / "Splits" / key
        for modality in {q.modality_raw for q in questions}:
            write_medr1([q for q in questions if q.modality_raw == modality], folder / f"{modality}_{key}.json", omni)
        return [f"data.{key}.path={folder}", f"data.{key}.image_root={omni}"]
    if source.format not in ("auto", "omnimedvqa"):  # a VQA set's own format (recipes/open_ended.yaml): the look-alike
        return [f"data.{key}.path={omni}", f"data.{key}.format=omnimedvqa", f"data.{key}.open_ended=true"]
    return [f"data.{key}.path={omni}"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(REPO / "recipes").as_posix())
def test_recipe_validates(path, tmp_path, capsys):
    recipe = load_recipe(path)
    overrides = stand_in_data(recipe.data.train, tmp_path, "train") + stand_in_data(recipe.data.eval, tmp_path, "eval")
    with ChatServer(reply=lambda prompt: "correct") as judge:  # recipes asking a judge server ask this one
        for i, spec in enumerate(recipe.rewards):
            if spec.name == "judge" and spec.kwargs.get("backend", "openai") == "openai":
                overrides += [f"rewards.{i}.kwargs.base_url={judge.url}", f"rewards.{i}.kwargs.cache_dir={tmp_path}"]
        code = main(["validate", str(path), *overrides, f"output_dir={tmp_path / 'run'}"])
    assert code == 0, capsys.readouterr().err
    assert "recipe OK" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name, kind", [("ddp", "MULTI_GPU"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED"), ("fsdp2", "FSDP")]
)
def test_accelerate_configs_load(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "recipes" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.value == kind
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2


@pytest.mark.parametrize(
    "name", ["think_full", "think_lora", "nothink_full", "nothink_lora", "cross_modality", "cross_task"]
)
def test_paper_recipes_follow_medr1s_scripts(name):
    """Think: 8 prompts per optimizer step (2 GPUs x 2 per device x accumulation 2), save_steps 1000; no-think: 4
    prompts (2 x 1 x 2), save_steps 200. All evaluate at native resolution within Qwen's pixel bounds."""
    recipe = load_recipe(REPO / "recipes" / "med-r1" / f"{name}.yaml")
    g = recipe.grpo
    prompts = g["per_device_train_batch_size"] * g["gradient_accumulation_steps"] // g["num_generations"]  # one GPU
    think = recipe.prompt.template == "medr1_think"
    assert (prompts, g["save_steps"]) == ((8, 1000) if think else (4, 200))
    assert (recipe.eval.image_size, recipe.eval.min_pixels, recipe.eval.max_pixels) == ("native", 3136, 12845056)
    if name.startswith("cross"):
        assert recipe.matrix.metric == "accuracy_medr1" and recipe.matrix.min_questions == 50


def test_the_paper_recipes_take_a_band_a_curriculum_and_balance(tmp_path, capsys):
    import json

    from med_r1.plan import build_plan

    path = REPO / "recipes" / "med-r1" / "think_full.yaml"
    overrides = stand_in_data(load_recipe(path).data.train, tmp_path, "train") + [f"output_dir={tmp_path / 'run'}"]
    questions = build_plan(load_recipe(path, overrides), "difficulty").train
    rates = tmp_path / "pass_rates.jsonl"
    rates.write_text("".join(json.dumps({"question_id": q.question_id, "pass_rate": i % 5 / 4}) + "\n"
                             for i, q in enumerate(questions)))  # fmt: skip
    chosen = ["data.train.pass_rate=[0.2,0.8]", "data.order=easy_to_hard", "data.balance=modality"]
    assert main(["validate", str(path), *overrides, *chosen, f"data.pass_rates={rates}"]) == 0
    out = capsys.readouterr().out
    kept = sum(0.2 <= i % 5 / 4 <= 0.8 for i in range(len(questions)))
    assert f"kept {kept}, dropped {len(questions) - kept}" in out and "draws per modality" in out

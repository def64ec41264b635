"""The plan builder: each command gets what it needs and nothing else, every problem comes in one list, and a
processor that cannot be loaded is an error (only a Hub model that is not downloaded while offline is a warning)."""

import shutil

import pytest

from conftest import tiny_recipe, write_recipe
from med_r1.cli import main
from med_r1.config import parse_recipe
from med_r1.errors import UserError
from med_r1.plan import build_plan


def test_each_command_gets_what_it_needs(tiny_model, omni_dir, tmp_path):
    raw = tiny_recipe(tiny_model, omni_dir, tmp_path / "run")
    raw["data"]["eval"] = {"path": str(omni_dir), "limit": 4}
    recipe = parse_recipe(raw)

    train = build_plan(recipe, "train", cuda=False)
    assert len(train.train) == 16 and len(train.eval) == 4 and train.processor is not None
    assert [r.__name__ for r in train.rewards] == ["format_partial", "accuracy"]
    assert train.grpo_config.output_dir == str(tmp_path / "run") and train.grpo_kwargs["reward_weights"] == [1.0, 1.0]
    assert len(train.train_rows["question_id"]) == 16 and train.longest_prompt > 0
    assert train.eval_rows is None  # TRL's periodic evaluation is off (grpo.eval_strategy: no)

    for purpose in ("eval", "matrix"):
        plan = build_plan(recipe, purpose)
        assert len(plan.eval) == 4 and plan.rewards == [] and plan.grpo_config is None and plan.processor is None
        assert plan.train_rows is None and len(plan.train) == (16 if purpose == "matrix" else 0)


def test_every_problem_is_reported_in_one_list(tiny_model, omni_dir, tmp_path):
    raw = tiny_recipe(tiny_model, omni_dir, tmp_path / "run", num_generations=3)
    raw["rewards"] = [{"name": "acuracy"}]
    raw["data"]["eval"] = {"path": str(tmp_path / "nowhere")}
    with pytest.raises(UserError) as info:
        build_plan(parse_recipe(raw), "validate", cuda=False)
    text = str(info.value)
    assert text.startswith("3 problems:")
    assert "did you mean 'accuracy'" in text and "GRPOConfig rejected" in text and "nowhere does not exist" in text


def test_eval_needs_evaluation_data(tiny_model, omni_dir, tmp_path):
    with pytest.raises(UserError, match="data.eval is not set"):
        build_plan(parse_recipe(tiny_recipe(tiny_model, omni_dir, tmp_path / "run")), "eval")


def test_a_processor_that_cannot_be_loaded_is_an_error(tiny_model, omni_dir, tmp_path, capsys):
    broken = tmp_path / "no-processor"
    broken.mkdir()
    shutil.copy(tiny_model / "config.json", broken / "config.json")  # a model folder without processor files
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(broken, omni_dir, tmp_path / "run"))
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert f"cannot load a processor from {broken}" in err and "Traceback" not in err


def test_a_hub_model_that_is_not_downloaded_offline_is_a_warning(omni_dir, tmp_path, capsys):
    raw = tiny_recipe(tmp_path, omni_dir, tmp_path / "run")
    raw["model"]["name_or_path"] = "Qwen/Qwen2-VL-2B-Instruct"  # not in the cache; the tests run offline
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    assert main(["validate", str(recipe)]) == 0
    assert "not in the Hugging Face cache, and the Hub is offline" in capsys.readouterr().out
    assert main(["train", str(recipe)]) == 2  # training cannot do without it
    assert (
        "Qwen/Qwen2-VL-2B-Instruct is not a local folder and not in the Hugging Face cache" in capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()  # refused before the run folder is written

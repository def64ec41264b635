"""Recipe validation: every mistake named by its dotted path, all reported together, exit status 2 from the CLI."""

import pytest
import yaml

from med_r1.cli import main
from med_r1.config import Recipe, apply_overrides, eval_images, load_recipe, parse_recipe
from med_r1.errors import ConfigError

BASE = {
    "model": {"name_or_path": "Qwen/Qwen2-VL-2B-Instruct"},
    "data": {"train": {"path": "bundled"}},
    "output_dir": "runs/x",
}


def problems(raw, overrides=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_recipe(raw, overrides)
    return info.value.problems


def test_minimal_recipe_fills_defaults():
    recipe = parse_recipe(BASE)
    assert isinstance(recipe, Recipe)
    assert recipe.model.finetune == "lora" and recipe.prompt.template == "medr1_think"
    assert [r.name for r in recipe.rewards] == ["format", "accuracy"]


def test_all_errors_reported_together_with_dotted_paths_and_hints():
    raw = {
        **BASE,
        "model": {"name_or_path": "m", "finetune": "qlora", "lora": {"rank": 8}},
        "rewards": [{"name": "format", "wieght": 2}],
        "grpo": {"lerning_rate": 1e-6, "num_generations": "four"},
        "data": {"train": {"path": "x", "modalities": "CT"}},
        "ouput_dir": "y",
    }
    found = problems(raw)
    expected = [
        "model.finetune: 'qlora' is not one of 'lora', 'full'",
        "unknown key model.lora.rank",
        "unknown key rewards[0].wieght (did you mean 'weight'?)",
        "data.train.modalities: expected a list, got str 'CT'",
        "unknown key ouput_dir (did you mean 'output_dir'?)",
    ]
    for message in expected:
        assert any(message in p for p in found), (message, found)


def test_grpo_keys_checked_against_trl():
    found = problems(
        {
            **BASE,
            "grpo": {
                "lerning_rate": 1e-6,
                "num_generations": "four",
                "max_prompt_length": 512,
                "output_dir": "z",
                "reward_weights": [1, 1],
            },
        }
    )
    assert any("unknown key grpo.lerning_rate (did you mean 'learning_rate'?)" in p for p in found)
    assert any(p.startswith("grpo.num_generations: expected an integer") for p in found)
    assert any("grpo.max_prompt_length: removed in TRL 0.28" in p for p in found)
    assert any("grpo.output_dir: set the top-level `output_dir`" in p for p in found)
    assert any("grpo.reward_weights: set `rewards[i].weight`" in p for p in found)


def test_every_trl_knob_is_reachable():
    recipe = parse_recipe(
        {
            **BASE,
            "grpo": {
                "use_vllm": True,
                "vllm_mode": "server",
                "loss_type": "grpo",
                "beta": 0.04,
                "steps_per_generation": 2,
                "use_liger_kernel": True,
                "gradient_checkpointing": False,
                "learning_rate": "5e-7",
            },
        }
    )
    assert recipe.grpo["learning_rate"] == 5e-7  # YAML 1.1 reads 5e-7 as a string; the field type makes it a number


def test_overrides_apply_before_validation():
    recipe = parse_recipe(
        {**BASE, "rewards": [{"name": "format"}, {"name": "accuracy"}]},
        ["model.finetune=full", "grpo.learning_rate=5e-7", "data.train.modalities=[CT, MRI]", "rewards.1.weight=2"],
    )
    assert recipe.model.finetune == "full" and recipe.grpo["learning_rate"] == 5e-7
    assert recipe.data.train.modalities == ["CT", "MRI"] and recipe.rewards[1].weight == 2
    assert any("unknown key modle" in p for p in problems(BASE, ["modle.finetune=full"]))
    errors: list[str] = []
    apply_overrides({**BASE, "rewards": []}, ["finetune", "rewards.7.weight=1"], errors)
    apply_overrides(BASE, ["rewards.0.weight=1"], errors)
    assert "must look like key.sub=value" in errors[0] and "has no item 7" in errors[1]
    assert "no list rewards to index; set it whole" in errors[2]


def test_prompt_template_and_reward_labels():
    found = problems(
        {**BASE, "prompt": {"template": "medr1_thinkk"}, "rewards": [{"name": "format"}, {"name": "format"}]}
    )
    assert any("did you mean 'medr1_think'" in p for p in found)
    assert any("'format' is used twice" in p for p in found)
    assert parse_recipe({**BASE, "prompt": {"template": "Q: {Question}"}}).prompt.template == "Q: {Question}"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(bad)


@pytest.mark.parametrize(
    "raw, overrides, needle",
    [
        (None, [], "recipe file not found"),
        (BASE, ["model.finetune=qlora"], "model.finetune"),
        (BASE, ["grpo.num_generations=x"], "grpo.num_generations"),
        (BASE, ["rewards=[{name: acuracy}]"], "did you mean 'accuracy'"),
        (BASE, ["data.train.path=/no/such/folder"], "/no/such/folder"),
        (BASE, ["model.name_or_path=./no/such/model"], "./no/such/model"),
        (BASE, ["model.name_or_path=./no/such/model", "rewards=[{name: acuracy}]"], "did you mean 'accuracy'"),
    ],
)
def test_cli_user_errors_exit_2_without_traceback(tmp_path, capsys, raw, overrides, needle):
    path = tmp_path / "recipe.yaml"
    if raw is not None:
        path.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(path), *overrides]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_string_overrides_keep_what_was_typed():
    recipe = parse_recipe(
        BASE,
        [
            "prompt.system=You are radiologist #1: answer briefly",
            "eval.name=on",
            "data.window=off",
            "grpo.save_strategy=no",
            "model.lora.target_modules=[q_proj, v_proj]",
        ],
    )
    assert recipe.prompt.system == "You are radiologist #1: answer briefly"  # not cut at '#', not a mapping
    assert recipe.eval.name == "on" and recipe.data.window == "off" and recipe.grpo["save_strategy"] == "no"
    assert recipe.model.lora.target_modules == ["q_proj", "v_proj"]  # str | list: still YAML


def test_ranges_are_checked():
    found = problems(BASE, ["data.train.limit=-3", "eval.batch_size=0", "eval.num_samples=0"])
    assert any("data.train.limit: must be at least 1" in p for p in found)
    assert any("eval.batch_size: must be at least 1" in p for p in found)
    assert any("eval.num_samples: must be at least 1" in p for p in found)


def test_an_override_with_an_empty_part_is_named():
    assert any("has an empty part" in p for p in problems(BASE, ["grpo..beta=1"]))


def test_values_with_an_obvious_domain_are_checked_before_anything_runs():
    found = problems(
        BASE,
        [
            "data.image_size=-5",
            "model.lora.dropout=2",
            "model.lora.alpha=0",
            "eval.do_sample=true",
            "eval.temperature=-1",
            "eval.top_p=2",
            "output_dir=",
            "eval.open_scorer=judge",
        ],
    )
    for expected in (
        "data.image_size: must be at least 1",
        "model.lora.dropout: must be at least 0 and below 1",
        "model.lora.alpha: must be positive",
        "eval.temperature: must be positive when eval.do_sample is true, got -1",
        "eval.top_p: must be above 0 and at most 1, got 2",
        "output_dir: must name a folder",
        "eval.open_scorer: judge needs the judge's settings",
    ):
        assert any(expected in p for p in found), (expected, found)


def test_evaluation_images_default_to_training_and_are_checked():
    trained = {**BASE, "model": {**BASE["model"], "min_pixels": 3136, "max_pixels": 401408}, "data": {
        **BASE["data"], "image_size": 384}}  # fmt: skip
    assert eval_images(parse_recipe(trained)) == (384, 3136, 401408)
    native = parse_recipe(trained, ["eval.image_size=native", "eval.max_pixels=12845056"])
    assert eval_images(native) == (None, 3136, 12845056)
    assert eval_images(parse_recipe(trained, ["eval.image_size=224"]))[0] == 224
    found = problems(trained, ["eval.image_size=0", "eval.min_pixels=500000", "matrix.min_questions=0"])
    assert any("eval.image_size: must be at least 1 (or native), got 0" in p for p in found)
    assert any("eval.min_pixels: 500000 exceeds model.max_pixels 401408" in p for p in found)
    assert any("matrix.min_questions: must be at least 1" in p for p in found)
    found = problems(trained, ["model.min_pixels=500000"])  # the keys named are the ones the user set
    assert any("model.min_pixels: 500000 exceeds model.max_pixels 401408" in p for p in found)
    assert problems(trained, ["eval.image_size=big", "matrix.metric=f1"]) == [
        "eval.image_size: expected an integer or 'native', got str 'big'",
        "matrix.metric: 'f1' is not one of 'accuracy', 'accuracy_medr1'",
    ]

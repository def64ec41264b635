"""The supervised warm-up before GRPO (`warmup:`): its targets and reordered options, its checks, and a run that warms
up with TRL's SFTTrainer, starts GRPO from the warmed-up model and reuses it on a rerun."""

import json
import random
import shutil

import pytest
from safetensors.torch import load_file

from conftest import tiny_recipe, write_recipe
from med_r1 import warmup
from med_r1.cli import main
from med_r1.config import ConfigError, parse_recipe
from med_r1.prompts import render_prompt
from med_r1.records import Question


def question(**kw) -> Question:
    base = dict(
        question_id="q1",
        dataset="d",
        images=("a.png",),
        question="Which modality?",
        options=("CT", "MRI", "X-Ray", "Ultrasound"),
        answer="B",
        modality="MRI",
        question_type="Modality Recognition",
    )
    return Question(**{**base, **kw})


def test_targets_follow_the_template_and_the_think_fields():
    q = question()
    assert warmup.target(q, "medr1_think", "") == "<think></think><answer>B</answer>"
    assert warmup.target(q, "medr1_think", "It is {answer}.") == "<think>It is MRI.</think><answer>B</answer>"
    assert warmup.target(q, "medr1_nothink", "ignored") == "<answer>B</answer>"
    open_q = question(options=(), answer=" left lung ", answer_type="open")
    assert warmup.target(open_q, "open_think", "{modality}") == "<think>MRI</think><answer>left lung</answer>"


def test_the_options_fields_list_them_as_the_prompt_does():
    """{options} is the prompt's own option list, {options_to_answer} that list read up to the answer's letter, so a
    model can learn to point at its answer by copying the prompt (the quickstart's think)."""
    q = question()
    assert warmup.target(q, "medr1_think", "{modality}. {options_to_answer}") == (
        "<think>MRI. A)CT, B)</think><answer>B</answer>"
    )
    assert (
        warmup.target(question(answer="A"), "medr1_think", "{options_to_answer}")
        == "<think>A)</think><answer>A</answer>"
    )
    assert warmup.target(question(answer="D"), "medr1_think", "{options_to_answer}") == (
        "<think>A)CT, B)MRI, C)X-Ray, D)</think><answer>D</answer>"
    )
    listed = warmup.target(q, "medr1_think", "{options}")
    assert listed == "<think>A)CT, B)MRI, C)X-Ray, D)Ultrasound</think><answer>B</answer>"
    assert listed[len("<think>") : -len("</think><answer>B</answer>")] in render_prompt(
        "medr1_think", q.question, q.options
    )
    open_q = question(options=(), answer="a cyst", answer_type="open")
    assert warmup.target(open_q, "open_think", "[{options_to_answer}]") == "<think>[]</think><answer>a cyst</answer>"


def test_reordered_options_move_the_letter_with_the_answer():
    q = question()
    variants = warmup.reordered(q, 8, random.Random(0))
    assert variants[0] == q and len(variants) == 8
    for v in variants:
        assert sorted(v.options) == sorted(q.options)
        assert v.options["ABCD".index(v.answer)] == "MRI"
    assert len({v.options for v in variants}) > 2  # really reordered
    assert warmup.reordered(question(options=(), answer="x", answer_type="open"), 8, random.Random(0)) == [
        question(options=(), answer="x", answer_type="open")
    ]


def test_records_alternate_the_training_and_evaluation_wording(tiny_model, omni_dir, tmp_path):
    recipe = parse_recipe(
        {
            **tiny_recipe(tiny_model, omni_dir, tmp_path / "run"),
            "warmup": {"enabled": True, "option_orders": 2, "eval_prompt": True},
        }
    )
    columns = warmup.records([question(), question(question_id="q2")], recipe)
    assert columns["question_id"] == ["q1", "q1", "q2", "q2"]
    prompts = [row[-1]["content"] for row in columns["prompt"]]
    assert "Your task:" in prompts[0] and "Your task:" not in prompts[1]  # medr1_think, then medr1_eval_think
    assert all(c[0]["content"].startswith("<think></think><answer>") for c in columns["completion"])


def test_bad_warmup_settings_are_named(tiny_model, omni_dir, tmp_path):
    raw = tiny_recipe(tiny_model, omni_dir, tmp_path / "run")
    raw["warmup"] = {
        "enabled": True,
        "epochs": 0,
        "option_orders": 0,
        "think": "{diagnosis}",
        "sft": {"learning_rate": 1.0, "lr_sheduler_type": "constant"},
    }
    with pytest.raises(ConfigError) as info:
        parse_recipe(raw)
    text = "\n".join(info.value.problems)
    for expected in (
        "warmup.epochs: must be greater than 0",
        "warmup.option_orders: must be at least 1",
        "warmup.think: '{diagnosis}'",
        "fields: {modality}, {question_type}, {answer}, {options}, {options_to_answer}",
        "warmup.sft.learning_rate: set warmup.learning_rate",
        "warmup.sft.lr_sheduler_type",
    ):
        assert expected in text


@pytest.mark.slow
def test_grpo_starts_from_the_warmed_up_model_and_a_rerun_reuses_it(tiny_model, omni_dir, tmp_path, capsys):
    recipe = tiny_recipe(tiny_model, omni_dir, tmp_path / "run", max_steps=1, learning_rate=1e-9)
    recipe["warmup"] = {"enabled": True, "epochs": 1, "learning_rate": 1e-2, "batch_size": 4, "option_orders": 2}
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    assert main(["train", str(path)]) == 0
    out = tmp_path / "run"
    warmed = load_file(out / "warmup" / "model" / "model.safetensors")
    base, final = load_file(tiny_model / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    moved = max((warmed[k] - base[k]).abs().max().item() for k in base)
    assert moved > 1e-3  # the warm-up trained
    # GRPO ran one step at lr 1e-9 from the warmed-up weights: the final model is (nearly) the warm-up's
    assert max((final[k] - warmed[k]).abs().max().item() for k in base) < 1e-5
    record = json.loads((out / "warmup" / "warmup.json").read_text())
    assert record["warmup"]["option_orders"] == 2 and record["model"] == str(tiny_model)
    assert [json.loads(line) for line in (out / "warmup" / "metrics.jsonl").read_text().splitlines()]
    assert "warm-up: 1 epochs of supervised answers" in capsys.readouterr().out

    # The same recipe and data into another folder holding that warm-up reuse it (as a rerun after a failed GRPO
    # run does); a changed warm-up section trains it again.
    for name, orders, expected in (("same", 2, "warm-up: reused"), ("changed", 3, "warm-up: 1 epochs")):
        shutil.copytree(out / "warmup", tmp_path / name / "warmup")
        recipe["output_dir"], recipe["warmup"]["option_orders"] = str(tmp_path / name), orders
        assert main(["train", str(write_recipe(tmp_path / f"{name}.yaml", recipe))]) == 0
        assert expected in capsys.readouterr().out

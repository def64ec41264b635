"""`med-r1 eval`, `matrix` and `compare` on the tiny model: counts add up, reward and metric agree, resume is exact."""

import json
from pathlib import Path

import pytest

from conftest import tiny_recipe, write_recipe
from med_r1.cli import main
from med_r1.eval.run import prediction
from med_r1.records import Question
from med_r1.rewards import get_reward


def eval_recipe(tiny_model, omni_dir, out, **eval_config) -> dict:
    recipe = tiny_recipe(tiny_model, omni_dir, out)
    recipe["data"]["eval"] = {"path": str(omni_dir)}
    recipe["eval"] = {"max_new_tokens": 12, "batch_size": 5, **eval_config}
    return recipe


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_eval_writes_predictions_and_metrics_that_add_up(tiny_model, omni_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", eval_recipe(tiny_model, omni_dir, tmp_path / "run"))
    assert main(["eval", str(recipe), "eval.model=base"]) == 0
    out = tmp_path / "run" / "eval" / "medr1_eval_think-base"
    predictions = lines(out / "predictions.jsonl")
    assert sorted(p["question_id"] for p in predictions) == sorted(
        f"Set {m} & Co_{i:04d}" for m in range(4) for i in range(4)
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["count"] == 16
    for group in ("by_modality", "by_question_type", "by_dataset"):
        assert sum(cell["count"] for cell in metrics[group].values()) == 16
    assert set(metrics["by_modality"]) == {"CT", "MRI", "X-Ray", "Fundus"}
    assert "| CT |" in (out / "metrics.md").read_text()

    accuracy = get_reward("accuracy")
    rewards = accuracy(
        completions=[[{"role": "assistant", "content": p["output"]}] for p in predictions],
        solution=[p["solution"] for p in predictions],
        options=[["red", "green", "blue", "yellow"]] * len(predictions),
        answer_type=[p["answer_type"] for p in predictions],
    )
    assert [r == 1.0 for r in rewards] == [p["correct"] for p in predictions]
    assert all(p["prompt"] == "medr1_eval_think" for p in predictions)


@pytest.mark.parametrize(
    "output",
    ["<answer>B</answer>", "<answer>\nB\n</answer>", "<answer>green</answer>", "<answer>A</answer>", "B", "", "(b)"],
)
def test_metric_and_reward_agree_question_by_question(output):
    question = Question("q", "d", ("x.png",), "What colour?", ("red", "green"), "B", "CT", "Modality Recognition")
    reward = get_reward("accuracy")(completions=[output], solution=["B"], options=[["red", "green"]])
    assert prediction(question, [output], "p")["correct"] == (reward == [1.0])


@pytest.mark.slow
def test_interrupted_eval_resumes_with_one_line_per_question(tiny_model, omni_dir, tmp_path, monkeypatch):
    from med_r1.eval import generate

    recipe = write_recipe(tmp_path / "r.yaml", eval_recipe(tiny_model, omni_dir, tmp_path / "run"))
    real = generate.HFBackend.generate
    calls = {"n": 0}

    def dies_after_two_batches(self, conversations):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-run
        return real(self, conversations)

    monkeypatch.setattr(generate.HFBackend, "generate", dies_after_two_batches)
    assert main(["eval", str(recipe), "eval.model=base"]) == 130
    path = tmp_path / "run" / "eval" / "medr1_eval_think-base" / "predictions.jsonl"
    written = path.read_text().splitlines()
    assert len(written) == 10
    with open(path, "a") as f:
        f.write('{"question_id": "Set 3 & Co_00')  # a torn last line, as if killed mid-write

    monkeypatch.setattr(generate.HFBackend, "generate", real)
    assert main(["eval", str(recipe), "eval.model=base"]) == 0
    ids = [p["question_id"] for p in lines(path)]
    assert len(ids) == len(set(ids)) == 16
    assert path.read_text().splitlines()[:10] == written  # earlier answers kept as they were


@pytest.mark.slow
def test_sampling_reports_pass_at_k_and_majority(tiny_model, omni_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", eval_recipe(tiny_model, omni_dir, tmp_path / "run"))
    assert (
        main(
            ["eval", str(recipe), "eval.model=base", "eval.do_sample=true", "eval.num_samples=3", "eval.name=sampled"]
        )
        == 0
    )
    out = tmp_path / "run" / "eval" / "sampled"
    overall = json.loads((out / "metrics.json").read_text())["overall"]
    assert {"pass@3", "majority@3", "mean_sample_accuracy"} <= overall.keys()
    assert all(len(p["outputs"]) == 3 for p in lines(out / "predictions.jsonl"))


@pytest.mark.slow
def test_eval_of_a_lora_run_and_compare(tiny_model, omni_dir, tmp_path, capsys):
    raw = eval_recipe(tiny_model, omni_dir, tmp_path / "run")
    raw["model"].update(finetune="lora", lora={"r": 4})
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    assert main(["train", str(recipe)]) == 0
    assert main(["eval", str(recipe)]) == 0  # the run's adapter on its base
    assert main(["eval", str(recipe), "eval.model=base"]) == 0
    run = tmp_path / "run"
    settings = json.loads((run / "eval" / "medr1_eval_think" / "eval_config.json").read_text())
    assert settings["adapter"].endswith("run/model")
    capsys.readouterr()
    assert main(["compare", str(run / "eval" / "medr1_eval_think-base"), str(run / "eval" / "medr1_eval_think")]) == 0
    out = capsys.readouterr().out
    assert "| CT |" in out and "95% CI of B - A" in out
    assert main(["compare", str(run), str(run)]) == 2  # two evaluations in the run: ambiguous without --eval


@pytest.mark.parametrize(
    "override, needle",
    [
        ("eval.model={tmp}", "is not a model or LoRA adapter folder"),
        ("data.eval.modalities=[OCT]", "'OCT' matches no question"),
        ("eval.prompt=medr1_eval_thnk", "did you mean 'medr1_eval_think'"),
    ],
)
def test_eval_bad_input_exits_2(tiny_model, omni_dir, tmp_path, capsys, override, needle):
    recipe = write_recipe(tmp_path / "r.yaml", eval_recipe(tiny_model, omni_dir, tmp_path / "run"))
    assert main(["eval", str(recipe), override.format(tmp=tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.slow
def test_matrix_over_two_domains_then_nothing_new(tiny_model, omni_dir, tmp_path, monkeypatch, capsys):
    raw = eval_recipe(tiny_model, omni_dir, tmp_path / "mx")
    raw["data"]["train"]["split"] = "train"
    raw["data"]["eval"]["split"] = "test"
    raw["data"]["split"] = {"by": "image", "test_ratio": 0.5, "seed": 1}
    raw["matrix"] = {"axis": "modality", "train_domains": ["CT", "MRI"]}
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    assert main(["matrix", str(recipe)]) == 0
    out = tmp_path / "mx"
    csv_rows = (out / "matrix.csv").read_text().splitlines()
    assert csv_rows[0].startswith("trained_on,") and [r.split(",")[0] for r in csv_rows[1:]] == ["base", "CT", "MRI"]
    assert (out / "matrix.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "matrix_delta.png").read_bytes().startswith(b"\x89PNG")
    md = (out / "matrix.md").read_text()
    assert "by image (no image in both train and test)" in md and "Improvement over the base model" in md

    import med_r1.eval.run as run
    import med_r1.train as train

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(train, "train", must_not_run)
    monkeypatch.setattr(run, "evaluate", must_not_run)
    capsys.readouterr()
    assert main(["matrix", str(recipe), "--dry-run"]) == 0
    assert "to run: 0 trainings, 0 evaluations" in capsys.readouterr().out
    assert main(["matrix", str(recipe)]) == 0


@pytest.mark.slow
def test_results_of_other_settings_are_never_reused(tiny_model, omni_dir, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", eval_recipe(tiny_model, omni_dir, tmp_path / "run"))
    assert main(["eval", str(recipe), "eval.model=base"]) == 0
    assert main(["eval", str(recipe), "eval.model=base", "eval.max_new_tokens=4"]) == 2
    assert "changed: generation" in capsys.readouterr().err


@pytest.mark.slow
def test_rows_that_failed_on_an_image_are_retried(tiny_model, omni_dir, tmp_path):
    image = omni_dir / "Images" / "Set 1 & Co" / "img (2).png"
    good = image.read_bytes()
    image.write_bytes(b"not an image")
    recipe = write_recipe(tmp_path / "r.yaml", eval_recipe(tiny_model, omni_dir, tmp_path / "run"))
    assert main(["eval", str(recipe), "eval.model=base"]) == 0
    path = tmp_path / "run" / "eval" / "medr1_eval_think-base" / "predictions.jsonl"
    assert [r["question_id"] for r in lines(path) if "error" in r] == ["Set 1 & Co_0002"]
    metrics = json.loads(path.with_name("metrics.json").read_text())
    assert metrics["overall"]["count"] == 15 and metrics["overall"]["errors"] == 1
    image.write_bytes(good)
    assert main(["eval", str(recipe), "eval.model=base"]) == 0
    rows = lines(path)
    assert len(rows) == 16 and not any("error" in r for r in rows)


@pytest.mark.slow
def test_matrix_refuses_cells_trained_with_another_recipe(tiny_model, omni_dir, tmp_path, capsys):
    raw = eval_recipe(tiny_model, omni_dir, tmp_path / "mx")
    raw["grpo"]["max_steps"] = 1
    raw["matrix"] = {"train_domains": ["CT"], "baseline": False}
    recipe = str(write_recipe(tmp_path / "r.yaml", raw))
    assert main(["matrix", recipe]) == 0
    assert main(["matrix", recipe, "grpo.learning_rate=0.5"]) == 2
    err = capsys.readouterr().err
    assert "train-ct" in err and "grpo.learning_rate" in err

"""The shipped quickstart with its whole warm-up and a few GRPO steps (the full run is measured in the README):
`med-r1 train` warms up, trains GRPO from the warmed-up model and writes the run folder, and `med-r1 eval` then finds
Med-R1-parseable answers on the held-out images, which the random model never writes, and scores above chance."""

import json
from pathlib import Path

import pytest

from med_r1.cli import main

REPO = Path(__file__).resolve().parents[1]
SHORT = ["grpo.max_steps=6"]  # the warm-up is the recipe's: with fewer option orders it stays at chance


@pytest.mark.slow
def test_quickstart_warms_up_trains_and_answers_in_format(tmp_path, capsys):
    recipe, out = str(REPO / "recipes" / "quickstart.yaml"), tmp_path / "run"
    assert main(["eval", recipe, f"output_dir={out}", "eval.model=base", "eval.max_new_tokens=16"]) == 0
    base = json.loads((out / "eval" / "medr1_eval_think-base" / "metrics.json").read_text())["overall"]
    assert base["unparseable"] == 1.0  # the random model answers nothing
    capsys.readouterr()

    assert main(["train", recipe, f"output_dir={out}", *SHORT]) == 0
    summary = capsys.readouterr().out
    assert "warm-up: 2 epochs of supervised answers" in summary
    assert (out / "warmup" / "model" / "model.safetensors").exists()
    assert (out / "rewards.png").exists() and (out / "model" / "model.safetensors").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == list(range(1, 7))

    assert main(["eval", recipe, f"output_dir={out}", *SHORT]) == 0
    trained = json.loads((out / "eval" / "medr1_eval_think" / "metrics.json").read_text())["overall"]
    assert trained["count"] == 49 and trained["unparseable"] <= 0.25
    # Held out by image, so this is learned, not remembered: 41-49% over five seeds where chance is 29.9% (README).
    # The margin is kept below that spread so another CPU's rounding does not fail it; a warm-up that learns only the
    # format (about chance) does.
    assert trained["chance"] == pytest.approx(0.299, abs=0.001)
    assert trained["accuracy_medr1"] >= trained["chance"] + 0.06, trained

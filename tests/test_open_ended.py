"""recipes/open_ended_cpu.yaml end to end on the CPU: the tiny policy trained with the local judge (a tiny causal LM
built in code), then evaluated with `eval.open_scorer: judge`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from med_r1.cli import main

pytestmark = pytest.mark.slow  # trains or evaluates the tiny model

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "open_ended_cpu.yaml"


def test_the_cpu_demo_trains_and_evaluates_with_the_local_judge(tmp_path):
    run = tmp_path / "run"
    small = [f"output_dir={run}", "grpo.max_steps=2", "grpo.max_completion_length=8", "data.eval.limit=4"]
    assert main(["train", str(RECIPE), *small]) == 0
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    keys = {k for line in logged for k in line}
    assert {"rewards/judge/mean", "judge/asked", "judge/unparseable"} <= keys  # the judge's replies, counted
    assert any(k.startswith("frac_reward_zero_std/") for k in keys)
    assert main(["eval", str(RECIPE), *small, "eval.max_new_tokens=8"]) == 0
    out = next((run / "eval").iterdir())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["open"]["overall"]["count"] >= 1
    assert {"judged", "unjudged", "exact_match", "token_f1"} <= set(metrics["open"]["overall"])
    judged = (out / "judged.jsonl").read_text().splitlines()
    assert len(judged) == metrics["open"]["overall"]["count"]


def test_tiny_model_builds_a_local_judge(tmp_path, capsys):
    assert main(["tiny-model", str(tmp_path / "judge"), "--arch", "judge"]) == 0
    assert "tiny judge written to" in capsys.readouterr().out
    assert (tmp_path / "judge" / "config.json").is_file()

"""The shipped quickstart learns: the mean total reward of its last fifth of steps beats its first fifth by >= 0.3."""

import json
from pathlib import Path

import pytest

from med_r1.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_visibly_learns(tmp_path):
    assert main(["train", str(REPO / "recipes" / "quickstart.yaml"), f"output_dir={tmp_path / 'run'}"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in rows if "reward" in r]
    fifth = len(rewards) // 5
    first, last = sum(rewards[:fifth]) / fifth, sum(rewards[-fifth:]) / fifth
    assert last - first >= 0.3, (first, last)
    assert (tmp_path / "run" / "rewards.png").exists() and (tmp_path / "run" / "model" / "model.safetensors").exists()

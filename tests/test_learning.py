"""The loop optimises, not only runs: a simple token-level reward must rise within a few dozen steps."""

import json
from pathlib import Path

import pytest

from conftest import tiny_recipe, write_recipe
from med_r1.cli import main

PLUGIN = Path(__file__).parent / "plugins" / "token_reward.py"


@pytest.mark.slow
def test_token_reward_rises(tiny_model, omni_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    capitals = [tokenizer.convert_tokens_to_ids(c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]  # ~6% of a random policy
    recipe = tiny_recipe(
        tiny_model, omni_dir, tmp_path / "run", max_steps=40, learning_rate=3.0e-2, max_completion_length=32
    )
    recipe["rewards"] = [{"name": f"{PLUGIN}:token_set_share", "kwargs": {"token_ids": capitals}}]
    assert main(["train", str(write_recipe(tmp_path / "r.yaml", recipe))]) == 0

    rewards = [
        r["reward"]
        for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
        if "reward" in r
    ]
    assert len(rewards) == 40
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert last - first >= 0.5, (first, last)

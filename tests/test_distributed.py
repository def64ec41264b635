"""Two real training processes on one CPU (torchrun, gloo): both take part, results are written once, and a crash
on one process ends the whole job promptly instead of leaving the other waiting on a collective."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_recipe, write_recipe

PLUGIN = Path(__file__).parent / "plugins" / "token_reward.py"


def torchrun(recipe: Path, cwd: Path, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port for the rendezvous, so parallel test runs do not collide
        "--nproc_per_node",
        "2",
        "-m",
        "med_r1",
        "train",
        str(recipe),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return done, time.perf_counter() - start


def two_process_recipe(tiny_model, omni_dir, tmp_path, **reward_kwargs) -> Path:
    raw = tiny_recipe(tiny_model, omni_dir, tmp_path / "run", max_steps=3)
    raw["rewards"] = [
        {"name": "format_partial"},
        {"name": f"{PLUGIN}:rank_recorder", "kwargs": {"log_dir": str(tmp_path), **reward_kwargs}},
    ]
    return write_recipe(tmp_path / "r.yaml", raw)


@pytest.mark.slow
def test_two_processes_train_together_and_save_once(tiny_model, omni_dir, tmp_path):
    done, _ = torchrun(two_process_recipe(tiny_model, omni_dir, tmp_path), tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):  # both processes generated and scored completions at every step (plus the pre-checks)
        assert len((tmp_path / f"rank-{rank}.txt").read_text().splitlines()) >= 3
    out = tmp_path / "run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]  # logged once, by the main process
    assert rows[-1]["epoch"] == pytest.approx(3 * 2 * 4 / 4 / 16)  # 2 processes x 4 completions per step
    assert (out / "model" / "model.safetensors").exists() and not (out / "model.tmp").exists()


@pytest.mark.slow
def test_a_crash_on_one_process_stops_both_promptly(tiny_model, omni_dir, tmp_path):
    recipe = two_process_recipe(tiny_model, omni_dir, tmp_path, fail_on_rank=1)
    done, seconds = torchrun(recipe, tmp_path, timeout=300)
    assert done.returncode != 0
    assert "deliberate failure on rank 1" in done.stderr
    assert seconds < 120, seconds  # not the 30-minute collective timeout
    assert not (tmp_path / "run" / "model").exists()

"""Fault tolerance on CPU: exact resume after SIGKILL, SIGTERM saves and stops, non-finite steps are skipped,
prompts that cannot fit fail before training."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from conftest import tiny_recipe, write_recipe
from med_r1.cli import main
from med_r1.errors import RunError

PLUGIN = Path(__file__).parent / "plugins" / "token_reward.py"


def capitals(tiny_model) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    return [tokenizer.convert_tokens_to_ids(c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]


def guarded_recipe(tiny_model, omni_dir, out, **reward_kwargs) -> dict:
    recipe = tiny_recipe(tiny_model, omni_dir, out, max_steps=6, save_strategy="steps", save_steps=3)
    kwargs = {"token_ids": capitals(tiny_model), **reward_kwargs}
    recipe["rewards"] = [{"name": f"{PLUGIN}:share_or_die", "kwargs": kwargs}]
    return recipe


def med_r1(*args, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "med_r1", *args], env=env, **popen)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tiny_model, omni_dir, tmp_path):
    straight = write_recipe(tmp_path / "a.yaml", guarded_recipe(tiny_model, omni_dir, tmp_path / "a"))
    assert main(["train", str(straight)]) == 0

    killed = write_recipe(tmp_path / "b.yaml", guarded_recipe(tiny_model, omni_dir, tmp_path / "b", die_at_step=4))
    assert med_r1("train", str(killed)).wait(timeout=300) == -signal.SIGKILL  # killed during step 5
    assert (tmp_path / "b" / "checkpoint-3" / "med_r1_complete").exists() and not (tmp_path / "b" / "model").exists()
    assert main(["train", str(killed), "resume=true", "rewards.0.kwargs.die_at_step=null"]) == 0

    a, b = load_file(tmp_path / "a/model/model.safetensors"), load_file(tmp_path / "b/model/model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)  # bit-exact on CPU
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps[:-1] == [1, 2, 3, 4, 5, 6]  # the resumed run logged steps 4-6 once; the last line is the summary


@pytest.mark.slow
def test_half_written_checkpoint_is_never_used(tiny_model, omni_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", guarded_recipe(tiny_model, omni_dir, tmp_path / "run", die_at_step=4))
    assert med_r1("train", str(recipe)).wait(timeout=300) == -signal.SIGKILL
    partial = tmp_path / "run" / "checkpoint-5"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 10)  # as if killed while saving step 5
    assert (
        main(["train", str(recipe), "resume=true", "rewards.0.kwargs.die_at_step=null", "grpo.save_total_limit=1"])
        == 0
    )
    state = json.loads((tmp_path / "run" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and not partial.exists()
    kept = sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*"))
    assert kept == ["checkpoint-6"] and (tmp_path / "run" / "checkpoint-6" / "med_r1_complete").exists()  # pruned


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_stops_cleanly(tiny_model, omni_dir, tmp_path):
    raw = guarded_recipe(tiny_model, omni_dir, tmp_path / "run")
    raw["grpo"].update(max_steps=500, save_strategy="no")
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    process = med_r1("train", str(recipe), stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: stopped after step" in err and "resume=true" in err and "Traceback" not in err
    checkpoints = list((tmp_path / "run").glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "med_r1_complete").exists()
    assert not (tmp_path / "run" / "model").exists()  # a stopped run is not a finished one
    assert main(["train", str(recipe), "resume=true", "grpo.max_steps=" + str(int(checkpoints[0].name[11:]) + 2)]) == 0
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


class NaNAtSteps(TrainerCallback):
    """Fault injection: the final norm outputs NaN in the training pass of the given steps (like a bf16 overflow)."""

    def __init__(self, steps):
        self.steps, self.handle = set(steps), None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        if state.global_step in self.steps:
            norm = model.get_decoder().norm if hasattr(model, "get_decoder") else model.model.language_model.norm
            self.handle = norm.register_forward_hook(poison)


def poison(module, inputs, output):
    return output * float("nan") if torch.is_grad_enabled() else output  # the training pass only, not generation


def trainer_with_nans(tiny_model, omni_dir, out, steps, **guards):
    from med_r1.config import parse_recipe
    from med_r1.plan import build_plan
    from med_r1.train import build_trainer

    raw = guarded_recipe(tiny_model, omni_dir, out)
    raw["grpo"]["save_strategy"] = "no"
    raw["guards"] = guards
    recipe = parse_recipe(raw)
    return build_trainer(recipe, build_plan(recipe, cuda=False), cuda=False, callbacks=[NaNAtSteps(steps)])


@pytest.mark.slow
def test_nonfinite_step_is_skipped_and_counted(tiny_model, omni_dir, tmp_path):
    trainer = trainer_with_nans(tiny_model, omni_dir, tmp_path / "run", steps=[2])
    before = {}

    class Snapshot(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            before[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()}

    trainer.add_callback(Snapshot())
    trainer.train()
    params = dict(trainer.model.named_parameters())
    assert all(before[2][n].equal(before[3][n]) for n in params)  # the poisoned step changed nothing
    assert not all(before[3][n].equal(before[4][n]) for n in params)  # the next one trained again
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["guards/nonfinite_skipped"] for r in rows if "loss" in r] == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    expected = {"timing/generate_s", "timing/rewards_s", "timing/update_s", "perf/tokens_per_s", "perf/peak_rss_gb"}
    assert expected <= rows[0].keys()


@pytest.mark.slow
def test_nonfinite_steps_in_a_row_stop_the_run(tiny_model, omni_dir, tmp_path):
    trainer = trainer_with_nans(tiny_model, omni_dir, tmp_path / "run", steps=range(1, 6), max_nonfinite_steps=2)
    with pytest.raises(RunError, match="2 optimizer steps in a row had a non-finite loss or gradient norm"):
        trainer.train()
    assert trainer.state.global_step == 2 and trainer.nonfinite_skipped == 2


def test_prompt_too_long_for_the_model_fails_before_training(tiny_model, omni_dir, tmp_path, capsys):
    raw = tiny_recipe(tiny_model, omni_dir, tmp_path / "run")
    raw["prompt"] = {"template": "{Question} " + "Look closely at every detail. " * 700}  # > 4096 tokens
    assert main(["validate", str(write_recipe(tmp_path / "r.yaml", raw))]) == 2
    err = capsys.readouterr().err
    assert "question Set 0 & Co_0000" in err and "the model's limit" in err


def test_vllm_colocate_refuses_pixel_bounds_it_cannot_see(tiny_model, omni_dir, tmp_path, capsys):
    raw = tiny_recipe(tiny_model, omni_dir, tmp_path / "run", use_vllm=True, vllm_mode="colocate")
    raw["model"].update(min_pixels=56 * 56, max_pixels=56 * 56)
    recipe = str(write_recipe(tmp_path / "r.yaml", raw))
    assert main(["validate", recipe]) == 2
    assert "other image tokens than training's" in capsys.readouterr().err
    assert main(["validate", recipe, "data.image_size=56"]) == 0  # 56x56: both bounds give 4 image tokens
    assert main(["validate", recipe, "grpo.vllm_mode=server"]) == 0
    assert "--mm-processor-kwargs" in capsys.readouterr().out

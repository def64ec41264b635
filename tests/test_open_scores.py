"""`eval.open_scorer: judge`: open answers judged next to exact match and token F1, against a real chat-completions
server on 127.0.0.1; judging resumes; a judge that is down fails before any generation."""

from __future__ import annotations

import json

import pytest
from chat_server import ChatServer, fenced, free_port

from conftest import tiny_recipe, write_recipe
from med_r1.cli import main

pytestmark = pytest.mark.slow  # trains or evaluates the tiny model


def open_eval_recipe(tiny_model, omni_dir, out, judge: dict) -> dict:
    recipe = tiny_recipe(tiny_model, omni_dir, out)
    recipe["data"]["train"]["open_ended"] = True
    recipe["data"]["eval"] = {"path": str(omni_dir), "open_ended": True, "limit": 6}
    recipe["eval"] = {"max_new_tokens": 6, "batch_size": 6, "open_scorer": "judge", "judge": judge}
    return recipe


def test_open_answers_are_judged_next_to_exact_match(tiny_model, omni_dir, tmp_path):
    with ChatServer(reply=lambda p: "incorrect" if "Reference answer: red" in p else "correct") as server:
        judge = {"base_url": server.url, "model": "judge", "cache_dir": str(tmp_path / "cache")}
        path = write_recipe(tmp_path / "r.yaml", open_eval_recipe(tiny_model, omni_dir, tmp_path / "run", judge))
        assert main(["eval", str(path), "eval.model=base"]) == 0
        out = next((tmp_path / "run" / "eval").iterdir())
        predictions = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
        judged = [json.loads(x) for x in (out / "judged.jsonl").read_text().splitlines()]
        assert len(predictions) == len(judged) == 6
        assert all(p["answer_type"] == "open" for p in predictions)  # the colours, asked without their options
        expected = {p["question_id"]: (0.0 if p["solution"] == "red" or not p["parsed"] else 1.0) for p in predictions}
        assert {j["question_id"]: j["score"] for j in judged} == expected
        asked = server.received
        assert 1 <= asked <= 1 + len({(p["solution"], p["parsed"]) for p in predictions if p["parsed"]})  # +probe
        metrics = json.loads((out / "metrics.json").read_text())["open"]
        assert metrics["overall"]["count"] == 6 and metrics["overall"]["unjudged"] == 0
        assert metrics["overall"]["judged"] == sum(expected.values()) / 6
        assert set(metrics["overall"]) == {"count", "exact_match", "token_f1", "judged", "unjudged"}
        assert "judged" in (out / "metrics.md").read_text()
        # Run again: predictions and verdicts are reused; the judge is asked only the probe (which passes the cache:
        # it checks that the judge is up).
        assert main(["eval", str(path), "eval.model=base"]) == 0
        assert server.received == asked + 1
        assert len((out / "judged.jsonl").read_text().splitlines()) == 6


def test_replies_that_are_no_verdict_are_counted_not_scored(tiny_model, omni_dir, tmp_path):
    with ChatServer(reply=lambda p: "correct" if fenced(p).startswith("ok") else "maybe") as server:
        judge = {"base_url": server.url, "model": "judge", "cache_dir": str(tmp_path / "cache")}
        path = write_recipe(tmp_path / "r.yaml", open_eval_recipe(tiny_model, omni_dir, tmp_path / "run", judge))
        assert main(["eval", str(path), "eval.model=base"]) == 0  # the probe's non-verdict is a warning only
    out = next((tmp_path / "run" / "eval").iterdir())
    metrics = json.loads((out / "metrics.json").read_text())["open"]["overall"]
    parsed = [json.loads(x)["parsed"] for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert metrics["unjudged"] == sum(bool(p) for p in parsed)
    # empty answers score 0 without asking; with no verdict at all there is no judged accuracy (not 0%)
    assert metrics["judged"] == (None if metrics["unjudged"] == metrics["count"] else 0.0)


def test_a_judge_that_is_down_fails_before_generation(tiny_model, omni_dir, tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    judge = {"base_url": url, "model": "judge-7b", "cache_dir": str(tmp_path / "cache"), "retries": 0}
    path = write_recipe(tmp_path / "r.yaml", open_eval_recipe(tiny_model, omni_dir, tmp_path / "run", judge))
    assert main(["eval", str(path), "eval.model=base"]) == 2
    err = capsys.readouterr().err
    assert "eval.open_scorer: judge" in err and url in err and "vllm serve judge-7b" in err
    assert not list((tmp_path / "run").glob("eval/*/predictions.jsonl"))


def test_the_judge_settings_default_to_the_judge_rewards(tiny_model, omni_dir, tmp_path, capsys):
    recipe = open_eval_recipe(tiny_model, omni_dir, tmp_path / "run", {})
    path = write_recipe(tmp_path / "r.yaml", recipe)
    assert main(["eval", str(path), "eval.model=base"]) == 2
    assert "set eval.judge" in capsys.readouterr().err
    with ChatServer() as server:
        recipe["rewards"] = [{"name": "judge", "kwargs": {"base_url": server.url, "model": "j", "cache_dir": "c"}}]
        recipe["rewards"][0]["kwargs"]["cache_dir"] = str(tmp_path / "cache")
        path = write_recipe(tmp_path / "r.yaml", recipe)
        assert main(["eval", str(path), "eval.model=base"]) == 0
        assert server.models and set(server.models) == {"j"}

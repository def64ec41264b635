"""`med-r1 data difficulty` on the tiny model (pass rates that add up, resumable, other settings refused), and the
recipe keys reading its file in training: the pass-rate band, the easy-to-hard order and balanced domains, recorded in
the run folder; groups without signal logged per modality; dynamic sampling."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import tiny_recipe, write_recipe
from med_r1.cli import main
from med_r1.config import parse_recipe
from med_r1.plan import build_plan

pytestmark = pytest.mark.slow  # trains or evaluates the tiny model

SAMPLES = 3


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def rated(tiny_model, tmp_path_factory):
    """A recipe over a 16-question set and the pass-rate file `med-r1 data difficulty` wrote for it."""
    from conftest import make_omnimedvqa

    root = tmp_path_factory.mktemp("difficulty")
    recipe = tiny_recipe(tiny_model, make_omnimedvqa(root / "omni"), root / "run", max_completion_length=8)
    path = write_recipe(root / "r.yaml", recipe)
    assert main(["data", "difficulty", str(path), "--samples", str(SAMPLES)]) == 0
    return path, recipe, root / "run" / "difficulty" / "pass_rates.jsonl"


def test_pass_rates_add_up(rated):
    path, recipe, rates = rated
    questions = {q.question_id: q for q in build_plan(parse_recipe(recipe), "difficulty").train}
    lines = rows(rates)
    assert sorted(r["question_id"] for r in lines) == sorted(questions)  # one line per training question
    for r in lines:
        assert r["samples"] == SAMPLES == len(r["scores"]) == len(r["parsed"])
        assert r["pass_rate"] == pytest.approx(sum(r["scores"]) / SAMPLES)
        assert r["correct"] == sum(s == 1.0 for s in r["scores"])
        # Scored as evaluation scores: the parsed letter against the answer.
        answer = questions[r["question_id"]].answer
        assert r["scores"] == [float(p == answer) for p in r["parsed"]]
        assert r["modality"] == questions[r["question_id"]].modality
    summary = json.loads((rates.parent / "summary.json").read_text())
    overall = summary["overall"]
    assert overall["questions"] == 16 == overall["never"] + overall["sometimes"] + overall["always"]
    assert sum(c["questions"] for c in summary["by_modality"].values()) == 16
    assert overall["mean_pass_rate"] == pytest.approx(sum(r["pass_rate"] for r in lines) / 16)


def test_an_interrupted_run_resumes_and_other_settings_are_refused(rated, capsys):
    path, recipe, rates = rated
    lines = rates.read_text().splitlines(keepends=True)
    rates.write_text("".join(lines[:10]) + lines[10][:7])  # ten lines kept, the eleventh torn mid-write
    assert main(["data", "difficulty", str(path), "--samples", str(SAMPLES)]) == 0
    assert json.loads((rates.parent / "summary.json").read_text())["sampled_now"] == 6
    again = rates.read_text().splitlines(keepends=True)
    assert again[:10] == lines[:10] and len(again) == 16
    assert main(["data", "difficulty", str(path), "--samples", str(SAMPLES)]) == 0
    assert json.loads((rates.parent / "summary.json").read_text())["sampled_now"] == 0
    capsys.readouterr()
    assert main(["data", "difficulty", str(path), "--samples", "2"]) == 2
    assert "different evaluation (changed: sampling)" in capsys.readouterr().err
    assert len(rates.read_text().splitlines()) == 16


def with_rates(rated, tmp_path, rates: dict[str, float]) -> dict:
    """The rated recipe over a pass-rate file of our own (the tiny model solves almost nothing, so bands and orders
    need rates spread out to be tested)."""
    _, recipe, _ = rated
    file = tmp_path / "rates.jsonl"
    file.write_text("".join(json.dumps({"question_id": q, "pass_rate": r}) + "\n" for q, r in rates.items()))
    recipe = json.loads(json.dumps(recipe))
    recipe["data"]["pass_rates"] = str(file)
    recipe["output_dir"] = str(tmp_path / "run")
    return recipe


def test_the_plan_keeps_the_band_the_file_says(rated, tmp_path):
    _, _, file = rated
    real = {r["question_id"]: r["pass_rate"] for r in rows(file)}
    spread = {q: i / 15 for i, q in enumerate(sorted(real))}
    recipe = with_rates(rated, tmp_path, spread)
    recipe["data"]["train"]["pass_rate"] = [0.2, 0.8]
    plan = build_plan(parse_recipe(recipe), "validate")
    assert {q.question_id for q in plan.train} == {q for q, r in spread.items() if 0.2 <= r <= 0.8}
    assert plan.schedule.dropped == 16 - len(plan.train)
    # The file the command wrote works as it is (pass rates on the tiny model: the band keeps those it says).
    recipe["data"]["pass_rates"] = str(file)
    recipe["data"]["train"]["pass_rate"] = [0.0, 0.5]
    plan = build_plan(parse_recipe(recipe), "validate")
    assert {q.question_id for q in plan.train} == {q for q, r in real.items() if r <= 0.5}


def test_validate_prints_the_band_and_the_counts_per_domain(rated, tmp_path, capsys):
    _, _, file = rated
    recipe = with_rates(rated, tmp_path, {r["question_id"]: 0.5 for r in rows(file)})
    recipe["data"] |= {"balance": "modality"}
    recipe["data"]["train"]["pass_rate"] = [0.1, 0.9]
    path = write_recipe(tmp_path / "r.yaml", recipe)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "pass-rate band [0.1, 0.9]: kept 16, dropped 0" in out
    assert "each epoch (16 questions) draws per modality: CT 4 of 4, Fundus 4 of 4, MRI 4 of 4, X-Ray 4 of 4" in out


def recorder(tmp_path) -> dict:
    """A reward plugin that writes down which questions each reward call saw (the order training drew them in)."""
    log = tmp_path / "seen.jsonl"
    (tmp_path / "seen_reward.py").write_text(
        "import json\n"
        "def seen(completions, question_id, **kwargs):\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(json.dumps(question_id) + '\\n')\n"
        "    return [0.0] * len(completions)\n"
    )
    return {"name": f"{tmp_path / 'seen_reward.py'}:seen", "weight": 0.0}


def test_training_follows_the_curriculum_and_balance_and_records_them(rated, tmp_path):
    _, _, file = rated
    modality = {r["question_id"]: r["modality"] for r in rows(file)}
    spread = {q: i / 15 for i, q in enumerate(sorted(modality))}
    recipe = with_rates(rated, tmp_path, spread)
    recipe["data"] |= {"order": "easy_to_hard", "balance": "modality"}
    recipe["data"]["train"]["pass_rate"] = [0.1, 1.0]
    recipe["rewards"].append(recorder(tmp_path))
    recipe["grpo"] |= {"max_steps": 3, "per_device_train_batch_size": 4, "num_generations": 2}
    path = write_recipe(tmp_path / "train.yaml", recipe)
    assert main(["train", str(path)]) == 0
    run = tmp_path / "run"
    schedule = json.loads((run / "data_schedule.json").read_text())
    kept = [q for q, r in spread.items() if r >= 0.1]
    assert schedule["questions"] == len(kept) == 14 and schedule["pass_rates"]["dropped"] == 2
    assert schedule["order"] == "easy_to_hard" and schedule["balance"] == "modality"
    available = Counter(modality[q] for q in kept)
    assert schedule["available"] == dict(sorted(available.items()))
    assert set(schedule["per_epoch"].values()) == {14 // 4}
    assert (run / "pass_rates.jsonl").read_bytes() == (tmp_path / "rates.jsonl").read_bytes()
    # The questions training drew, each num_generations times in a row: the schedule's first epoch, easiest first.
    calls = rows(tmp_path / "seen.jsonl")[-3:]  # the three steps' calls (the check before training comes first)
    seen = [q for line in calls for q in line]
    assert len(seen) == 3 * 4 and all(seen[i] == seen[i + 1] for i in range(0, len(seen), 2))
    drawn = seen[::2]
    plan = build_plan(parse_recipe(recipe), "validate")
    assert drawn == [plan.schedule.questions[i].question_id for i in plan.schedule.epoch(0)][:6]
    assert [spread[q] for q in drawn] == sorted((spread[q] for q in drawn), reverse=True)
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    keys = {k for line in logged for k in line}
    assert any(k.startswith("frac_reward_zero_std/") for k in keys)
    per_modality = {k.split("/", 1)[1] for k in keys if k.startswith("frac_reward_zero_std/")}
    assert per_modality <= set(modality.values())


def test_dynamic_sampling_replaces_groups_without_signal(rated, tmp_path):
    _, recipe, _ = rated
    counter = tmp_path / "calls"
    (tmp_path / "flaky.py").write_text(
        "from pathlib import Path\n"
        "def flaky(completions, **kwargs):\n"
        f"    path = Path({str(counter)!r})\n"
        "    calls = int(path.read_text()) + 1 if path.exists() else 1\n"
        "    path.write_text(str(calls))\n"
        "    # Every second call (a step's first round) gives no signal; the next round does.\n"
        "    return [0.0] * len(completions) if calls % 2 == 0 else [float(i % 2) for i in range(len(completions))]\n"
    )
    recipe = json.loads(json.dumps(recipe))
    recipe["output_dir"] = str(tmp_path / "run")
    recipe["rewards"] = [{"name": f"{tmp_path / 'flaky.py'}:flaky"}]
    recipe["dynamic_sampling"] = {"enabled": True, "max_rounds": 3}
    path = write_recipe(tmp_path / "train.yaml", recipe)
    assert main(["train", str(path)]) == 0
    assert int(counter.read_text()) == 1 + 2 * 2  # the check, then two rounds in each of the two steps
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in logged if "dynamic_sampling/rounds" in line]
    assert len(steps) == 2
    assert all(
        line["dynamic_sampling/rounds"] == 2.0 and line["dynamic_sampling/zero_signal_kept"] == 0.0 for line in steps
    )
    assert all(line["frac_reward_zero_std"] == 0.5 for line in steps)  # TRL's own figure: over both rounds' groups


def test_dynamic_sampling_needs_whole_groups_per_process(rated):
    # On one process TRL's own check (generation_batch_size divisible by num_generations) says as much; with several,
    # a process's share of the batch must still hold whole groups.
    from types import SimpleNamespace

    from med_r1.plan import dynamic_sampling_problems

    _, recipe, _ = rated
    recipe = parse_recipe({**recipe, "dynamic_sampling": {"enabled": True}})
    args = SimpleNamespace(
        per_device_train_batch_size=2, steps_per_generation=1, num_generations=4, multi_objective_aggregation="x"
    )
    problems = [str(p) for p in dynamic_sampling_problems(recipe, args)]
    assert "not a multiple of grpo.num_generations=4" in problems[0]
    assert "multi_objective_aggregation=sum_then_normalize" in problems[1]
    args.per_device_train_batch_size, args.multi_objective_aggregation = 8, "sum_then_normalize"
    assert dynamic_sampling_problems(recipe, args) == []


def test_open_questions_are_rated_by_the_judge(rated, tmp_path):
    from chat_server import ChatServer

    _, recipe, _ = rated
    recipe = json.loads(json.dumps(recipe))
    recipe["data"]["train"] |= {"open_ended": True, "limit": 4}
    with ChatServer(reply=lambda p: "partial") as server:
        recipe["eval"] = {"open_scorer": "judge", "judge": {"base_url": server.url, "model": "j", "cache_dir": "c"}}
        recipe["eval"]["judge"]["cache_dir"] = str(tmp_path / "cache")
        path = write_recipe(tmp_path / "open.yaml", recipe)
        assert main(["data", "difficulty", str(path), "--samples", "2", "--out", str(tmp_path / "rates")]) == 0
        assert server.received >= 1  # the probe, then one request per distinct answer
    lines = rows(tmp_path / "rates" / "pass_rates.jsonl")
    assert len(lines) == 4 and all(r["answer_type"] == "open" for r in lines)
    for r in lines:  # the judge's "partial" for every answer it saw; no answer scores 0 without asking
        assert r["scores"] == [0.5 if p else 0.0 for p in r["parsed"]]
    settings = json.loads((tmp_path / "rates" / "eval_config.json").read_text())
    assert settings["scorer"].startswith("j@") and settings["open_ended"] is True

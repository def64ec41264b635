"""Which training questions in what order: the pass-rate band, easy-to-hard, balanced domains, TRL's repeat layout
over the order (`med_r1.sampler`), and the groups-without-signal arithmetic (`med_r1.groups`). No model."""

from __future__ import annotations

import json
from collections import Counter
from itertools import groupby

import pytest
import torch
from trl.trainer.utils import RepeatSampler

from med_r1.config import parse_recipe
from med_r1.data.schedule import Schedule, build_schedule, read_pass_rates
from med_r1.errors import DataError
from med_r1.groups import merge_rounds, no_advantage, share_by_domain, zero_signal
from med_r1.records import Question
from med_r1.sampler import ScheduledSampler


def question(i: int, modality: str, question_type: str = "Modality Recognition") -> Question:
    return Question(f"q{i}", "set", (), "What is shown?", ("a", "b"), "A", modality, question_type)


def questions(counts: dict[str, int]) -> list[Question]:
    names = [modality for modality, n in counts.items() for _ in range(n)]
    return [question(i, modality) for i, modality in enumerate(names)]


def rates_file(tmp_path, rates: dict[str, float]):
    path = tmp_path / "pass_rates.jsonl"
    path.write_text("".join(json.dumps({"question_id": q, "pass_rate": r}) + "\n" for q, r in rates.items()))
    return path


def recipe(train: dict | None = None, **data):
    data = {"train": {"path": "x", **(train or {})}, **data}
    return parse_recipe({"model": {"name_or_path": "m"}, "data": data, "output_dir": "o"})


RATES = {"q0": 0.0, "q1": 0.25, "q2": 1.0, "q3": 0.5, "q4": 0.75, "q5": 0.25}


def test_band_keeps_what_the_file_says_and_the_curriculum_goes_easy_to_hard(tmp_path):
    path = rates_file(tmp_path, RATES)
    qs = questions({"CT": 3, "MRI": 3})
    r = recipe({"pass_rate": [0.2, 0.8]}, pass_rates=str(path), order="easy_to_hard")
    schedule = build_schedule(r, qs, seed=1)
    assert [q.question_id for q in schedule.questions] == ["q1", "q3", "q4", "q5"]  # 0.0 and 1.0 left out
    assert schedule.dropped == 2 and schedule.source == str(path)
    for epoch in range(3):
        order = [schedule.questions[i].question_id for i in schedule.epoch(epoch)]
        assert [RATES[q] for q in order] == [0.75, 0.5, 0.25, 0.25]
    ties = {tuple(schedule.questions[i].question_id for i in schedule.epoch(e))[2:] for e in range(12)}
    assert ties == {("q1", "q5"), ("q5", "q1")}  # equal pass rates keep a per-epoch shuffled order
    summary = schedule.summary()["pass_rates"]
    assert summary["kept"] == 4 and summary["dropped"] == 2 and summary["band"] == [0.2, 0.8]
    assert summary["kept_never_solved"] == 0 and len(summary["sha256"]) == 64


def test_pass_rates_missing_or_malformed_name_what_to_run(tmp_path):
    qs = questions({"CT": 3})
    with pytest.raises(DataError, match="does not exist.*med-r1 data difficulty"):
        build_schedule(recipe(pass_rates=str(tmp_path / "none.jsonl"), order="easy_to_hard"), qs, 0)
    path = rates_file(tmp_path, {"q0": 0.5})
    with pytest.raises(DataError, match="2 of 3 training questions have no pass rate"):
        build_schedule(recipe(pass_rates=str(path), order="easy_to_hard"), qs, 0)
    path.write_text('{"question_id": "q0", "pass_rate": 1.5}\n')
    with pytest.raises(DataError, match=":1: a pass-rate line needs"):
        read_pass_rates(path)


def test_a_band_that_keeps_nothing_says_what_the_rates_are(tmp_path):
    path = rates_file(tmp_path, {"q0": 0.0, "q1": 1.0, "q2": 0.0})
    r = recipe({"pass_rate": [0.1, 0.9]}, pass_rates=str(path))
    with pytest.raises(DataError, match=r"keeps none of the 3.*0: 2, between: 0, 1: 1\); widen it"):
        build_schedule(r, questions({"CT": 3}), 0)


def test_without_band_or_order_no_file_is_read_and_the_order_is_trls(tmp_path):
    schedule = build_schedule(recipe(pass_rates=str(tmp_path / "absent")), questions({"CT": 2}), 0)
    assert not schedule.custom and schedule.rates is None


def test_balanced_epochs_have_equal_domain_counts_and_rotate_through_large_domains():
    qs = questions({"CT": 2, "MRI": 10, "X-Ray": 6})
    schedule = Schedule(qs, balance="modality", seed=3)
    assert schedule.per_domain == 6 and schedule.epoch_size == 18
    seen_mri = []
    for epoch in range(5):
        picks = schedule.epoch(epoch)
        assert Counter(qs[i].modality for i in picks) == {"CT": 6, "MRI": 6, "X-Ray": 6}
        seen_mri += [i for i in picks if qs[i].modality == "MRI"]
    # MRI's 10 questions in 30 draws: each exactly three times (a fresh permutation once all were used).
    assert set(Counter(seen_mri).values()) == {3}
    # Deterministic from the seed alone: another process or a resume draws the same epochs.
    assert Schedule(qs, balance="modality", seed=3).epoch(4) == schedule.epoch(4)
    assert Schedule(qs, balance="modality", seed=4).epoch(4) != schedule.epoch(4)
    summary = schedule.summary()
    assert summary["per_epoch"] == {"CT": 6, "MRI": 6, "X-Ray": 6}
    assert summary["available"] == {"CT": 2, "MRI": 10, "X-Ray": 6}
    assert "draws per modality: CT 6 of 2, MRI 6 of 10, X-Ray 6 of 6" in "\n".join(schedule.lines())


def test_balance_by_question_type_and_with_the_curriculum():
    qs = [question(i, "CT", "Anatomy" if i < 6 else "Disease") for i in range(8)]
    rates = {q.question_id: i / 10 for i, q in enumerate(qs)}
    schedule = Schedule(qs, order="easy_to_hard", balance="question_type", seed=0, rates=rates)
    picks = schedule.epoch(0)
    assert Counter(qs[i].question_type for i in picks) == {"Anatomy": 4, "Disease": 4}
    assert [rates[qs[i].question_id] for i in picks] == sorted((rates[qs[i].question_id] for i in picks), reverse=True)


@pytest.mark.parametrize("generations,batch,repeats", [(2, 3, 1), (4, 2, 2), (3, 1, 3)])
def test_sampler_keeps_trls_layout_over_the_schedules_order(generations, batch, repeats):
    qs = questions({"CT": 3, "MRI": 9})
    schedule = Schedule(qs, balance="modality", seed=0)
    trl = RepeatSampler(qs, mini_repeat_count=generations, batch_size=batch, repeat_count=repeats, seed=0)
    sampler = ScheduledSampler(trl, schedule)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert len(indices) == len(sampler)
        runs = [(k, len(list(g))) for k, g in groupby(indices)]
        assert all(n % generations == 0 for _, n in runs)  # each prompt num_generations times in a row
        # Batch by batch, as TRL lays it out: a batch of distinct questions, repeated repeat_count times.
        chunk = batch * generations
        blocks = [indices[i : i + chunk] for i in range(0, len(indices), chunk)]
        distinct = [b[::generations] for b in blocks[::repeats]]
        assert all(blocks[i] == blocks[i - i % repeats] for i in range(len(blocks)))
        order = schedule.epoch(epoch)
        assert [i for b in distinct for i in b] == order[: len(distinct) * batch]


def test_a_resumed_sampler_draws_the_epoch_it_was_set_to():
    schedule = Schedule(questions({"CT": 2, "MRI": 6}), order="shuffle", balance="modality", seed=5)
    trl = RepeatSampler(range(8), mini_repeat_count=2, batch_size=2, repeat_count=1, seed=0)
    running = ScheduledSampler(trl, schedule)
    first, second = list(running), list(running)  # without set_epoch, each pass is the next epoch
    resumed = ScheduledSampler(trl, schedule)
    resumed.set_epoch(1)  # what transformers' Trainer calls before each epoch, a resumed one included
    assert list(resumed) == second != first


def test_zero_signal_per_group_and_per_domain():
    nan = float("nan")
    rewards = torch.tensor(
        [[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0], [nan, nan], [1.0, 0.0], [nan, nan], [nan, nan]]
    )  # 4 groups of 2 rows, 2 reward functions
    flags = zero_signal(rewards, torch.tensor([1.0, 1.0]), group_size=2).tolist()
    assert flags == [True, False, True, True]  # equal; 1 vs 2; one scored row only; nothing scored
    assert share_by_domain(flags, ["CT", "CT", "MRI", "MRI"]) == {"CT": 0.5, "MRI": 1.0}
    # Weights decide: the same rows differ only in a reward of weight 0.
    assert zero_signal(rewards[:4], torch.tensor([0.0, 1.0]), 2).tolist() == [True, True]
    assert no_advantage(torch.tensor([0.0, 0.0, 0.5, -0.5]), 2).tolist() == [True, False]


def test_merge_rounds_repads_and_keeps_the_picked_rows():
    def batch(prompt_len, completion_len, value):
        return {
            "prompt_ids": torch.full((4, prompt_len), value),
            "prompt_mask": torch.ones(4, prompt_len, dtype=torch.long),
            "completion_ids": torch.full((4, completion_len), value),
            "completion_mask": torch.ones(4, completion_len, dtype=torch.long),
            "advantages": torch.arange(4.0) + 10 * value,
            "old_per_token_logps": None,
            "num_items_in_batch": torch.tensor(99),
        }

    merged = merge_rounds([batch(2, 3, 1), batch(3, 1, 2)], [(0, 2), (0, 3), (1, 0), (1, 1)], pad_token_id=0)
    assert merged["prompt_ids"].tolist() == [[0, 1, 1], [0, 1, 1], [2, 2, 2], [2, 2, 2]]  # left-padded
    assert merged["prompt_mask"].tolist()[0] == [0, 1, 1]
    assert merged["completion_ids"].tolist()[2] == [2, 0, 0]  # right-padded, masked out
    assert merged["completion_mask"].tolist()[2] == [1, 0, 0]
    assert merged["advantages"].tolist() == [12.0, 13.0, 20.0, 21.0]
    assert merged["old_per_token_logps"] is None and "num_items_in_batch" not in merged
    assert merge_rounds([{**batch(2, 2, 1), "new_key": torch.ones(4, 2)}], [(0, 0)], 0) is None  # unknown layout

"""Rewards: tables of completions and expected scores, plugins by every route, guards and the gold self-check."""

import doctest
import importlib

import pytest

from med_r1.cli import main
from med_r1.errors import ConfigError
from med_r1.rewards import Reward, available, get_reward
from med_r1.rewards.checks import check_rewards, gold_completion
from med_r1.rewards.guard import GuardedReward, RewardError


def score(name, texts, **columns):
    n = len(texts)
    columns.setdefault("solution", ["B"] * n)
    return get_reward(name)(completions=[[{"role": "assistant", "content": t}] for t in texts], **columns)


@pytest.mark.parametrize("module", ["format", "accuracy", "shaping", "registry"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(f"med_r1.rewards.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_every_builtin_has_a_docstring_example():
    for name, reward in available().items():
        assert ">>>" in (reward.fn.__doc__ or ""), name


FORMAT_CASES = [
    ("<think>x</think><answer>B</answer>", 1.0, 0.0, 1.0),
    ("<think>x</think>\n<answer>B</answer>", 1.0, 0.0, 1.0),
    ("<think>a\nb</think><answer>\nB\n</answer>", 1.0, 0.0, 1.0),  # multi-line is fine for the format
    ("<think>x</think><answer>B</answer>\n", 0.0, 0.0, 1.0),  # trailing newline fails Med-R1's fullmatch
    ("Sure! <think>x</think><answer>B</answer>", 0.0, 0.0, 1.0),  # leading text fails
    ("<answer>B</answer>", 0.0, 1.0, 0.5),
    ("  <answer>B</answer>", 0.0, 1.0, 0.5),
    ("<think>x</think>", 0.0, 0.0, 0.5),
    ("B", 0.0, 0.0, 0.0),
    ("</answer><answer>", 0.0, 0.0, 0.25),
]


@pytest.mark.parametrize("text, think, nothink, partial", FORMAT_CASES)
def test_format_rewards(text, think, nothink, partial):
    assert score("format", [text]) == [think]
    assert score("format_nothink", [text]) == [nothink]
    assert score("format_partial", [text]) == [partial]


ACCURACY_CASES = [
    # completion, accuracy_medr1, accuracy, accuracy_graded
    ("<think>x</think><answer>B</answer>", 1.0, 1.0, 1.0),
    ("<answer> B </answer>", 1.0, 1.0, 1.0),
    ("<answer>b</answer>", 0.0, 1.0, 1.0),
    ("<answer>(B)</answer>", 0.0, 1.0, 1.0),
    ("<answer>B) MRI</answer>", 0.0, 1.0, 0.5),
    ("<answer>\nB\n</answer>", 0.0, 1.0, 1.0),  # Med-R1's regex has no DOTALL
    ("<answer>MRI</answer>", 0.0, 1.0, 0.5),
    ("<answer>A</answer>", 0.0, 0.0, 0.0),
    ("B", 1.0, 1.0, 0.0),  # no tag: Med-R1 compares the whole completion
    ("The answer is B", 0.0, 1.0, 0.0),
    ("", 0.0, 0.0, 0.0),
    # hedges name two options: never credited, whichever comes first
    ("<answer>B or C</answer>", 0.0, 0.0, 0.0),
    ("<answer>C or B</answer>", 0.0, 0.0, 0.0),
    ("<answer>B and C</answer>", 0.0, 0.0, 0.0),
    ("<answer>either A or B</answer>", 0.0, 0.0, 0.0),
    ("<answer>B/A</answer>", 0.0, 0.0, 0.0),
    ("<answer>B, A</answer>", 0.0, 0.0, 0.0),
    ("The answer is B or C", 0.0, 0.0, 0.0),
    # nested tags read the innermost; Med-R1's first-match regex reads "<answer>B"
    ("<answer><answer>B</answer></answer>", 0.0, 1.0, 1.0),
    # several tags: agreeing ones count once; disagreeing ones score 0 (Med-R1's training reward reads the first)
    ("<answer>B</answer><answer>B</answer>", 1.0, 1.0, 1.0),
    ("<answer>B</answer><answer>A</answer>", 1.0, 0.0, 0.0),
    ("<answer>A</answer><answer>B</answer>", 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("text, medr1, robust, graded", ACCURACY_CASES)
def test_accuracy_rewards(text, medr1, robust, graded):
    columns = {"options": [["CT", "MRI", "X-ray"]], "answer_type": ["choice"]}
    assert score("accuracy_medr1", [text]) == [medr1]
    assert score("accuracy", [text], **columns) == [robust]
    assert score("accuracy_graded", [text], **columns) == [graded]


def test_accuracy_medr1_reads_medr1_gold_strings():
    assert score("accuracy_medr1", ["<answer>C</answer>"], solution=["<answer> C </answer>"]) == [1.0]


def test_open_answer_and_accuracy_split_the_rows_between_them():
    texts = ["<answer>yes</answer>", "<answer>the right kidney</answer>", "<answer>B</answer>"]
    columns = {
        "solution": ["Yes", "right kidney", "B"],
        "answer_type": ["closed", "open", "choice"],
        "options": [[], [], ["CT", "MRI"]],
    }
    assert score("open_answer", texts, **columns) == [1.0, 1.0, None]
    assert score("accuracy", texts, **columns) == [None, None, 1.0]


def test_length_and_repetition():
    fn = get_reward("length", budget=4, window=4)
    assert fn(completions=["a"] * 3, completion_ids=[[1] * 4, [1] * 6, [1] * 9]) == [0.0, -0.5, -1.0]
    rep = get_reward("repetition", ngram=2)
    assert rep(completions=["one two three four", "go go go go go"]) == [0.0, -0.75]


def test_unknown_name_and_bad_kwargs_fail_with_hints():
    with pytest.raises(ConfigError, match=r"did you mean 'accuracy'.*built-ins: accuracy, accuracy_graded"):
        get_reward("acuracy")
    with pytest.raises(ConfigError) as info:
        get_reward("length", budgett=3)
    assert "did you mean 'budget'" in str(info.value)
    with pytest.raises(ConfigError, match="expected an integer"):
        get_reward("length", budget="long")
    with pytest.raises(ConfigError, match="not a parameter"):
        get_reward("length", solution="B")  # dataset columns are not kwargs


def test_plugin_from_a_file(tmp_path):
    plugin = tmp_path / "my_rewards.py"
    plugin.write_text(
        "def brevity(completions, *, limit: int = 5, **kw):\n    return [float(len(c) <= limit) for c in completions]\n"
    )
    fn = get_reward(f"{plugin}:brevity", limit=3)
    assert fn(completions=["abc", "abcd"]) == [1.0, 0.0]
    with pytest.raises(ConfigError, match="no function 'nope'"):
        get_reward(f"{plugin}:nope")
    with pytest.raises(ConfigError, match="reward file not found"):
        get_reward(f"{tmp_path}/missing.py:f")


def test_plugin_from_module_and_from_entry_point(tmp_path, monkeypatch):
    (tmp_path / "lab_rewards.py").write_text(
        "def always_one(completions, **kw):\n    return [1.0] * len(completions)\n"
    )
    dist = tmp_path / "lab_rewards-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-rewards\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[med_r1.rewards]\nlab_one = lab_rewards:always_one\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # what `pip install` of a plugin package would do
    assert get_reward("lab_rewards:always_one")(completions=["x"]) == [1.0]
    assert get_reward("lab_one")(completions=["x", "y"]) == [1.0, 1.0]
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg.rewards'"):
        get_reward("no_such_pkg.rewards:f")


def columns_for(solutions):
    n = len(solutions)
    return {
        "solution": solutions,
        "question_id": [f"q{i}" for i in range(n)],
        "modality": ["CT", "MRI"] * (n // 2),
        "options": [["red", "green"]] * n,
        "answer_type": ["choice"] * n,
    }


def test_a_raising_reward_is_counted_not_hidden():
    def flaky(completions, solution, **kwargs):
        if "A" in solution:
            raise ValueError("cannot score A")
        return [1.0] * len(completions)

    completions = [[{"role": "assistant", "content": "x"}]] * 4
    strict = GuardedReward(Reward("flaky", flaky), on_error="raise")
    with pytest.raises(RewardError, match=r"reward 'flaky' raised ValueError: cannot score A \(questions q0, q1"):
        strict(completions=completions, **columns_for(["A", "B", "A", "B"]))

    lenient = GuardedReward(Reward("flaky", flaky), on_error="none")
    logged = {}
    scores = lenient(completions=completions, log_metric=logged.__setitem__, **columns_for(["A", "B", "A", "B"]))
    assert scores == [None, 1.0, None, 1.0]
    assert lenient.errors == 2 and logged["rewards/flaky/errors"] == 2.0


def test_accuracy_is_logged_per_modality():
    guarded = GuardedReward(Reward("accuracy", get_reward("accuracy"), "accuracy"))
    logged = {}
    texts = ["<answer>A</answer>", "<answer>A</answer>", "<answer>B</answer>", "<answer>A</answer>"]
    guarded(
        completions=[[{"role": "assistant", "content": t}] for t in texts],
        log_metric=logged.__setitem__,
        **columns_for(["A", "A", "A", "B"]),
    )
    assert logged == {"rewards/accuracy/CT": 0.5, "rewards/accuracy/MRI": 0.5}


def test_gold_self_check_catches_a_template_mismatch():
    rows = columns_for(["A", "B"])
    rewards = [Reward(n, get_reward(n), available()[n].kind) for n in ("format", "accuracy", "length")]
    errors, _ = check_rewards(rewards, rows, "medr1_think")
    assert errors == []
    errors, _ = check_rewards(rewards, rows, "medr1_nothink")  # think-format reward, no-think prompt
    assert len(errors) == 1 and "'format'" in errors[0] and "q0, q1" in errors[0]
    assert gold_completion("B", "medr1_zeroshot") == "B"


def test_reward_smoke_check_names_a_broken_plugin():
    def broken(completions, **kwargs):
        return [1.0]  # wrong length

    errors, _ = check_rewards([Reward("broken", broken, "other")], columns_for(["A", "B"]), "medr1_think")
    assert "one float or None per completion" in errors[0]


def test_cli_rewards_list_and_check(capsys):
    assert main(["rewards", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in available())
    assert (
        main(
            [
                "rewards",
                "check",
                "accuracy",
                "--completion",
                "<answer>MRI</answer>",
                "--solution",
                "B",
                "--options",
                "CT",
                "MRI",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == "1.0"
    assert (
        main(
            [
                "rewards",
                "check",
                "length",
                "--completion",
                "a b c",
                "--solution",
                "B",
                "--kwarg",
                "budget=1",
                "--kwarg",
                "window=4",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == "-0.5"
    assert main(["rewards", "check", "acuracy", "--completion", "x", "--solution", "B"]) == 2

"""Every mistake or fault a user can cause, through the `med-r1` command in a real process (issue 13).

Each row of `CASES` prepares a folder (a recipe, data, a model, an earlier run), runs one or more commands and
checks: the exit status (2 for a user's mistake), no traceback on stderr, the thing at fault named in the message
(and what to do), and the files on disk: every file that was there before is still there, unchanged, unless the row
says it may change. Rows that say how to recover (a retry, `resume=...`) run that command too and check it works.

Commands run in processes forked from a server that has imported torch and TRL once (`cli_runner.py`), so each
costs what the command does, not the 15-30 s of imports; rows whose environment must differ at import time (the
Hugging Face offline switches) start a new interpreter. Real training is kept to the rows that need it (two steps
of the tiny model); the rest stop in `validate` or before training.

`test_the_count` prints the totals (cases, clean exits, tracebacks, data lost).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import make_omnimedvqa, tiny_recipe

TESTS = Path(__file__).parent
PLUGINS = TESTS / "plugins"
FAULTS = PLUGINS / "faults.py"
OUT = "_out"  # where a case's stdout/stderr go (not part of its files)


# -- the table ------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    argv: list[str]
    rc: int = 2
    says: tuple[str, ...] = ()
    """Substrings of stdout + stderr, each required."""
    never: tuple[str, ...] = ()
    """Substrings that must not appear (besides 'Traceback')."""
    env: dict[str, str | None] = field(default_factory=dict)
    preload: str | None = None
    """A fault injected in the process before the command: a file under tests/plugins/."""
    fresh: bool = False
    """A new interpreter (environment read at import time) instead of a fork of the server."""


@dataclass
class Case:
    id: str
    item: str
    """The issue's item number, or 'held' for a case that already behaved."""
    runs: list[Run]
    recipe: dict[str, Any] | str | bytes | None = field(default_factory=dict)
    """Changes to the base recipe (dotted keys), a whole recipe text, or None for no recipe file."""
    setup: Callable[[Ctx], None] | None = None
    may_change: tuple[str, ...] = ()
    """Globs (relative to the case folder) of files that may change or go: a retry's run folder, --force."""
    check: Callable[[Ctx], None] | None = None
    """Further checks of the files afterwards."""


@dataclass
class Ctx:
    dir: Path
    model: Path
    omni: Path
    trained: Path

    @property
    def run(self) -> Path:
        return self.dir / "run"

    def fill(self, text: str) -> str:
        names = {
            "recipe": self.dir / "recipe.yaml",
            "dir": self.dir,
            "run": self.run,
            "model": self.model,
            "omni": self.omni,
            "faults": FAULTS,
            "plugins": PLUGINS,
        }
        return re.sub(r"\{(\w+)\}", lambda m: str(names[m.group(1)]) if m.group(1) in names else m.group(0), text)


# -- setups: what a user's folder holds before the command ----------------------------------------------------------


def copy_model(ctx: Ctx, name: str = "model") -> Path:
    return Path(shutil.copytree(ctx.model, ctx.dir / name))


def edit_config(**changes):
    def setup(ctx: Ctx) -> None:
        config = copy_model(ctx) / "config.json"
        data = json.loads(config.read_text())
        data.update(changes)
        config.write_text(json.dumps(data))

    return setup


def write_file(relative: str, content: bytes | str):
    def setup(ctx: Ctx) -> None:
        path = ctx.dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return setup


def both(*setups):
    def setup(ctx: Ctx) -> None:
        for s in setups:
            s(ctx)

    return setup


def copy_data(ctx: Ctx) -> Path:
    return Path(shutil.copytree(ctx.omni, ctx.dir / "data"))


def data_with(change):
    """A copy of the test data, changed by `change(root)`."""

    def setup(ctx: Ctx) -> None:
        change(copy_data(ctx))

    return setup


def missing_image(root: Path) -> None:
    next((root / "Images" / "Set 1 & Co").glob("*.png")).unlink()


def duplicate_ids(root: Path) -> None:
    path = root / "QA_information" / "Open-access" / "Set 2 & Co.json"
    records = json.loads(path.read_text())
    records[1]["question_id"] = records[0]["question_id"]
    path.write_text(json.dumps(records))


def answer_not_an_option(root: Path) -> None:
    path = root / "QA_information" / "Open-access" / "Set 2 & Co.json"
    records = json.loads(path.read_text())
    records[0]["gt_answer"] = "purple"
    path.write_text(json.dumps(records))


def undecodable_images(root: Path) -> None:
    """Every image but the first dataset's is not an image at all (the files exist: only decoding finds out)."""
    for folder in ("Set 1 & Co", "Set 2 & Co", "Set 3 & Co"):
        for image in (root / "Images" / folder).glob("*.png"):
            image.write_bytes(b"this is not a PNG file")


def trained_run(keep_model: bool = True, keep_checkpoints: bool = True, damage=None):
    """A copy of a finished two-step run (checkpoint-1, checkpoint-2, model/), changed as asked."""

    def setup(ctx: Ctx) -> None:
        shutil.copytree(ctx.trained, ctx.run)
        if not keep_model:
            shutil.rmtree(ctx.run / "model")
        if not keep_checkpoints:
            for c in ctx.run.glob("checkpoint-*"):
                shutil.rmtree(c)
        if damage:
            damage(ctx.run / "checkpoint-2")

    return setup


def drop(name: str):
    return lambda checkpoint: (checkpoint / name).unlink()


def truncate(name: str):
    def damage(checkpoint: Path) -> None:
        path = checkpoint / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return damage


def leftovers_of_a_failed_run(ctx: Ctx) -> None:
    """What a run that died before its first checkpoint leaves: the recipe, a metrics line, a half-written save."""
    ctx.run.mkdir()
    (ctx.run / "recipe.yaml").write_text("model: {name_or_path: somewhere}\n")
    (ctx.run / "metrics.jsonl").write_text('{"step": 1, "reward": 0.1}\n')
    (ctx.run / "checkpoint-1").mkdir()
    (ctx.run / "checkpoint-1" / "model.safetensors").write_bytes(b"\0" * 10)


def evaluations(a_right: int, b_right: int, n: int = 4, corrupt: str | None = None):
    """Two evaluation folders, a/ and b/, as `med-r1 eval` writes them; `corrupt` spoils one file of b/."""
    from med_r1.eval.metrics import summarize

    def setup(ctx: Ctx) -> None:
        for side, right in (("a", a_right), ("b", b_right)):
            rows = [
                {
                    "question_id": f"q{i}",
                    "modality": "CT",
                    "question_type": "Modality Recognition",
                    "dataset": "set",
                    "parsed": "A" if i < right else "B",
                    "correct": i < right,
                }
                for i in range(n)
            ]
            folder = ctx.dir / side
            folder.mkdir()
            (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (folder / "metrics.json").write_text(json.dumps(summarize(rows)))
        if corrupt:
            (ctx.dir / "b" / corrupt).write_text('{"overall": {"accuracy": 0.5, "cou')

    return setup


def read_only_parent(ctx: Ctx) -> None:
    """A folder no one may write to, where output_dir would be created (as root: see plugins/read_only.py)."""
    copy_model(ctx)
    locked = ctx.dir / "locked"
    locked.mkdir()
    locked.chmod(0o555)


# -- the cases ------------------------------------------------------------------------------------------------------

CASES: list[Case] = [
    # ---- recipe files and keys (already behaved) ----
    Case("recipe-not-found", "held", [Run(["train", "{dir}/nowhere.yaml"], says=("recipe file not found",))], None),
    Case(
        "recipe-yaml-syntax",
        "held",
        [Run(["validate", "{recipe}"], says=("is not valid YAML", "line 2"))],
        "model: {name_or_path: x\ndata: [\n",
    ),
    Case("recipe-not-a-mapping", "held", [Run(["validate", "{recipe}"], says=("must be a mapping",))], "- a\n- b\n"),
    Case(
        "unknown-top-level-key",
        "held",
        [Run(["validate", "{recipe}"], says=("rewardz", "did you mean 'rewards'"))],
        {"rewardz": []},
    ),
    Case(
        "unknown-nested-key",
        "held",
        [Run(["validate", "{recipe}"], says=("model.finetnue", "did you mean 'finetune'"))],
        {"model.finetnue": "full"},
    ),
    Case(
        "wrong-type",
        "held",
        [Run(["validate", "{recipe}"], says=("grpo.max_steps", "expected an integer"))],
        {"grpo.max_steps": "ten"},
    ),
    Case(
        "bad-choice", "held", [Run(["validate", "{recipe}", "model.finetune=qlora"], says=("'qlora' is not one of",))]
    ),
    Case(
        "required-key-missing",
        "held",
        [Run(["validate", "{recipe}"], says=("model.name_or_path: required",))],
        {"model.name_or_path": None},
    ),
    Case(
        "unknown-grpo-key",
        "held",
        [Run(["validate", "{recipe}", "grpo.lerning_rate=1e-5"], says=("did you mean 'learning_rate'",))],
    ),
    Case(
        "renamed-grpo-key",
        "held",
        [Run(["validate", "{recipe}", "grpo.max_prompt_length=512"], says=("grpo.max_prompt_length", "TRL 0.28"))],
    ),
    Case(
        "grpo-key-med-r1-owns",
        "held",
        [Run(["validate", "{recipe}", "grpo.output_dir=x"], says=("set the top-level `output_dir`",))],
    ),
    Case(
        "override-without-equals",
        "held",
        [Run(["validate", "{recipe}", "grpo.learning_rate"], says=("must look like key.sub=value",))],
    ),
    Case(
        "override-index-out-of-range",
        "held",
        [Run(["validate", "{recipe}", "rewards.5.weight=2"], says=("has no item 5",))],
    ),
    Case(
        "several-problems-at-once",
        "held",
        [Run(["validate", "{recipe}", "model.finetune=qlora", "grpo.lerning_rate=1"], says=("2 problems", "qlora"))],
    ),
    # ---- rewards (already behaved) ----
    Case(
        "unknown-reward",
        "held",
        [Run(["validate", "{recipe}"], says=("did you mean 'accuracy'",))],
        {"rewards": [{"name": "acuracy"}]},
    ),
    Case(
        "reward-file-missing",
        "held",
        [Run(["validate", "{recipe}"], says=("reward file not found",))],
        {"rewards": [{"name": "{dir}/nope.py:fn"}]},
    ),
    Case(
        "reward-module-missing",
        "held",
        [Run(["validate", "{recipe}"], says=("cannot import module 'no_such_lab.rewards'",))],
        {"rewards": [{"name": "no_such_lab.rewards:fn"}]},
    ),
    Case(
        "reward-function-missing",
        "held",
        [Run(["validate", "{recipe}"], says=("has no function 'nope'",))],
        {"rewards": [{"name": "{faults}:nope"}]},
    ),
    Case(
        "reward-kwarg-typo",
        "held",
        [Run(["validate", "{recipe}"], says=("kwargs.from_stpe", "did you mean 'from_step'"))],
        {"rewards": [{"name": "{faults}:raises_from_step", "kwargs": {"from_stpe": 1}}]},
    ),
    Case(
        "reward-used-twice",
        "held",
        [Run(["validate", "{recipe}"], says=("'accuracy' is used twice",))],
        {"rewards": [{"name": "accuracy"}, {"name": "accuracy"}]},
    ),
    Case("no-rewards", "held", [Run(["validate", "{recipe}"], says=("at least one reward",))], {"rewards": []}),
    Case(
        "reward-raises-in-the-checks",
        "held",
        [Run(["validate", "{recipe}"], says=("'always_raises' raised on rows", "deliberate failure", "faults.py:"))],
        {"rewards": [{"name": "{faults}:always_raises"}]},
    ),
    Case(
        "gold-self-check",
        "held",
        [Run(["validate", "{recipe}", "prompt.template=medr1_nothink"], says=("gold self-check", "'format'"))],
        {"rewards": [{"name": "format"}, {"name": "accuracy"}]},
    ),
    Case(
        "unknown-template",
        "held",
        [Run(["validate", "{recipe}", "prompt.template=medr1_thnk"], says=("did you mean 'medr1_think'",))],
    ),
    # ---- data (already behaved) ----
    Case(
        "data-path-missing",
        "held",
        [Run(["validate", "{recipe}", "data.train.path={dir}/nowhere"], says=("data.train.path", "does not exist"))],
    ),
    Case(
        "data-format-unknown",
        "held",
        [
            Run(
                ["validate", "{recipe}", "data.train.path={dir}/empty"],
                says=("cannot tell the format", "data.train.format"),
            )
        ],
        setup=lambda c: (c.dir / "empty").mkdir(),
    ),
    Case(
        "filter-matches-nothing",
        "held",
        [
            Run(
                ["validate", "{recipe}", "data.train.modalities=[PET]"],
                says=("data.train.modalities: 'PET' matches no question",),
            )
        ],
    ),
    Case(
        "missing-image",
        "held",
        [
            Run(
                ["validate", "{recipe}", "data.train.path={dir}/data"],
                says=("missing_image", "data.skip_bad_rows=true"),
            )
        ],
        setup=data_with(missing_image),
    ),
    Case(
        "duplicate-question-ids",
        "held",
        [Run(["validate", "{recipe}", "data.train.path={dir}/data"], says=("duplicate_id", "Set 2 & Co_0000"))],
        setup=data_with(duplicate_ids),
    ),
    Case(
        "answer-not-an-option",
        "held",
        [Run(["validate", "{recipe}", "data.train.path={dir}/data"], says=("purple",))],
        setup=data_with(answer_not_an_option),
    ),
    Case(
        "missing-image-skipped",
        "held",
        [
            Run(
                ["validate", "{recipe}", "data.train.path={dir}/data", "data.skip_bad_rows=true"],
                rc=0,
                says=("1 bad rows skipped",),
            )
        ],
        setup=data_with(missing_image),
    ),
    Case(
        "data-validate-finds-problems",
        "held",
        [Run(["data", "validate", "{dir}/data"], says=("missing_image",))],
        None,
        setup=data_with(missing_image),
    ),
    Case("data-stats-path-missing", "held", [Run(["data", "stats", "{dir}/nowhere"], says=("does not exist",))], None),
    Case(
        "split-ratio-out-of-range",
        "held",
        [Run(["validate", "{recipe}", "data.split.test_ratio=1.5"], says=("must be between 0 and 1",))],
    ),
    Case("limit-zero", "held", [Run(["validate", "{recipe}", "data.train.limit=0"], says=("must be at least 1",))]),
    Case("frames-zero", "held", [Run(["validate", "{recipe}", "data.frames=0"], says=("data.frames",))]),
    # ---- model (already behaved) ----
    Case(
        "model-path-missing",
        "held",
        [
            Run(
                ["validate", "{recipe}", "model.name_or_path={dir}/nope"],
                says=("does not exist; give a model folder",),
            )
        ],
    ),
    Case(
        "model-folder-without-config",
        "held",
        [Run(["validate", "{recipe}", "model.name_or_path={dir}"], says=("holds no config.json",))],
    ),
    Case(
        "model-without-processor",
        "held",
        [Run(["validate", "{recipe}", "model.name_or_path={dir}/bare"], says=("cannot load a processor",))],
        setup=lambda c: (c.dir / "bare").mkdir() or shutil.copy(c.model / "config.json", c.dir / "bare"),
    ),
    Case(
        "freeze-vision-with-lora",
        "held",
        [
            Run(
                ["validate", "{recipe}", "model.finetune=lora", "model.freeze_vision=true"],
                says=("model.freeze_vision",),
            )
        ],
    ),
    Case("lora-rank-zero", "held", [Run(["validate", "{recipe}", "model.lora.r=0"], says=("model.lora.r",))]),
    Case(
        "prompt-too-long",
        "held",
        [Run(["validate", "{recipe}"], says=("the model's limit", "Set 0 & Co_0000"))],
        {"prompt.template": "{Question} " + "Look closely at every detail. " * 700},
    ),
    Case(
        "grpo-config-rejected",
        "held",
        [Run(["validate", "{recipe}", "grpo.num_generations=3"], says=("GRPOConfig rejected",))],
    ),
    Case(
        "hub-model-offline-validate",
        "held",
        [
            Run(
                ["validate", "{recipe}", "model.name_or_path=Qwen/Qwen2-VL-2B-Instruct"],
                rc=0,
                says=("HF_HUB_OFFLINE", "hf download Qwen/Qwen2-VL-2B-Instruct"),
            )
        ],
    ),
    # ---- evaluation, compare, matrix (already behaved) ----
    Case("eval-without-eval-data", "held", [Run(["eval", "{recipe}"], says=("data.eval is not set",))]),
    Case(
        "eval-model-not-a-model",
        "held",
        [
            Run(
                ["eval", "{recipe}", "data.eval.path={omni}", "eval.model={dir}"],
                says=("is not a model or LoRA adapter folder",),
            )
        ],
    ),
    Case(
        "eval-samples-without-sampling",
        "held",
        [Run(["validate", "{recipe}", "eval.num_samples=4"], says=("eval.do_sample=true",))],
    ),
    Case(
        "matrix-without-eval-data", "held", [Run(["matrix", "{recipe}", "--dry-run"], says=("data.eval is not set",))]
    ),
    Case(
        "compare-nothing-there",
        "held",
        [Run(["compare", "{dir}", "{dir}"], says=("no evaluation results found",))],
        None,
    ),
    # ---- the command line (already behaved) ----
    Case("unknown-command", "held", [Run(["trian", "{recipe}"], says=("invalid choice: 'trian'",))], None),
    Case(
        "rewards-check-unknown",
        "held",
        [
            Run(
                ["rewards", "check", "acuracy", "--completion", "x", "--solution", "A"],
                says=("did you mean 'accuracy'",),
            )
        ],
        None,
    ),
    Case(
        "rewards-check-bad-kwarg",
        "held",
        [
            Run(
                ["rewards", "check", "accuracy", "--completion", "x", "--solution", "A", "--kwarg", "mode"],
                says=("must look like name=value",),
            )
        ],
        None,
    ),
    # ---- runs already there (already behaved) ----
    Case(
        "finished-run-not-overwritten",
        "held",
        [Run(["train", "{recipe}"], says=("holds a finished run", "nothing in it is overwritten"))],
        setup=trained_run(),
    ),
    Case(
        "resume-with-nothing-there",
        "held",
        [Run(["train", "{recipe}", "resume=true"], says=("holds no complete checkpoint",))],
    ),
    Case(
        "resume-into-another-run",
        "held",
        [Run(["validate", "{recipe}", "resume={dir}/other/checkpoint-1"], says=("holds another run",))],
        setup=lambda c: trained_run()(c) or shutil.copytree(c.run, c.dir / "other"),
    ),
    # ==== issue 13 ====
    # 1. tiny-model onto a model
    Case(
        "tiny-model-onto-a-model",
        "1",
        [Run(["tiny-model", "{dir}/model"], says=("already holds files", "--force"))],
        None,
        setup=copy_model,
    ),
    Case(
        "tiny-model-force",
        "1",
        [Run(["tiny-model", "{dir}/model", "--force", "--seed", "1"], rc=0, says=("written to",))],
        None,
        setup=copy_model,
        may_change=("model/*",),
    ),
    Case(
        "tiny-model-onto-a-file",
        "13",
        [Run(["tiny-model", "{dir}/file"], says=("is a file, not a folder",))],
        None,
        setup=write_file("file", "keep me"),
    ),
    # 3. rewards that score nothing
    Case(
        "reward-nan-everywhere",
        "3",
        [Run(["validate", "{recipe}"], says=("non-finite scores (nan)", "return None"))],
        {"rewards": [{"name": "{faults}:always_nan"}]},
    ),
    Case(
        "reward-nan-in-training-raise",
        "3",
        [Run(["train", "{recipe}"], says=("no training signal", "reward_errors=none", "no step was trained yet"))],
        {"rewards": [{"name": "{faults}:nan_in_training"}]},
    ),
    Case(
        "reward-nan-in-training-counted",
        "3",
        [Run(["train", "{recipe}", "reward_errors=none"], rc=0, says=("2 steps with no reward signal",))],
        {"rewards": [{"name": "{faults}:nan_in_training"}]},
    ),
    # 4. duplicate keys
    Case(
        "duplicate-top-level-key",
        "4",
        [Run(["validate", "{recipe}"], says=("keys given twice", "grpo: line"))],
        "DUPLICATE_GRPO",
    ),
    Case(
        "duplicate-nested-key",
        "4",
        [Run(["validate", "{recipe}"], says=("grpo.learning_rate: line 4 and line 5",))],
        "model: {name_or_path: x}\ndata: {train: {path: bundled}}\ngrpo:\n  learning_rate: 1.0\n  learning_rate: 2.0\n"
        "output_dir: run\n",
    ),
    Case(
        "duplicate-key-in-a-list",
        "4",
        [Run(["validate", "{recipe}"], says=("rewards[0].weight: line",))],
        "model: {name_or_path: x}\ndata: {train: {path: bundled}}\noutput_dir: run\n"
        "rewards:\n  - name: format\n    weight: 1\n    weight: 2\n",
    ),
    # 5. GRPOConfig values out of their domain
    Case(
        "learning-rate-zero",
        "5",
        [Run(["validate", "{recipe}", "grpo.learning_rate=0"], says=("grpo.learning_rate: must be greater than 0",))],
    ),
    Case(
        "learning-rate-negative-train",
        "5",
        [Run(["train", "{recipe}", "grpo.learning_rate=-1"], says=("grpo.learning_rate",))],
    ),
    Case(
        "grpo-ranges-all-at-once",
        "5",
        [
            Run(
                [
                    "validate",
                    "{recipe}",
                    "grpo.learning_rate=-1",
                    "grpo.temperature=0",
                    "grpo.beta=-0.1",
                    "grpo.num_generations=1",
                    "grpo.epsilon=-0.2",
                ],
                says=(
                    "5 problems",
                    "grpo.temperature",
                    "grpo.beta",
                    "grpo.num_generations: must be at least 2",
                    "grpo.epsilon",
                ),
            )
        ],
    ),
    # 6. resume and matrix checked up front
    Case("resume-maybe", "6", [Run(["validate", "{recipe}", "resume=maybe"], says=("resume=maybe", "resume=true"))]),
    Case(
        "matrix-unknown-domain",
        "6",
        [
            Run(
                ["matrix", "{recipe}", "--dry-run"],
                says=("matrix.train_domains: 'PETT' matches no modality",),
            )
        ],
        {"data.eval": {"path": "{omni}"}, "matrix.train_domains": ["CT", "PETT"]},
    ),
    # 7. a failed run does not block its retry
    Case(
        "retry-after-leftovers",
        "7",
        [
            Run(
                ["train", "{recipe}"],
                rc=0,
                says=("saved no complete checkpoint and no final model", "a new run starts"),
            )
        ],
        setup=leftovers_of_a_failed_run,
        may_change=("run/*",),
    ),
    Case(
        "retry-after-a-model-that-does-not-load",
        "7",
        [
            Run(["train", "{recipe}", "model.name_or_path={dir}/model"], says=("model.safetensors",)),
            Run(["train", "{recipe}"], rc=0, says=("a new run starts",)),
        ],
        setup=lambda c: truncate("model.safetensors")(copy_model(c)),
        may_change=("run/*",),
    ),
    Case(
        "finished-run-without-checkpoints",
        "7",
        [Run(["train", "{recipe}"], says=("holds a finished run",), never=("resume=true",))],
        setup=trained_run(keep_checkpoints=False),
    ),
    Case(
        "unfinished-run-says-resume",
        "7",
        [Run(["train", "{recipe}"], says=("checkpoint-2", "resume=true"))],
        setup=trained_run(keep_model=False),
    ),
    # 8. non-UTF-8 recipe
    Case(
        "recipe-not-utf8",
        "8",
        [Run(["validate", "{recipe}"], says=("not UTF-8 text", "line 2"))],
        b"model: {name_or_path: x}\n# caf\xe9\noutput_dir: run\n",
    ),
    # 9. a config.json transformers does not know
    Case(
        "unknown-model-type",
        "9",
        [
            Run(
                ["validate", "{recipe}", "model.name_or_path={dir}/model"],
                says=("model_type 'qwen9_vl'", "config.json"),
            )
        ],
        setup=edit_config(model_type="qwen9_vl"),
    ),
    Case(
        "config-not-json",
        "9",
        [Run(["train", "{recipe}", "model.name_or_path={dir}/model"], says=("not readable JSON",))],
        setup=lambda c: (copy_model(c) / "config.json").write_text("{oops"),
    ),
    # 10. a reward that raises mid-run
    Case(
        "reward-raises-mid-run",
        "10",
        [
            Run(
                ["train", "{recipe}"],
                says=(
                    "'raises_from_step' raised ValueError",
                    "cannot score at step 2",
                    "faults.py:",
                    "checkpoint-1 holds the training up to step 1 of 2",
                    "resume=true",
                ),
            ),
            Run(["train", "{recipe}", "resume=true", "rewards.0.kwargs.from_step=null"], rc=0),
        ],
        {"rewards": [{"name": "{faults}:raises_from_step", "kwargs": {"from_step": 1}}]},
        may_change=("run/*",),
        check=lambda c: assert_files(c.run, "model/model.safetensors"),
    ),
    # 11. damaged checkpoints
    Case(
        "checkpoint-without-weights",
        "11",
        [
            Run(
                ["train", "{recipe}", "resume=true"],
                says=("checkpoint-2 is damaged", "model.safetensors is missing", "resume={run}/checkpoint-1"),
            ),
            Run(["train", "{recipe}", "resume={run}/checkpoint-1"], rc=0),
        ],
        setup=trained_run(keep_model=False, damage=drop("model.safetensors")),
        may_change=("run/*", "run/checkpoint-2/*"),
    ),
    Case(
        "checkpoint-without-trainer-state",
        "11",
        [
            Run(
                ["validate", "{recipe}", "resume=true"],
                says=("checkpoint-2 is damaged", "trainer_state.json is missing", "resume={run}/checkpoint-1"),
            )
        ],
        setup=trained_run(keep_model=False, damage=drop("trainer_state.json")),
    ),
    Case(
        "checkpoint-optimizer-cut-short",
        "11",
        [Run(["train", "{recipe}", "resume=true"], says=("optimizer.pt is cut short", "resume={run}/checkpoint-1"))],
        setup=trained_run(keep_model=False, damage=truncate("optimizer.pt")),
    ),
    # 12. where the run goes
    Case(
        "output-dir-is-a-file",
        "12",
        [Run(["train", "{recipe}", "output_dir={dir}/file"], says=("is a file, not a folder",))],
        setup=write_file("file", "keep me"),
    ),
    Case(
        "output-dir-under-a-file",
        "12",
        [Run(["validate", "{recipe}", "output_dir={dir}/file/run"], says=("cannot be created", "is a file"))],
        setup=write_file("file", "keep me"),
    ),
    Case(
        "output-dir-read-only",
        "12",
        [
            Run(
                ["validate", "{recipe}", "output_dir={dir}/locked/run", "model.name_or_path={dir}/model"],
                says=("is not writable",),
                preload="read_only.py",
            )
        ],
        setup=read_only_parent,
    ),
    Case(
        "disk-full-at-the-final-save",
        "12",
        [
            Run(
                ["train", "{recipe}", "grpo.save_strategy=steps", "grpo.save_steps=1"],
                preload="disk_full.py",
                says=(
                    "final model could not be saved",
                    "No space left on device",
                    "checkpoint-2 holds the training up to step 2 of 2",
                    "saves the final model from it",
                ),
            ),
            Run(["train", "{recipe}", "grpo.save_strategy=steps", "grpo.save_steps=1", "resume=true"], rc=0),
        ],
        may_change=("run/*",),
        check=lambda c: assert_files(c.run, "model/model.safetensors"),
    ),
    Case(
        "disk-full-without-checkpoints",
        "12",
        [
            Run(
                ["train", "{recipe}"],
                preload="disk_full.py",
                says=("final model could not be saved", "checkpoint-2 holds the training up to step 2"),
            )
        ],
        check=lambda c: assert_files(c.run, "checkpoint-2/med_r1_complete"),
    ),
    # 13. tracebacks of other commands
    Case(
        "compare-corrupt-metrics",
        "13",
        [Run(["compare", "{dir}/a", "{dir}/b"], says=("b: cannot read its results", "rerun `med-r1 eval`"))],
        None,
        setup=evaluations(1, 2, corrupt="metrics.json"),
    ),
    Case(
        "rewards-check-plugin-raises",
        "13",
        [
            Run(
                ["rewards", "check", "{faults}:always_raises", "--completion", "x", "--solution", "A"],
                says=("raised RuntimeError: deliberate failure", "faults.py:"),
            )
        ],
        None,
    ),
    # 14. images that fail to decode during training
    Case(
        "unreadable-image-mid-run",
        "14",
        [
            Run(
                ["train", "{recipe}", "data.train.path={dir}/data"],
                says=("cannot read image", "data.skip_bad_rows is false", "set data.skip_bad_rows=true"),
            ),
            Run(
                [
                    "train",
                    "{recipe}",
                    "data.train.path={dir}/data",
                    "data.skip_bad_rows=true",
                    "guards.max_bad_rows=1",
                ],
                rc=0,
                says=("rows skipped during training",),
            ),
        ],
        setup=data_with(undecodable_images),
        may_change=("run/*",),
    ),
    Case(
        "unreadable-images-past-the-bound",
        "14",
        [
            Run(
                ["train", "{recipe}", "data.train.path={dir}/data", "data.skip_bad_rows=true"],
                says=("fail to decode (more than guards.max_bad_rows", "med-r1 data validate"),
            )
        ],
        setup=data_with(undecodable_images),
        may_change=("run/*",),
    ),
    # 15. a Hub model out of reach
    Case(
        "hub-model-offline-train",
        "15",
        [
            Run(
                ["train", "{recipe}", "model.name_or_path=Qwen/Qwen2-VL-2B-Instruct"],
                says=("not in the Hugging Face cache", "HF_HUB_OFFLINE"),
            )
        ],
    ),
    Case(
        "hub-unreachable",
        "15",
        [
            Run(
                ["validate", "{recipe}", "model.name_or_path=Qwen/Qwen2-VL-2B-Instruct"],
                says=("cannot be reached", "hf download"),
                fresh=True,
                env={
                    "HF_HUB_OFFLINE": None,
                    "TRANSFORMERS_OFFLINE": None,
                    "HF_ENDPOINT": "http://127.0.0.1:9",
                    "HF_HOME": "{dir}/hf",
                },
            )
        ],
    ),
    # 16. the command line
    Case(
        "train-without-arguments",
        "16",
        [Run(["train"], says=("required: recipe",), never=("required: recipe, key.sub=value",))],
        None,
    ),
    Case("train-help", "16", [Run(["train", "--help"], rc=0, says=("examples:", "resume=true"))], None),
    Case(
        "validate-help", "16", [Run(["validate", "--help"], rc=0, says=("examples:", "without loading weights"))], None
    ),
    Case("eval-help", "16", [Run(["eval", "--help"], rc=0, says=("examples:", "eval.model=base"))], None),
    Case("tiny-model-help", "16", [Run(["tiny-model", "--help"], rc=0, says=("random seed", "model family"))], None),
    Case(
        "rewards-check-help",
        "16",
        [Run(["rewards", "check", "--help"], rc=0, says=("the model's output to score",))],
        None,
    ),
    Case(
        "compare-both-zero",
        "16",
        [Run(["compare", "{dir}/a", "{dir}/b"], rc=0, says=("undefined (0/n right on both sides)",))],
        None,
        setup=evaluations(0, 0),
    ),
    # 17. what a person sees
    Case(
        "compact-log-and-summary",
        "17",
        [
            Run(
                ["train", "{recipe}"],
                rc=0,
                says=("step 1/2 | reward", "steps logged; reward", "model: ", "next: med-r1 eval"),
                never=("'loss':", "'grad_norm'"),
            )
        ],
        check=lambda c: assert_files(c.run, "metrics.jsonl", "rewards.png"),
    ),
    Case("verbose-brings-the-metrics-back", "17", [Run(["train", "{recipe}", "--verbose"], rc=0, says=("'loss':",))]),
    # ---- found by a second review, after the fixes above ----
    Case(
        "output-dir-holds-the-users-own-recipe",
        "review",
        [Run(["train", "{recipe}", "output_dir={dir}"], says=("recipe.yaml that med-r1 did not write",))],
    ),
    Case(
        "failed-eval-does-not-block-its-retry",
        "review",
        [
            Run(
                ["eval", "{recipe}", "eval.name=x", "eval.max_new_tokens=2", "data.eval.limit=2"],
                rc=0,
                says=("predictions and metrics in",),
            )
        ],
        {"data.eval": {"path": "{omni}"}},
        setup=lambda c: write(c.run / "eval" / "x" / "eval_config.json", '{"model": "an earlier, failed one"}'),
        may_change=("run/eval/x/*",),
    ),
    Case(
        "eval-output-dir-under-a-file",
        "review",
        [Run(["eval", "{recipe}", "output_dir={dir}/file"], says=("cannot create the results folder",))],
        {"data.eval": {"path": "{omni}"}},
        setup=lambda c: write(c.dir / "file", "not a folder"),
    ),
    Case(
        "difficulty-out-holds-other-files",
        "review",
        [
            Run(
                ["data", "difficulty", "{recipe}", "--samples", "1", "--out", "{dir}/mine"],
                says=("summary.json", "no results of med-r1's", "--out"),
            )
        ],
        setup=lambda c: write(c.dir / "mine" / "summary.json", "my own notes"),
    ),
    Case(
        "matrix-with-no-training-domain-left",
        "review",
        [Run(["matrix", "{recipe}", "--dry-run", "matrix.min_questions=1000"], says=("no training domain has",))],
        {"data.eval": {"path": "{omni}"}},
    ),
    # ---- issue 20 ----
    Case(
        "matrix-domain-named-twice",
        "20",
        [
            Run(
                ["matrix", "{recipe}"],
                says=("matrix.train_domains: 'MR' and 'MRI' (both the modality 'MRI')", "nothing was run"),
            )
        ],
        {"data.eval": {"path": "{omni}"}, "matrix.train_domains": ["CT", "MR", "MRI"]},
        check=lambda c: assert_no_run(c.run),
    ),
    Case(
        "pass-rate-file-with-a-bad-line",
        "review",
        [
            Run(
                ["validate", "{recipe}", "data.train.pass_rate=[0.1,0.9]", "data.pass_rates={dir}/rates.jsonl"],
                says=("rates.jsonl:2: not valid JSON",),
            )
        ],
        setup=lambda c: write(c.dir / "rates.jsonl", '{"question_id": "a", "pass_rate": 0.5}\nnot json\n'),
    ),
    Case(
        "tiny-model-under-a-file",
        "review",
        [Run(["tiny-model", "{dir}/file/sub"], says=("cannot be created", "is a file"))],
        None,
        setup=lambda c: write(c.dir / "file", "keep me"),
    ),
    Case(
        "convert-out-under-a-file",
        "review",
        [Run(["data", "convert", "{omni}", "--to", "jsonl", "--out", "{dir}/file/sub"], says=("is a file",))],
        None,
        setup=lambda c: write(c.dir / "file", "keep me"),
    ),
    Case(
        "convert-test-ratio-out-of-range",
        "review",
        [
            Run(
                [
                    "data",
                    "convert",
                    "{omni}",
                    "--to",
                    "jsonl",
                    "--out",
                    "{dir}/out",
                    "--split-by",
                    "image",
                    "--test-ratio",
                    "1.5",
                ],
                says=("--test-ratio: must be between 0 and 1",),
            )
        ],
        None,
    ),  # fmt: skip
    Case("unknown-dicom-window", "review", [Run(["validate", "{recipe}", "data.window=foo"], says=("data.window",))]),
    Case(
        "rewards-check-judge-with-bad-settings",
        "review",
        [
            Run(
                ["rewards", "check", "judge", "--completion", "<answer>liver</answer>", "--solution", "the liver"],
                says=("kwargs.model",),
                never=("it must return one float",),
            )
        ],
        None,
    ),
    Case(
        "eval-model-does-not-exist",
        "review",
        [Run(["eval", "{recipe}", "data.eval.path={omni}", "eval.model={dir}/nowhere"], says=("does not exist",))],
    ),
    Case("override-with-two-dots", "review", [Run(["validate", "{recipe}", "grpo..beta=1"], says=("empty part",))]),
    Case(
        "out-of-range-values-found-by-validate",
        "review",
        [
            Run(
                ["validate", "{recipe}", "data.image_size=-5", "model.lora.dropout=2", "eval.top_p=2"],
                says=("data.image_size: must be at least 1", "model.lora.dropout", "eval.top_p"),
            )
        ],
    ),
]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


DUPLICATE_GRPO = """\
model: {{name_or_path: {model}, finetune: full}}
data: {{train: {{path: {omni}}}}}
output_dir: {run}
grpo: {{max_steps: 2}}
rewards: [{{name: accuracy}}]
grpo: {{learning_rate: 0.01}}
"""


def assert_files(folder: Path, *names: str) -> None:
    missing = [n for n in names if not (folder / n).exists()]
    assert not missing, f"missing in {folder}: {missing}"


def assert_no_run(folder: Path) -> None:
    assert not folder.exists(), f"{folder} was written: {sorted(p.name for p in folder.iterdir())}"


# -- running a case -------------------------------------------------------------------------------------------------


class Server:
    """The fork server (`cli_runner.py`), started once for the module."""

    def __init__(self):
        # One thread: the tiny model gains nothing from more, and on a busy machine competing threads make every
        # step several times slower.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, str(TESTS / "cli_runner.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            cwd=TESTS,
        )
        assert json.loads(self.process.stdout.readline()) == {"ready": True}

    def run(self, argv, cwd: Path, out: Path, env=None, preload=None, timeout=600) -> int:
        request = {
            "argv": argv,
            "cwd": str(cwd),
            "env": env or {},
            "stdout": str(out / "stdout"),
            "stderr": str(out / "stderr"),
            "timeout": timeout,
            "preload": preload,
        }
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["rc"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def fresh(argv, cwd: Path, out: Path, env=None, timeout=600) -> int:
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    for key, value in (env or {}).items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    with open(out / "stdout", "w") as stdout, open(out / "stderr", "w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "med_r1", *argv],
            cwd=cwd,
            env=environment,
            stdout=stdout,
            stderr=stderr,
            timeout=timeout,
        )
    return done.returncode


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (but the captured output) and a hash of its bytes."""
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not relative.startswith(OUT):
            files[relative] = hashlib.sha1(path.read_bytes()).hexdigest()
    return files


def lost(before: dict, after: dict, may_change: tuple[str, ...]) -> list[str]:
    """Files that were there before and are gone or changed, that the case did not allow to change."""
    allowed = [re.compile(re.escape(g).replace(r"\*", ".*") + "$") for g in may_change]
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    return [p for p in changed if not any(a.match(p) for a in allowed)]


@dataclass
class Outcome:
    id: str
    item: str
    commands: int
    clean: bool
    traceback: bool
    lost: list[str]


RESULTS: list[Outcome] = []


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model, server) -> Ctx:
    """What the cases share and never change: the tiny model, a dataset, and a finished two-step run with a
    checkpoint after each step (cases that damage it work on a copy)."""
    root = tmp_path_factory.mktemp("world")
    omni = make_omnimedvqa(root / "omni")
    trained = root / "trained"
    raw = tiny_recipe(tiny_model, omni, trained, save_strategy="steps", save_steps=1)
    (root / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    rc = server.run(["train", str(root / "recipe.yaml")], root, root)
    assert rc == 0, (root / "stderr").read_text()[-3000:]
    return Ctx(root, tiny_model, omni, trained)


def write_case_recipe(case: Case, ctx: Ctx) -> None:
    if case.recipe is None:
        return
    path = ctx.dir / "recipe.yaml"
    if isinstance(case.recipe, bytes):
        path.write_bytes(case.recipe)
        return
    if isinstance(case.recipe, str):
        text = (
            DUPLICATE_GRPO.format(model=ctx.model, omni=ctx.omni, run=ctx.run)
            if case.recipe == "DUPLICATE_GRPO"
            else case.recipe
        )
        path.write_text(text)
        return
    raw = tiny_recipe(ctx.model, ctx.omni, ctx.run)
    for dotted, value in case.recipe.items():
        *parents, last = dotted.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = json.loads(ctx.fill(json.dumps(value)))
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.item}-{c.id}")
def test_user_error(case: Case, server, world, tmp_path):
    ctx = Ctx(tmp_path, world.model, world.omni, world.trained)
    write_case_recipe(case, ctx)
    if case.setup:
        case.setup(ctx)
    before = snapshot(tmp_path)
    failures, traceback_seen = [], False
    for i, run in enumerate(case.runs):
        out = tmp_path / OUT / str(i)
        out.mkdir(parents=True)
        argv = [ctx.fill(a) for a in run.argv]
        env = {k: (ctx.fill(v) if v is not None else None) for k, v in run.env.items()}
        start = time.perf_counter()
        if run.fresh:
            rc = fresh(argv, tmp_path, out, env)
        else:
            preload = str(PLUGINS / run.preload) if run.preload else None
            rc = server.run(argv, tmp_path, out, env, preload)
        seconds = time.perf_counter() - start
        stdout, stderr = (out / "stdout").read_text(), (out / "stderr").read_text()
        text = stdout + stderr
        where = f"command {i + 1} (med-r1 {' '.join(argv)}, {seconds:.0f} s)"
        if rc != run.rc:
            failures.append(f"{where}: exit status {rc}, expected {run.rc}")
        if "Traceback" in stderr:
            traceback_seen = True
            failures.append(f"{where}: a traceback on stderr")
        failures += [f"{where}: does not say {s!r}" for s in map(ctx.fill, run.says) if s not in text]
        failures += [f"{where}: says {s!r}" for s in map(ctx.fill, run.never) if s in text]
        if failures:
            failures.append(f"stdout:\n{stdout[-2000:]}\nstderr:\n{stderr[-4000:]}")
            break
    gone = lost(before, snapshot(tmp_path), case.may_change)
    if gone:
        failures.append(f"files lost or changed: {gone}")
    RESULTS.append(Outcome(case.id, case.item, len(case.runs), not failures, traceback_seen, gone))
    if case.check and not failures:
        case.check(ctx)
    assert not failures, "\n".join(failures)


def test_the_count(capsys):
    """The totals over the table (run after it): cases, clean exits, tracebacks, files lost."""
    if len(RESULTS) < len(CASES):
        pytest.skip("the whole table did not run")
    held = sum(r.item == "held" for r in RESULTS)
    review = sum(r.item == "review" for r in RESULTS)
    line = (
        f"{len(RESULTS)} cases ({held} that already behaved, {len(RESULTS) - held - review} from issue 13, {review} "
        "from a second review), "
        f"{sum(r.commands for r in RESULTS)} commands: {sum(r.clean for r in RESULTS)} clean, "
        f"{sum(r.traceback for r in RESULTS)} tracebacks, {sum(len(r.lost) for r in RESULTS)} files lost"
    )
    with capsys.disabled():
        print("\n" + line)
    assert all(r.clean for r in RESULTS), line

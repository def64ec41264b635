"""The `med-r1` command. Each subcommand is a small function that hands its arguments to the module doing the work.

A user's mistake (bad recipe, missing file, bad data) prints a message naming what to fix and exits with status 2,
without a traceback. Each command imports the modules it runs inside its function (the one place med-r1 imports its
own modules lazily): between them they pull in yaml, numpy, PIL, torch and transformers, and `med-r1 --help` must not
wait for those.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from med_r1 import __version__
from med_r1.errors import Interrupted, RunError, UserError

EXIT_USER_ERROR = 2


def _overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a YAML recipe, e.g. recipes/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="recipe overrides")


def cmd_train(args) -> int:
    from med_r1.config import load_recipe
    from med_r1.train import train

    final = train(load_recipe(args.recipe, args.overrides))
    print(f"done: final model in {final}")
    return 0


def cmd_validate(args) -> int:
    from med_r1.config import load_recipe
    from med_r1.plan import build_plan
    from med_r1.report import plan_summary

    plan = build_plan(load_recipe(args.recipe, args.overrides), "validate")
    print(plan_summary(plan))
    return 0


def cmd_eval(args) -> int:
    from med_r1.config import load_recipe
    from med_r1.eval.run import evaluate

    out = evaluate(load_recipe(args.recipe, args.overrides))
    print((out / "metrics.md").read_text())
    print(f"predictions and metrics in {out}")
    return 0


def cmd_matrix(args) -> int:
    from med_r1.config import load_recipe
    from med_r1.matrix import run_matrix

    print(run_matrix(load_recipe(args.recipe, args.overrides), dry_run=args.dry_run))
    return 0


def cmd_compare(args) -> int:
    from med_r1.eval.compare import compare

    print(compare(Path(args.a), Path(args.b), args.eval))
    return 0


def _data_source(args, path: str):
    from med_r1.config import DataSource
    from med_r1.data.sources import load_source

    source = DataSource(path=path, format=args.format, image_root=args.image_root)
    return load_source(source, where="PATH")


def cmd_data_stats(args) -> int:
    from med_r1.data.checks import format_stats, stats

    report = stats(_data_source(args, args.path).questions)
    print(json.dumps(report, indent=2) if args.json else format_stats(report))
    return 0


def cmd_data_validate(args) -> int:
    from med_r1.data.checks import format_summary, summary, validate

    loaded = _data_source(args, args.path)
    test = _data_source(args, args.test).questions if args.test else None
    problems = validate(loaded.questions, loaded.problems, test=test, decode=not args.quick)
    report = summary(problems, shown=args.show)
    report["questions"] = len(loaded.questions)
    print(json.dumps(report, indent=2) if args.json else format_summary(report, len(loaded.questions)))
    return EXIT_USER_ERROR if report["errors"] else 0


def cmd_data_convert(args) -> int:
    from med_r1.config import SplitConfig
    from med_r1.data.convert import convert
    from med_r1.data.omnimedvqa import find_root
    from med_r1.data.sources import resolve_path

    loaded = _data_source(args, args.path)
    source = resolve_path(args.path)
    image_root = Path(args.image_root or find_root(source) or (source if source.is_dir() else source.parent))
    split = SplitConfig(by=args.split_by, test_ratio=args.test_ratio, seed=args.seed) if args.split_by else None
    for line in convert(loaded.questions, args.to, Path(args.out), image_root, split):
        print(line)
    return 0


def cmd_data_difficulty(args) -> int:
    from med_r1.config import load_recipe
    from med_r1.eval.difficulty import difficulty, format_summary
    from med_r1.io import read_jsonl

    path = difficulty(load_recipe(args.recipe, args.overrides), args.samples, args.model, args.out)
    summary = json.loads((path.parent / "summary.json").read_text())
    print(format_summary(summary, path))
    return 0 if read_jsonl(path) else EXIT_USER_ERROR


def cmd_tiny_model(args) -> int:
    from med_r1.tiny import build_tiny_causal_lm, build_tiny_qwen2vl

    if args.arch == "judge":  # a text-only causal LM: a local judge
        print(f"tiny judge written to {build_tiny_causal_lm(args.out_dir, seed=args.seed)}")
        return 0
    print(f"tiny {args.arch} written to {build_tiny_qwen2vl(args.out_dir, seed=args.seed, arch=args.arch)}")
    return 0


def cmd_rewards_list(args) -> int:
    from med_r1.rewards import available

    rewards = available()
    width = max(len(name) for name in rewards)
    for name, reward in rewards.items():
        print(f"{name:<{width}}  [{reward.kind}]  {reward.summary}")
    return 0


def cmd_rewards_check(args) -> int:
    import yaml

    from med_r1.records import Question, column_values
    from med_r1.rewards import get_reward

    kwargs = {}
    for item in args.kwarg:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--kwarg {item!r} must look like name=value")
        kwargs[key] = yaml.safe_load(value)
    fn = get_reward(args.spec, **kwargs)
    options = args.options or []
    answer_type = args.answer_type or ("choice" if options or len(args.solution) == 1 else "open")
    question = Question(
        "cli-0", "cli", (), args.question, tuple(options), args.solution, "unknown", "unknown", answer_type
    )
    completion = [[{"role": "assistant", "content": args.completion}]]
    print(fn(prompts=None, completions=completion, completion_ids=None, **column_values([question]))[0])
    return 0


def build_parser() -> argparse.ArgumentParser:
    from med_r1.data.sources import FORMATS

    parser = argparse.ArgumentParser(prog="med-r1", description="GRPO reasoning fine-tuning for medical VLMs.")
    parser.add_argument("--version", action="version", version=f"med-r1 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a policy with GRPO from a recipe")
    _overrides(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("validate", help="check a recipe, its data and rewards without loading model weights")
    _overrides(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("eval", help="evaluate a base model or trained run on the recipe's evaluation data")
    _overrides(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("matrix", help="train per domain and evaluate on every domain (generalization tables)")
    _overrides(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan and what already exists; run nothing")
    p.set_defaults(func=cmd_matrix)

    p = sub.add_parser("compare", help="per-domain accuracy deltas of two evaluations, with 95%% intervals")
    p.add_argument("a", help="run folder, eval folder or metrics.json (the reference)")
    p.add_argument("b", help="run folder, eval folder or metrics.json")
    p.add_argument("--eval", help="which eval/<name>/ of a run folder to use")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("tiny-model", help="build a tiny random Qwen2-VL offline (tests, quickstart)")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", default="qwen2-vl", choices=["qwen2-vl", "qwen2.5-vl", "qwen3-vl", "judge"])
    p.set_defaults(func=cmd_tiny_model)

    data = sub.add_parser("data", help="inspect, check and convert datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    for name, func, text in (
        ("stats", cmd_data_stats, "questions by modality x question type, options, answer letters, images"),
        ("validate", cmd_data_validate, "missing/unreadable images, bad answers, duplicate ids, train/test overlap"),
        ("convert", cmd_data_convert, "write Med-R1 split files or generic JSONL"),
    ):
        p = dsub.add_parser(name, help=text)
        p.add_argument("path", help="a dataset folder or file, or 'bundled'")
        p.add_argument("--format", default="auto", choices=["auto", *FORMATS])
        p.add_argument("--image-root", help="folder relative image paths are resolved against")
        p.set_defaults(func=func)
        if name != "convert":
            p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        if name == "validate":
            p.add_argument("--test", help="a test set: report images it shares with PATH")
            p.add_argument("--quick", action="store_true", help="check that images exist without decoding them")
            p.add_argument("--show", type=int, default=20, help="how many problems to list")
        if name == "convert":
            p.add_argument("--to", required=True, choices=["medr1", "jsonl"])
            p.add_argument("--out", required=True, help="output folder")
            p.add_argument("--split-by", choices=["image", "question"], help="also split into train/test")
            p.add_argument("--test-ratio", type=float, default=0.2)
            p.add_argument("--seed", type=int, default=42)

    p = dsub.add_parser("difficulty", help="sample K answers per training question; write each one's pass rate")
    _overrides(p)
    p.add_argument("--samples", type=int, default=8, help="answers sampled per question (default 8)")
    p.add_argument("--model", help="base (the default), or a run folder, model folder or checkpoint-N/ folder")
    p.add_argument("--out", help="output folder (default: data.pass_rates, else output_dir/difficulty)")
    p.set_defaults(func=cmd_data_difficulty)

    rewards = sub.add_parser("rewards", help="list rewards, or score one completion by hand")
    rsub = rewards.add_subparsers(dest="rewards_command", required=True, metavar="ACTION")
    p = rsub.add_parser("list", help="built-in rewards with their first docstring line")
    p.set_defaults(func=cmd_rewards_list)
    p = rsub.add_parser("check", help="score one completion with a reward (debug a plugin by hand)")
    p.add_argument("spec", help="a built-in name, entry point, package.module:function or file.py:function")
    p.add_argument("--completion", required=True)
    p.add_argument("--solution", required=True, help="the correct letter (or answer text for open questions)")
    p.add_argument("--options", nargs="*", help="option texts in letter order")
    p.add_argument("--answer-type", choices=["choice", "closed", "open"])
    p.add_argument("--question", default="", help="the question text (for rewards that read it, such as judge)")
    p.add_argument("--kwarg", action="append", default=[], metavar="name=value", help="reward kwargs")
    p.set_defaults(func=cmd_rewards_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    # transformers renames gradient_checkpointing in v6; TRL still uses the old name. Nothing for a user to act on.
    warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in v6.*", category=FutureWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("MED_R1_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Interrupted as exc:
        print(str(exc), file=sys.stderr)
        return 128 + exc.signal_number
    except RunError as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

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
import shlex
import sys
import warnings
from pathlib import Path

from med_r1 import __version__
from med_r1.errors import Interrupted, RunError, UserError

EXIT_USER_ERROR = 2


def _overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a YAML recipe, e.g. recipes/quickstart.yaml")
    # default=[]: argparse otherwise lists a missing recipe's overrides as required too
    parser.add_argument(
        "overrides", nargs="*", default=[], metavar="key.sub=value", help="recipe overrides, e.g. grpo.beta=0.04"
    )


def _run_args(args) -> str:
    """The recipe and overrides as typed (shell-quoted), for commands that continue or evaluate this run."""
    return shlex.join([args.recipe, *(o for o in args.overrides if not o.startswith("resume="))])


def cmd_train(args) -> int:
    from med_r1.config import load_recipe
    from med_r1.train import train

    overrides = args.overrides + (["verbose=true"] if args.verbose else [])
    trained = train(load_recipe(args.recipe, overrides), _run_args(args))
    print("done: " + "\n      ".join(trained.summary))
    print(f"next: med-r1 eval {_run_args(args)}")
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


def _data_source(args, path: str, where: str = "PATH"):
    from med_r1.config import DataSource
    from med_r1.data.sources import load_source

    source = DataSource(path=path, format=args.format, image_root=args.image_root)
    return load_source(source, where=where)


def cmd_data_stats(args) -> int:
    from med_r1.config import DataSource
    from med_r1.data.checks import format_stats, stats
    from med_r1.data.sources import image_root_of

    report = stats(_data_source(args, args.path).questions)
    root = image_root_of(DataSource(path=args.path, format=args.format, image_root=args.image_root), "PATH")
    print(json.dumps(report, indent=2) if args.json else format_stats(report, args.path, str(root)))
    return 0


def cmd_data_validate(args) -> int:
    from med_r1.data.checks import format_summary, summary, validate

    loaded = _data_source(args, args.path)
    test = _data_source(args, args.test, "--test").questions if args.test else None
    problems = validate(loaded.questions, loaded.problems, test=test, decode=not args.quick)
    report = summary(problems, shown=args.show)
    report["questions"] = len(loaded.questions)
    print(json.dumps(report, indent=2) if args.json else format_summary(report, len(loaded.questions)))
    return EXIT_USER_ERROR if report["errors"] else 0


def cmd_data_convert(args) -> int:
    from med_r1.config import DataSource, SplitConfig
    from med_r1.data.convert import check_out, convert
    from med_r1.data.sources import image_root_of

    out = Path(args.out)
    check_out(out, args.force)
    loaded = _data_source(args, args.path)
    image_root = image_root_of(DataSource(path=args.path, format=args.format, image_root=args.image_root))
    if args.split_by and not 0.0 < args.test_ratio < 1.0:
        raise UserError(
            f"--test-ratio: must be between 0 and 1 (the share of questions held out), got {args.test_ratio}"
        )
    split = SplitConfig(by=args.split_by, test_ratio=args.test_ratio, seed=args.seed) if args.split_by else None
    done = convert(loaded.questions, loaded.problems, args.to, out, image_root, split, args.layout)
    for line in done.written:
        print(line)
    print(f"{done.questions} questions written; {len(done.dropped)} records dropped")
    for line in done.dropped:
        print(f"  dropped {line}")
    print(f"image paths are relative to {image_root}: load the files with image_root: {image_root}")
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
    from med_r1.io import check_output_folder
    from med_r1.tiny import build_tiny_causal_lm, build_tiny_qwen2vl

    check_output_folder(Path(args.out_dir), args.force, "tiny-model OUT_DIR")
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
    from med_r1.rewards.guard import raised_at
    from med_r1.rewards.judge_backends import JudgeError

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
    try:
        scores = fn(prompts=None, completions=completion, completion_ids=None, **column_values([question]))
        print(list(scores)[0])
    except UserError:  # a setting the reward checks (a judge's kwargs): its message says what to fix
        raise
    except JudgeError as exc:  # the judge, not the reward, failed
        raise UserError(f"reward {args.spec!r}: {exc}") from None
    except Exception as exc:  # the plugin's own bug: say where, without burying it under med-r1's frames
        raise UserError(
            f"reward {args.spec!r} raised {type(exc).__name__}: {exc} (at {raised_at(exc)}); it must return one "
            "float or None per completion"
        ) from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    from med_r1.data.convert import LAYOUTS
    from med_r1.data.sources import FORMATS

    parser = argparse.ArgumentParser(prog="med-r1", description="GRPO reasoning fine-tuning for medical VLMs.")
    parser.add_argument("--version", action="version", version=f"med-r1 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str, examples: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=summary,
            description=description,
            epilog="examples:\n" + examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = command(
        "train",
        "train a policy with GRPO from a recipe",
        "Train the recipe's model with GRPO on its data.train and rewards, into output_dir: recipe.yaml, "
        "metrics.jsonl, rewards.png, checkpoint-*/ and the final model/. The recipe is checked first (as `med-r1 "
        "validate` does); overrides replace recipe values, and a folder that holds a run is continued only with "
        "resume=true.",
        "  med-r1 train recipes/quickstart.yaml\n"
        '  med-r1 train recipes/med-r1/think_lora.yaml grpo.learning_rate=5.0e-7 "data.train.modalities=[CT]"\n'
        "  med-r1 train recipes/quickstart.yaml resume=true        # continue from the last complete checkpoint",
    )
    _overrides(p)
    p.add_argument(
        "--verbose", action="store_true", help="print every metric at each logging step (same as verbose=true)"
    )
    p.set_defaults(func=cmd_train)

    p = command(
        "validate",
        "check a recipe, its data and rewards without loading model weights",
        "Check everything `med-r1 train` would, without loading weights or writing anything: every recipe key, "
        "GRPOConfig, the data (records, image files, duplicate ids), the rewards on real rows and the gold "
        "self-check, prompt lengths, the model's config.json and processor, output_dir and resume. Every problem "
        "is listed at once; exit status 2 if there is any.",
        "  med-r1 validate recipes/quickstart.yaml\n"
        "  med-r1 validate recipes/med-r1/think_full.yaml data.train.path=/data/OmniMedVQA",
    )
    _overrides(p)
    p.set_defaults(func=cmd_validate)

    p = command(
        "eval",
        "evaluate a base model or trained run on the recipe's evaluation data",
        "Generate an answer for every question of data.eval and score it with the answer parser the rewards use. "
        "Writes output_dir/eval/<name>/ (predictions.jsonl, metrics.json, metrics.md); an interrupted evaluation "
        "resumes. Evaluates the run's final model, or the base model when there is none (eval.model=base forces it).",
        "  med-r1 eval recipes/quickstart.yaml\n"
        "  med-r1 eval recipes/quickstart.yaml eval.model=base eval.prompt=medr1_zeroshot eval.name=zeroshot\n"
        "  med-r1 eval recipes/quickstart.yaml eval.model=runs/quickstart/checkpoint-100",
    )
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
    p.add_argument("out_dir", help="folder to write the model to; it must be new or empty (see --force)")
    p.add_argument(
        "--seed", type=int, default=0, help="random seed of the weights; the same seed gives the same bytes"
    )
    p.add_argument(
        "--arch",
        default="qwen2-vl",
        choices=["qwen2-vl", "qwen2.5-vl", "qwen3-vl", "judge"],
        help="model family to build ('judge': a tiny text-only causal LM, a local judge for tests and demos)",
    )
    p.add_argument("--force", action="store_true", help="write into a folder that already holds files")
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
            p.add_argument("--out", required=True, help="output folder (refused if it holds files, unless --force)")
            p.add_argument("--force", action="store_true", help="write into an --out that already holds files")
            p.add_argument(
                "--layout",
                default="auto",
                choices=LAYOUTS,
                help="Med-R1 layouts to write (auto: the axes the questions name)",
            )
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
    p.add_argument("--completion", required=True, help="the model's output to score, e.g. '<answer>B</answer>'")
    p.add_argument("--solution", required=True, help="the correct letter (or answer text for open questions)")
    p.add_argument("--options", nargs="*", help="option texts in letter order")
    p.add_argument(
        "--answer-type",
        choices=["choice", "closed", "open"],
        help="the question's kind; default: choice with --options or a one-letter solution, else open",
    )
    p.add_argument("--question", default="", help="the question text (for rewards that read it, such as judge)")
    p.add_argument(
        "--kwarg", action="append", default=[], metavar="name=value", help="a reward kwarg (repeatable), YAML value"
    )
    p.set_defaults(func=cmd_rewards_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    # transformers renames gradient_checkpointing in v6; TRL still uses the old name. Nothing for a user to act on.
    warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in v6.*", category=FutureWarning)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # key=value overrides written after an option (`train r.yaml --verbose grpo.beta=0`) are still overrides
        if hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides = [*(args.overrides or []), *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
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

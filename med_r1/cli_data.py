"""The `med-r1 data ...`, `med-r1 eval import` and `med-r1 rewards ...` commands of `med_r1.cli`: datasets inspected,
checked, converted and exported to evaluation harnesses, a harness's predictions scored, rewards listed and tried
by hand. Each command is a small function handing its arguments to the module doing the work."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from med_r1.config import DataConfig, DataSource, SplitConfig, load_recipe
from med_r1.data import checks
from med_r1.data.convert import LAYOUTS, check_out, convert
from med_r1.data.export import export, exportable, vlmevalkit_name_problem
from med_r1.data.sources import FORMATS, image_root_of, load_source, select
from med_r1.errors import UserError
from med_r1.eval import difficulty
from med_r1.eval.harness import import_predictions, recipe_questions
from med_r1.io import read_jsonl
from med_r1.records import Question, column_values
from med_r1.rewards import available, get_reward
from med_r1.rewards.guard import raised_at
from med_r1.rewards.judge_backends import JudgeError

EXIT_USER_ERROR = 2


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """RECIPE and its key=value overrides, as every recipe command takes them."""
    parser.add_argument("recipe", help="a YAML recipe, e.g. recipes/quickstart.yaml")
    # default=[]: argparse otherwise lists a missing recipe's overrides as required too
    parser.add_argument(
        "overrides", nargs="*", default=[], metavar="key.sub=value", help="recipe overrides, e.g. grpo.beta=0.04"
    )


def _data_source(args, path: str, where: str = "PATH"):
    source = DataSource(path=path, format=args.format, image_root=args.image_root)
    return load_source(source, where=where)


def cmd_data_stats(args) -> int:
    loaded = _data_source(args, args.path)
    report = checks.stats(loaded.questions, loaded.problems)
    root = image_root_of(DataSource(path=args.path, format=args.format, image_root=args.image_root), "PATH")
    print(json.dumps(report, indent=2) if args.json else checks.format_stats(report, args.path, str(root)))
    if args.json and report["skipped"]["rows"]:  # stdout stays JSON; the warning still reaches the terminal
        print(checks.skipped_warning(report["skipped"], args.path), file=sys.stderr)
    return 0  # rows skipped are reported, not fatal: `data validate` is the gate


def cmd_data_validate(args) -> int:
    loaded = _data_source(args, args.path)
    test = _data_source(args, args.test, "--test").questions if args.test else None
    problems = checks.validate(loaded.questions, loaded.problems, test=test, decode=not args.quick)
    report = checks.summary(problems, shown=args.show)
    report["questions"] = len(loaded.questions)
    print(json.dumps(report, indent=2) if args.json else checks.format_summary(report, len(loaded.questions)))
    return EXIT_USER_ERROR if report["errors"] else 0


def cmd_data_convert(args) -> int:
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


def cmd_data_export(args) -> int:
    out = Path(args.out)
    if args.format == "vlmevalkit" and out.exists() and not args.force:
        raise UserError(f"--out: {out} already exists; nothing was written. Give a new file, or pass --force")
    if Path(args.source).suffix.lower() in (".yaml", ".yml"):
        recipe = load_recipe(args.source, args.overrides)
        questions, data = recipe_questions(recipe, args.split or "test"), recipe.data
    else:  # a data source: all of it, or one side of the default split (by image, test_ratio 0.2, seed 42)
        if args.overrides:
            raise UserError(f"{args.source} is no recipe, so key=value overrides do not apply: {args.overrides[0]}")
        source = DataSource(args.source, args.source_format, split=args.split or "all", image_root=args.image_root)
        questions, data = select(source, SplitConfig(), "SOURCE").questions, DataConfig(train=source)
    kept, dropped = exportable(questions, args.format)
    if not kept:
        reasons = "; ".join(dropped[:3]) or "the selection holds no questions"
        raise UserError(f"nothing to export to {args.format}: {len(dropped)} questions, none it can take ({reasons})")
    problem = vlmevalkit_name_problem(out) if args.format == "vlmevalkit" else None
    if problem:
        print(f"warning: {problem}; name the file otherwise (the dataset name is the file's stem)")
    done = export(questions, args.format, out, args.force, data.frames, data.window)
    print(f"{len(done.questions)} questions written to {done.path}; {len(done.dropped)} left out")
    for line in done.dropped[:20]:
        print(f"  left out {line}")
    return 0


def cmd_eval_import(args) -> int:
    out, notes = import_predictions(
        load_recipe(args.recipe, args.overrides), args.format, Path(args.predictions), args.split, args.name
    )
    print((out / "metrics.md").read_text())
    for note in notes:
        print(note)
    print(f"predictions and metrics in {out}")
    return 0


def cmd_data_difficulty(args) -> int:
    path = difficulty.difficulty(load_recipe(args.recipe, args.overrides), args.samples, args.model, args.out)
    summary = json.loads((path.parent / "summary.json").read_text())
    print(difficulty.format_summary(summary, path))
    return 0 if read_jsonl(path) else EXIT_USER_ERROR


def cmd_rewards_list(args) -> int:
    rewards = available()
    width = max(len(name) for name in rewards)
    for name, reward in rewards.items():
        print(f"{name:<{width}}  [{reward.kind}]  {reward.summary}")
    return 0


def cmd_rewards_check(args) -> int:
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


def add_data_commands(sub) -> None:
    """`data stats|validate|convert|export|difficulty` and `eval-import` (what `med-r1 eval import` runs)."""
    data = sub.add_parser("data", help="inspect, check and convert datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    for name, func, text in (
        ("stats", cmd_data_stats, "questions by modality x question type, options, answers, images, skipped rows"),
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

    p = dsub.add_parser("export", help="write a split in VLMEvalKit's or MedEvalKit's input format")
    p.add_argument("source", help="a recipe (its --split: test = the questions med-r1 evaluates) or a data source")
    p.add_argument(
        "overrides", nargs="*", default=[], metavar="key.sub=value", help="recipe overrides, e.g. data.eval.limit=50"
    )
    p.add_argument("--format", required=True, choices=["vlmevalkit", "medevalkit"], help="the harness")
    p.add_argument("--out", required=True, help="vlmevalkit: the .tsv file; medevalkit: a new or empty folder")
    p.add_argument("--split", choices=["test", "train"], help="recipe: test (default) or train; data source: all")
    p.add_argument("--source-format", default="auto", choices=["auto", *FORMATS], help="a data source's format")
    p.add_argument("--image-root", help="a data source's folder relative image paths are resolved against")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_data_export)

    p = sub.add_parser(
        "eval-import",
        prog="med-r1 eval import",
        help="score a harness's predictions file by med-r1's rule (also: med-r1 eval import)",
    )
    p.add_argument("predictions", help="VLMEvalKit's predictions .xlsx/.tsv/.csv, or MedEvalKit's results.json")
    p.add_argument("--format", required=True, choices=["vlmevalkit", "medevalkit"], help="the harness")
    p.add_argument("--recipe", required=True, help="the recipe the questions were exported from")
    p.add_argument(
        "overrides", nargs="*", default=[], metavar="key.sub=value", help="recipe overrides given at export"
    )
    p.add_argument("--split", default="test", choices=["test", "train"], help="the split exported (default test)")
    p.add_argument("--name", help="the results folder output_dir/eval/NAME (default: the harness's name)")
    p.set_defaults(func=cmd_eval_import)

    p = dsub.add_parser("difficulty", help="sample K answers per training question; write each one's pass rate")
    add_recipe_arguments(p)
    p.add_argument("--samples", type=int, default=8, help="answers sampled per question (default 8)")
    p.add_argument("--model", help="base (the default), or a run folder, model folder or checkpoint-N/ folder")
    p.add_argument("--out", help="output folder (default: data.pass_rates, else output_dir/difficulty)")
    p.set_defaults(func=cmd_data_difficulty)


def add_rewards_commands(sub) -> None:
    """`rewards list|check`."""
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

"""The `med-r1` command. Each subcommand is a small function that hands its arguments to the module doing the work
(`data`, `eval import` and `rewards` are in `med_r1.cli_data`).

A user's mistake (bad recipe, missing file, bad data) prints a message naming what to fix and exits with status 2,
without a traceback. The modules imported here load no torch or transformers (those are imported inside the
functions that use them), so `med-r1 --help` and `med-r1 validate` start quickly.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import warnings
from pathlib import Path

from med_r1 import __version__
from med_r1.cli_data import EXIT_USER_ERROR, add_data_commands, add_recipe_arguments, add_rewards_commands
from med_r1.config import load_recipe
from med_r1.errors import Interrupted, RunError, UserError
from med_r1.eval.compare import compare
from med_r1.eval.run import evaluate
from med_r1.io import check_output_folder
from med_r1.matrix import run_matrix
from med_r1.plan import build_plan
from med_r1.report import plan_summary
from med_r1.tiny import build_tiny_causal_lm, build_tiny_qwen2vl
from med_r1.train import leave_process_group, train


def _run_args(args) -> str:
    """The recipe and overrides as typed (shell-quoted), for commands that continue or evaluate this run."""
    return shlex.join([args.recipe, *(o for o in args.overrides if not o.startswith("resume="))])


def cmd_train(args) -> int:
    overrides = args.overrides + (["verbose=true"] if args.verbose else [])
    trained = train(load_recipe(args.recipe, overrides), _run_args(args))
    leave_process_group()
    print("done: " + "\n      ".join(trained.summary))
    print(f"next: med-r1 eval {_run_args(args)}")
    return 0


def cmd_validate(args) -> int:
    plan = build_plan(load_recipe(args.recipe, args.overrides), "validate")
    print(plan_summary(plan))
    return 0


def cmd_eval(args) -> int:
    out = evaluate(load_recipe(args.recipe, args.overrides))
    print((out / "metrics.md").read_text())
    print(f"predictions and metrics in {out}")
    return 0


def cmd_matrix(args) -> int:
    print(run_matrix(load_recipe(args.recipe, args.overrides), dry_run=args.dry_run))
    return 0


def cmd_compare(args) -> int:
    print(compare(Path(args.a), Path(args.b), args.eval))
    return 0


def cmd_tiny_model(args) -> int:
    check_output_folder(Path(args.out_dir), args.force, "tiny-model OUT_DIR")
    if args.arch == "judge":  # a text-only causal LM: a local judge
        print(f"tiny judge written to {build_tiny_causal_lm(args.out_dir, seed=args.seed)}")
        return 0
    print(f"tiny {args.arch} written to {build_tiny_qwen2vl(args.out_dir, seed=args.seed, arch=args.arch)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    add_recipe_arguments(p)
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
    add_recipe_arguments(p)
    p.set_defaults(func=cmd_validate)

    p = command(
        "eval",
        "evaluate a base model or trained run on the recipe's evaluation data",
        "Generate an answer for every question of data.eval and score it with the answer parser the rewards use. "
        "Writes output_dir/eval/<name>/ (predictions.jsonl, metrics.json, metrics.md); an interrupted evaluation "
        "resumes. Evaluates the run's final model, or the base model when there is none (eval.model=base forces it).",
        "  med-r1 eval recipes/quickstart.yaml\n"
        "  med-r1 eval recipes/quickstart.yaml eval.model=base eval.prompt=medr1_zeroshot eval.name=zeroshot\n"
        "  med-r1 eval recipes/quickstart.yaml eval.model=runs/quickstart/checkpoint-100\n"
        "  med-r1 eval import --format vlmevalkit PREDICTIONS.xlsx --recipe recipes/quickstart.yaml   # a harness's",
    )
    add_recipe_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("matrix", help="train per domain and evaluate on every domain (generalization tables)")
    add_recipe_arguments(p)
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

    add_data_commands(sub)
    add_rewards_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # transformers renames gradient_checkpointing in v6; TRL still uses the old name. Nothing for a user to act on.
    warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in v6.*", category=FutureWarning)
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["eval", "import"]:  # `med-r1 eval import ...` is the eval-import command
        argv = ["eval-import", *argv[2:]]
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

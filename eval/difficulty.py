"""`med-r1 data difficulty RECIPE [--samples K] [--model base|RUN] [key=value ...]`: how often the policy solves each
training question, for `data.train.pass_rate` (keep a band) and `data.order: easy_to_hard` (a curriculum).

    med-r1 data difficulty recipes/med-r1/think_full.yaml --samples 8             # the base model
    med-r1 data difficulty recipes/med-r1/think_full.yaml --model runs/a --out runs/a/difficulty

K answers are sampled per question of data.train (every one: the pass-rate band is not applied here) with the
evaluation engine (batched transformers, or vLLM where available, `eval.backend`), from the training prompt with GRPO's
sampling settings (grpo.temperature, grpo.top_p, grpo.max_completion_length; TRL's defaults 1.0, 1.0, 256). A sample is
scored as evaluation scores it: the answer parser for choice and yes/no questions; open answers by exact match, or,
with `eval.open_scorer: judge`, by the judge (1 / 0.5 / 0; a reply that is no verdict counts 0).

Output (default output_dir/difficulty/, or data.pass_rates): `pass_rates.jsonl`, one line per question, appended as
batches finish, so an interrupted run resumes and a later run only adds questions it has not seen:

    {"question_id": "CT_0001", "pass_rate": 0.375, "samples": 8, "correct": 3, "scores": [0, 1, ...],
     "parsed": ["B", "A", null, ...], "modality": "CT", "question_type": "...", "answer_type": "choice",
     "dataset": "..."}

`pass_rate` is the mean of `scores` (one per sample), `correct` the samples scoring 1. `eval_config.json` beside it
records what produced the rates (model and weights, prompt, image settings, sampling, scorer); a folder made with
other settings is refused. `summary.json` holds the histogram overall and per modality, and the time taken.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from med_r1.answers import is_correct
from med_r1.config import Recipe
from med_r1.data.rows import ImageLoader
from med_r1.data.schedule import PASS_RATES, pass_rate_file
from med_r1.errors import DataError
from med_r1.eval import open_scores
from med_r1.eval.run import _claim, _parse, conversation, fingerprint, load_backend, resolve_target
from med_r1.io import append_jsonl, atomic_write_json, read_jsonl
from med_r1.plan import build_plan
from med_r1.records import Question

logger = logging.getLogger(__name__)

BANDS = ("never", "sometimes", "always")


def sampling(recipe: Recipe, samples: int, model: str | None) -> Recipe:
    """The recipe with eval settings for sampling K rollouts the way GRPO samples them, on images sized as training
    sizes them (the eval.image_size/min_pixels/max_pixels of a paper recipe's native evaluation do not apply)."""
    grpo = recipe.grpo
    config = replace(
        recipe.eval,
        model=model or "base",
        do_sample=True,
        num_samples=samples,
        temperature=float(grpo.get("temperature", 1.0)),
        top_p=float(grpo.get("top_p", 1.0)),
        max_new_tokens=int(grpo.get("max_completion_length", 256) or 256),
        image_size=None,
        min_pixels=None,
        max_pixels=None,
    )
    return replace(recipe, eval=config)


def difficulty(recipe: Recipe, samples: int = 8, model: str | None = None, out: Path | None = None) -> Path:
    """Sample, score and write each training question's pass rate; return the pass-rate file."""
    if samples < 1:
        raise DataError(f"--samples: must be at least 1, got {samples}")
    questions = build_plan(recipe, "difficulty").train
    recipe = sampling(recipe, samples, model)
    path = Path(out) / PASS_RATES if out else pass_rate_file(recipe)
    target = resolve_target(recipe)
    judge = open_scores.start_judge(recipe)
    _claim(path.parent, settings(recipe, target, judge), "Pick another folder with --out (or data.pass_rates)")
    done = {r["question_id"] for r in read_jsonl(path, repair=True)}
    pending = [q for q in questions if q.question_id not in done]
    pending.sort(key=lambda q: -(len(q.question) + sum(map(len, q.options)) + 1000 * len(q.images)))
    logger.info("pass rates of %s, %d samples, on %d questions (%d done) -> %s", target.label, samples, len(questions),
                len(done), path)  # fmt: skip
    start = time.perf_counter()
    if pending:
        loader = ImageLoader.from_config(recipe.data)
        max_images = max(len(q.images) for q in pending) * max(recipe.data.frames, 1)
        backend, name = load_backend(target, recipe, path.parent, max_images)
        batch_size = recipe.eval.batch_size if name == "hf" else max(recipe.eval.batch_size, 256)
        for i in range(0, len(pending), batch_size):
            ready, conversations = [], []
            for q in pending[i : i + batch_size]:
                try:
                    images = loader.load(list(q.images), q.question_id)
                except DataError as exc:
                    logger.warning("%s (left out; tried again next run)", exc)
                    continue
                conversations.append(conversation(q, recipe, recipe.prompt.template, images))
                ready.append(q)
            for q, outputs in zip(ready, backend.generate(conversations) if ready else [], strict=True):
                append_jsonl(path, line(q, outputs, judge))
            logger.info("%d/%d questions", len(done) + i + len(ready), len(questions))
    rows = [r for r in read_jsonl(path) if r["question_id"] in {q.question_id for q in questions}]
    atomic_write_json(path.parent / "summary.json", summary(rows, time.perf_counter() - start, len(pending)))
    return path


def settings(recipe: Recipe, target, judge) -> dict:
    """What decides a question's pass rate (not which questions: the file grows as data.train does)."""
    seen = fingerprint(recipe, target, recipe.prompt.template)
    return {
        **{k: seen[k] for k in ("model", "adapter", "weights", "prompt", "system", "image_size", "frames", "window")},
        "pixels": seen["pixels"],
        "open_ended": recipe.data.train.open_ended,
        "sampling": seen["generation"],
        "scorer": judge.tag if judge is not None else "exact",
    }


def line(question: Question, outputs: list[str], judge) -> dict:
    """One question's pass-rate line from its sampled outputs."""
    parsed = [_parse(o, question) for o in outputs]
    if question.answer_type == "open" and judge is not None:
        asked = [(i, p) for i, p in enumerate(parsed) if p]
        verdicts = judge.score([(question.question, question.answer, p) for _, p in asked]) if asked else []
        scores = [0.0] * len(outputs)
        for (i, _), verdict in zip(asked, verdicts, strict=True):
            scores[i] = verdict or 0.0
    else:
        scores = [float(bool(is_correct(o, question.answer, question.options, question.answer_type))) for o in outputs]
    return {
        "question_id": question.question_id,
        "pass_rate": sum(scores) / len(scores),
        "samples": len(scores),
        "correct": sum(s == 1.0 for s in scores),
        "scores": scores,
        "parsed": parsed,
        "modality": question.modality,
        "question_type": question.question_type,
        "answer_type": question.answer_type,
        "dataset": question.dataset,
    }


def band(rate: float) -> str:
    return "never" if rate == 0.0 else "always" if rate == 1.0 else "sometimes"


def summary(rows: list[dict], seconds: float, sampled: int) -> dict:
    """Never / sometimes / always solved, overall and per modality, and the mean pass rate."""

    def cell(group: list[dict]) -> dict:
        counts = {b: sum(band(r["pass_rate"]) == b for r in group) for b in BANDS}
        return {"questions": len(group), "mean_pass_rate": sum(r["pass_rate"] for r in group) / len(group), **counts}

    by_modality = defaultdict(list)
    for row in rows:
        by_modality[row["modality"]].append(row)
    return {
        "overall": cell(rows) if rows else {"questions": 0},
        "by_modality": {m: cell(group) for m, group in sorted(by_modality.items())},
        "sampled_now": sampled,
        "seconds": round(seconds, 1),
    }


def format_summary(report: dict, path: Path) -> str:
    def text(name: str, cell: dict) -> str:
        return (
            f"{name:<12} {cell['questions']:>6} questions  mean pass rate {cell['mean_pass_rate']:.2f}  never "
            f"{cell['never']}  sometimes {cell['sometimes']}  always {cell['always']}"
        )

    lines = [text("all", report["overall"])] if report["overall"]["questions"] else ["no questions"]
    lines += [text(m, c) for m, c in report["by_modality"].items()]
    lines.append(f"pass rates in {path} ({report['sampled_now']} sampled now in {report['seconds']} s)")
    lines.append(
        "keep the questions with signal: data.train.pass_rate=[0.01,0.99]; a curriculum: data.order=easy_to_hard"
    )
    return "\n".join(lines)

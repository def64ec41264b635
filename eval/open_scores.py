"""Open questions in an evaluation: exact match and token F1 for every open answer, and, with `eval.open_scorer: judge`,
the judge's verdict on each, in `judged.jsonl` beside predictions.jsonl.

    med-r1 eval RECIPE eval.open_scorer=judge        # the judge of the recipe's `judge` reward, or eval.judge: {...}

metrics.json gains an `open` section (overall, by modality, by dataset): count, exact_match, token_f1 and, when
judged, `judged` (the mean verdict, 1 / 0.5 / 0) and `unjudged` (replies that were no verdict, left out of the mean).
Judging resumes like generation: each line names the judge (model and rubric), answers judged by the same judge are
kept, and the judge's own cache answers repeats.
"""

from __future__ import annotations

import logging
from pathlib import Path

from med_r1.answers import token_f1
from med_r1.config import Recipe
from med_r1.errors import ConfigError, UserError
from med_r1.io import append_jsonl, read_jsonl
from med_r1.records import Question
from med_r1.rewards.judge import Judge, get_judge, settings_from

logger = logging.getLogger(__name__)

JUDGED = "judged.jsonl"
GROUPS = ("modality", "dataset")


def start_judge(recipe: Recipe) -> Judge | None:
    """The evaluation's judge, asked one test question first (None unless `eval.open_scorer: judge`)."""
    if recipe.eval.open_scorer != "judge":
        return None
    kwargs = recipe.eval.judge or next((spec.kwargs for spec in recipe.rewards if spec.name == "judge"), None)
    if kwargs is None:
        raise ConfigError(
            "eval.open_scorer: judge needs the judge's settings: set eval.judge: {base_url: ..., model: ...}, or add "
            "a `judge` reward to rewards (its kwargs are used)"
        )
    judge = get_judge(settings_from(kwargs, "eval.judge"))
    errors, warnings = judge.probe()
    if errors:
        raise UserError(f"eval.open_scorer: judge: {errors[0]}")
    for warning in warnings:
        logger.warning("%s", warning)
    return judge


def judge_open(out: Path, questions: list[Question], judge: Judge, batch: int = 64) -> None:
    """Judge every open prediction not yet judged by this judge; one line per question in judged.jsonl."""
    path = out / JUDGED
    done = {r["question_id"] for r in read_jsonl(path, repair=True) if r.get("judge") == judge.tag}
    by_id = {q.question_id: q for q in questions}
    pending = [
        r
        for r in _open_rows(read_jsonl(out / "predictions.jsonl"))
        if r["question_id"] in by_id and r["question_id"] not in done
    ]
    for start in range(0, len(pending), batch):
        rows = pending[start : start + batch]
        asked = [r for r in rows if r.get("parsed")]
        scores = judge.score([(by_id[r["question_id"]].question, r["solution"], r["parsed"]) for r in asked])
        verdicts = dict(zip((r["question_id"] for r in asked), scores, strict=True))
        for row in rows:  # no answer at all is wrong without asking
            score = verdicts.get(row["question_id"], 0.0)
            append_jsonl(path, {"question_id": row["question_id"], "judge": judge.tag, "score": score})
        logger.info("judged %d/%d open answers", start + len(rows), len(pending))


def open_section(rows: list[dict], out: Path, judge: Judge | None) -> dict | None:
    """The `open` section of metrics.json, or None when no open question was evaluated."""
    rows = _open_rows(rows)
    if not rows:
        return None
    judged = None
    if judge is not None:
        judged = {r["question_id"]: r["score"] for r in read_jsonl(out / JUDGED) if r.get("judge") == judge.tag}
    section = {"overall": _cell(rows, judged)}
    for group in GROUPS:
        keys = sorted({r.get(group) or "unknown" for r in rows})
        section[f"by_{group}"] = {
            k: _cell([r for r in rows if (r.get(group) or "unknown") == k], judged) for k in keys
        }
    return section


def to_markdown(section: dict | None) -> str:
    if not section:
        return ""
    judged = "judged" in section["overall"]
    lines = ["", "## Open questions", "", "| group | n | exact match | token F1 |" + (" judged |" if judged else "")]
    lines.append("|---|---|---|---|" + ("---|" if judged else ""))
    named = [("overall", section["overall"])] + [
        (f"{group}: {key}", cell) for group in GROUPS for key, cell in section[f"by_{group}"].items()
    ]
    for name, cell in named:
        tail = (f" {100 * cell['judged']:.1f}% |" if cell["judged"] is not None else " - |") if judged else ""
        lines.append(
            f"| {name} | {cell['count']} | {100 * cell['exact_match']:.1f}% | {100 * cell['token_f1']:.1f}% |{tail}"
        )
    return "\n".join(lines) + "\n"


def _open_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("answer_type") == "open" and "error" not in r]


def _cell(rows: list[dict], judged: dict[str, float | None] | None) -> dict:
    n = len(rows)
    cell = {
        "count": n,
        "exact_match": sum(bool(r["correct"]) for r in rows) / n,
        "token_f1": sum(token_f1(r.get("parsed") or "", r["solution"]) for r in rows) / n,
    }
    if judged is not None:
        scores = [judged.get(r["question_id"]) for r in rows]
        given = [s for s in scores if s is not None]
        cell["judged"] = sum(given) / len(given) if given else None  # no verdict at all is no accuracy
        cell["unjudged"] = len(scores) - len(given)
    return cell

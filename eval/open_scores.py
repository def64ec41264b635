"""Open questions in an evaluation: exact match and token F1 for every open answer, and, with `eval.open_scorer: judge`,
the judge's verdict on each, in `judged.jsonl` beside predictions.jsonl (with `eval.open_scorer: embedding`, each
answer's embedding similarity to the reference, in `similarity.jsonl`).

    med-r1 eval RECIPE eval.open_scorer=judge        # the judge of the recipe's `judge` reward, or eval.judge: {...}
    med-r1 eval RECIPE eval.open_scorer=embedding    # the `embedding_similarity` reward's encoder, or eval.embedding

metrics.json gains an `open` section (overall, by modality, by dataset): count, exact_match, token_f1 and, when
judged, `judged` (the mean verdict, 1 / 0.5 / 0) and `unjudged` (replies that were no verdict, left out of the mean),
or `embedding_similarity` (the mean similarity in [0, 1]).
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
from med_r1.rewards.embedding import EmbeddingScorer, start_scorer
from med_r1.rewards.judge import Judge, get_judge, settings_from

logger = logging.getLogger(__name__)

JUDGED = "judged.jsonl"
SIMILARITY = "similarity.jsonl"
GROUPS = ("modality", "dataset")


def _names(scorer: Judge | EmbeddingScorer) -> tuple[str, str]:
    """(file beside the predictions, metrics key) of an open scorer's scores."""
    return (SIMILARITY, "embedding_similarity") if isinstance(scorer, EmbeddingScorer) else (JUDGED, "judged")


def start_judge(recipe: Recipe) -> Judge | EmbeddingScorer | None:
    """The evaluation's open scorer: the judge, asked one test question first, or the embedding scorer, its encoder
    loaded (None with `eval.open_scorer: none`)."""
    if recipe.eval.open_scorer == "embedding":
        if recipe.eval.embedding:
            return start_scorer(recipe.eval.embedding, "eval.embedding")
        i, spec = next((i, s) for i, s in enumerate(recipe.rewards) if s.name == "embedding_similarity")
        return start_scorer(spec.kwargs, f"rewards[{i}].kwargs")
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


def judge_open(out: Path, questions: list[Question], judge: Judge | EmbeddingScorer, batch: int = 64) -> None:
    """Score every open prediction not yet scored by this scorer; one line per question in judged.jsonl (or
    similarity.jsonl)."""
    path = out / _names(judge)[0]
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
        logger.info("scored %d/%d open answers", start + len(rows), len(pending))


def open_section(rows: list[dict], out: Path, judge: Judge | EmbeddingScorer | None) -> dict | None:
    """The `open` section of metrics.json, or None when no open question was evaluated."""
    rows = _open_rows(rows)
    if not rows:
        return None
    judged, metric = None, "judged"
    if judge is not None:
        file, metric = _names(judge)
        judged = {r["question_id"]: r["score"] for r in read_jsonl(out / file) if r.get("judge") == judge.tag}
    section = {"overall": _cell(rows, judged, metric)}
    for group in GROUPS:
        keys = sorted({r.get(group) or "unknown" for r in rows})
        section[f"by_{group}"] = {
            k: _cell([r for r in rows if (r.get(group) or "unknown") == k], judged, metric) for k in keys
        }
    return section


def to_markdown(section: dict | None) -> str:
    if not section:
        return ""
    metric = next((k for k in ("judged", "embedding_similarity") if k in section["overall"]), None)
    head = {None: "", "judged": " judged |", "embedding_similarity": " embedding similarity |"}[metric]
    lines = ["", "## Open questions", "", "| group | n | exact match | token F1 |" + head]
    lines.append("|---|---|---|---|" + ("---|" if metric else ""))
    named = [("overall", section["overall"])] + [
        (f"{group}: {key}", cell) for group in GROUPS for key, cell in section[f"by_{group}"].items()
    ]
    for name, cell in named:
        tail = (f" {100 * cell[metric]:.1f}% |" if cell[metric] is not None else " - |") if metric else ""
        lines.append(
            f"| {name} | {cell['count']} | {100 * cell['exact_match']:.1f}% | {100 * cell['token_f1']:.1f}% |{tail}"
        )
    return "\n".join(lines) + "\n"


def _open_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("answer_type") == "open" and "error" not in r]


def _cell(rows: list[dict], judged: dict[str, float | None] | None, metric: str = "judged") -> dict:
    n = len(rows)
    cell = {
        "count": n,
        "exact_match": sum(bool(r["correct"]) for r in rows) / n,
        "token_f1": sum(token_f1(r.get("parsed") or "", r["solution"]) for r in rows) / n,
    }
    if judged is not None:
        scores = [judged.get(r["question_id"]) for r in rows]
        given = [s for s in scores if s is not None]
        cell[metric] = sum(given) / len(given) if given else None  # no verdict at all is no accuracy
        if metric == "judged":  # a similarity is never missing
            cell["unjudged"] = len(scores) - len(given)
    return cell

"""`med-r1 compare A B [--eval NAME]`: per-domain accuracy of two evaluations side by side, with the difference.

A and B are run folders (their eval/<NAME>/ is used; the only one if NAME is not given), eval folders, or
metrics.json files. Both accuracies are compared: med-r1's parser (`accuracy`) and Med-R1's own scorer
(`accuracy_medr1`). When both evaluations answered the same questions, the 95% interval of a difference is paired
(it uses which questions each got right); otherwise it treats the two as independent samples.

Two evaluations of different questions (another data.eval, a limit, an evaluation cut short) are compared on the
questions both answered: a warning line says how many are only in A, only in B and common, and every table is
recomputed from the predictions of the common questions. With none in common there is nothing to compare (exit 2).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from med_r1.errors import UserError
from med_r1.eval.metrics import GROUPS, METRICS, summarize
from med_r1.io import read_jsonl


def find_eval(path: Path, name: str | None) -> Path:
    if path.is_file() and path.name == "metrics.json":
        return path.parent
    if (path / "metrics.json").exists():
        return path
    folder = path / "eval"
    found = sorted(p.parent for p in folder.glob("*/metrics.json")) if folder.is_dir() else []
    if name is not None:
        found = [p for p in found if p.name == name]
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"{path}: no evaluation results found (run `med-r1 eval` first, or pass eval/<name>/)")
    raise UserError(f"{path}: several evaluations ({', '.join(p.name for p in found)}); choose one with --eval NAME")


# The prediction field behind each metric: which questions it counts right.
_CORRECT = {"accuracy": "correct", "accuracy_medr1": "correct_medr1"}
_LABEL = {"accuracy": "", "accuracy_medr1": " (Med-R1)"}


def _paired(a: list[dict], b: list[dict], field: str = "correct") -> tuple[float, float] | None:
    """95% interval of mean(correct_b - correct_a) over questions both answered, or None if they differ."""
    if any(field not in r for r in a + b):
        return None  # predictions from before the field existed
    right_a = {r["question_id"]: bool(r[field]) for r in a if "error" not in r}
    right_b = {r["question_id"]: bool(r[field]) for r in b if "error" not in r}
    if not right_a or right_a.keys() != right_b.keys():
        return None
    diffs = [right_b[q] - right_a[q] for q in right_a]
    n, mean = len(diffs), sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / max(n - 1, 1)
    half = 1.96 * math.sqrt(var / n)
    return (mean - half, mean + half)


def _independent(a: dict, b: dict, metric: str = "accuracy") -> tuple[float, float]:
    pa, pb = a[metric], b[metric]
    se = math.sqrt(pa * (1 - pa) / max(a["count"], 1) + pb * (1 - pb) / max(b["count"], 1))
    return (pb - pa - 1.96 * se, pb - pa + 1.96 * se)


def read_results(folder: Path) -> tuple[dict, list[dict]]:
    """An evaluation's metrics.json and predictions.jsonl; a UserError naming the file when either is damaged."""
    path = folder / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metrics, dict) or not all(k in metrics for k in ("overall", *(f"by_{g}" for g in GROUPS))):
            raise ValueError("not the metrics `med-r1 eval` writes")
        predictions = read_jsonl(folder / "predictions.jsonl")
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{folder}: cannot read its results ({type(exc).__name__}: {exc}); rerun `med-r1 eval` with the same "
            "recipe to rewrite metrics.json from predictions.jsonl"
        ) from None
    return metrics, predictions


def common_questions(
    dir_a: Path, dir_b: Path, preds_a: list[dict], preds_b: list[dict]
) -> tuple[list[dict], list[dict], str]:
    """Both sides' predictions of the questions both answered, and a warning when that is not all of them ('' when
    the two evaluated the same questions); a UserError when they share none."""
    ids_a, ids_b = {r.get("question_id") for r in preds_a}, {r.get("question_id") for r in preds_b}
    if ids_a == ids_b or not preds_a or not preds_b:  # the same questions, or no predictions to tell by
        return preds_a, preds_b, ""
    common = ids_a & ids_b
    if not common:
        raise UserError(
            f"A ({dir_a}) and B ({dir_b}) evaluated no question in common ({len(ids_a)} in A, e.g. "
            f"{min(map(str, ids_a))!r}; {len(ids_b)} in B, e.g. {min(map(str, ids_b))!r}): nothing to compare. "
            "Compare evaluations of the same data.eval (same path, split and limit)"
        )
    warning = (
        f"warning: A and B evaluated different questions: {len(ids_a - common)} only in A, {len(ids_b - common)} "
        f"only in B, {len(common)} common; every table below compares the {len(common)} common questions only"
    )
    return (
        [r for r in preds_a if r.get("question_id") in common],
        [r for r in preds_b if r.get("question_id") in common],
        warning,
    )


def compare(path_a: Path, path_b: Path, name: str | None = None) -> str:
    dir_a, dir_b = find_eval(path_a, name), find_eval(path_b, name)
    (metrics_a, preds_a), (metrics_b, preds_b) = read_results(dir_a), read_results(dir_b)
    preds_a, preds_b, warning = common_questions(dir_a, dir_b, preds_a, preds_b)
    if warning:  # metrics.json counts every question each side answered: recount on the common ones
        metrics_a, metrics_b = summarize(preds_a), summarize(preds_b)
    lines = [f"A: {dir_a}", f"B: {dir_b}", *([warning] if warning else []), ""]
    sections = [("overall", {"all": metrics_a["overall"]}, {"all": metrics_b["overall"]}, None)]
    sections += [(g, metrics_a[f"by_{g}"], metrics_b[f"by_{g}"], g) for g in GROUPS]
    header = "".join(
        f" A{_LABEL[m]} | B{_LABEL[m]} | B - A{_LABEL[m]} | 95% CI of B - A{_LABEL[m]} |" for m in METRICS
    )
    for title, table_a, table_b, key in sections:
        lines += [
            f"## {title}",
            "",
            f"| domain |{header} n (A/B) |",
            "|---|" + "---|---|---|---|" * len(METRICS) + "---|",
        ]
        for domain in sorted(set(table_a) | set(table_b)):
            a, b = table_a.get(domain), table_b.get(domain)
            rows_a = [r for r in preds_a if key is None or (r.get(key) or "unknown") == domain]  # as metrics group
            rows_b = [r for r in preds_b if key is None or (r.get(key) or "unknown") == domain]
            cells = "".join(_difference(a, b, rows_a, rows_b, metric) for metric in METRICS)
            lines.append(f"| {domain} |{cells} {_n(a)}/{_n(b)} |")
        lines.append("")
    return "\n".join(lines)


def _difference(a: dict | None, b: dict | None, rows_a: list[dict], rows_b: list[dict], metric: str) -> str:
    """' A | B | B - A | interval |' for one metric of one domain ('-' where a side lacks it)."""
    if a is None or b is None or metric not in a or metric not in b:
        return f" {_pct(a, metric)} | {_pct(b, metric)} | - | - |"
    lo, hi = _paired(rows_a, rows_b, _CORRECT[metric]) or _independent(a, b, metric)
    delta = b[metric] - a[metric]
    interval = f"{100 * lo:+.1f} to {100 * hi:+.1f}"
    if a[metric] == b[metric] and a[metric] in (0.0, 1.0):  # no spread to estimate one from
        interval = f"undefined ({'0' if a[metric] == 0 else 'n'}/n right on both sides)"
    return f" {_pct(a, metric)} | {_pct(b, metric)} | {100 * delta:+.1f} | {interval} |"


def _pct(cell: dict | None, metric: str = "accuracy") -> str:
    return "-" if cell is None or metric not in cell else f"{100 * cell[metric]:.1f}%"


def _n(cell: dict | None) -> str:
    return "0" if cell is None else str(cell["count"])

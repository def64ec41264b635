"""`med-r1 compare A B [--eval NAME]`: per-domain accuracy of two evaluations side by side, with the difference.

A and B are run folders (their eval/<NAME>/ is used; the only one if NAME is not given), eval folders, or
metrics.json files. When both evaluations answered the same questions, the 95% interval of the difference is paired
(it uses which questions each got right); otherwise it treats the two as independent samples.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from med_r1.errors import UserError
from med_r1.eval.metrics import GROUPS
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


def _paired(a: list[dict], b: list[dict]) -> tuple[float, float] | None:
    """95% interval of mean(correct_b - correct_a) over questions both answered, or None if they differ."""
    right_a = {r["question_id"]: bool(r["correct"]) for r in a if "error" not in r}
    right_b = {r["question_id"]: bool(r["correct"]) for r in b if "error" not in r}
    if not right_a or right_a.keys() != right_b.keys():
        return None
    diffs = [right_b[q] - right_a[q] for q in right_a]
    n, mean = len(diffs), sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / max(n - 1, 1)
    half = 1.96 * math.sqrt(var / n)
    return (mean - half, mean + half)


def _independent(a: dict, b: dict) -> tuple[float, float]:
    pa, pb = a["accuracy"], b["accuracy"]
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


def compare(path_a: Path, path_b: Path, name: str | None = None) -> str:
    dir_a, dir_b = find_eval(path_a, name), find_eval(path_b, name)
    (metrics_a, preds_a), (metrics_b, preds_b) = read_results(dir_a), read_results(dir_b)
    lines = [f"A: {dir_a}", f"B: {dir_b}", ""]
    sections = [("overall", {"all": metrics_a["overall"]}, {"all": metrics_b["overall"]}, None)]
    sections += [(g, metrics_a[f"by_{g}"], metrics_b[f"by_{g}"], g) for g in GROUPS]
    for title, table_a, table_b, key in sections:
        lines += [
            f"## {title}",
            "",
            "| domain | A | B | B - A | 95% CI of B - A | n (A/B) |",
            "|---|---|---|---|---|---|",
        ]
        for domain in sorted(set(table_a) | set(table_b)):
            a, b = table_a.get(domain), table_b.get(domain)
            if a is None or b is None:
                lines.append(f"| {domain} | {_pct(a)} | {_pct(b)} | - | - | {_n(a)}/{_n(b)} |")
                continue
            rows_a = [r for r in preds_a if key is None or (r.get(key) or "unknown") == domain]  # as metrics group
            rows_b = [r for r in preds_b if key is None or (r.get(key) or "unknown") == domain]
            lo, hi = _paired(rows_a, rows_b) or _independent(a, b)
            delta = b["accuracy"] - a["accuracy"]
            interval = f"{100 * lo:+.1f} to {100 * hi:+.1f}"
            if a["accuracy"] == b["accuracy"] and a["accuracy"] in (0.0, 1.0):  # no spread to estimate one from
                interval = f"undefined ({'0' if a['accuracy'] == 0 else 'n'}/n right on both sides)"
            lines.append(
                f"| {domain} | {_pct(a)} | {_pct(b)} | {100 * delta:+.1f} | {interval} | {a['count']}/{b['count']} |"
            )
        lines.append("")
    return "\n".join(lines)


def _pct(cell: dict | None) -> str:
    return "-" if cell is None else f"{100 * cell['accuracy']:.1f}%"


def _n(cell: dict | None) -> str:
    return "0" if cell is None else str(cell["count"])

"""Accuracy tables from predictions: overall and per modality, question type and source dataset.

Two accuracies per cell: `accuracy`, read by med-r1's parser (the one the `accuracy` reward uses: "B) MRI", "(b)",
the option text and multi-line tags count; hedges and disagreeing tags do not), and `accuracy_medr1`, exactly what
Med-R1's evaluation scripts count (`med_r1.answers.medr1_eval_answer`), to set beside the paper's numbers.
Unparseable outputs count as wrong (as in Med-R1) and their share is reported beside the accuracy. Rows whose image
could not be read are counted apart and left out of the accuracy. Intervals are 95% Wilson score intervals. `chance`
is what guessing would score on the same questions: the mean of 1 / number of options (1/2 for yes/no), given where
every question of a cell has options (not for open-ended questions, nor for predictions written before it was kept).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

GROUPS = ("modality", "question_type", "dataset")
METRICS = ("accuracy", "accuracy_medr1")
"""The two accuracies every cell holds; `matrix.metric` names one of them."""


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1 - k / i for i in range(n - c + 1, n + 1))


def majority(parsed: list[str | None]) -> str | None:
    votes = Counter(p for p in parsed if p is not None)
    return votes.most_common(1)[0][0] if votes else None


def _cell(rows: list[dict]) -> dict:
    scored = [r for r in rows if "error" not in r]
    n = len(scored)
    correct = sum(bool(r["correct"]) for r in scored)
    medr1 = sum(bool(r.get("correct_medr1")) for r in scored)
    cell = {
        "accuracy": correct / n if n else 0.0,
        "count": n,
        "correct": correct,
        "unparseable": sum(r["parsed"] is None for r in scored) / n if n else 0.0,
        "ci95": list(wilson(correct, n)),
        "accuracy_medr1": medr1 / n if n else 0.0,
        "correct_medr1": medr1,
        "ci95_medr1": list(wilson(medr1, n)),
    }
    if n and all(r.get("choices") for r in scored):
        cell["chance"] = sum(1 / r["choices"] for r in scored) / n
    if len(rows) != n:
        cell["errors"] = len(rows) - n
    samples = [r for r in scored if "correct_all" in r]
    if samples:
        k = len(samples[0]["correct_all"])
        cell[f"pass@{k}"] = sum(pass_at_k(k, sum(r["correct_all"]), k) for r in samples) / len(samples)
        cell[f"majority@{k}"] = sum(r["majority_correct"] for r in samples) / len(samples)
        cell["mean_sample_accuracy"] = sum(sum(r["correct_all"]) / k for r in samples) / len(samples)
    return cell


def summarize(predictions: list[dict]) -> dict:
    groups: dict[str, dict[str, list[dict]]] = {g: defaultdict(list) for g in GROUPS}
    for row in predictions:
        for g in GROUPS:
            groups[g][row.get(g) or "unknown"].append(row)
    return {
        "overall": _cell(predictions),
        **{f"by_{g}": {key: _cell(rows) for key, rows in sorted(groups[g].items())} for g in GROUPS},
    }


def to_markdown(metrics: dict, title: str = "Evaluation") -> str:
    overall = metrics["overall"]
    extra = [k for k in overall if k.startswith(("pass@", "majority@"))]
    lines = [
        f"# {title}",
        "",
        f"Overall accuracy **{_pct(overall['accuracy'])}** over {overall['count']} questions "
        f"(95% CI {_ci(overall['ci95'])}; unparseable {_pct(overall['unparseable'])}"
        + (f"; chance {_pct(overall['chance'])}" if "chance" in overall else "")
        + f"); by Med-R1's scorer **{_pct(overall['accuracy_medr1'])}** (95% CI {_ci(overall['ci95_medr1'])}).",
        "",
        "`accuracy`: med-r1's answer parser (the `accuracy` reward's). `accuracy (Med-R1)`: exactly what Med-R1's "
        f"evaluation script counts ({metrics.get('medr1_scoring', 'its answer regex')}); quote it beside the "
        "paper's numbers.",
    ]
    if overall.get("errors"):
        lines.append(
            f"{overall['errors']} questions had unreadable images and are not counted (see predictions.jsonl)."
        )
    if "chance" in overall:
        extra.append("chance")
    for g in GROUPS:
        lines += [
            "",
            f"## By {g.replace('_', ' ')}",
            "",
            "| "
            + g.replace("_", " ")
            + " | accuracy | 95% CI | accuracy (Med-R1) | 95% CI (Med-R1) | n | unparseable |"
            + "".join(f" {k} |" for k in extra),
            "|---|---|---|---|---|---|---|" + "---|" * len(extra),
        ]
        for key, cell in metrics[f"by_{g}"].items():
            tail = "".join(f" {_pct(cell[k]) if k in cell else '-'} |" for k in extra)
            lines.append(
                f"| {key} | {_pct(cell['accuracy'])} | {_ci(cell['ci95'])} | {_pct(cell['accuracy_medr1'])} | "
                f"{_ci(cell['ci95_medr1'])} | {cell['count']} | {_pct(cell['unparseable'])} |{tail}"
            )
    return "\n".join(lines) + "\n"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(bounds: list[float]) -> str:
    return f"{_pct(bounds[0])}-{_pct(bounds[1])}"

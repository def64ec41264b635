"""`med-r1 matrix RECIPE [--dry-run] [key=value ...]`: Med-R1's cross-modality / cross-task generalization experiment.

For each training domain (a modality, or a question type) a policy is trained on that domain alone and evaluated on
every test domain; the untrained base model is the baseline row. Domains are named in any spelling (`MR` is `MRI`);
two that name the same domain after canonicalisation are refused before anything runs. Training domains found in the data with fewer than
`matrix.min_questions` questions are skipped and listed in the plan. Results in output_dir: matrix.md and
matrix.json hold both accuracies (med-r1's parser and Med-R1's own scorer), each with its improvement over the
baseline; matrix.csv/.png and matrix_delta.csv/.png show the one `matrix.metric` names. Finished trainings and
evaluations are reused, an interrupted training resumes from its last checkpoint, and a second invocation runs
nothing new.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

import med_r1.eval.run
import med_r1.train
from med_r1 import run_folder
from med_r1.config import Recipe
from med_r1.data.selection import filter_questions
from med_r1.data.taxonomy import canonical_modality, canonical_question_type, slug
from med_r1.errors import DataError, UserError
from med_r1.eval.metrics import METRICS
from med_r1.io import atomic_write_json, atomic_write_text, read_jsonl
from med_r1.plan import build_plan

logger = logging.getLogger(__name__)


@dataclass
class Cell:
    domain: str
    recipe: Recipe
    trains: bool

    @property
    def run_dir(self) -> Path:
        return Path(self.recipe.output_dir)


def split_protocol(recipe: Recipe) -> str:
    if recipe.data.train.format == "medr1" or recipe.data.eval is not None and recipe.data.eval.format == "medr1":
        return "Med-R1 split files (the paper's protocol: question-level splits; images shared between train and test)"
    by = recipe.data.split
    scheme = "by image (no image in both train and test)" if by.by == "image" else "by question (images may be shared)"
    return f"med-r1 split {scheme}, test_ratio {by.test_ratio}, seed {by.seed}"


def domains(recipe: Recipe, train: list, test: list) -> tuple[list[str], list[str], dict[str, int]]:
    """(training domains, test domains, skipped training domains with their question counts).

    Domains found in data.train with fewer than matrix.min_questions questions are skipped: a policy trained on a
    handful of questions (Med-R1's single `unknown` record) is no row of a generalization table.
    """
    axis, matrix = recipe.matrix.axis, recipe.matrix
    sizes = Counter(getattr(q, axis) for q in train)
    skipped = {} if matrix.train_domains else {d: n for d, n in sorted(sizes.items()) if n < matrix.min_questions}
    train_domains = matrix.train_domains or sorted(d for d in sizes if d not in skipped)
    # As the questions (and so the metrics) name them: a column asked for as 'MR' shows the 'MRI' results.
    test_domains = [canonical(axis, d) for d in matrix.test_domains] or sorted({getattr(q, axis) for q in test})
    return train_domains, test_domains, skipped


def canonical(axis: str, domain: str) -> str:
    """A domain's name as the questions carry it ('MR' -> 'MRI' on the modality axis)."""
    return canonical_modality(domain) if axis == "modality" else canonical_question_type(domain)


def duplicate_domains(recipe: Recipe) -> list[str]:
    """Domains listed twice in `matrix:` (in any spelling): a training would run twice, a column show twice."""
    axis, problems = recipe.matrix.axis, []
    for key, named in (
        ("matrix.train_domains", recipe.matrix.train_domains),
        ("matrix.test_domains", recipe.matrix.test_domains),
    ):
        first: dict[str, str] = {}
        for domain in named:
            name = canonical(axis, domain)
            if name not in first:
                first[name] = domain
                continue
            same = f"{first[name]!r} is listed twice" if first[name] == domain else f"{first[name]!r} and {domain!r}"
            problems.append(f"{key}: {same} (both the {axis} {name!r}); list each domain once")
    return problems


def domain_problems(recipe: Recipe, train: list, test: list) -> list[str]:
    """Domains named in `matrix:` that match no question, found before anything runs (each training would fail on
    its own, after the baseline evaluation)."""
    axis, field = recipe.matrix.axis, "modalities" if recipe.matrix.axis == "modality" else "question_types"
    problems = []
    for key, named, questions in (
        ("matrix.train_domains", recipe.matrix.train_domains, train),
        ("matrix.test_domains", recipe.matrix.test_domains, test),
    ):
        present = sorted({getattr(q, axis) for q in questions})
        for domain in named:
            try:
                filter_questions(questions, **{field: [domain]}, where=key)
            except DataError:
                close = difflib.get_close_matches(domain, present, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{key}: {domain!r} matches no {axis}{hint}; present: {', '.join(present)}")
    return problems


def cells(recipe: Recipe, train_domains: list[str]) -> list[Cell]:
    out = Path(recipe.output_dir)
    field = "modalities" if recipe.matrix.axis == "modality" else "question_types"
    result = []
    if recipe.matrix.baseline:
        base = replace(recipe, output_dir=str(out / "base"), eval=replace(recipe.eval, model="base", name="base"))
        result.append(Cell("base", base, trains=False))
    for domain in train_domains:
        data = replace(recipe.data, train=replace(recipe.data.train, **{field: [domain]}))
        run = replace(
            recipe,
            data=data,
            output_dir=str(out / f"train-{slug(domain)}"),
            resume=False,
            eval=replace(recipe.eval, model=None, name="matrix"),
        )
        result.append(Cell(domain, run, trains=True))
    return result


def train_status(cell: Cell) -> str:
    if not cell.trains:
        return "-"
    changed = run_folder.recipe_changes(cell.run_dir, cell.recipe)
    if changed:
        return f"stale ({', '.join(changed[:3])} changed)"
    if run_folder.final_model(cell.run_dir):
        return "done"
    last = run_folder.last_complete_checkpoint(cell.run_dir, remove_partial=False) if cell.run_dir.is_dir() else None
    return f"resume from {Path(last).name}" if last else "todo"


def eval_status(cell: Cell, n_questions: int) -> str:
    rows = (
        read_jsonl(cell.run_dir / "eval" / cell.recipe.eval.name / "predictions.jsonl")
        if cell.recipe.eval.name
        else []
    )
    if len(rows) >= n_questions:
        return "done"
    return f"resume ({len(rows)}/{n_questions})" if rows else "todo"


def run_matrix(recipe: Recipe, dry_run: bool = False) -> str:
    duplicates = duplicate_domains(recipe)
    if duplicates:
        raise UserError("matrix: domains named twice (nothing was run):", duplicates)
    data = build_plan(recipe, "matrix")
    problems = domain_problems(recipe, data.train, data.eval)
    if problems:
        raise UserError("matrix: domains that match no question (nothing was run):", problems)
    train_domains, test_domains, skipped = domains(recipe, data.train, data.eval)
    if not train_domains:
        sizes = ", ".join(f"{d} {n}" for d, n in skipped.items())
        raise UserError(
            f"matrix: no training domain has matrix.min_questions={recipe.matrix.min_questions} questions ({sizes}); "
            "nothing was run. Lower matrix.min_questions, or name matrix.train_domains"
        )
    n_eval = len(data.eval)
    plan = cells(recipe, train_domains)
    lines = [
        f"matrix over {recipe.matrix.axis}: {len(train_domains)} training domains x {len(test_domains)} test "
        f"domains{' + baseline' if recipe.matrix.baseline else ''}; {n_eval} evaluation questions",
        f"split: {split_protocol(recipe)}",
        f"heatmaps and matrix.csv show: {recipe.matrix.metric} (matrix.md and matrix.json hold both accuracies)",
    ]
    if skipped:
        lines.append(
            f"skipped (fewer than matrix.min_questions={recipe.matrix.min_questions} training questions): "
            + ", ".join(f"{domain} ({n})" for domain, n in skipped.items())
        )
    for cell in plan:
        lines.append(
            f"  {cell.domain:<28} train: {train_status(cell):<24} eval: {eval_status(cell, n_eval)}  ({cell.run_dir})"
        )
    todo_train = sum(train_status(c) not in ("done", "-") for c in plan)
    todo_eval = sum(eval_status(c, n_eval) != "done" for c in plan)
    lines.append(f"to run: {todo_train} trainings, {todo_eval} evaluations")
    if dry_run:
        return "\n".join(lines)
    stale = [cell for cell in plan if train_status(cell).startswith("stale")]
    if stale:
        raise UserError(
            "the matrix recipe changed since these cells were trained; nothing was reused or overwritten. Use a "
            "new output_dir, or move the cells away to retrain them:",
            [f"{c.run_dir}: {', '.join(run_folder.recipe_changes(c.run_dir, c.recipe))}" for c in stale],
        )
    # Called through their modules, so a test can stand in for them.
    for cell in plan:
        status = train_status(cell)
        if status == "todo" and cell.run_dir.exists() and any(cell.run_dir.iterdir()):
            aside = run_folder.set_aside(cell.run_dir)
            logger.warning("%s died before its first checkpoint; moved to %s", cell.run_dir, aside)
        if status.startswith("resume"):
            med_r1.train.train(replace(cell.recipe, resume=True))
        elif status == "todo":
            med_r1.train.train(cell.recipe)
        if eval_status(cell, n_eval) != "done":
            med_r1.eval.run.evaluate(cell.recipe)
    return "\n".join(lines) + "\n" + write_tables(recipe, plan, test_domains)


# What each metric is called in the tables and on the heatmaps.
TITLES = {"accuracy": "Accuracy (med-r1's parser)", "accuracy_medr1": "Accuracy (Med-R1's scorer)"}


def write_tables(recipe: Recipe, plan: list[Cell], test_domains: list[str]) -> str:
    axis, chosen = f"by_{recipe.matrix.axis}", recipe.matrix.metric
    out = Path(recipe.output_dir)
    tables: dict[str, dict[str, dict[str, float | None]]] = {metric: {} for metric in METRICS}
    counts: dict[str, dict[str, int]] = {}
    for cell in plan:
        metrics = json.loads((cell.run_dir / "eval" / cell.recipe.eval.name / "metrics.json").read_text())
        for metric in METRICS:
            tables[metric][cell.domain] = {d: metrics[axis].get(d, {}).get(metric) for d in test_domains}
        counts[cell.domain] = {d: metrics[axis].get(d, {}).get("count", 0) for d in test_domains}
    rows = [c.domain for c in plan]
    header = f"Generalization over {recipe.matrix.axis} (rows: trained on; columns: evaluated on). {split_protocol(recipe)}."
    deltas = {metric: _improvement(tables[metric], rows, test_domains) for metric in METRICS}
    md = []
    for metric in sorted(METRICS, key=lambda m: m != chosen):  # the chosen metric first
        md += [f"# {TITLES[metric]} (`{metric}`)\n\n{header}\n", _markdown(rows, test_domains, tables[metric])]
        if deltas[metric] is not None:
            md += [
                f"\n## Improvement over the base model (points, `{metric}`)\n",
                _markdown(list(deltas[metric]), test_domains, deltas[metric], signed=True),
            ]
        md.append("")
    acc, delta = tables[chosen], deltas[chosen]
    atomic_write_text(out / "matrix.csv", _csv(rows, test_domains, acc))
    _heatmap(rows, test_domains, acc, out / "matrix.png", f"{TITLES[chosen]}, % by {recipe.matrix.axis}", "viridis")
    if delta is not None:
        atomic_write_text(out / "matrix_delta.csv", _csv(list(delta), test_domains, delta))
        _heatmap(
            list(delta),
            test_domains,
            delta,
            out / "matrix_delta.png",
            f"Gain over base (points), {TITLES[chosen].lower()}, by {recipe.matrix.axis}",
            "RdBu",
            centred=True,
        )
    atomic_write_text(out / "matrix.md", "\n".join(md))
    atomic_write_json(
        out / "matrix.json",
        {
            "axis": recipe.matrix.axis,
            "split": split_protocol(recipe),
            "metric": chosen,
            **{metric: tables[metric] for metric in METRICS},
            "improvement": {metric: deltas[metric] for metric in METRICS},
            "counts": counts,
        },
    )
    return "\n".join(md)


def _improvement(table: dict, rows: list[str], cols: list[str]) -> dict | None:
    """Each trained row minus the baseline row, per column; None without a baseline."""
    if "base" not in table:
        return None
    base = table["base"]
    return {
        r: {c: None if table[r][c] is None or base[c] is None else table[r][c] - base[c] for c in cols}
        for r in rows
        if r != "base"
    }


def _csv(rows, cols, table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trained_on", *cols])
    for r in rows:
        writer.writerow([r, *("" if table[r][c] is None else f"{100 * table[r][c]:.2f}" for c in cols)])
    return buffer.getvalue()


def _markdown(rows, cols, table, signed: bool = False) -> str:
    fmt = "{:+.1f}" if signed else "{:.1f}"
    lines = ["| trained on | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        lines.append(
            f"| {r} | "
            + " | ".join("-" if table[r][c] is None else fmt.format(100 * table[r][c]) for c in cols)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _heatmap(rows, cols, table, path: Path, title: str, cmap: str, centred: bool = False) -> None:
    import matplotlib  # lazy: matplotlib takes a second to import; only finished matrices draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.array([[np.nan if table[r][c] is None else 100 * table[r][c] for c in cols] for r in rows])
    fig, ax = plt.subplots(figsize=(0.9 * len(cols) + 3, 0.5 * len(rows) + 2))
    if centred:  # gains: symmetric around 0, at least +-1 point so a flat matrix stays white
        limit = max(1.0, float(np.nanmax(np.abs(values)))) if np.isfinite(values).any() else 1.0
        vmin, vmax = -limit, limit
    else:  # accuracy: always 0-100, so heatmaps of different runs compare by eye
        vmin, vmax = 0.0, 100.0
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("trained on")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(values[i, j]):
                share = (values[i, j] - vmin) / (vmax - vmin)
                dark = abs(share - 0.5) > 0.3 if centred else share < 0.6
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:+.1f}" if centred else f"{values[i, j]:.1f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)

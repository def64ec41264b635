"""`med-r1 eval import`: an evaluation harness's predictions scored by med-r1, into the tables `med-r1 eval` writes.

    med-r1 eval import --format vlmevalkit outputs/MyModel/MyModel_quickstart_test.xlsx --recipe recipes/quickstart.yaml
    med-r1 eval import --format medevalkit eval_results/MyModel/OmniMedVQA/results.json --recipe recipes/quickstart.yaml

The questions are the recipe's (`--split test`: the ones `med-r1 eval` asks; `train`: data.train's), exported by
`med-r1 data export`. Each prediction is matched to its question: a VLMEvalKit row by `index` (the row's position in
the export, which VLMEvalKit keeps), its `question_id` checked against it (spreadsheets turn an id such as 00012 into
the number 12, so ids are compared as numbers where both are); a MedEvalKit row by `question_id`. Outputs are scored
by the answer parser every med-r1 evaluation uses (a `\boxed{B}` answer, which MedEvalKit's reasoning prompts ask
for, is read too) and written to output_dir/eval/<name>/ (default name: the harness) as predictions.jsonl,
metrics.json and metrics.md, so `med-r1 compare` sets it beside a `med-r1 eval` of the same questions. The
Med-R1-scorer column reads the tagged answer when the output holds 'answer', else the raw output (harness prompts
rarely ask for Med-R1's tags). Where the file holds the harness's own verdict per question (MedEvalKit's `correct`,
the `hit` of VLMEvalKit's `_result` files), it is kept as `harness_correct` and its accuracy is printed beside ours.

Inputs: VLMEvalKit's predictions file (.xlsx, its default, read with openpyxl when installed; .tsv, .csv or .json
with PRED_FORMAT) with a `prediction` column; MedEvalKit's results.json (a JSON list, or JSON lines) with
`question_id` and `response`.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from med_r1.config import Recipe
from med_r1.data import sources
from med_r1.data.export import exportable
from med_r1.errors import DataError, UserError
from med_r1.eval.run import _claim, prediction, write_metrics
from med_r1.io import atomic_write_text
from med_r1.plan import build_plan
from med_r1.records import Question

SPLITS = ("test", "train")
MEDR1_RULE = "tag_if_answer"
"""How the Med-R1-scorer column reads a harness's output: the tagged answer if 'answer' is in it, else the raw text."""
PREDICTION_COLUMN = {"vlmevalkit": "prediction", "medevalkit": "response"}
VERDICT_COLUMNS = ("correct", "hit")
"""A harness's own per-question verdict, when its file has one (MedEvalKit: correct; VLMEvalKit _result files: hit)."""


def recipe_questions(recipe: Recipe, split: str = "test") -> list[Question]:
    """The questions of a recipe's split: 'test' is what `med-r1 eval` asks (data.eval), 'train' is data.train."""
    if split == "test":
        return build_plan(recipe, "eval").eval
    if split == "train":
        return sources.select(recipe.data.train, recipe.data.split, "data.train").questions
    raise UserError(f"--split: {split!r} is not one of {', '.join(SPLITS)}")


def read_rows(path: Path) -> list[dict]:
    """The rows of a predictions file as dicts of column -> value (xlsx, tsv, csv, JSON list or JSON lines)."""
    if not path.is_file():
        raise UserError(f"{path}: no such predictions file")
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        return _read_xlsx(path)
    if suffix in (".tsv", ".csv"):
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix in (".json", ".jsonl"):
        return _read_json(path)
    raise UserError(f"{path}: cannot read a {suffix or 'suffix-less'} file; give .xlsx, .tsv, .csv, .json or .jsonl")


def _read_xlsx(path: Path) -> list[dict]:
    try:
        import openpyxl  # optional: VLMEvalKit's default output format
    except ImportError:
        raise UserError(
            f"{path}: reading .xlsx needs openpyxl (pip install openpyxl), or have VLMEvalKit write TSV "
            "(PRED_FORMAT=tsv) and import that"
        ) from None
    sheet = openpyxl.load_workbook(path, read_only=True, data_only=True).active
    rows = sheet.iter_rows(values_only=True)
    header = [str(c) if c is not None else "" for c in next(rows, [])]
    return [{h: ("" if v is None else v) for h, v in zip(header, row, strict=False)} for row in rows]


def _read_json(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise DataError(f"{path}: not JSON or JSON lines ({exc})") from None
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataError(f"{path}: row {bad + 1} is not a JSON object")
    return rows


def match(rows: list[dict], questions: list[Question], harness: str, path: Path) -> list[tuple[Question, str, dict]]:
    """Each row's question, output and row; unknown, repeated, missing or disagreeing keys are errors naming the row
    and column."""
    column = PREDICTION_COLUMN[harness]
    if rows and column not in rows[0]:
        raise DataError(
            f"{path}: no {column!r} column (columns: {', '.join(map(str, rows[0]))}); give the {harness} predictions file"
        )
    by_id = {q.question_id: q for q in questions}
    by_number = {}  # numeric ids by value, for cells a spreadsheet turned into numbers (00012 -> 12); built once
    for q in questions:
        number = _number(q.question_id)
        if number is not None:
            by_number.setdefault(number, q)
    key = "index" if harness == "vlmevalkit" and rows and "index" in rows[0] else "question_id"
    if rows and key not in rows[0]:
        other = " (nor 'index')" if harness == "vlmevalkit" else ""
        raise DataError(f"{path}: no {key!r} column{other}, so its rows cannot be matched to the exported questions")
    matched, seen = [], {}
    for n, row in enumerate(rows, start=1 if path.suffix.lower() in (".json", ".jsonl") else 2):
        where = f"{path}: row {n}"
        if key not in row:
            raise DataError(f"{where} has no {key!r}")
        question = _by_index(row[key], questions) if key == "index" else _by_id(row[key], by_id, by_number)
        if question is None:
            raise DataError(
                f"{where}: {key} {row[key]!r} is not one of the recipe's {len(questions)} exported questions; import "
                "with the recipe and --split the file was exported from"
            )
        if key == "index" and "question_id" in row and not same_id(row["question_id"], question.question_id):
            raise DataError(
                f"{where}: index {row[key]!r} is question {question.question_id!r} in the recipe's export, but the row "
                f"names question_id {row['question_id']!r}; import with the recipe and --split the file was exported "
                "from"
            )
        if question.question_id in seen:
            raise DataError(f"{where}: {key} {row[key]!r} repeats row {seen[question.question_id]}")
        seen[question.question_id] = n
        output = row.get(column)
        matched.append((question, "" if output is None else str(output), row))
    return matched


def same_id(value, question_id: str) -> bool:
    """Whether a question_id cell names `question_id`: equal as text, or as numbers (00012 read back as 12 or 12.0)."""
    if str(value).strip() == question_id:
        return True
    number = _number(value)
    return number is not None and number == _number(question_id)


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _by_id(value, by_id: dict[str, Question], by_number: dict[float, Question]) -> Question | None:
    found = by_id.get(str(value).strip())
    if found is None:
        number = _number(value)
        found = by_number.get(number) if number is not None else None
    return found


def _by_index(value, questions: list[Question]) -> Question | None:
    try:
        index = int(float(value))  # xlsx and pandas may give 3.0
    except (TypeError, ValueError):
        return None
    return questions[index] if 0 <= index < len(questions) and index == float(value) else None


def harness_verdict(row: dict) -> bool | None:
    """The harness's own verdict on a row (`correct` or `hit`: true/false, 1/0), None when it has none."""
    for column in VERDICT_COLUMNS:
        value = row.get(column)
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if value is not None else ""
        if text in ("1", "1.0", "true", "yes"):
            return True
        if text in ("0", "0.0", "false", "no"):
            return False
    return None


def import_predictions(
    recipe: Recipe, harness: str, path: Path, split: str = "test", name: str | None = None
) -> tuple[Path, list[str]]:
    """Score a harness's predictions file; returns the eval folder and lines to print (questions without a
    prediction, the harness's own accuracy)."""
    if harness not in PREDICTION_COLUMN:
        raise UserError(f"--format: {harness!r} is not one of {', '.join(PREDICTION_COLUMN)}")
    path = Path(path)
    rows = read_rows(path)
    questions, _ = exportable(recipe_questions(recipe, split), harness)
    matched = match(rows, questions, harness, path)
    out = Path(recipe.output_dir) / "eval" / (name or harness + ("" if split == "test" else f"-{split}"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _claim(out, {"imported": harness, "file": str(path.resolve()), "sha256": digest, "split": split}, "Pass --name")
    label = f"{harness} import"
    lines, verdicts, ours = [], [], []
    for q, output, row in matched:
        line = prediction(q, [output], label, MEDR1_RULE) | {"source": str(path)}
        verdict = harness_verdict(row)
        if verdict is not None:
            line["harness_correct"] = verdict
            verdicts.append(verdict)
            ours.append(line["correct"])
        lines.append(json.dumps(line))
    atomic_write_text(out / "predictions.jsonl", "".join(line + "\n" for line in lines))
    answered = {q.question_id for q, _, _ in matched}
    missing = [q.question_id for q in questions if q.question_id not in answered]
    notes = []
    if missing:
        notes.append(
            f"warning: {len(missing)} of {len(questions)} questions have no prediction in {path}: "
            + ", ".join(missing[:5])
        )
    if verdicts:
        notes.append(
            f"the harness's own verdicts ({len(verdicts)} rows): {sum(verdicts) / len(verdicts):.1%} correct; med-r1's "
            f"parser on the same rows: {sum(ours) / len(ours):.1%}"
        )
    write_metrics(out, [q for q in questions if q.question_id in answered], f"{harness}: {path.name}", MEDR1_RULE)
    return out, notes

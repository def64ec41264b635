"""Export to evaluation harnesses and import their predictions: the bundled quickstart test split as VLMEvalKit's TSV
and MedEvalKit's OmniMedVQA folder, and predictions files read back into med-r1's tables with the right accuracies."""

import base64
import csv
import importlib.util
import json
from pathlib import Path

import pytest

from med_r1.cli import main
from med_r1.config import DataSource, load_recipe
from med_r1.data.export import image_files
from med_r1.data.sources import load_source
from med_r1.eval.harness import recipe_questions

QUICKSTART = str(Path(__file__).parents[1] / "recipes" / "quickstart.yaml")


@pytest.fixture(scope="module")
def test_split():
    return recipe_questions(load_recipe(QUICKSTART), "test")


@pytest.fixture(scope="module")
def tsv(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "quickstart_test.tsv"
    assert main(["data", "export", "--format", "vlmevalkit", QUICKSTART, "--split", "test", "--out", str(out)]) == 0
    return out


def read_tsv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_vlmevalkit_tsv_holds_the_evaluated_questions(tsv, test_split):
    rows = read_tsv(tsv)
    assert len(rows) == len(test_split) == 49  # exactly what `med-r1 eval recipes/quickstart.yaml` asks
    raw = 0
    for i, (row, q) in enumerate(zip(rows, test_split, strict=True)):
        assert row["index"] == str(i) and row["question_id"] == q.question_id and row["question"] == q.question
        assert row["answer"] == q.answer and row[q.answer] == q.options["ABCD".index(q.answer)]
        assert [row[letter] for letter in "ABCD"][: len(q.options)] == list(q.options)
        assert all(row[letter] == "" for letter in "ABCD"[len(q.options) :])  # fewer options: empty cells
        assert row["category"] == q.modality and row["l2-category"] == q.question_type
        image = base64.b64decode(row["image"], validate=True)
        if Path(q.images[0]).suffix.lower() in (".png", ".jpg", ".jpeg"):
            assert image == Path(q.images[0]).read_bytes()  # the file's own bytes
            raw += 1
        else:  # DICOM and the like: med-r1's decoded frame, as PNG
            assert image == image_files(q.images[0])[0][0] and image.startswith(b"\x89PNG")
    assert raw > 20
    assert {len(q.options) for q in test_split} != {4}  # the split does have questions with fewer options


def test_vlmevalkit_tsv_reads_as_pandas_reads_it(tsv):
    pandas = pytest.importorskip("pandas")  # VLMEvalKit loads its TSVs with pandas.read_csv(sep="\t")
    frame = pandas.read_csv(tsv, sep="\t")
    assert len(frame) == 49 and list(frame.columns[:3]) == ["index", "image", "question"]
    assert frame["D"].isna().any()  # an empty option cell is a missing value, which VLMEvalKit skips


def test_medevalkit_export_is_an_omnimedvqa_folder_with_the_same_questions(tmp_path, test_split):
    out = tmp_path / "medevalkit"
    assert main(["data", "export", "--format", "medevalkit", QUICKSTART, "--out", str(out)]) == 0
    qa = out / "OmniMedVQA" / "QA_information" / "Open-access"
    records = [r for f in sorted(qa.glob("*.json")) for r in json.loads(f.read_text())]
    assert len(records) == len(test_split)
    by_id = {q.question_id: q for q in test_split}
    for record in records:  # what MedEvalKit's OmniMedVQA loader reads: gt_answer is the option's text
        q = by_id[record["question_id"]]
        assert record["gt_answer"] == q.options["ABCD".index(q.answer)]
        assert (out / "OmniMedVQA" / record["image_path"]).read_bytes() == image_files(q.images[0])[0][0]
    back = load_source(DataSource(str(out / "OmniMedVQA"), "omnimedvqa")).questions  # med-r1 reads it as OmniMedVQA
    assert sorted((q.question_id, q.answer, q.options) for q in back) == sorted(
        (q.question_id, q.answer, q.options) for q in test_split
    )
    assert main(["data", "export", "--format", "medevalkit", QUICKSTART, "--out", str(out)]) == 2  # not over it


def _expected(test_split, right):
    by_modality = {}
    for q in test_split:
        n, c = by_modality.get(q.modality, (0, 0))
        by_modality[q.modality] = (n + 1, c + (q.question_id in right))
    return {m: c / n for m, (n, c) in by_modality.items()}


def _wrong(q):
    return next(letter for letter in "ABCD"[: len(q.options)] if letter != q.answer)


def test_vlmevalkit_predictions_round_trip(tsv, test_split, tmp_path):
    rows = read_tsv(tsv)
    right = set()
    with open(tmp_path / "pred.tsv", "w", encoding="utf-8", newline="") as f:
        columns = [c for c in rows[0] if c != "image"] + ["prediction"]  # VLMEvalKit drops the image column
        writer = csv.DictWriter(f, columns, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        for i, (row, q) in enumerate(zip(rows, test_split, strict=True)):
            if i % 3 == 0:
                row["prediction"], _ = f"The answer is {q.answer}.", right.add(q.question_id)
            elif i % 3 == 1:
                row["prediction"] = f"{_wrong(q)}. {q.options['ABCD'.index(_wrong(q))]}"
            else:
                row["prediction"] = "I cannot tell"
            writer.writerow(row)
    out = tmp_path / "run"
    argv = ["eval", "import", "--format", "vlmevalkit", str(tmp_path / "pred.tsv"), "--recipe", QUICKSTART]
    assert main([*argv, f"output_dir={out}"]) == 0
    metrics = json.loads((out / "eval" / "vlmevalkit" / "metrics.json").read_text())
    assert metrics["overall"]["count"] == 49 and metrics["overall"]["correct"] == len(right) == 17
    assert metrics["overall"]["unparseable"] == pytest.approx(16 / 49)
    expected = _expected(test_split, right)
    assert {m: c["accuracy"] for m, c in metrics["by_modality"].items()} == pytest.approx(expected)
    assert (out / "eval" / "vlmevalkit" / "metrics.md").exists()
    predictions = [json.loads(line) for line in (out / "eval" / "vlmevalkit" / "predictions.jsonl").open()]
    assert {p["question_id"] for p in predictions if p["correct"]} == right

    # the same answers through MedEvalKit's results.json, then `med-r1 compare`: identical questions, no difference
    results = [
        {"question_id": q.question_id, "response": row["prediction"], "answer": q.answer}
        for q, row in zip(test_split, read_tsv(tmp_path / "pred.tsv"), strict=True)
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    argv = ["eval", "import", "--format", "medevalkit", str(tmp_path / "results.json"), "--recipe", QUICKSTART]
    assert main([*argv, f"output_dir={out}"]) == 0
    other = json.loads((out / "eval" / "medevalkit" / "metrics.json").read_text())
    assert other["by_modality"] == metrics["by_modality"]
    assert main(["compare", str(out / "eval" / "vlmevalkit"), str(out / "eval" / "medevalkit")]) == 0


def test_import_errors_name_the_file_row_and_column(tsv, tmp_path, capsys):
    rows = read_tsv(tsv)[:3]

    def write(name, header, values):
        with open(tmp_path / name, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t")
            writer.writerow(header)
            writer.writerows(values)
        return str(tmp_path / name)

    def run(path, fmt="vlmevalkit"):
        argv = ["eval", "import", "--format", fmt, path, "--recipe", QUICKSTART, f"output_dir={tmp_path / 'run'}"]
        code = main(argv)
        return code, capsys.readouterr().err

    unknown = write("unknown.tsv", ["index", "prediction"], [[0, "A"], [1, "B"], [999, "C"]])
    code, err = run(unknown)
    assert code == 2 and "unknown.tsv: row 4: index '999'" in err and "Traceback" not in err
    no_column = write("nocol.tsv", ["index", "answer"], [[r["index"], r["answer"]] for r in rows])
    code, err = run(no_column)
    assert code == 2 and "nocol.tsv: no 'prediction' column" in err
    repeated = write("twice.tsv", ["question_id", "prediction"], [[rows[0]["question_id"], "A"]] * 2)
    code, err = run(repeated)
    assert code == 2 and "twice.tsv: row 3" in err and "repeats row 2" in err
    code, err = run(str(tmp_path / "absent.tsv"))
    assert code == 2 and "absent.tsv: no such predictions file" in err
    (tmp_path / "results.json").write_text(json.dumps([{"response": "A"}]))
    code, err = run(str(tmp_path / "results.json"), "medevalkit")
    assert code == 2 and "results.json: no 'question_id' column" in err


@pytest.mark.skipif(importlib.util.find_spec("openpyxl") is None, reason="openpyxl is not installed")
def test_vlmevalkit_xlsx_predictions(tsv, test_split, tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(["index", "question_id", "prediction"])
    for i, q in enumerate(test_split):
        book.active.append([i, q.question_id, q.answer])
    book.save(tmp_path / "pred.xlsx")
    out = tmp_path / "run"
    argv = ["eval", "import", "--format", "vlmevalkit", str(tmp_path / "pred.xlsx"), "--recipe", QUICKSTART]
    assert main([*argv, f"output_dir={out}"]) == 0
    assert json.loads((out / "eval" / "vlmevalkit" / "metrics.json").read_text())["overall"]["accuracy"] == 1.0


def test_questions_a_format_cannot_hold_are_left_out_with_the_reason(test_split):
    from dataclasses import replace

    from med_r1.data.export import exportable

    five = replace(test_split[0], question_id="five", options=("a", "b", "c", "d", "e"))
    two_images = replace(test_split[0], question_id="two", images=test_split[0].images * 2)
    open_one = replace(test_split[0], question_id="open", options=(), answer="a cyst", answer_type="open")
    questions = [test_split[0], five, two_images, open_one]
    kept, dropped = exportable(questions, "vlmevalkit")
    assert kept == questions[:3] and dropped == [
        "open: an open question: the export is multiple choice, which needs options"
    ]
    kept, dropped = exportable(questions, "medevalkit")
    assert kept == questions[:1] and [d.split(":")[0] for d in dropped] == ["five", "two", "open"]
    assert "A-D only" in dropped[0] and "one image" in dropped[1]

"""Export to evaluation harnesses and import their predictions: the bundled quickstart test split as VLMEvalKit's TSV
and MedEvalKit's OmniMedVQA folder, and predictions files read back into med-r1's tables with the right accuracies."""

import base64
import csv
import importlib.util
import io
import json
from pathlib import Path

import pytest
from PIL import Image

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


def test_rows_are_matched_by_index_and_numeric_ids_survive_a_spreadsheet(test_split, tmp_path):
    """VLMEvalKit keeps `index`; a spreadsheet turns an id such as 00012 into 12, which must still match, while a
    question_id that names another question is refused."""
    from dataclasses import replace

    from med_r1.errors import DataError
    from med_r1.eval.harness import match, same_id

    questions = [replace(q, question_id=f"{i:05d}") for i, q in enumerate(test_split[:3])]
    rows = [
        {"index": 2.0, "question_id": 2, "prediction": "B"},
        {"index": 0, "question_id": "00000", "prediction": ""},
    ]
    matched = match(rows, questions, "vlmevalkit", tmp_path / "p.xlsx")
    assert [(q.question_id, out) for q, out, _ in matched] == [("00002", "B"), ("00000", "")]
    assert same_id(12.0, "00012") and same_id("x1", "x1") and not same_id(12, "x12")
    with pytest.raises(DataError, match=r"p.tsv: row 2: index 1 is question '00001'.*names question_id 2"):
        match([{"index": 1, "question_id": 2, "prediction": "A"}], questions, "vlmevalkit", tmp_path / "p.tsv")
    # MedEvalKit's results.json carries question_id only
    rows = [{"question_id": 1, "response": "\\boxed{A}"}]
    assert match(rows, questions, "medevalkit", tmp_path / "r.json")[0][0].question_id == "00001"


def test_texts_pandas_reads_as_missing_and_questions_without_images_are_left_out(test_split):
    from dataclasses import replace

    from med_r1.data.export import exportable

    none_option = replace(test_split[0], question_id="none", options=("None", *test_split[0].options[1:]))
    na_question = replace(test_split[0], question_id="na", question="N/A")
    no_image = replace(test_split[0], question_id="blind", images=())
    questions = [test_split[0], none_option, na_question, no_image]
    kept, dropped = exportable(questions, "vlmevalkit")
    assert kept == questions[:1] and [d.split(":")[0] for d in dropped] == ["none", "na", "blind"]
    assert "'None' would be read as a missing value" in dropped[0] and "no image" in dropped[2]
    kept, dropped = exportable(questions, "medevalkit")  # JSON keeps "None" as text
    assert kept == questions[:3] and dropped[0].startswith("blind: no image")


def test_images_a_harness_would_show_otherwise_are_exported_as_med_r1_sees_them(tmp_path):
    """8-bit PNG/JPEG go byte for byte; a 16-bit PNG (a harness's convert('RGB') clips it) and a photo with an EXIF
    rotation are decoded as med-r1 decodes them and written as PNG."""
    import numpy as np

    from med_r1.data.medical import load_frames

    eight = tmp_path / "eight.png"
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(eight)
    assert image_files(str(eight)) == [(eight.read_bytes(), ".png")]

    sixteen = tmp_path / "sixteen.png"
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 15).astype(np.uint16)).save(sixteen)
    assert Image.open(sixteen).mode.startswith("I")
    ((data, suffix),) = image_files(str(sixteen))
    exported = Image.open(io.BytesIO(data))
    assert suffix == ".png" and exported.mode == "RGB"
    assert np.array_equal(np.asarray(exported), np.asarray(load_frames(sixteen)[0]))
    assert len(np.unique(np.asarray(exported))) > 100  # grey levels kept, not clipped to black and white

    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.fromarray(np.zeros((40, 80, 3), dtype=np.uint8)).save(rotated, exif=exif)
    ((data, suffix),) = image_files(str(rotated))
    assert suffix == ".png" and Image.open(io.BytesIO(data)).size == (40, 80)  # as displayed


def test_an_export_with_nothing_to_write_is_refused_and_risky_names_are_warned(tmp_path, capsys):
    out = tmp_path / "mmbench_like.tsv"
    assert main(["data", "export", "--format", "vlmevalkit", QUICKSTART, "--out", str(out), "data.eval.limit=2"]) == 0
    assert "warning: VLMEvalKit scores a dataset whose name contains 'mmbench'" in capsys.readouterr().out
    rows = tmp_path / "open.jsonl"
    rows.write_text(json.dumps({"id": "q1", "image": "x.png", "question": "What?", "answer": "a cyst"}) + "\n")
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    code = main(["data", "export", "--format", "vlmevalkit", str(rows), "--out", str(tmp_path / "none.tsv")])
    err = capsys.readouterr().err
    assert code == 2 and "nothing to export to vlmevalkit: 1 questions, none it can take" in err
    assert "q1: an open question" in err and not (tmp_path / "none.tsv").exists()


def test_the_harness_s_own_verdicts_are_kept_beside_med_r1_s(test_split, tmp_path, capsys):
    results = [
        {"question_id": q.question_id, "response": f"\\boxed{{{q.answer}}}" if i % 2 else "no idea", "correct": i % 2}
        for i, q in enumerate(test_split)
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = tmp_path / "run"
    argv = ["eval", "import", "--format", "medevalkit", str(tmp_path / "results.json"), "--recipe", QUICKSTART]
    assert main([*argv, f"output_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert "the harness's own verdicts (49 rows): 49.0% correct; med-r1's parser on the same rows: 49.0%" in printed
    predictions = [json.loads(line) for line in (out / "eval" / "medevalkit" / "predictions.jsonl").open()]
    assert all(p["harness_correct"] == p["correct"] for p in predictions)  # \boxed{B} is read as B

"""Loaders for VQA-RAD, SLAKE, PathVQA, PMC-VQA, MedXpertQA and the generic JSONL format, on look-alike folders."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from med_r1.data.jsonl import load_jsonl, write_jsonl  # noqa: E402
from med_r1.data.vqa_sets import (  # noqa: E402
    CACHE_FOLDER,
    LOADERS,
    image_extension,
    load_medxpertqa,
    load_pathvqa,
    load_pmc_vqa,
    load_slake,
    load_vqa_rad,
)


def image_bytes(color: str, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, format=fmt)
    return buffer.getvalue()


def save_image(path: Path, color: str = "red", fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(color, fmt))
    return path


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def assert_images_open(questions) -> None:
    for q in questions:
        for image in q.images:
            assert os.path.isabs(image)
            with Image.open(image) as im:
                assert im.size == (4, 4)


def by_id(result):
    return {q.question_id: q for q in result.questions}


def kinds(result):
    return sorted((p.kind, p.where) for p in result.problems)


# ---------------------------------------------------------------- parquet: VQA-RAD, PathVQA


@pytest.fixture
def vqa_rad(tmp_path):
    red, blue = image_bytes("red"), image_bytes("blue", "JPEG")
    root = tmp_path / "vqa-rad"
    write_parquet(
        root / "data" / "train-00000-of-00001.parquet",
        [
            {"image": {"bytes": red, "path": None}, "question": "is there a fracture?", "answer": "Yes"},
            {"image": {"bytes": red, "path": None}, "question": "what organ is shown?", "answer": "liver"},
            {"image": None, "question": "is this normal?", "answer": "no"},
        ],
    )
    write_parquet(
        root / "data" / "test-00000-of-00001.parquet",
        [{"image": {"bytes": blue, "path": "x.jpg"}, "question": "where is the mass?", "answer": "left lobe"}],
    )
    return root


def test_vqa_rad_parquet(vqa_rad):
    result = load_vqa_rad(vqa_rad)
    qs = by_id(result)
    assert sorted(qs) == ["vqa-rad_test_0", "vqa-rad_train_0", "vqa-rad_train_1"]
    closed, open_, test = qs["vqa-rad_train_0"], qs["vqa-rad_train_1"], qs["vqa-rad_test_0"]
    assert (closed.answer, closed.answer_type, closed.question_type) == ("Yes", "closed", "closed")
    assert (open_.answer, open_.answer_type, open_.question_type) == ("liver", "open", "open")
    assert closed.options == () and closed.dataset == "VQA-RAD" and closed.modality == "unknown"
    assert closed.source == "data/train-00000-of-00001.parquet[0]"
    assert closed.images == open_.images  # the same bytes are one file
    cache = vqa_rad / CACHE_FOLDER
    assert Path(closed.images[0]).parent == cache and closed.images[0].endswith(".png")
    assert test.images[0].endswith(".jpg") and len(Path(test.images[0]).stem) == 16
    assert sorted(p.name for p in cache.iterdir()) == sorted({Path(q.images[0]).name for q in result.questions})
    assert_images_open(result.questions)
    assert kinds(result) == [("missing_image", "data/train-00000-of-00001.parquet[2] (vqa-rad_train_2)")]
    assert [q.question_id for q in load_vqa_rad(vqa_rad, splits={"test"}).questions] == ["vqa-rad_test_0"]
    elsewhere = load_vqa_rad(vqa_rad, image_root=str(vqa_rad.parent / "extracted"), splits={"test"})
    assert Path(elsewhere.questions[0].images[0]).parent == vqa_rad.parent / "extracted"
    assert_images_open(elsewhere.questions)


def test_parquet_cache_written_once(vqa_rad):
    load_vqa_rad(vqa_rad)
    cache = vqa_rad / CACHE_FOLDER
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    dir_mtime = cache.stat().st_mtime_ns
    again = load_vqa_rad(vqa_rad)
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == before
    assert cache.stat().st_mtime_ns == dir_mtime  # no temporary file came and went either
    assert len(again.questions) == 3


def test_parquet_cache_falls_back_to_home(vqa_rad, tmp_path, monkeypatch):
    (vqa_rad / CACHE_FOLDER).write_text("not a folder")  # the dataset folder cannot hold the cache
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    result = load_vqa_rad(vqa_rad)
    cache = Path(result.questions[0].images[0]).parent
    assert cache.parent == tmp_path / "home" / ".cache" / "med_r1" / "images" and len(cache.name) == 40
    assert_images_open(result.questions)


def test_parquet_written_by_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
    )
    rows = {"image": [Image.new("RGB", (4, 4), "red")], "question": ["is it normal?"], "answer": ["no"]}
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    result = load_pathvqa(tmp_path)
    assert [(q.question_id, q.answer, q.answer_type) for q in result.questions] == [("pathvqa_test_0", "no", "closed")]
    assert_images_open(result.questions)


def test_image_extension_sniffs_magic():
    assert image_extension(image_bytes("red", "PNG"), "a.jpg") == ".png"
    assert image_extension(image_bytes("red", "JPEG")) == ".jpg"
    assert image_extension(b"????", "scan.TIF") == ".tif"


def test_pathvqa_parquet_with_path_cells(tmp_path):
    root = tmp_path / "path-vqa"
    save_image(root / "imgs" / "a.jpg")
    struct_cell = {"image": {"bytes": None, "path": "imgs/a.jpg"}, "question": "is this malignant?", "answer": "no"}
    write_parquet(root / "data" / "validation-00000-of-00001.parquet", [struct_cell])
    write_parquet(
        root / "data" / "test-00000-of-00001.parquet",
        [
            {"image": "imgs/a.jpg", "question": "what stain is used?", "answer": "h&e"},
            {"image": "imgs/gone.jpg", "question": "what is shown?", "answer": "cells"},
        ],
    )
    result = load_pathvqa(root)
    qs = by_id(result)
    assert sorted(qs) == ["pathvqa_test_0", "pathvqa_validation_0"]
    assert qs["pathvqa_validation_0"].images == qs["pathvqa_test_0"].images == (str(root / "imgs" / "a.jpg"),)
    assert {q.modality for q in qs.values()} == {"Microscopy"}
    assert qs["pathvqa_validation_0"].answer_type == "closed" and qs["pathvqa_test_0"].answer_type == "open"
    assert kinds(result) == [("missing_image", "data/test-00000-of-00001.parquet[1] (pathvqa_test_1)")]
    assert not (root / CACHE_FOLDER).exists()  # no embedded bytes, nothing written
    assert_images_open(result.questions)


# ---------------------------------------------------------------- SLAKE


def slake_row(qid, img, question, answer, answer_type, lang="en", **extra):
    return {
        "img_id": 1, "img_name": img, "question": question, "answer": answer, "q_lang": lang,
        "location": "Lung", "modality": "X-Ray", "answer_type": answer_type, "base_type": "vqa",
        "content_type": "Abnormality", "triple": ["vhead", "_", "_"], "qid": qid, **extra,
    }  # fmt: skip


def test_slake_original_json(tmp_path):
    save_image(tmp_path / "imgs" / "xmlab1" / "source.jpg")
    train = [
        slake_row(1, "xmlab1/source.jpg", "Is the lung healthy?", "No", "CLOSED"),
        slake_row(2, "xmlab1/source.jpg", "肺健康吗?", "不", "CLOSED", lang="zh"),
        slake_row(3, "xmlab1/source.jpg", "Which organ is abnormal, heart or lung?", "Heart", "CLOSED"),
        {"qid": 4, "question": "no image name", "answer": "x", "q_lang": "en"},
        slake_row(5, "xmlab9/source.jpg", "What is shown?", "Lung", "OPEN"),
    ]
    (tmp_path / "train.json").write_text(json.dumps(train, ensure_ascii=False))
    (tmp_path / "validate.json").write_text(json.dumps([slake_row(6, "xmlab1/source.jpg", "Where?", "Left", "OPEN")]))
    (tmp_path / "test.json").write_text("[not json")
    result = load_slake(tmp_path)
    qs = by_id(result)
    assert sorted(qs) == ["slake_1", "slake_3", "slake_6"]
    q = qs["slake_1"]
    assert (q.dataset, q.answer, q.answer_type, q.question_type) == ("SLAKE", "No", "closed", "Abnormality")
    assert (q.modality, q.modality_raw, q.options) == ("X-Ray", "X-Ray", ())
    assert q.source == "train.json[0]" and q.images == (str(tmp_path / "imgs" / "xmlab1" / "source.jpg"),)
    assert qs["slake_3"].answer_type == "closed"  # SLAKE's own CLOSED kept although the answer is not yes/no
    assert qs["slake_6"].source == "validate.json[0]" and qs["slake_6"].answer_type == "open"
    assert kinds(result) == [
        ("bad_file", "test.json"),
        ("bad_record", "train.json[3] (slake_4)"),
        ("missing_image", "train.json[4] (slake_5)"),
    ]
    assert_images_open(result.questions)
    assert len(load_slake(tmp_path, lang=None).questions) == 4
    assert sorted(by_id(load_slake(tmp_path, splits=["validation"]))) == ["slake_6"]


def test_slake_parquet(tmp_path):
    png = {"bytes": image_bytes("green"), "path": None}
    row = slake_row(7, "xmlab2/source.jpg", "What modality is this?", "MRI", "OPEN", image=png, modality="MRI")
    zh = slake_row(8, "xmlab2/source.jpg", "这是什么?", "MRI", "OPEN", lang="zh", image=png)
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", [row, zh])
    result = load_slake(tmp_path)
    assert [q.question_id for q in result.questions] == ["slake_7"]
    q = result.questions[0]
    assert (q.modality, q.question_type, q.answer_type) == ("MRI", "Abnormality", "open")
    assert result.problems == []
    assert_images_open(result.questions)


# ---------------------------------------------------------------- PMC-VQA


PMC_FIELDS = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"]


def write_csv(path: Path, rows: list[list[str]], fields=PMC_FIELDS) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        writer.writerows(rows)


def test_pmc_vqa_csv(tmp_path):
    save_image(tmp_path / "images" / "PMC1_F1.jpg")
    save_image(tmp_path / "figures" / "PMC2_F2.jpg")
    choices = ["A:Diffuse uptake", "B:Focal uptake", " C:No uptake", "D:Cannot determine"]
    write_csv(
        tmp_path / "train.csv",
        [
            ["PMC1_F1.jpg", "What is the uptake pattern?", "Focal uptake", *choices, "B"],
            ["PMC1_F1.jpg", "Which label?", "Something else", *choices, ""],
            ["PMC404.jpg", "Where is it?", "Focal uptake", *choices, "B"],
        ],
    )
    fields_v2 = ["Figure_path", "Question", "Anwser", "Choice A", "Choice B", "Choice C", "Choice D"]
    write_csv(tmp_path / "test_2.csv", [["PMC2_F2.jpg", "Which?", "C:No uptake", *choices]], fields_v2)
    write_csv(tmp_path / "test_clean.csv", [["PMC1_F1.jpg", "Clean?", "Focal uptake", *choices, "B"]])
    result = load_pmc_vqa(tmp_path)
    qs = by_id(result)
    assert sorted(qs) == ["pmc-vqa_test_2_0", "pmc-vqa_train_0"]
    q = qs["pmc-vqa_train_0"]
    assert q.options == ("Diffuse uptake", "Focal uptake", "No uptake", "Cannot determine")
    assert (q.answer, q.answer_type, q.modality, q.question_type) == ("B", "choice", "unknown", "unknown")
    assert q.images == (str(tmp_path / "images" / "PMC1_F1.jpg"),) and q.source == "train.csv[0]"
    assert qs["pmc-vqa_test_2_0"].answer == "C" and qs["pmc-vqa_test_2_0"].images[0].endswith("figures/PMC2_F2.jpg")
    assert kinds(result) == [
        ("answer_not_in_options", "train.csv[1] (pmc-vqa_train_1)"),
        ("missing_image", "train.csv[2] (pmc-vqa_train_2)"),
    ]
    assert_images_open(result.questions)
    assert sorted(by_id(load_pmc_vqa(tmp_path, splits={"test_clean"}))) == ["pmc-vqa_test_clean_0"]


def test_pmc_vqa_parquet(tmp_path):
    rows = [
        {"id": "pmc-1", "image": {"bytes": image_bytes("red", "JPEG"), "path": None}, "question": "What?",
         "options": ["A:CT", "B:MRI", "C:X-ray", "D:Ultrasound"], "answer": "MRI", "responses": None},
        {"id": "2", "image": {"bytes": image_bytes("red", "JPEG"), "path": None}, "question": "Which?",
         "options": ["CT", "MRI"], "answer": "B", "responses": None},
    ]  # fmt: skip
    write_parquet(tmp_path / "data" / "train-00000-of-00002.parquet", rows)
    result = load_pmc_vqa(tmp_path)
    qs = by_id(result)
    assert sorted(qs) == ["pmc-1", "pmc-vqa_2"]
    assert qs["pmc-1"].options == ("CT", "MRI", "X-ray", "Ultrasound") and qs["pmc-1"].answer == "B"
    assert qs["pmc-vqa_2"].answer == "B" and result.problems == []
    assert_images_open(result.questions)


# ---------------------------------------------------------------- MedXpertQA


def test_medxpertqa_mm(tmp_path):
    save_image(tmp_path / "images" / "MM-1-a.jpeg")
    save_image(tmp_path / "images" / "MM-1-b.png", fmt="PNG")
    options = {"A": "Gout", "B": "Septic arthritis", "C": "Pseudogout", "D": "Lyme disease", "E": "Psoriasis"}
    text = "A 60-year-old man has a swollen knee. What is the diagnosis?"
    embedded = "\nAnswer Choices: (A) Gout (B) Septic arthritis (C) Pseudogout (D) Lyme disease (E) Psoriasis"
    good = {
        "id": "MM-1", "question": text + embedded, "options": options, "label": "C",
        "images": ["MM-1-a.jpeg", "MM-1-b.png"], "medical_task": "Diagnosis", "body_system": "Skeletal",
        "question_type": "Reasoning",
    }  # fmt: skip
    lines = [
        json.dumps(good),
        "{broken",
        json.dumps({**good, "id": "MM-2", "label": "Z"}),
        json.dumps({**good, "id": "MM-3", "images": ["MM-3-a.jpeg"]}),
        json.dumps({**good, "id": "MM-4", "images": []}),
    ]
    (tmp_path / "MM").mkdir()
    (tmp_path / "MM" / "test.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "MM" / "dev.jsonl").write_text(json.dumps({**good, "id": "MM-5", "label": "A"}) + "\n")
    result = load_medxpertqa(tmp_path)
    qs = by_id(result)
    assert sorted(qs) == ["MM-1", "MM-5"]
    q = qs["MM-1"]
    assert q.question == text  # the embedded choice list is cut
    assert q.options == tuple(options.values()) and q.answer == "C" and q.answer_type == "choice"
    assert (q.dataset, q.question_type, q.modality, q.source) == (
        "MedXpertQA",
        "Diagnosis",
        "unknown",
        "MM/test.jsonl:1",
    )
    assert q.images == (str(tmp_path / "images" / "MM-1-a.jpeg"), str(tmp_path / "images" / "MM-1-b.png"))
    assert kinds(result) == [
        ("answer_not_in_options", "MM/test.jsonl:3 (MM-2)"),
        ("bad_record", "MM/test.jsonl:2"),
        ("missing_image", "MM/test.jsonl:4 (MM-3)"),
        ("missing_image", "MM/test.jsonl:5 (MM-4)"),
    ]
    assert_images_open(result.questions)
    assert sorted(by_id(load_medxpertqa(tmp_path / "MM", splits=["dev"]))) == ["MM-5"]
    moved = tmp_path / "moved"
    (tmp_path / "images").rename(moved)
    dev = load_medxpertqa(tmp_path / "MM" / "dev.jsonl", image_root=str(moved))
    assert dev.questions[0].images == (str(moved / "MM-1-a.jpeg"), str(moved / "MM-1-b.png"))


def test_loaders_table():
    assert LOADERS == {
        "vqa-rad": load_vqa_rad, "slake": load_slake, "pathvqa": load_pathvqa, "pmc-vqa": load_pmc_vqa,
        "medxpertqa": load_medxpertqa,
    }  # fmt: skip


# ---------------------------------------------------------------- generic JSONL


@pytest.fixture
def jsonl_file(tmp_path):
    save_image(tmp_path / "set" / "img" / "a.jpg")
    save_image(tmp_path / "set" / "img" / "b.jpg", "blue")
    outside = save_image(tmp_path / "elsewhere" / "c.jpg", "green")
    rows = [
        {"id": "q1", "image": "img/a.jpg", "question": "Which organ?", "options": ["Liver", "Spleen"], "answer": "B",
         "modality": "CT", "question_type": "Anatomy Identification", "dataset": "mine"},
        {"id": "q2", "images": ["img/a.jpg", "img/b.jpg"], "question": "Which?", "options": {"B": "MRI", "A": "CT"},
         "answer": "mri.", "modality": "MR", "question_type": "Modality Recognition"},
        {"id": "q3", "image": str(outside), "question": "Is it normal?", "answer": "YES", "modality": "X-Ray",
         "question_type": "closed", "options": None},
        {"id": "q4", "image": "img/b.jpg", "question": "What is shown?", "answer": "a cyst", "modality": "Ultrasound",
         "question_type": "open"},
        {"id": "q5", "image": "img/a.jpg", "question": "Which?", "options": ["CT", "MRI"], "answer": "PET",
         "modality": "CT", "question_type": "x"},
        {"id": "q6", "question": "No image?", "answer": "no", "modality": "CT", "question_type": "closed"},
        {"id": "q1", "image": "img/a.jpg", "question": "Again?", "answer": "no"},
    ]  # fmt: skip
    path = tmp_path / "set" / "questions.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines.insert(4, '{"id": "bad", ')
    path.write_text("\n".join(lines) + "\n\n")
    return path


def test_jsonl_load(jsonl_file):
    folder = jsonl_file.parent
    result = load_jsonl(jsonl_file)
    qs = by_id(result)
    assert sorted(qs) == ["q1", "q2", "q3", "q4"]
    q1, q2, q3, q4 = (qs[k] for k in ("q1", "q2", "q3", "q4"))
    assert (q1.options, q1.answer, q1.answer_type, q1.dataset) == (("Liver", "Spleen"), "B", "choice", "mine")
    assert q1.images == (str(folder / "img" / "a.jpg"),) and q1.source == "questions.jsonl:1"
    assert (q2.options, q2.answer, q2.modality, q2.modality_raw) == (("CT", "MRI"), "B", "MRI", "MR")
    assert q2.dataset == "questions" and len(q2.images) == 2
    assert (q3.answer, q3.answer_type, q3.options) == ("YES", "closed", ())
    assert q3.images[0].endswith("elsewhere/c.jpg")
    assert (q4.answer, q4.answer_type, q4.question_type) == ("a cyst", "open", "open")
    assert kinds(result) == [
        ("answer_not_in_options", "questions.jsonl:6 (q5)"),
        ("bad_record", "questions.jsonl:5"),
        ("bad_record", "questions.jsonl:7 (q6)"),
        ("duplicate_id", "questions.jsonl:8 (q1)"),
    ]
    assert_images_open(result.questions)
    assert by_id(load_jsonl(folder)) == qs  # a folder of .jsonl files


def test_jsonl_image_root(jsonl_file, tmp_path):
    result = load_jsonl(jsonl_file, image_root=str(tmp_path / "set" / "img"))
    assert result.questions[0].images == (str(tmp_path / "set" / "img" / "img" / "a.jpg"),)


def test_jsonl_round_trip(jsonl_file, tmp_path):
    original = load_jsonl(jsonl_file).questions
    out = tmp_path / "set" / "copy" / "out.jsonl"
    assert write_jsonl(original, out) == len(original)
    assert load_jsonl(out).questions == original
    # Paths under the file's folder are written relative to it, others stay absolute.
    first = json.loads(out.read_text().splitlines()[0])
    assert first["image"] == str(jsonl_file.parent / "img" / "a.jpg")  # not under copy/: kept absolute
    root = tmp_path / "set"
    write_jsonl(original, tmp_path / "out" / "q.jsonl", image_root=str(root))
    written = [json.loads(line) for line in (tmp_path / "out" / "q.jsonl").read_text().splitlines()]
    assert written[0]["image"] == "img/a.jpg" and os.path.isabs(written[2]["image"])
    assert load_jsonl(tmp_path / "out" / "q.jsonl", image_root=str(root)).questions == original


def test_jsonl_round_trip_of_loaded_datasets(tmp_path):
    save_image(tmp_path / "slake" / "imgs" / "xmlab1" / "source.jpg")
    rows = [slake_row(1, "xmlab1/source.jpg", "Which organ, heart or lung?", "Heart", "CLOSED")]
    (tmp_path / "slake" / "train.json").write_text(json.dumps(rows))
    write_parquet(
        tmp_path / "rad" / "data" / "test-0.parquet",
        [{"image": {"bytes": image_bytes("red"), "path": None}, "question": "q?", "answer": "yes"}],
    )
    questions = load_slake(tmp_path / "slake").questions + load_vqa_rad(tmp_path / "rad").questions
    out = tmp_path / "converted" / "all.jsonl"
    write_jsonl(questions, out)
    again = load_jsonl(out).questions
    assert again == questions
    assert again[0].source == "train.json[0]"  # provenance survives the conversion
    assert [replace(q, source="") for q in again] == [replace(q, source="") for q in questions]


def test_jsonl_letter_case_and_option_count(tmp_path):
    from med_r1.data.jsonl import load_jsonl

    rows = [
        {"id": "lower", "image": "x.png", "question": "q", "options": ["CT", "MRI"], "answer": "b"},
        {"id": "many", "image": "x.png", "question": "q", "options": [str(i) for i in range(12)], "answer": "A"},
    ]
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = load_jsonl(tmp_path / "q.jsonl")
    assert [q.answer for q in result.questions] == ["B"]
    assert [p.kind for p in result.problems] == ["bad_record"] and "at most 10" in result.problems[0].message

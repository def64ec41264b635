"""The data layer on fixtures built here: OmniMedVQA's quirks, Med-R1 split files, splits and leakage, checks."""

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_medr1_splits, make_omnimedvqa, tiny_recipe, write_recipe
from med_r1.cli import main
from med_r1.config import DataSource
from med_r1.data import selection
from med_r1.data.checks import validate
from med_r1.data.medr1_splits import load_medr1, parse_problem, to_medr1_record, write_medr1
from med_r1.data.omnimedvqa import load_omnimedvqa
from med_r1.data.rows import ImageLoader
from med_r1.data.sources import load_source
from med_r1.errors import DataError


def record(dataset, qid, image, answer, options, modality="X-Ray", qtype="Disease Diagnosis", key="modality_type"):
    rec = {
        "dataset": dataset,
        "question_id": qid,
        "question_type": qtype,
        "question": "Which one?",
        "gt_answer": answer,
        "image_path": image,
    }
    rec |= {f"option_{'ABCD'[i]}": text for i, text in enumerate(options)}
    rec[key] = modality
    return rec


@pytest.fixture
def quirky(tmp_path) -> Path:
    """Every OmniMedVQA quirk in one small folder."""
    root = tmp_path / "OmniMedVQA"
    images = {
        "Images/NLM- Malaria Data/Parasitized/cell 1.png": "PNG",
        "Images/OCT & X-Ray 2017/test/NORMAL/im (3).JPG": "JPEG",
        "Images/Chest CT Scan/scan.tif": "TIFF",
        "Images/Chest CT Scan/old.BMP": "BMP",
    }
    for rel, fmt in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), "gray").save(root / rel, format=fmt)
    qa = root / "QA_information" / "Open-access"
    qa.mkdir(parents=True)
    records = {
        "NLM- Malaria Data": [
            record(
                "NLM- Malaria Data",
                "NLM- Malaria Data_0000",
                "Images/NLM- Malaria Data/Parasitized/cell 1.png",
                "Yes",
                ["Yes", "No"],
                "Microscopy Images",
            )
        ],
        "OCT & X-Ray 2017": [
            record(
                "OCT & X-Ray 2017",
                "OCT & X-Ray 2017_0000",
                "Images/OCT & X-Ray 2017/test/NORMAL/im (3).JPG",
                "  no, it's NORMAL. ",
                ["Drusen", "No, it's normal", "CNV"],
                "OCT (Optical Coherence Tomography",
            ),
            record(
                "OCT & X-Ray 2017",
                "OCT & X-Ray 2017_0001",
                "Images/OCT & X-Ray 2017/test/NORMAL/im (3).JPG",
                "Glaucoma",
                ["Drusen", "No, it's normal", "CNV", "DME"],
                "OCT (Optical Coherence Tomography",
            ),
        ],
        "Chest CT Scan": [
            record(
                "Chest CT Scan",
                "Chest CT Scan_0000",
                "Images/Chest CT Scan/scan.tif",
                "CT",
                ["MRI", "CT", "PET", "X-ray"],
                "CT(Computed Tomography)",
                "Modality Recognition",
                key="modality",
            ),
            record(
                "Chest CT Scan",
                "Chest CT Scan_0001",
                "Images/Chest CT Scan/old.BMP",
                "lung.",
                ["Lung", "Liver", "Heart", "Brain"],
                "CT(Computed Tomography)",
                "Anatomy Identification",
            ),
        ],
    }
    for dataset, recs in records.items():
        (qa / f"{dataset}.json").write_text(json.dumps(recs))
    return root


def test_omnimedvqa_quirks(quirky):
    result = load_omnimedvqa(quirky)
    by_id = {q.question_id: q for q in result.questions}
    assert len(by_id) == 4
    malaria = by_id["NLM- Malaria Data_0000"]
    assert malaria.modality == "Microscopy" and malaria.modality_raw == "Microscopy Images"
    assert malaria.options == ("Yes", "No") and malaria.answer == "A"  # 2 options, no option_C/D
    assert Path(malaria.images[0]).exists() and "NLM- Malaria Data/Parasitized/cell 1.png" in malaria.images[0]
    oct_ = by_id["OCT & X-Ray 2017_0000"]
    assert oct_.answer == "B" and oct_.modality == "OCT"  # "  no, it's NORMAL. " matches "No, it's normal"
    ct = by_id["Chest CT Scan_0000"]
    assert ct.modality == "CT" and ct.modality_raw == "CT(Computed Tomography)"  # keyed `modality`
    assert by_id["Chest CT Scan_0001"].answer == "A"  # "lung." -> "Lung"
    [problem] = result.problems
    assert problem.kind == "answer_not_in_options" and problem.question_id == "OCT & X-Ray 2017_0001"
    assert "OCT & X-Ray 2017.json[1]" in problem.where and "'Glaucoma'" in problem.message
    loader = ImageLoader()
    for q in result.questions:  # .JPG, .tif, .BMP, spaces, '&', parentheses all decode
        [image] = loader.load(list(q.images), q.question_id)
        assert image.mode == "RGB" and image.size == (40, 30)


def test_restricted_access_uses_local_roots(tmp_path):
    root = make_omnimedvqa(tmp_path / "OmniMedVQA", n_per_modality=1)
    restricted = root / "QA_information" / "Restricted-access"
    restricted.mkdir()
    rec = record("AMOS", "AMOS_0000", "Images/AMOS/case 1/slice.png", "CT", ["CT", "MRI"], "CT(Computed Tomography)")
    (restricted / "AMOS.json").write_text(json.dumps([rec]))
    missing = load_omnimedvqa(root)
    assert [p.kind for p in missing.problems] == ["missing_image"] and "roots.AMOS" in missing.problems[0].message
    local = tmp_path / "my-amos"
    (local / "case 1").mkdir(parents=True)
    Image.new("RGB", (30, 30)).save(local / "case 1" / "slice.png")
    found = load_omnimedvqa(root, {"AMOS": str(local)})
    amos = [q for q in found.questions if q.dataset == "AMOS"][0]
    assert amos.images == (str(local / "case 1" / "slice.png"),) and not found.problems


def test_medr1_problem_parsing_with_commas():
    question, options = parse_problem("Which finding, if any, is shown? A)Mass, left lobe, B)No finding, C)Cyst.")
    assert question == "Which finding, if any, is shown?"
    assert options == ["Mass, left lobe", "No finding", "Cyst."]


def test_medr1_split_round_trip(quirky, tmp_path):
    questions = load_omnimedvqa(quirky).questions
    for q in questions:
        assert to_medr1_record(q, quirky)["solution"] == f"<answer> {q.answer} </answer>"
    malaria = [q for q in questions if q.dataset == "NLM- Malaria Data"][0]
    assert to_medr1_record(malaria, quirky) == {
        "image": "Images/NLM- Malaria Data/Parasitized/cell 1.png",
        "problem": "Which one? A)Yes, B)No",
        "solution": "<answer> A </answer>",
    }
    folder = tmp_path / "Splits" / "modality" / "test"
    for raw in {q.modality_raw for q in questions}:
        write_medr1([q for q in questions if q.modality_raw == raw], folder / f"{raw}_test.json", quirky)
    assert (folder / "OCT (Optical Coherence Tomography_test.json").exists()
    back = {q.question_id: q for q in load_medr1(folder, str(quirky)).questions}  # ids recovered from QA_information
    for q in questions:
        b = back[q.question_id]
        assert (b.question, b.options, b.answer, b.images, b.modality) == (
            q.question,
            q.options,
            q.answer,
            q.images,
            q.modality,
        )
    without_root = load_medr1(folder, str(tmp_path / "elsewhere")).questions  # no QA_information: names from files
    assert {q.modality for q in without_root} == {q.modality for q in questions}


def shared_image_questions(tmp_path) -> list:
    """Several questions per image, as in OmniMedVQA (Med-R1's question-level splits then share images)."""

    def hook(dataset, records):
        for i, rec in enumerate(records):
            rec["image_path"] = records[i - i % 2]["image_path"]  # pairs of questions share an image
        return records

    return load_omnimedvqa(make_omnimedvqa(tmp_path / "omni", n_per_modality=40, records_hook=hook)).questions


def test_splits_are_deterministic_and_by_image_never_leaks(tmp_path):
    questions = shared_image_questions(tmp_path)
    for by in ("question", "image"):
        train = selection.take_side(questions, "train", by, 0.3, seed=7)
        test = selection.take_side(questions, "test", by, 0.3, seed=7)
        assert len(train) + len(test) == len(questions)
        assert {q.question_id for q in train}.isdisjoint({q.question_id for q in test})
        assert selection.take_side(questions, "test", by, 0.3, seed=7) == test  # same seed, same split
        assert 0.15 < len(test) / len(questions) < 0.45
    assert (
        selection.image_overlap(
            selection.take_side(questions, "train", "image", 0.3, 7),
            selection.take_side(questions, "test", "image", 0.3, 7),
        )
        == []
    )
    question_overlap = selection.image_overlap(
        selection.take_side(questions, "train", "question", 0.3, 7),
        selection.take_side(questions, "test", "question", 0.3, 7),
    )
    assert question_overlap  # Med-R1's scheme shares images between train and test


def test_filters_never_move_a_question_across_the_split(tmp_path):
    questions = shared_image_questions(tmp_path)
    all_test = {q.question_id for q in selection.take_side(questions, "test", "image", 0.3, 1)}
    ct_only = selection.filter_questions(questions, modalities=["ct"])
    ct_test = {q.question_id for q in selection.take_side(ct_only, "test", "image", 0.3, 1)}
    assert ct_test == {qid for qid in all_test if qid.startswith("Set 0")}
    with pytest.raises(DataError, match="'Fundsu' matches no question; present: CT, Fundus, MRI, X-Ray"):
        selection.filter_questions(questions, modalities=["Fundsu"])


def test_validate_finds_every_kind_of_problem(tmp_path, capsys):
    def hook(dataset, records):
        if dataset == "Set 0 & Co":
            records[1]["question_id"] = records[0]["question_id"]  # duplicate id
            records[2]["image_path"] = "Images/Set 0 & Co/gone.png"  # missing image
            records[3]["gt_answer"] = "purple"  # not among the options
        return records

    root = make_omnimedvqa(tmp_path / "omni", records_hook=hook)
    (root / "Images" / "Set 1 & Co" / "img (0).png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # unreadable
    assert main(["data", "validate", str(root), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {
        "answer_not_in_options": 1,
        "duplicate_id": 1,
        "missing_image": 1,
        "unreadable_image": 1,
    }
    assert report["errors"] == 4 and report["questions"] == 15
    assert {p["question_id"] for p in report["problems"]} == {
        "Set 0 & Co_0000",
        "Set 0 & Co_0002",
        "Set 0 & Co_0003",
        "Set 1 & Co_0000",
    }
    assert main(["data", "validate", str(root), "--quick", "--json"]) == 2  # no decoding: the corrupt PNG passes
    assert "unreadable_image" not in json.loads(capsys.readouterr().out)["counts"]


def test_validate_reports_train_test_image_overlap(tmp_path, capsys):
    questions = shared_image_questions(tmp_path)
    train = selection.take_side(questions, "train", "question", 0.3, 3)
    test = selection.take_side(questions, "test", "question", 0.3, 3)
    problems = validate(train, [], test=test, decode=False)
    shared = selection.image_overlap(train, test)
    assert sorted(p.where for p in problems if p.kind == "image_overlap") == shared and shared


def test_stats_json(omni_dir, capsys):
    assert main(["data", "stats", str(omni_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["questions"] == 16 and report["images"] == 16
    assert report["modality_x_question_type"]["CT"] == {"Modality Recognition": 2, "Other Biological Attributes": 2}
    assert report["options_per_question"] == {"4": 16}
    assert report["answer_letters"] == {"A": 4, "B": 4, "C": 4, "D": 4}


def test_convert_writes_leakage_free_medr1_splits(omni_dir, tmp_path, capsys):
    out = tmp_path / "splits"
    assert main(["data", "convert", str(omni_dir), "--to", "medr1", "--out", str(out), "--split-by", "image"]) == 0
    train = load_medr1(out / "modality" / "train", str(omni_dir)).questions
    test = load_medr1(out / "modality" / "test", str(omni_dir)).questions
    assert len(train) + len(test) == 16 and selection.image_overlap(train, test) == []
    assert (out / "question_type" / "test").is_dir()
    assert main(["data", "convert", str(omni_dir), "--to", "jsonl", "--out", str(tmp_path / "j")]) == 0
    back = load_source(DataSource(path=str(tmp_path / "j" / "all.jsonl"))).questions
    assert {q.question_id for q in back} == {q.question_id for q in load_omnimedvqa(omni_dir).questions}


@pytest.mark.slow
def test_training_refuses_bad_data_unless_told_to_skip(tiny_model, tmp_path, capsys):
    def hook(dataset, records):
        if dataset == "Set 2 & Co":
            records[0]["image_path"] = "Images/Set 2 & Co/gone.png"
            records[1]["gt_answer"] = "purple"
        return records

    root = make_omnimedvqa(tmp_path / "omni", records_hook=hook)
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model, root, tmp_path / "run", max_steps=1))
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "data.train has data errors (1 answer_not_in_options, 1 missing_image)" in err
    assert "Set 2 & Co_0000" in err and "data.skip_bad_rows=true" in err
    assert main(["train", str(recipe), "data.skip_bad_rows=true"]) == 0


@pytest.mark.slow
def test_a_volume_trains_as_several_images(tiny_model, tmp_path):
    """A NIfTI volume in a JSONL dataset becomes data.frames slices, fed to GRPO as one multi-image question."""
    import nibabel.testing

    volume = Path(nibabel.testing.data_path) / "example4d.nii.gz"
    rows = [
        {
            "id": f"vol{i}",
            "image": str(volume),
            "question": "Which organ is imaged?",
            "options": ["Brain", "Lung"],
            "answer": "A",
            "modality": "MR",
            "question_type": "Anatomy Identification",
        }
        for i in range(4)
    ]
    data = tmp_path / "volumes.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loader = ImageLoader(frames=4)
    assert len(loader.load([str(volume)], "vol0")) == 4
    raw = tiny_recipe(tiny_model, data, tmp_path / "run", max_steps=1)
    raw["data"]["frames"] = 4
    assert main(["train", str(write_recipe(tmp_path / "r.yaml", raw))]) == 0
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_by_image_split_is_the_same_wherever_the_data_lives(omni_dir, tmp_path):
    import shutil

    copies = [tmp_path / "a" / "omni", tmp_path / "far" / "away" / "omni"]
    tests = []
    for copy in copies:
        shutil.copytree(omni_dir, copy)
        questions = load_source(DataSource(path=str(copy))).questions
        tests.append({q.question_id for q in selection.take_side(questions, "test", "image", 0.4, seed=5)})
    assert tests[0] == tests[1] and tests[0]


def test_by_image_split_keeps_questions_sharing_any_image_together(tmp_path):
    rows = []
    for i in range(60):
        Image.new("RGB", (8, 8)).save(tmp_path / f"s{i}.png")
        Image.new("RGB", (8, 8)).save(tmp_path / f"t{i}.png")
        rows.append({"id": f"one{i}", "image": f"s{i}.png", "question": "q", "answer": "yes"})
        rows.append({"id": f"two{i}", "images": [f"t{i}.png", f"s{i}.png"], "question": "q", "answer": "no"})
    (tmp_path / "multi.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions = load_source(DataSource(path=str(tmp_path / "multi.jsonl"))).questions
    train = selection.take_side(questions, "train", "image", 0.5, seed=0)
    test = selection.take_side(questions, "test", "image", 0.5, seed=0)
    assert train and test and selection.image_overlap(train, test) == []


# -- Med-R1's own split files: shared images, relative paths, conversion, stats ------------------------------------


def test_validate_finds_images_shared_by_medr1_train_and_test_without_an_image_root(tmp_path, capsys):
    root = make_medr1_splits(tmp_path)
    splits = root / "Splits" / "modality"
    train, test = splits / "train" / "X-Ray_train.json", splits / "test" / "X-Ray_test.json"
    shared = [f"Images/Chest X-Ray PA/case {i} (view).png" for i in (0, 2, 4)]
    for extra in ([], ["--image-root", str(root / "OmniMedVQA")]):
        assert main(["data", "validate", str(train), "--test", str(test), "--quick", "--json", *extra]) == 2
        report = json.loads(capsys.readouterr().out)
        assert report["counts"]["image_overlap"] == 3
        assert sorted(p["where"] for p in report["problems"] if p["kind"] == "image_overlap") == shared
        assert report["counts"].get("missing_image", 0) == (0 if extra else 6)  # no root: the images are elsewhere
    assert main(["data", "validate", str(splits / "train"), "--test", str(splits / "test"), "--quick", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["counts"]["image_overlap"] == 6  # both modalities, 3 each


def test_a_by_image_split_does_not_depend_on_how_paths_are_spelled(tmp_path, monkeypatch):
    root = make_medr1_splits(tmp_path / "data", n=40)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    (tmp_path / "elsewhere").mkdir()
    spellings = [
        (tmp_path, "data/Splits/modality/train", "data/OmniMedVQA"),
        (tmp_path, "./data/Splits/modality/../modality/train/", "data/./OmniMedVQA/"),
        (tmp_path / "elsewhere", "../data/Splits/modality/train", "../data/OmniMedVQA"),
        (tmp_path / "elsewhere", str(root / "Splits" / "modality" / "train"), str(root / "OmniMedVQA")),
        (tmp_path / "elsewhere", "../link/Splits/modality/train", "../link/OmniMedVQA"),
    ]
    seen = set()
    for cwd, path, image_root in spellings:
        monkeypatch.chdir(cwd)
        questions = load_source(DataSource(path=path, format="medr1", image_root=image_root)).questions
        test = selection.take_side(questions, "test", "image", 0.3, seed=3)
        assert all(Path(image).is_absolute() and Path(image).exists() for q in questions for image in q.images)
        seen.add(
            (tuple(sorted(q.question_id for q in test)), tuple(sorted(i for q in questions for i in q.image_ids)))
        )
    assert len(seen) == 1
    [(test_ids, image_ids)] = seen
    assert test_ids and "Images/Chest X-Ray PA/case 0 (view).png" in image_ids


def test_convert_with_relative_paths_writes_paths_relative_to_the_image_root(tmp_path, monkeypatch, capsys):
    root = make_medr1_splits(tmp_path)
    monkeypatch.chdir(root)
    args = ["--to", "medr1", "--split-by", "image", "--test-ratio", "0.5"]
    assert main(["data", "convert", "Splits/modality/train", "--out", "a", "--image-root", "OmniMedVQA", *args]) == 0
    out = capsys.readouterr().out
    assert f"relative to {root / 'OmniMedVQA'}" in out
    spelled = "./Splits/modality/../modality/train/"
    assert main(["data", "convert", spelled, "--out", "b", "--image-root", "./OmniMedVQA/", *args]) == 0
    written = sorted(p.relative_to(root / "a") for p in (root / "a").rglob("*.json"))
    assert written and all(p.parts[0] == "modality" for p in written)  # the layout asked for, no question_type/
    assert {p.name for p in written} == {
        f"{domain}_{side}.json" for domain in ("X-Ray", "CT(Computed Tomography)") for side in ("train", "test")
    } | {"unknown_train.json"}
    for rel in written:
        assert (root / "a" / rel).read_bytes() == (root / "b" / rel).read_bytes()  # whatever the spelling
        for record in json.loads((root / "a" / rel).read_text()):
            assert record["image"].startswith("Images/") and (root / "OmniMedVQA" / record["image"]).exists()
    back = load_source(DataSource(path=str(root / "a" / "modality"), image_root=str(root / "OmniMedVQA")))
    assert len(back.questions) == 13 and not back.problems  # 6 + 6 + the unknown record
    assert main(["data", "convert", "Splits/modality/train", "--out", "c", "--to", "medr1"]) == 0  # no image root
    record = json.loads((root / "c" / "modality" / "X-Ray.json").read_text())[0]
    assert record["image"] == "Images/Chest X-Ray PA/case 0 (view).png"  # as the input named it


def test_convert_asks_for_layouts_the_data_cannot_fill(tmp_path, capsys):
    root = make_medr1_splits(tmp_path)
    train = str(root / "Splits" / "modality" / "train")
    assert main(["data", "convert", train, "--to", "medr1", "--out", str(tmp_path / "o"), "--layout", "both"]) == 2
    assert "no question names its question type" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_convert_never_overwrites_and_reports_every_dropped_row(tmp_path, capsys):
    def hook(dataset, records):
        if dataset == "Set 1 & Co":
            records[2]["gt_answer"] = "purple"  # matches no option: the row cannot be converted
        return records

    root = make_omnimedvqa(tmp_path / "omni", records_hook=hook)
    out = tmp_path / "out"
    assert main(["data", "convert", str(root), "--to", "medr1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "15 questions written; 1 records dropped" in printed
    assert "dropped QA_information/Open-access/Set 1 & Co.json[2] (Set 1 & Co_0002): gt_answer 'purple'" in printed
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["data", "convert", str(make_omnimedvqa(tmp_path / "other")), "--to", "medr1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds" in err and "--force" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing lost
    assert main(["data", "convert", str(root), "--to", "jsonl", "--out", str(out), "--force"]) == 0
    assert (out / "all.jsonl").exists()
    file = tmp_path / "a-file"
    file.write_text("keep me")
    assert main(["data", "convert", str(root), "--to", "jsonl", "--out", str(file)]) == 2
    assert "is a file" in capsys.readouterr().err and file.read_text() == "keep me"


def test_stats_say_how_many_images_exist_and_count_by_modality_and_dataset(tmp_path, capsys):
    root = make_medr1_splits(tmp_path)
    train = str(root / "Splits" / "modality" / "train")
    assert main(["data", "stats", train, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["images"], report["images_found"]) == (12, 0)
    assert report["modalities"] == {"CT": 6, "X-Ray": 6, "unknown": 1}
    assert report["datasets"] == {"Chest CT Scan": 7, "Chest X-Ray PA": 6}
    assert main(["data", "stats", train]) == 0
    text = capsys.readouterr().out
    assert "images on disk: 0 of 12" in text and f"data validate {train} --quick" in text and "--image-root" in text
    assert "by modality: CT 6, X-Ray 6, unknown 1" in text
    assert main(["data", "stats", train, "--image-root", str(root / "OmniMedVQA")]) == 0
    assert "images on disk: 12 of 12\n" in capsys.readouterr().out


def test_stats_count_and_show_the_rows_they_skip(tmp_path, capsys):
    good = {"image": "a.png", "question": "Which?", "options": ["CT", "MRI"], "answer": "B", "modality": "MR"}
    rows = [
        json.dumps({"id": "q1", **good}),
        '{"id": "q2", "image": "a.png", "question": "Which?"',  # cut off: malformed JSON
        json.dumps({"id": "q3", "image": "a.png", "options": ["CT", "MRI"]}),  # no question, no answer
        json.dumps({"id": "q4", **good, "answer": "A"}),
    ]
    (tmp_path / "set.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "zz.jsonl").write_text(json.dumps({"id": "q1", **good}) + "\n")  # a repeated id (read second)
    assert main(["data", "stats", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["questions"] == 2 and report["modalities"] == {"MRI": 2}  # the good rows only
    assert report["answer_letters"] == {"A": 1, "B": 1}
    skipped = report["skipped"]
    assert skipped["rows"] == 3 and skipped["by_file"] == {"set.jsonl": 2, "zz.jsonl": 1}
    assert skipped["by_kind"] == {"bad_record": 2, "duplicate_id": 1}
    where = {e["where"]: e["message"] for e in skipped["examples"]}
    assert (
        where["set.jsonl:2"].startswith("malformed JSON")
        and "missing key(s): question, answer" in where["set.jsonl:3 (q3)"]
    )
    assert "warning: 3 malformed rows skipped" in captured.err  # stdout stays JSON
    assert main(["data", "stats", str(tmp_path / "set.jsonl")]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("warning: 2 malformed rows skipped (set.jsonl 2; bad_record 2)")
    assert "data validate" in text[0] and text[1].startswith("  set.jsonl:2: malformed JSON")
    assert text[2] == "  set.jsonl:3 (q3): missing key(s): question, answer" and text[3].startswith("2 questions")
    assert main(["data", "stats", str(tmp_path / "zz.jsonl"), "--json"]) == 0  # nothing skipped: no warning
    captured = capsys.readouterr()
    assert json.loads(captured.out)["skipped"]["rows"] == 0 and captured.err == ""


@pytest.mark.parametrize("fmt", ["slake", "vqa-rad", "omnimedvqa", "jsonl"])
def test_a_format_that_matches_nothing_is_an_error(tmp_path, capsys, fmt):
    train = make_medr1_splits(tmp_path) / "Splits" / "modality" / "train"
    assert main(["data", "stats", str(train), "--format", fmt]) == 2
    err = capsys.readouterr().err
    assert f"{train} holds no questions in format '{fmt}'" in err and "X-Ray_train.json" in err
    assert "it looks like format 'medr1'" in err and "Traceback" not in err

"""The bundled omnimedvqa_mini set: loads cleanly through the real OmniMedVQA loader, covers every modality and question
type, keeps its provenance in SOURCES.json, stays small, and rebuilds byte for byte from tools/build_bundled_data.py."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

import med_r1.data
from med_r1.data.omnimedvqa import load_omnimedvqa, option_texts
from med_r1.data.taxonomy import MODALITIES, OMNIMEDVQA_MODALITIES, QUESTION_TYPES

REPO = Path(__file__).resolve().parents[1]
BUNDLE = Path(med_r1.data.__file__).resolve().parent / "bundled" / "omnimedvqa_mini"
BUILDER = REPO / "tools" / "bundled_data"  # the package tools/build_bundled_data.py runs
REQUIREMENTS = REPO / "tools" / "requirements-bundle.txt"
RECORD_KEYS = [
    "dataset",
    "question_id",
    "question_type",
    "question",
    "gt_answer",
    "image_path",
    "option_A",
    "option_B",
]


@pytest.fixture(scope="module")
def loaded():
    return load_omnimedvqa(BUNDLE)


@pytest.fixture(scope="module")
def records() -> list[dict]:
    out = []
    for path in sorted((BUNDLE / "QA_information" / "Open-access").glob("*.json")):
        for record in json.loads(path.read_text(encoding="utf-8")):
            out.append({**record, "_file": path.stem})
    return out


@pytest.fixture(scope="module")
def sources() -> dict:
    return json.loads((BUNDLE / "SOURCES.json").read_text(encoding="utf-8"))


def image_files() -> set[str]:
    return {p.relative_to(BUNDLE).as_posix() for p in (BUNDLE / "Images").rglob("*") if p.is_file()}


def test_loads_with_zero_problems(loaded):
    assert loaded.problems == [], [str(p) for p in loaded.problems]
    assert len(loaded.questions) >= 150


def test_covers_all_modalities_and_question_types(loaded, records):
    assert {q.modality for q in loaded.questions} == set(MODALITIES)
    assert {q.question_type for q in loaded.questions} == set(QUESTION_TYPES)
    # Exact OmniMedVQA strings, typos included, and the exact question_type strings.
    assert {r["modality_type"] for r in records} == set(OMNIMEDVQA_MODALITIES)
    assert {r["question_type"] for r in records} == set(QUESTION_TYPES)


def test_record_schema_matches_omnimedvqa(records):
    for r in records:
        keys = [k for k in r if k != "_file"]
        n = len(option_texts(r))
        expected = RECORD_KEYS + [f"option_{c}" for c in "CD"[: n - 2]] + ["modality_type"]
        assert keys == expected, r["question_id"]
        assert r["dataset"] == r["_file"], r["question_id"]
        assert r["image_path"].startswith(f"Images/{r['dataset']}/"), r["question_id"]
        assert re.fullmatch(re.escape(r["dataset"]) + r"_\d{4}", r["question_id"]), r["question_id"]


def test_question_ids_unique(records):
    ids = Counter(r["question_id"] for r in records)
    assert [qid for qid, n in ids.items() if n > 1] == []


def test_every_image_exists_and_opens(loaded):
    paths = {image for q in loaded.questions for image in q.images}
    assert paths
    for path in sorted(paths):
        with Image.open(path) as im:
            im.load()
            assert max(im.size) <= 384, path
            assert im.format in ("PNG", "JPEG"), path
            assert "exif" not in im.info, path
    # and every file under Images/ is used by at least one question
    used = {Path(p).resolve().relative_to(BUNDLE.resolve()).as_posix() for p in paths}
    assert used == image_files()


def test_options_and_answers(loaded, records):
    for q in loaded.questions:
        assert 2 <= len(q.options) <= 4, q.question_id
        assert q.answer in "ABCD"[: len(q.options)], q.question_id
        assert len(set(q.options)) == len(q.options), q.question_id
    for r in records:
        assert r["gt_answer"] in option_texts(r), r["question_id"]  # option text, not a letter, matched exactly
    counts = Counter(len(q.options) for q in loaded.questions)
    assert counts[4] > len(loaded.questions) / 2 and counts[3] and counts[2]  # mostly 4-option, as OmniMedVQA


def test_answer_letters_balanced(loaded):
    letters = Counter(q.answer for q in loaded.questions)
    assert set(letters) == set("ABCD")
    assert max(letters.values()) / len(loaded.questions) <= 0.40, letters


def test_paraphrased_templates(records):
    by_type: dict[str, set[str]] = {}
    for r in records:
        by_type.setdefault(r["question_type"], set()).add(r["question"])
    assert len(by_type["Modality Recognition"]) >= 5
    assert len(by_type["Anatomy Identification"]) >= 4


def test_loader_quirks_exercised(records):
    paths = {r["image_path"] for r in records}
    assert any(" " in p for p in paths)
    assert any("&" in p for p in paths)
    assert any("(" in p and ")" in p for p in paths)
    assert all(Path(p).suffix in (".png", ".jpg") for p in paths)


def test_size_budget():
    total = sum(p.stat().st_size for p in BUNDLE.rglob("*") if p.is_file())
    assert total < 2_000_000, total


def test_sources_cover_every_image(sources, records):
    listed = {entry["image_path"]: entry for entry in sources["images"]}
    assert set(listed) == image_files()
    qids_by_image: dict[str, set[str]] = {}
    for r in records:
        qids_by_image.setdefault(r["image_path"], set()).add(r["question_id"])
    for path, entry in listed.items():
        assert entry["synthetic"] is entry["dataset"].startswith("Synthetic-"), path
        assert {q["question_id"] for q in entry["questions"]} == qids_by_image[path], path
        assert all(q["evidence"] for q in entry["questions"]), path
        assert entry["transformations"] and entry["licence"], path
        if entry["synthetic"]:
            assert entry["construction"]["seed"], path
        else:
            assert entry["source"]["package"] and entry["source"]["version"] and entry["source"]["path"], path
            assert entry.get("dicom_tags") or entry.get("documentation"), path


def test_synthetic_images_labelled(sources, records):
    synthetic = {e["image_path"] for e in sources["images"] if e["synthetic"]}
    assert {r["dataset"] for r in records if r["image_path"] in synthetic} == {"Synthetic-OCT", "Synthetic-Dermoscopy"}
    readme = (BUNDLE / "README.md").read_text(encoding="utf-8")
    assert "Synthetic-OCT" in readme and "Synthetic-Dermoscopy" in readme and "never be read as clinical" in readme
    # Lesion Grading only on synthetic images, and always called a synthetic grading.
    for r in records:
        if r["question_type"] == "Lesion Grading":
            assert r["image_path"] in synthetic and "synthetic" in r["question"].lower(), r["question_id"]


def test_real_images_are_real_sources(sources):
    real = [e for e in sources["images"] if not e["synthetic"]]
    assert len(real) >= 20
    modalities = {OMNIMEDVQA_MODALITIES[e["modality_type"]] for e in real}
    assert modalities == set(MODALITIES) - {"OCT", "Dermoscopy"}  # no pip package ships OCT or dermoscopy


def test_no_absolute_paths_in_text_files():
    for path in BUNDLE.rglob("*"):
        if path.suffix in (".json", ".md") or path.name == "NOTICE":
            text = path.read_text(encoding="utf-8")
            # typical absolute-path roots of a build machine
            machine_folders = "|".join(["home", "root", "work", "tmp"])
            assert not re.search(rf"(/({machine_folders})/|site-packages|[A-Za-z]:\\)", text), path


def missing_bundle_requirements() -> list[str]:
    missing = []
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip().split("==")[0].strip()
        if not name:
            continue
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def load_build_script():
    spec = importlib.util.spec_from_file_location(
        "bundled_data", BUILDER / "__init__.py", submodule_search_locations=[str(BUILDER)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_rebuild_is_byte_identical(tmp_path):
    missing = missing_bundle_requirements()
    if missing:
        pytest.skip(f"missing {', '.join(missing)}: pip install -r tools/requirements-bundle.txt")
    build = load_build_script()
    out = tmp_path / "omnimedvqa_mini"
    build.build(out)
    problems = build.compare_trees(BUNDLE, out)
    note = build.environment_note()
    assert problems == [], "\n".join(problems + ([note] if note else []))

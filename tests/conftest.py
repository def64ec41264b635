"""Shared fixtures. Everything is offline: any accidental hub download fails fast."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tiny models gain nothing from a second thread, and on a busy 2-core machine torch's spinning threads slow a step
# 5-20x (set before torch is imported; the commands the tests start inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MED_R1_LOG_LEVEL", "WARNING")
os.environ.setdefault("MED_R1_CACHE", tempfile.mkdtemp(prefix="med_r1_cache_"))  # builtin:tiny-qwen2vl lands here

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

MODALITY_STRINGS = ["CT(Computed Tomography)", "MR (Mag-netic Resonance Imaging)", "X-Ray", "Fundus Photography"]
COLOURS = ["red", "green", "blue", "yellow"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from med_r1.tiny import build_tiny_qwen2vl

    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny") / "tiny-qwen2vl", seed=0)


def make_omnimedvqa(root: Path, n_per_modality: int = 4, records_hook=None) -> Path:
    """A small OmniMedVQA-format folder: solid-colour images, one dataset per modality, 4-option questions."""
    from PIL import Image

    qa_dir = root / "QA_information" / "Open-access"
    qa_dir.mkdir(parents=True, exist_ok=True)
    for m, modality in enumerate(MODALITY_STRINGS):
        dataset = f"Set {m} & Co"  # spaces and '&' as in 'OCT & X-Ray 2017'
        (root / "Images" / dataset).mkdir(parents=True, exist_ok=True)
        records = []
        for i in range(n_per_modality):
            colour = COLOURS[(m + i) % 4]
            rel = f"Images/{dataset}/img ({i}).png"
            Image.new("RGB", (56 + 8 * i, 56), colour).save(root / rel)
            records.append(
                {
                    "dataset": dataset,
                    "question_id": f"{dataset}_{i:04d}",
                    "question_type": "Modality Recognition" if i % 2 == 0 else "Other Biological Attributes",
                    "question": "What colour is this image?",
                    "gt_answer": colour,
                    "image_path": rel,
                    "option_A": "red",
                    "option_B": "green",
                    "option_C": "blue",
                    "option_D": "yellow",
                    "modality_type": modality,
                }
            )
        if records_hook:
            records = records_hook(dataset, records)
        (qa_dir / f"{dataset}.json").write_text(json.dumps(records, indent=1))
    return root


@pytest.fixture
def omni_dir(tmp_path) -> Path:
    return make_omnimedvqa(tmp_path / "omni")


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def tiny_recipe(model: Path, data: Path, out: Path, **grpo) -> dict:
    """A recipe that trains the tiny model for two steps on CPU."""
    return {
        "model": {"name_or_path": str(model), "finetune": "full"},
        "data": {"train": {"path": str(data)}},
        "output_dir": str(out),
        "rewards": [{"name": "format_partial"}, {"name": "accuracy"}],
        "grpo": {
            "max_steps": 2,
            "per_device_train_batch_size": 4,
            "num_generations": 4,
            "max_completion_length": 16,
            "learning_rate": 1.0e-2,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "seed": 0,
            "disable_tqdm": True,
            **grpo,
        },
    }


MEDR1_FINDINGS = [
    "Normal",
    "Pneumonia, left lobe",
    "Effusion",
    "Mass",
]  # an option text with a comma, as Med-R1's have


def medr1_problem(question: str, options: list[str]) -> str:
    """Med-R1's `problem` string, spelled out here as its files spell it: 'question A)opt, B)opt'."""
    return question + " " + ", ".join(f"{'ABCD'[i]}){text}" for i, text in enumerate(options))


def make_medr1_splits(root: Path, n: int = 6) -> Path:
    """Med-R1's published layout in its exact file format: `root/OmniMedVQA/Images/...` (folder and file names with
    spaces and parentheses) and `root/Splits/modality/{train,test}/<modality>_{train,test}.json`, JSON lists of
    {"image", "problem", "solution"} records with image paths relative to the OmniMedVQA root. As in Med-R1's
    question-level splits, half the test questions ask about images that training questions also use; the one
    record without a modality sits in `unknown_train.json`. Returns root."""
    from PIL import Image

    omni = root / "OmniMedVQA"
    for modality, dataset in (("X-Ray", "Chest X-Ray PA"), ("CT(Computed Tomography)", "Chest CT Scan")):
        train, test = [], []
        for i in range(n + 2):
            image = f"Images/{dataset}/case {i} (view).png"
            (omni / image).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40 + 4 * i, 32), "gray").save(omni / image)
            options = MEDR1_FINDINGS[: 2 + i % 3]  # 2, 3 and 4 options
            record = {
                "image": image,
                "problem": medr1_problem("Which finding is shown?", options),
                "solution": f"<answer> {'ABCD'[i % len(options)]} </answer>",
            }
            if i < n:
                train.append(record)
            if i >= n or i % 2 == 0:  # test: two images of its own, and every other training image again
                test.append({**record, "problem": medr1_problem("What does this image show?", options)})
        for side, records in (("train", train), ("test", test)):
            folder = root / "Splits" / "modality" / side
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{modality}_{side}.json").write_text(json.dumps(records, indent=4))
    unknown = {
        "image": "Images/Chest CT Scan/case 0 (view).png",
        "problem": medr1_problem("What imaging technique was employed?", ["Angiography", "ECG", "Mammogram", "CT"]),
        "solution": "<answer> D </answer>",
    }
    (root / "Splits" / "modality" / "train" / "unknown_train.json").write_text(json.dumps([unknown], indent=4))
    return root

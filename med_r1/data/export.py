"""`med-r1 data export`: questions in the input formats of two evaluation harnesses, so a model can be scored there
on exactly the questions med-r1 evaluates (and the harness's predictions read back: `med_r1.eval.harness`).

    med-r1 data export --format vlmevalkit recipes/quickstart.yaml --split test --out quickstart_test.tsv
    med-r1 data export --format medevalkit recipes/quickstart.yaml --split test --out medevalkit_data

**VLMEvalKit** (`vlmevalkit`): its multiple-choice TSV, one row per question: `index` (0, 1, ...), `image` (the image
file's bytes in base64; several images as a list of them), `question`, one column per option letter (`A`, `B`, ...;
empty where a question has fewer options), `answer` (the letter), `category` (the modality), `l2-category` (the
question type), and `question_id`, `dataset` (which VLMEvalKit carries through to its predictions file).

**MedEvalKit** (`medevalkit`) has no input format for outside questions: each of its benchmarks has its own loader.
Its `OmniMedVQA` benchmark reads an OmniMedVQA folder (`QA_information/Open-access/*.json` records with `question`,
`option_A`-`option_D`, `gt_answer` as the option's text, `image_path` relative to the folder, `question_type`,
`modality_type`), so the export is such a folder, `OUT/OmniMedVQA/` with the images copied into `Images/`, and
`python eval.py --eval_datasets OmniMedVQA --datasets_path OUT` runs MedEvalKit on these questions. Its records keep
`question_id`, which its `results.json` carries back. That reader takes one image and at most four options per
question; other questions are left out and listed, as are open questions for both harnesses (their formats here are
multiple choice).

8-bit PNG and JPEG files are exported byte for byte; any other image (DICOM, NIfTI, TIFF, .npy, a 16-bit PNG, a
photo with an EXIF rotation, ...) is decoded as med-r1 decodes it and written as PNG, one per frame, so the harness
shows the model what med-r1 would (a harness converting a 16-bit PNG to RGB itself clips it to black and white).
"""

from __future__ import annotations

import base64
import csv
import json
import shutil
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from med_r1.data.medical import load_frames
from med_r1.data.taxonomy import slug
from med_r1.io import atomic_write_bytes, atomic_writer, check_output_folder
from med_r1.records import LETTERS, Question

HARNESSES = ("vlmevalkit", "medevalkit")
RAW_IMAGES = (".png", ".jpg", ".jpeg")
"""Image files exported as they are when 8-bit and unrotated; the harnesses' readers (PIL) open these."""
PANDAS_MISSING = frozenset(
    "#N/A|#N/A N/A|#NA|-1.#IND|-1.#QNAN|-NaN|-nan|1.#IND|1.#QNAN|<NA>|N/A|NA|NULL|NaN|None|n/a|nan|null".split("|")
)
"""Cell texts pandas' read_csv takes for missing values (its default na_values): VLMEvalKit reads its TSV with
pandas, so an option written as one of these would vanish from the prompt while its letter stays the answer."""
EXIF_ORIENTATION = 0x0112
MEDEVALKIT_BENCHMARK = "OmniMedVQA"
"""The MedEvalKit benchmark whose reader the medevalkit export feeds."""
MEDEVALKIT_OPTIONS = 4


@dataclass
class Exported:
    path: Path
    """The file (vlmevalkit) or the benchmark folder (medevalkit) written."""
    questions: list[Question] = field(default_factory=list)
    """The questions written, in row order."""
    dropped: list[str] = field(default_factory=list)
    """'question id: why' for each question left out."""


def unexportable(question: Question, harness: str) -> str | None:
    """Why `question` cannot be written in `harness`'s format; None when it can."""
    if question.answer_type != "choice" or not question.options:
        return "an open question: the export is multiple choice, which needs options"
    if not question.images:
        return "no image: both harnesses ask every question with its image"
    if harness == "vlmevalkit":
        missing = [t for t in (question.question, *question.options) if t.strip() in PANDAS_MISSING or not t.strip()]
        if missing:
            return (
                f"the text {missing[0]!r} would be read as a missing value by VLMEvalKit (pandas), so that option or "
                "question would vanish from its prompt"
            )
    if harness == "medevalkit":
        if len(question.options) > MEDEVALKIT_OPTIONS:
            return f"{len(question.options)} options: MedEvalKit's OmniMedVQA reader takes A-D only"
        if len(question.images) != 1:
            return f"{len(question.images)} images: MedEvalKit's OmniMedVQA reader takes one image per question"
        if len(set(question.options)) != len(question.options):
            return "two options share a text: MedEvalKit's reader finds the answer letter by the option's text"
    return None


VLMEVALKIT_NAME_TRIGGERS = ("mmbench", "ccbench", "circular", "mmcr", "mmmu")
"""Parts of a dataset name that make VLMEvalKit score a file its own way (circular evaluation, MMMU's preprocessing)."""
VLMEVALKIT_BUILTIN = ("omnimedvqa",)
"""Names of VLMEvalKit's own medical benchmarks: a file so named is not read, the built-in set is loaded instead."""


def vlmevalkit_name_problem(out: Path) -> str | None:
    """Why VLMEvalKit would not read the file `out` as a plain multiple-choice set (its dataset name is the stem)."""
    name = out.stem.lower()
    if name in VLMEVALKIT_BUILTIN:
        return f"VLMEvalKit has a built-in dataset named {out.stem}, which it loads instead of this file"
    hit = next((t for t in VLMEVALKIT_NAME_TRIGGERS if t in name), None)
    if hit:
        return f"VLMEvalKit scores a dataset whose name contains {hit!r} in its own way (circular or MMMU-style)"
    return None


def exportable(questions: list[Question], harness: str) -> tuple[list[Question], list[str]]:
    """The questions `harness` can take, in order, and 'question id: why' for the others."""
    kept, dropped = [], []
    for q in questions:
        why = unexportable(q, harness)
        if why:
            dropped.append(f"{q.question_id}: {why}")
        else:
            kept.append(q)
    return kept, dropped


def image_files(path: str, frames: int = 8, window: str = "auto") -> list[tuple[bytes, str]]:
    """(bytes, suffix) of each image a file gives: PNG/JPEG as they are, anything else decoded and written as PNG."""
    file = Path(path)
    if file.is_file() and file.suffix.lower() in RAW_IMAGES and _shown_as_stored(file):
        return [(file.read_bytes(), file.suffix.lower())]
    encoded = []
    for frame in load_frames(file, frames=frames, window=window):
        buffer = BytesIO()
        frame.save(buffer, format="PNG")
        encoded.append((buffer.getvalue(), ".png"))
    return encoded


def _shown_as_stored(file: Path) -> bool:
    """Whether any image reader shows the file as med-r1 does: 8 bits per channel and no EXIF rotation."""
    try:
        with Image.open(file) as img:
            eight_bit = img.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr")
            return eight_bit and img.getexif().get(EXIF_ORIENTATION, 1) == 1
    except (OSError, UnidentifiedImageError):
        return False  # load_frames then names the file and what is wrong with it


def export(
    questions: list[Question], harness: str, out: Path, force: bool = False, frames: int = 8, window: str = "auto"
) -> Exported:
    """Write the questions `harness` can take to `out` (a .tsv file, or a folder for medevalkit)."""
    if harness not in HARNESSES:
        raise ValueError(f"unknown harness {harness!r}; choose from {HARNESSES}")
    kept, dropped = exportable(questions, harness)
    if harness == "vlmevalkit":
        return Exported(write_vlmevalkit(kept, out, frames, window), kept, dropped)
    written, more = write_medevalkit(kept, out, force, frames, window)
    return Exported(written, [q for q in kept if q.question_id not in more], dropped + list(more.values()))


def write_vlmevalkit(questions: list[Question], out: Path, frames: int, window: str) -> Path:
    """VLMEvalKit's multiple-choice TSV, written row by row and renamed into place when complete."""
    letters = LETTERS[: max((len(q.options) for q in questions), default=4)]
    header = ["index", "image", "question", *letters, "answer", "category", "l2-category", "question_id", "dataset"]
    with atomic_writer(out, newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        for index, q in enumerate(questions):
            files = [data for path in q.images for data, _ in image_files(path, frames, window)]
            encoded = [base64.b64encode(data).decode("ascii") for data in files]
            image = encoded[0] if len(encoded) == 1 else json.dumps(encoded)  # several: a list VLMEvalKit parses
            options = [q.options[i] if i < len(q.options) else "" for i in range(len(letters))]
            writer.writerow(
                [
                    index,
                    image,
                    q.question,
                    *options,
                    q.answer,
                    q.modality or "unknown",  # an empty category is NaN to VLMEvalKit, whose report then fails
                    q.question_type or "unknown",
                    q.question_id,
                    q.dataset,
                ]
            )
    return out


def write_medevalkit(
    questions: list[Question], out: Path, force: bool, frames: int, window: str
) -> tuple[Path, dict[str, str]]:
    """An OmniMedVQA folder MedEvalKit's OmniMedVQA benchmark reads: `out/OmniMedVQA/`. Returns it and the questions
    left out because their image decodes to several frames."""
    check_output_folder(out, force, "data export --out")
    root = out / MEDEVALKIT_BENCHMARK
    if root.exists():
        shutil.rmtree(root)  # --force: a previous export's records must not stay beside the new ones
    by_dataset: dict[str, list[dict]] = {}
    left_out: dict[str, str] = {}
    for n, q in enumerate(questions):
        files = image_files(q.images[0], frames, window)
        if len(files) != 1:
            left_out[q.question_id] = (
                f"{q.question_id}: its image decodes to {len(files)} frames; MedEvalKit takes one"
            )
            continue
        data, suffix = files[0]
        image_path = f"Images/{slug(q.dataset) or 'images'}/{n:06d}{suffix}"
        atomic_write_bytes(root / image_path, data)
        record = {
            "dataset": q.dataset,
            "question_id": q.question_id,
            "question_type": q.question_type,
            "question": q.question,
            "gt_answer": q.options[LETTERS.index(q.answer)],
            "image_path": image_path,
            "modality_type": q.modality,
        }
        record |= {f"option_{LETTERS[i]}": text for i, text in enumerate(q.options)}
        by_dataset.setdefault(q.dataset, []).append(record)
    qa = root / "QA_information" / "Open-access"
    qa.mkdir(parents=True, exist_ok=True)
    for k, (dataset, records) in enumerate(by_dataset.items()):  # numbered: two names may share a slug
        name = f"{k:03d}-{slug(dataset) or 'questions'}.json"
        atomic_write_bytes(qa / name, json.dumps(records, indent=1, ensure_ascii=False).encode())
    return root, left_out

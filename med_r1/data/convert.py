"""`med-r1 data convert`: write any loaded dataset as Med-R1 split files or as generic JSONL.

    med-r1 data convert data/OmniMedVQA --to medr1 --out splits --split-by image

With `--split-by image` the written train/test files share no image (Med-R1's own splits do), so Med-R1-format
experiments can be run leakage-free with the paper's tooling. Image paths are written relative to the source's image
root (the OmniMedVQA root, `--image-root`, or the input's folder), whatever the input path's spelling, so the files
load on any machine with `image_root:` set to that root. Med-R1 files come in two layouts, `modality/` and
`question_type/`; only the ones asked for are written (`--layout auto`: those the questions name, so Med-R1's modality
files, which carry no question types, give `modality/` only). An output folder that already holds files is refused
unless `--force`, and every record left out is reported with the reason.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from med_r1.config import SplitConfig
from med_r1.data.jsonl import write_jsonl
from med_r1.data.medr1_splits import write_medr1
from med_r1.data.selection import take_side
from med_r1.errors import UserError
from med_r1.io import check_output_folder
from med_r1.records import Problem, Question

LAYOUTS = ("auto", "modality", "question_type", "both")
_AXES = {"modality": lambda q: q.modality_raw or q.modality, "question_type": lambda q: q.question_type}


@dataclass
class Converted:
    written: list[str] = field(default_factory=list)
    """One line per file: 'path: N questions'."""
    dropped: list[str] = field(default_factory=list)
    """One line per record left out: where it is and why."""
    questions: int = 0
    """Questions written (each once, whatever the number of layouts)."""


def check_out(out: Path, force: bool) -> None:
    """Refuse an --out that is a file (or lies under one), or a folder holding files (unless --force): nothing
    earlier is overwritten."""
    check_output_folder(out, force, "--out")


def layouts(questions: list[Question], layout: str) -> list[str]:
    """The Med-R1 layouts to write; an axis no question names (all 'unknown') is skipped by 'auto', refused if asked."""
    named = [axis for axis, key in _AXES.items() if any(key(q) != "unknown" for q in questions)]
    if layout == "auto":
        return named or ["modality"]
    wanted = list(_AXES) if layout == "both" else [layout]
    missing = [axis for axis in wanted if axis not in named]
    if missing:
        raise UserError(
            f"--layout {layout}: no question names its {' or '.join(m.replace('_', ' ') for m in missing)} (Med-R1's "
            "modality files carry no question types); pass --image-root with the OmniMedVQA root (it holds "
            "QA_information/) to recover them, or choose --layout "
            + " / ".join(a for a in ("auto", *named) if a != layout)
        )
    return wanted


def sides(questions: list[Question], split: SplitConfig | None) -> dict[str, list[Question]]:
    if split is None:
        return {"all": questions}
    return {side: take_side(questions, side, split.by, split.test_ratio, split.seed) for side in ("train", "test")}


def convert(
    questions: list[Question],
    problems: list[Problem],
    to: str,
    out: Path,
    image_root: Path,
    split: SplitConfig | None,
    layout: str = "auto",
) -> Converted:
    """Write the files; `problems` (records that never became questions) are reported as dropped."""
    result = Converted(dropped=[f"{p.where}: {p.message}" for p in problems])
    kept = questions
    if to == "medr1":
        kept = []
        for q in questions:
            if q.answer_type != "choice":
                result.dropped.append(f"{q.source or q.question_id}: open-ended; Med-R1's files hold multiple choice")
            elif len(q.images) != 1:
                result.dropped.append(f"{q.source or q.question_id}: {len(q.images)} images; Med-R1's files hold one")
            else:
                kept.append(q)
        schemes = layouts(kept, layout)
    result.questions = len(kept)
    for side, group in sides(kept, split).items():
        if to == "jsonl":
            path = out / f"{side}.jsonl"
            result.written.append(f"{path}: {write_jsonl(group, path, str(image_root))} questions")
            continue
        for scheme in schemes:
            by_domain: dict[str, list[Question]] = defaultdict(list)
            for q in group:
                by_domain[_AXES[scheme](q)].append(q)
            for domain, members in sorted(by_domain.items()):
                name = f"{domain}.json" if side == "all" else f"{domain}_{side}.json"
                path = out / scheme / ("" if side == "all" else side) / name
                result.written.append(f"{path}: {write_medr1(members, path, image_root)} questions")
    return result

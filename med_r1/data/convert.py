"""`med-r1 data convert`: write any loaded dataset as Med-R1 split files or as generic JSONL.

With `--split-by image` the written train/test files share no image (Med-R1's own splits do), so Med-R1-format
experiments can be run leakage-free with the paper's tooling.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from med_r1.config import SplitConfig
from med_r1.data.jsonl import write_jsonl
from med_r1.data.medr1_splits import write_medr1
from med_r1.data.selection import take_side
from med_r1.records import Question


def sides(questions: list[Question], split: SplitConfig | None) -> dict[str, list[Question]]:
    if split is None:
        return {"all": questions}
    return {side: take_side(questions, side, split.by, split.test_ratio, split.seed) for side in ("train", "test")}


def convert(questions: list[Question], to: str, out: Path, image_root: Path, split: SplitConfig | None) -> list[str]:
    """Write the files; return one line per file written ('path: N questions')."""
    written = []
    for side, group in sides(questions, split).items():
        if to == "jsonl":
            path = out / f"{side}.jsonl"
            written.append(f"{path}: {write_jsonl(group, path, str(image_root))} questions")
            continue
        choice = [q for q in group if q.answer_type == "choice"]  # Med-R1's format holds multiple choice only
        for scheme, key in (
            ("modality", lambda q: q.modality_raw or q.modality),
            ("question_type", lambda q: q.question_type),
        ):
            by_domain: dict[str, list[Question]] = defaultdict(list)
            for q in choice:
                by_domain[key(q)].append(q)
            for domain, members in sorted(by_domain.items()):
                name = f"{domain}.json" if side == "all" else f"{domain}_{side}.json"
                path = out / scheme / ("" if side == "all" else side) / name
                written.append(f"{path}: {write_medr1(members, path, image_root)} questions")
    return written

"""What every loader shares: one load's questions and problems, collected in order, and the JSON record-list reader.

A question whose id was already collected is refused with a `duplicate_id` problem, except where a loader keeps
repeats (OmniMedVQA, Med-R1 splits: `med-r1 data validate` then names both places, and training keeps the first).
"""

from __future__ import annotations

import json
from pathlib import Path

from med_r1.records import LoadResult, Problem, Question


class Collector:
    def __init__(self, refuse_duplicates: bool = True) -> None:
        self.result = LoadResult()
        self.refuse_duplicates = refuse_duplicates
        self._seen: set[str] = set()

    def add(self, item: Question | Problem | None, where: str | None = None) -> None:
        """Keep a question or a problem (None: nothing to keep). `where` names a refused repeat (default: its source)."""
        if item is None:
            return
        if isinstance(item, Problem):
            self.result.problems.append(item)
        elif self.refuse_duplicates and item.question_id in self._seen:
            where = f"{where or item.source} ({item.question_id})"
            self.result.problems.append(Problem("duplicate_id", where, "question id seen before in this load"))
        else:
            self._seen.add(item.question_id)
            self.result.questions.append(item)

    def read_json_list(self, path: Path, where: str) -> list | None:
        """A JSON file holding a list of records; on failure a `bad_file` problem is kept and None returned."""
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.add(Problem("bad_file", where, f"cannot read JSON: {exc}"))
            return None
        if not isinstance(records, list):
            self.add(Problem("bad_file", where, "expected a JSON list of records"))
            return None
        return records

"""Which training questions, in what order: the pass-rate band, the easy-to-hard order and balanced domains.

    data:
      train: {path: ..., pass_rate: [0.1, 0.9]}   # keep questions the policy solves sometimes, not always or never
      order: easy_to_hard                          # most often solved first (a curriculum); default shuffle
      balance: modality                            # each epoch draws every modality equally; default none

Pass rates come from the file `med-r1 data difficulty` writes (`PASS_RATES`, JSON lines; only `question_id` and
`pass_rate` are read here, see `med_r1.eval.difficulty` for the rest). A `Schedule` turns the selection into each
epoch's order of question indices, deterministic in the seed and the epoch number, so every process and every resume
draws the same order. Balanced epochs hold `len(questions) // domains` questions of each domain: a small domain repeats
within an epoch, a large one walks through its questions over successive epochs (a fresh permutation each time it has
been used up). Training reads the order through TRL's own repeat sampler (`med_r1.sampler`).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from med_r1.config import Recipe
from med_r1.errors import DataError
from med_r1.io import read_jsonl
from med_r1.records import Question

PASS_RATES = "pass_rates.jsonl"
DIFFICULTY_DIR = "difficulty"


def pass_rate_file(recipe: Recipe) -> Path:
    """Where a recipe's pass rates are: data.pass_rates, else output_dir/difficulty/pass_rates.jsonl."""
    if recipe.data.pass_rates:
        path = Path(recipe.data.pass_rates).expanduser()
        return path / PASS_RATES if path.is_dir() else path
    return Path(recipe.output_dir) / DIFFICULTY_DIR / PASS_RATES


def read_pass_rates(path: Path) -> dict[str, float]:
    """question_id -> pass rate, from a pass-rate file; a malformed line is a DataError naming it."""
    if not path.is_file():
        raise DataError(
            f"data.pass_rates: {path} does not exist. data.train.pass_rate and data.order: easy_to_hard read the "
            "policy's pass rates: write them with `med-r1 data difficulty RECIPE`, or point data.pass_rates at them"
        )
    rates = {}
    for number, row in enumerate(read_jsonl(path), 1):
        qid, rate = row.get("question_id"), row.get("pass_rate")
        if not isinstance(qid, str) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise DataError(f"{path}:{number}: a pass-rate line needs a question_id and a pass_rate in [0, 1]: {row}")
        rates[qid] = float(rate)
    return rates


@dataclass
class Schedule:
    """The training questions and the order each epoch draws them in (indices into `questions`)."""

    questions: list[Question]
    order: str = "shuffle"
    balance: str = "none"
    seed: int = 42
    rates: dict[str, float] | None = None
    band: list[float] | None = None
    dropped: int = 0
    """Questions the band left out."""
    source: str | None = None
    """The pass-rate file read (None when none was needed)."""
    digest: str | None = None
    """Its sha256."""
    _by_domain: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _perms: dict[tuple[str, int], list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.balance != "none":
            for i, q in enumerate(self.questions):
                self._by_domain.setdefault(getattr(q, self.balance), []).append(i)
            self._by_domain = dict(sorted(self._by_domain.items()))

    @property
    def custom(self) -> bool:
        """Whether the order differs from TRL's own shuffle over all questions."""
        return self.order != "shuffle" or self.balance != "none"

    @property
    def per_domain(self) -> int | None:
        return max(1, len(self.questions) // len(self._by_domain)) if self._by_domain else None

    @property
    def epoch_size(self) -> int:
        return self.per_domain * len(self._by_domain) if self._by_domain else len(self.questions)

    def epoch(self, number: int) -> list[int]:
        """The question indices epoch `number` visits, in order."""
        if self._by_domain:
            picks = [i for domain, members in self._by_domain.items() for i in self._draw(domain, members, number)]
        else:
            picks = list(range(len(self.questions)))
        random.Random(f"{self.seed}:epoch:{number}").shuffle(picks)
        if self.order == "easy_to_hard":  # stable: questions of equal pass rate keep their shuffled order
            picks.sort(key=lambda i: -self.rates[self.questions[i].question_id])
        return picks

    def _draw(self, domain: str, members: list[int], number: int) -> list[int]:
        """Items number*k .. (number+1)*k - 1 of the domain's endless stream of permutations."""
        k, n = self.per_domain, len(members)
        return [
            self._permutation(domain, tuple(members), pos // n)[pos % n] for pos in range(number * k, (number + 1) * k)
        ]

    def _permutation(self, domain: str, members: tuple[int, ...], cycle: int) -> list[int]:
        key = (domain, cycle)
        if key not in self._perms:
            self._perms[key] = random.Random(f"{self.seed}:{domain}:{cycle}").sample(list(members), len(members))
        return self._perms[key]

    def summary(self) -> dict:
        """What the run folder records (data_schedule.json) and training prints first."""
        out = {"questions": len(self.questions), "order": self.order, "balance": self.balance, "seed": self.seed}
        if self._by_domain:
            out |= {
                "epoch_size": self.epoch_size,
                "available": {d: len(m) for d, m in self._by_domain.items()},
                "per_epoch": {d: self.per_domain for d in self._by_domain},
            }
        if self.rates is not None:
            rates = [self.rates[q.question_id] for q in self.questions]
            out["pass_rates"] = {
                "file": self.source,
                "sha256": self.digest,
                "band": self.band,
                "kept": len(self.questions),
                "dropped": self.dropped,
                "kept_never_solved": sum(r == 0.0 for r in rates),
                "kept_always_solved": sum(r == 1.0 for r in rates),
            }
        return out

    def lines(self) -> list[str]:
        s = self.summary()
        text = [f"data: {s['questions']} training questions, order {s['order']}, balance {s['balance']}"]
        if "pass_rates" in s:
            p = s["pass_rates"]
            text.append(f"  pass-rate band {p['band']}: kept {p['kept']}, dropped {p['dropped']} ({p['file']})")
        if "available" in s:
            counts = ", ".join(f"{d} {n} of {s['available'][d]}" for d, n in s["per_epoch"].items())
            text.append(f"  each epoch ({s['epoch_size']} questions) draws per {self.balance}: {counts}")
        return text


def build_schedule(recipe: Recipe, questions: list[Question], seed: int) -> Schedule:
    """The recipe's band, order and balance applied to the training questions (pass rates read only when needed)."""
    data, band = recipe.data, recipe.data.train.pass_rate
    if band is None and data.order == "shuffle":
        return Schedule(questions, data.order, data.balance, seed)
    path = pass_rate_file(recipe)
    rates = read_pass_rates(path)
    missing = [q.question_id for q in questions if q.question_id not in rates]
    if missing:
        raise DataError(
            f"data.pass_rates: {len(missing)} of {len(questions)} training questions have no pass rate in {path} "
            f"(e.g. {', '.join(missing[:5])}); run `med-r1 data difficulty RECIPE` (it resumes and adds them)"
        )
    kept = questions if band is None else [q for q in questions if band[0] <= rates[q.question_id] <= band[1]]
    if not kept:
        tally = Counter(
            "0" if r == 0 else "1" if r == 1 else "between" for r in (rates[q.question_id] for q in questions)
        )
        raise DataError(
            f"data.train.pass_rate: the band {band} keeps none of the {len(questions)} training questions (pass rate "
            f"0: {tally['0']}, between: {tally['between']}, 1: {tally['1']}); widen it"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Schedule(kept, data.order, data.balance, seed, rates, band, len(questions) - len(kept), str(path), digest)

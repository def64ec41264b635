#!/usr/bin/env python
"""Build the text the tiny models' tokenizer is trained on: the quickstart's training questions, as prompts show them.

    python tools/build_tiny_corpus.py            # rewrite med_r1/tiny_corpus.txt
    python tools/build_tiny_corpus.py --check    # exit 1 if the committed file differs from a fresh build

`builtin:tiny-qwen2vl` (med_r1/tiny.py) trains its byte-level BPE tokenizer in memory on a few fixed lines, Med-R1's
prompt templates and this file. With these words in its vocabulary the bundled questions are about half as many
tokens (a quickstart prompt: 143 instead of 232), most option texts one to three tokens instead of eight, so a tiny
model can learn to point at an option (README, quickstart).

Only the training split is read: recipes/quickstart.yaml's data.train (the bundled set split by image, so no
evaluated image's question or answer is here). One line per distinct question: its text and options exactly as
Med-R1's prompt renders them (`What is shown? A)CT, B)MRI`), sorted, so the file is deterministic.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from med_r1.config import load_recipe
from med_r1.data.sources import select
from med_r1.prompts import format_problem

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart.yaml"
OUT = ROOT / "med_r1" / "tiny_corpus.txt"
HEADER = "# Built by tools/build_tiny_corpus.py from recipes/quickstart.yaml's training split; do not edit.\n"


def build() -> str:
    recipe = load_recipe(str(RECIPE))
    questions = select(recipe.data.train, recipe.data.split, "data.train").questions
    lines = sorted({format_problem(q.question, q.options) for q in questions})
    return HEADER + "".join(line + "\n" for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare a fresh build with the committed file")
    args = parser.parse_args(argv)
    text = build()
    if args.check:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} differs from a fresh build: run python tools/build_tiny_corpus.py", file=sys.stderr)
            return 1
        print(f"OK: {OUT.name} matches the training split ({text.count(chr(10)) - 1} lines)")
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({text.count(chr(10)) - 1} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

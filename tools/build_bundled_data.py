#!/usr/bin/env python
"""Build the bundled "omnimedvqa_mini" dataset (OmniMedVQA's on-disk format) from images shipped inside pip packages.

    python tools/build_bundled_data.py             # rebuild med_r1/data/bundled/omnimedvqa_mini/
    python tools/build_bundled_data.py --out DIR   # build somewhere else
    python tools/build_bundled_data.py --check     # rebuild into a temp dir, compare every file's bytes; exit 1 on a diff

Real images come from pydicom, pydicom-data, scikit-image, nibabel, dipy, nilearn and matplotlib (install the extras
with `pip install -r tools/requirements-bundle.txt`). Every answer is taken from a DICOM tag, the package's own
documentation, or (for the `Synthetic-*` datasets only) the construction of the image; SOURCES.json records which.
Nothing is downloaded.

The builder is the `bundled_data` package beside this script; the images and their questions are data there.

Determinism: fixed seeds (numpy PCG64 driven by uniform draws only), sorted iteration, PNGs written by a small encoder
of our own on the standard library's zlib (fixed filter choice, no ancillary chunks), JPEGs by Pillow with fixed
settings (quality, 4:2:0, baseline, no EXIF/ICC), JSON with a fixed key order and indentation. The committed bytes were
produced with the versions in BUILT_WITH; another Pillow/libjpeg or zlib may encode the same pixels differently
(`--check` then says whether the decoded pixels still match).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bundled_data import build, compare_trees, environment_note  # the package beside this script

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "med_r1" / "data" / "bundled" / "omnimedvqa_mini"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: the committed copy)")
    parser.add_argument("--check", action="store_true", help="rebuild into a temp dir and compare with --out")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            summary = build(Path(tmp) / "omnimedvqa_mini")
            problems = compare_trees(args.out, Path(tmp) / "omnimedvqa_mini")
        took = time.perf_counter() - start
        if problems:
            print(f"{len(problems)} difference(s) between {args.out} and a fresh build:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            note = environment_note()
            if note:
                print(note, file=sys.stderr)
            return 1
        print(f"OK: {summary['questions']} questions, {summary['images']} images; rebuild identical ({took:.1f} s)")
        return 0
    out: Path = args.out
    if out.exists() and any(out.iterdir()) and not (out / "SOURCES.json").is_file():
        print(
            f"refusing to overwrite {out}: it does not look like a previous build (no SOURCES.json)", file=sys.stderr
        )
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        summary = build(staged)
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    took = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"wrote {out}: {summary['questions']} questions, {summary['images']} images "
        f"({summary['synthetic_images']} synthetic), {size / 1024:.0f} KiB, {took:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

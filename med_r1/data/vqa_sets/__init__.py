"""Loaders for local copies of VQA-RAD, SLAKE, PathVQA, PMC-VQA and MedXpertQA (MM), each returning a `LoadResult`.

`path` is the dataset folder (or one data file). Layouts accepted (shared/reference/datasets.md §3):
- HF parquet snapshot, `data/<split>-*.parquet` (or `*.parquet` in `path`): VQA-RAD, PathVQA, SLAKE (OctoMed/SLAKE),
  PMC-VQA (OctoMed/PMC-VQA). Read with pyarrow, projecting only the columns used.
- SLAKE original: `train.json`, `validation.json` (or `validate.json`), `test.json` + `imgs/xmlab<N>/source.jpg`.
- PMC-VQA CSVs: `train.csv`, `test.csv`, `test_clean.csv` (v1), `train_2.csv`, `test_2.csv` (v2; any *.csv is read);
  images in `images/`, `figures/`, `images_2/`, `images2/` or beside the CSVs (the first folder holding the file wins).
- MedXpertQA: `MM/{dev,test}.jsonl` + `images/` (given the snapshot root or the `MM` folder).

Images: parquet cells embed bytes, but `Question.images` holds paths, so each distinct image is written once to
`<dataset folder>/.med_r1_images/` (`~/.cache/med_r1/images/<sha1 of the folder path>/` when that is not writable),
named `<first 16 hex of sha256><extension from the magic bytes>`. A file already there is never rewritten, so a second
load writes nothing. Nothing is decoded while indexing: bytes are hashed, files only checked to exist. `image_root`
overrides where image files are looked up and, for parquet, where extracted images go.

Ids: the dataset's own id (SLAKE `qid`, `id`), prefixed `<dataset>_` when it is a bare number (`slake_11934`, so ids
stay unique across datasets), else `<dataset>_<split>_<row>` (`vqa-rad_test_12`). `source` is `<file>[<row>]` (0-based)
or `<file>:<line>` (JSONL). The split is the parquet file name before its first `-`, else the file stem; `splits=`
loads only those. A bad record becomes a `Problem` naming the file and row (and id) and is skipped; nothing raises.

By family: `open_ended` (VQA-RAD, PathVQA, SLAKE: free-text and yes/no answers), `choice` (PMC-VQA, MedXpertQA:
multiple choice); `files` holds what they share (image files, parquet rows, ids).
"""

from med_r1.data.vqa_sets.choice import load_medxpertqa, load_pmc_vqa
from med_r1.data.vqa_sets.files import CACHE_FOLDER, image_extension
from med_r1.data.vqa_sets.open_ended import load_pathvqa, load_slake, load_vqa_rad

LOADERS = {
    "vqa-rad": load_vqa_rad,
    "slake": load_slake,
    "pathvqa": load_pathvqa,
    "pmc-vqa": load_pmc_vqa,
    "medxpertqa": load_medxpertqa,
}

__all__ = [
    "CACHE_FOLDER",
    "LOADERS",
    "image_extension",
    "load_medxpertqa",
    "load_pathvqa",
    "load_pmc_vqa",
    "load_slake",
    "load_vqa_rad",
]

"""Where the real images come from (files inside installed pip packages) and how one becomes an `Item`: a `Picture`
is the data for one image, `item` the one function that turns any of them into pixels and records."""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .encode import fit
from .questions import QA, Item

BUNDLE_REQUIREMENTS = ("pydicom-data", "scikit-image", "dipy", "nilearn")  # tools/requirements-bundle.txt
BUILT_WITH = {"pillow": "13.0.0", "numpy": "2.4.6", "python-zlib": "1.2.13"}


def missing_requirements() -> list[str]:
    missing = []
    for dist in BUNDLE_REQUIREMENTS:
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            missing.append(dist)
    return missing


@dataclass(frozen=True)
class Source:
    dist: str  # distribution name on PyPI
    module: str  # top-level import package that holds the file
    relpath: str  # path inside the module's folder

    @property
    def path(self) -> Path:
        spec = importlib.util.find_spec(self.module)  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"package {self.dist!r} is not installed: pip install -r tools/requirements-bundle.txt")
        path = Path(next(iter(spec.submodule_search_locations))) / self.relpath
        if not path.is_file():
            raise SystemExit(f"{self.dist}: {self.module}/{self.relpath} not found (version {self.version}?)")
        return path

    @property
    def version(self) -> str:
        return metadata.version(self.dist)

    def record(self) -> dict:
        return {"package": self.dist, "version": self.version, "path": f"{self.module}/{self.relpath}"}


def pydicom_file(name: str) -> Source:
    return Source("pydicom", "pydicom", f"data/test_files/{name}")


def pydicom_data_file(name: str) -> Source:
    return Source("pydicom-data", "data_store", f"data/{name}")  # pydicom-data installs the package `data_store`


DICOM_KEYWORDS = (
    "Modality", "BodyPartExamined", "StudyDescription", "SeriesDescription", "ProtocolName", "ImageType",
    "ViewPosition", "Laterality", "ContrastBolusAgent", "ScanningSequence", "SequenceName", "PhotometricInterpretation",
    "Rows", "Columns", "NumberOfFrames", "WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept",
    "ImageOrientationPatient", "PatientOrientation", "Manufacturer",
)  # fmt: skip


def dicom_tags(ds) -> dict:
    tags = {}
    for keyword in DICOM_KEYWORDS:
        if keyword not in ds:
            continue
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
            value = [str(v) for v in value]
        elif isinstance(value, (int, str)):
            value = value if isinstance(value, int) else str(value)
        else:
            value = str(value)
        tags[keyword] = value
    return tags


def read_dicom(source: Source):
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(source.path)


@dataclass(frozen=True)
class Picture:
    """One real image as data: its record, its source file, how its pixels are made, and its questions."""

    dataset: str
    file: str
    modality: str
    source: Source
    licence: str
    pixels: Callable[[Any], tuple[np.ndarray, list[str]]]
    """From the DICOM dataset (`dicom`) or the file's path: the pixels, and the transformations that made them."""
    questions: Callable[[Any], list[QA]]
    """From the same: the questions, built when the image is (the paraphrase templates rotate in build order)."""
    after: tuple[str, ...] = ()
    """Transformations listed after the downscale's note."""
    documentation: tuple[str, ...] = ()
    dicom: bool = False


def item(picture: Picture) -> Item:
    """Read the source, make the pixels, downscale to MAX_SIDE (never up), ask the questions."""
    loaded = read_dicom(picture.source) if picture.dicom else picture.source.path
    pixels, steps = picture.pixels(loaded)
    pixels, note = fit(pixels)  # no note when the image already fits
    return Item(
        picture.dataset,
        picture.file,
        picture.modality,
        pixels,
        "png" if picture.file.endswith(".png") else "jpeg",
        picture.source.record(),
        picture.licence,
        False,
        [*steps, note, *picture.after],
        picture.questions(loaded),
        dicom_tags(loaded) if picture.dicom else {},
        list(picture.documentation),
    )

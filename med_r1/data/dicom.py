"""DICOM: single files (multi-frame ones too: enhanced CT/MR, ultrasound cines) and series folders sorted in space.

Modality LUT or rescale to modality units (HU for CT), then the file's own window (or VOI LUT), a preset window or
percentiles; MONOCHROME1 inverted after the VOI; palette and YBR colour converted. pydicom is imported inside the
functions that decode (it takes about half a second to import).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from med_r1.data.frames import (
    MedicalImageError,
    Window,
    apply_window,
    errors_name,
    percentile_unit,
    sample_indices,
    to_images,
    windowed,
)

logger = logging.getLogger(__name__)

# Transfer syntaxes Pillow cannot decode (JPEG 12-bit, JPEG lossless, JPEG-LS; HTJ2K), with the pydicom plugins that can.
_LIBJPEG_SYNTAXES = {f"1.2.840.10008.1.2.4.{n}" for n in (51, 57, 70, 80, 81)}
_OPENJPEG_SYNTAXES = {f"1.2.840.10008.1.2.4.{n}" for n in (201, 202, 203)}


def is_dicom(path) -> bool:
    """A `.dcm` file, a file with the DICM magic at byte 128, or a folder holding such files (a series)."""
    path = Path(path)
    if path.is_dir():
        return any(is_dicom(child) for child in _series_candidates(path))
    if path.suffix.lower() == ".dcm":
        return path.is_file()
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _series_candidates(folder: Path) -> list[Path]:
    # Non-recursive; hidden files are skipped because macOS '._x.dcm' resource forks carry the extension.
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _first_item(ds, name: str):
    """Item 0 of a functional-group sequence (Enhanced CT/MR keep rescale and window there), shared before per-frame."""
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(group) or []
        if items and items[0].get(name):
            return items[0].get(name)[0]
    return None


def _modality_values(ds, arr: np.ndarray) -> np.ndarray:
    """Stored values -> modality units (HU for CT): Modality LUT or RescaleSlope/Intercept, also from functional groups."""
    from pydicom.pixels import apply_modality_lut

    if "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
        return apply_modality_lut(arr, ds).astype(np.float64)
    item = _first_item(ds, "PixelValueTransformationSequence")
    if item is not None and "RescaleSlope" in item:
        return arr * float(item.RescaleSlope) + float(item.get("RescaleIntercept", 0.0))
    return arr.astype(np.float64)


def _voi_unit(ds, values: np.ndarray, window: Window) -> np.ndarray:
    """Modality values -> [0, 1]: a preset/explicit window, or 'auto' = the file's window, else VOI LUT, else percentiles."""
    from pydicom.multival import MultiValue
    from pydicom.pixels import apply_voi

    if window is None:
        return percentile_unit(values)
    if window != "auto":
        return windowed(values, window)
    source = ds if "WindowCenter" in ds and "WindowWidth" in ds else _first_item(ds, "FrameVOILUTSequence")
    if source is not None and "WindowCenter" in source and "WindowWidth" in source:
        center, width = source.WindowCenter, source.WindowWidth
        center = float(center[0]) if isinstance(center, MultiValue) else float(center)  # first of several views
        width = float(width[0]) if isinstance(width, MultiValue) else float(width)
        return apply_window(values, width, center, str(source.get("VOILUTFunction", "LINEAR")).upper())
    if "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return apply_voi(values.round().astype(np.int64), ds).astype(np.float64) / (2**bits - 1)
    return percentile_unit(values)


def _dicom_pixels(ds, path, index: int | None) -> np.ndarray:
    """Decode one frame (or the only one); YBR is converted to RGB by pydicom (raw=False)."""
    from pydicom.pixels import pixel_array

    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise MedicalImageError(path, f"DICOM has no pixel data (SOP class {ds.get('SOPClassUID', 'unknown')})")
    try:
        return pixel_array(ds, index=index)
    except (RuntimeError, NotImplementedError) as exc:
        syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
        name = getattr(ds.file_meta.get("TransferSyntaxUID"), "name", syntax) if syntax else "compressed"
        if syntax in _LIBJPEG_SYNTAXES or syntax in _OPENJPEG_SYNTAXES or "missing dependencies" in str(exc):
            plugin = "pylibjpeg-openjpeg" if syntax in _OPENJPEG_SYNTAXES or "2000" in name else "pylibjpeg-libjpeg"
            reason = f"cannot decode {name} DICOM: install pylibjpeg {plugin} (or python-gdcm)"
        else:
            reason = f"cannot decode {name} DICOM: {' '.join(str(exc).split())}"
        raise MedicalImageError(path, reason) from exc


def _dicom_unit(ds, stack: np.ndarray, window: Window, values: np.ndarray | None = None) -> np.ndarray:
    """Decoded frames -> [0, 1] grey (N, H, W) or uint8 colour (N, H, W, 3); colour is never windowed."""
    from pydicom.pixels import apply_color_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        stack = apply_color_lut(stack, ds)[..., :3]  # uint8 or uint16 by the LUT's entry size
    if stack.ndim == 4 or photometric == "PALETTE COLOR":
        if stack.dtype == np.uint8:
            return stack
        top = 65535 if photometric == "PALETTE COLOR" else 2 ** int(ds.get("BitsStored", 16)) - 1
        return stack.astype(np.float64) / top
    values = _modality_values(ds, stack) if values is None else values
    unit = _voi_unit(ds, values, window)
    return 1.0 - unit if photometric == "MONOCHROME1" else unit  # MONOCHROME1: bright = low; invert after the VOI


def load_dicom(path, *, window: Window = "auto", frames: int = 8) -> list[Image.Image]:
    """One DICOM file -> 1 image, or `frames` evenly spaced frames of a multi-frame file (enhanced MR/CT, US cine)."""
    import pydicom

    with errors_name(path):
        ds = pydicom.dcmread(path, force=True)
        n_total = int(ds.get("NumberOfFrames") or 1)
        indices = sample_indices(n_total, frames)
        stack = np.stack([_dicom_pixels(ds, path, i if n_total > 1 else None) for i in indices])
        return to_images(_dicom_unit(ds, stack, window))


def _stack_key(ds) -> tuple:
    orientation = tuple(round(float(v), 3) for v in ds.get("ImageOrientationPatient") or ())
    return str(ds.get("SeriesInstanceUID", "")), orientation, int(ds.get("Rows", 0)), int(ds.get("Columns", 0))


def _slice_order(headers: list[tuple[Path, object]]) -> list[tuple[Path, object]]:
    """Ascending position along the slice normal (IOP row x column); InstanceNumber if any slice lacks geometry."""

    def instance(item) -> tuple:
        return int(item[1].get("InstanceNumber") or 0), item[0].name

    if not all(ds.get("ImagePositionPatient") and ds.get("ImageOrientationPatient") for _, ds in headers):
        return sorted(headers, key=instance)
    iop = np.asarray(headers[0][1].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])

    def position(item) -> tuple:
        return float(normal @ np.asarray(item[1].ImagePositionPatient, dtype=np.float64)), *instance(item)

    return sorted(headers, key=position)


def load_dicom_series(folder, *, window: Window = "auto", frames: int = 8) -> list[Image.Image]:
    """A folder of single-frame DICOM slices -> `frames` evenly spaced slices of its largest series, sorted in space.

    Slices are grouped by SeriesInstanceUID, orientation and size (a scout in the same series is not a slice); each
    slice gets its own rescale, and the whole stack one window (the middle slice's), so frames stay comparable.
    """
    import pydicom

    folder = Path(folder)
    with errors_name(folder):
        groups = defaultdict(list)
        for file in _series_candidates(folder):
            if is_dicom(file):
                ds = pydicom.dcmread(file, stop_before_pixels=True, force=True)
                if "Rows" in ds:  # skips DICOMDIR, reports, presentation states
                    groups[_stack_key(ds)].append((file, ds))
        if not groups:
            raise MedicalImageError(folder, "folder holds no DICOM images (subfolders are not searched)")
        key = max(sorted(groups), key=lambda k: len(groups[k]))
        chosen = groups[key]
        if len(groups) > 1:
            sizes = ", ".join(f"series {k[0] or '?'} {k[2]}x{k[3]}: {len(v)} files" for k, v in groups.items())
            logger.warning("%s holds %d image stacks (%s); using the largest", folder, len(groups), sizes)
        multi = [f for f, ds in chosen if int(ds.get("NumberOfFrames") or 1) > 1]
        if len(chosen) == 1 or multi:
            if len(chosen) > 1:
                logger.warning("%s: series %s holds multi-frame files; using %s only", folder, key[0], multi[0].name)
            return load_dicom(multi[0] if multi else chosen[0][0], window=window, frames=frames)
        ordered = _slice_order(chosen)
        picked = [ordered[i][0] for i in sample_indices(len(ordered), frames)]
        datasets = [pydicom.dcmread(f, force=True) for f in picked]
        pixels = [_dicom_pixels(ds, f, None) for f, ds in zip(picked, datasets, strict=True)]
        ref = datasets[len(datasets) // 2]
        if pixels[0].ndim == 3:  # colour slices
            return to_images(_dicom_unit(ref, np.stack(pixels), window))
        values = np.stack([_modality_values(ds, px) for ds, px in zip(datasets, pixels, strict=True)])
        return to_images(_dicom_unit(ref, np.stack(pixels), window, values=values))

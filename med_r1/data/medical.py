"""Decode every image reference a record holds (DICOM file or series folder, NIfTI, .npy, PNG/JPEG/TIFF...) to frames.

`load_frames(path)` is the one entry point: it returns a non-empty list of loaded RGB `PIL.Image.Image`, one per
frame, or raises `MedicalImageError` naming the file. Volumes and cines become `frames` evenly spaced slices, which the
policy sees as a multi-image prompt (TRL 1.16 has no video column). Conventions, chosen so DICOM and NIfTI agree:
slices run along the slice normal in ascending patient coordinates (feet to head for axial), displayed radiologically
(anterior at the top, patient's right on the image's left, as DICOM stores axial images). Frames are not resized:
the processor's `min_pixels`/`max_pixels` decide the token cost.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from med_r1.errors import DataError

logger = logging.getLogger(__name__)

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (80.0, 40.0),
    "soft-tissue": (400.0, 40.0),
    "soft_tissue": (400.0, 40.0),
    "mediastinum": (400.0, 40.0),
    "abdomen": (400.0, 40.0),
    "lung": (1500.0, -600.0),
    "bone": (2000.0, 300.0),
}
"""CT windows in Hounsfield units as (width, level)."""

Window = str | tuple[float, float] | None
"""'auto' (DICOM: the file's own window or VOI LUT), a preset name, (width, level), or None (percentiles 0.5-99.5)."""

PERCENTILES = (0.5, 99.5)

# Transfer syntaxes Pillow cannot decode (JPEG 12-bit, JPEG lossless, JPEG-LS; HTJ2K), with the pydicom plugins that can.
_LIBJPEG_SYNTAXES = {f"1.2.840.10008.1.2.4.{n}" for n in (51, 57, 70, 80, 81)}
_OPENJPEG_SYNTAXES = {f"1.2.840.10008.1.2.4.{n}" for n in (201, 202, 203)}


class MedicalImageError(DataError, ValueError):
    """An image file that cannot be turned into frames; the message names the file and what is wrong."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # picklable across DataLoader/multiprocessing workers despite the 2-argument __init__
        return type(self), (self.path, self.reason)


@contextmanager
def _errors_name(path):
    """Turn any decoding failure into a MedicalImageError, so a corrupt file fails here and names itself."""
    try:
        yield
    except MedicalImageError:
        raise
    except FileNotFoundError:
        raise MedicalImageError(path, "file not found") from None
    except Exception as exc:
        raise MedicalImageError(path, f"{type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------- sampling, intensity


def sample_indices(n_total: int, n_frames: int) -> list[int]:
    """`n_frames` evenly spaced indices into `n_total` items, first and last included; all of them if few enough.

    >>> sample_indices(30, 4), sample_indices(5, 8), sample_indices(9, 1)
    ([0, 10, 19, 29], [0, 1, 2, 3, 4], [4])
    """
    if n_frames < 1:
        raise ValueError(f"frames must be >= 1, got {n_frames}")
    if n_total <= n_frames:
        return list(range(n_total))
    if n_frames == 1:
        return [n_total // 2]  # the middle slice says more about a volume than its first
    return [int(i) for i in np.linspace(0, n_total - 1, n_frames).round()]


def _window_params(window: Window) -> tuple[float, float]:
    if isinstance(window, str):
        key = window.strip().lower().replace(" ", "-")
        if key not in WINDOW_PRESETS:
            raise ValueError(f"unknown window {window!r}; use 'auto', None or one of {', '.join(WINDOW_PRESETS)}")
        return WINDOW_PRESETS[key]
    width, level = window
    return float(width), float(level)


def _apply_window(values: np.ndarray, width: float, level: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing to [0, 1]; SIGMOID and LINEAR_EXACT as the file asks."""
    x = values.astype(np.float64)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - level) / width))
    if function == "LINEAR_EXACT" or width <= 1:
        return np.clip((x - level) / max(width, 1e-6) + 0.5, 0.0, 1.0)
    return np.clip((x - (level - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _percentile_unit(values: np.ndarray, sample: np.ndarray | None = None) -> np.ndarray:
    """Stretch percentiles 0.5-99.5 of `sample` (default: all values) to [0, 1]; min/max if they coincide."""
    x = np.nan_to_num(values.astype(np.float64))
    ref = x.ravel() if sample is None else np.nan_to_num(sample.astype(np.float64)).ravel()
    if ref.size > 2_000_000:
        ref = ref[:: ref.size // 1_000_000]  # percentiles of a stride are as good and 10x faster
    lo, hi = np.percentile(ref, PERCENTILES) if ref.size else (0.0, 0.0)
    if hi <= lo and ref.size:
        lo, hi = min(ref.min(), x.min()), max(ref.max(), x.max())  # a mask: 99.5% background, or one non-zero value
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(x)


def _to_images(unit: np.ndarray) -> list[Image.Image]:
    """(N, H, W) greyscale or (N, H, W, 3) colour in [0, 1] or uint8 -> N RGB images."""
    data = unit if unit.dtype == np.uint8 else (np.clip(unit, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if data.ndim == 3:
        data = np.repeat(data[..., None], 3, axis=-1)
    return [Image.fromarray(np.ascontiguousarray(frame[..., :3])) for frame in data]


# ---------------------------------------------------------------- DICOM


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
        return _percentile_unit(values)
    if window != "auto":
        return _apply_window(values, *_window_params(window))
    source = ds if "WindowCenter" in ds and "WindowWidth" in ds else _first_item(ds, "FrameVOILUTSequence")
    if source is not None and "WindowCenter" in source and "WindowWidth" in source:
        center, width = source.WindowCenter, source.WindowWidth
        center = float(center[0]) if isinstance(center, MultiValue) else float(center)  # first of several views
        width = float(width[0]) if isinstance(width, MultiValue) else float(width)
        return _apply_window(values, width, center, str(source.get("VOILUTFunction", "LINEAR")).upper())
    if "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return apply_voi(values.round().astype(np.int64), ds).astype(np.float64) / (2**bits - 1)
    return _percentile_unit(values)


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

    with _errors_name(path):
        ds = pydicom.dcmread(path, force=True)
        n_total = int(ds.get("NumberOfFrames") or 1)
        indices = sample_indices(n_total, frames)
        stack = np.stack([_dicom_pixels(ds, path, i if n_total > 1 else None) for i in indices])
        return _to_images(_dicom_unit(ds, stack, window))


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
    with _errors_name(folder):
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
            return _to_images(_dicom_unit(ref, np.stack(pixels), window))
        values = np.stack([_modality_values(ds, px) for ds, px in zip(datasets, pixels, strict=True)])
        return _to_images(_dicom_unit(ref, np.stack(pixels), window, values=values))


# ---------------------------------------------------------------- NIfTI and numpy


def is_nifti(path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _radiological(axial: np.ndarray) -> np.ndarray:
    """A RAS slice data[x, y] -> rows anterior->posterior, columns patient right->left (as DICOM stores axials)."""
    return np.rot90(axial)[:, ::-1]


def load_nifti(path, *, frames: int = 8, window: Window = None) -> list[Image.Image]:
    """A NIfTI volume -> `frames` evenly spaced axial slices of its foreground, in canonical (RAS) orientation.

    4D+ takes volume 0; the foreground is the slice range whose max exceeds 10% of the volume max (drops empty
    padding slices); intensity is percentiles 0.5-99.5 of non-zero voxels, or a CT window if `window` names one.
    """
    import nibabel as nib

    with _errors_name(path):
        img = nib.load(str(path))
        if len(img.shape) > 3:  # slice before reorienting, so only volume 0 is ever read
            img = img.slicer[(slice(None),) * 3 + (0,) * (len(img.shape) - 3)]
        if len(img.shape) == 2:
            img = img.slicer[:, :, None]
        volume = np.nan_to_num(nib.as_closest_canonical(img).get_fdata(dtype=np.float32))
        if volume.size == 0:
            raise MedicalImageError(path, f"empty volume, shape {img.shape}")
        peaks = volume.max(axis=(0, 1))
        inside = np.flatnonzero(peaks > 0.1 * volume.max()) if volume.max() > 0 else np.arange(volume.shape[2])
        first, last = (int(inside[0]), int(inside[-1])) if inside.size else (0, volume.shape[2] - 1)
        indices = [first + i for i in sample_indices(last - first + 1, frames)]
        stack = np.stack([_radiological(volume[:, :, z]) for z in indices])
        if window is None or window == "auto":
            unit = _percentile_unit(stack, sample=volume[volume != 0])
        else:
            unit = _apply_window(stack, *_window_params(window))
        return _to_images(unit)


def _load_npy(path, frames: int, window: Window) -> list[Image.Image]:
    """2D (H, W), colour (H, W, 3|4), a stack (N, H, W) with slices on axis 0 (numpy/DICOM order), or (N, H, W, 3)."""
    arr = np.load(path, allow_pickle=False)
    colour = arr.ndim in (3, 4) and arr.shape[-1] in (3, 4)
    if arr.ndim == 2 or (arr.ndim == 3 and colour):
        arr = arr[None]
    if arr.ndim != (4 if colour else 3) or 0 in arr.shape:
        raise MedicalImageError(path, f"expected a 2D image or 3D stack, got array shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise MedicalImageError(path, f"expected a numeric array, got dtype {arr.dtype}")
    arr = arr[sample_indices(len(arr), frames)]
    if colour:
        return _to_images(arr[..., :3] if arr.dtype == np.uint8 else _percentile_unit(arr[..., :3]))
    if window not in (None, "auto"):
        return _to_images(_apply_window(arr, *_window_params(window)))
    return _to_images(arr if arr.dtype == np.uint8 else _percentile_unit(arr))


# ---------------------------------------------------------------- Pillow formats


def _is_tiff_stack(img: Image.Image) -> bool:
    """Pages of one size and mode (ImageJ/OME z-stacks); pyramids, thumbnails and SVS label pages differ."""
    if img.format != "TIFF" or getattr(img, "n_frames", 1) < 2:
        return False
    shapes = {(page.size, page.mode) for page in ImageSequence.Iterator(img)}
    img.seek(0)
    return len(shapes) == 1


def _pillow_array(img: Image.Image) -> np.ndarray:
    """The current frame as uint8 RGB (H, W, 3), or as raw float (H, W) for high-bit-depth greyscale."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float64)  # 16/32-bit greyscale: scaled by percentiles over all frames
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    return np.asarray(img.convert("RGB"))  # LA/RGBA: alpha dropped; 1/L/CMYK/YCbCr: converted


def _load_pillow(path, frames: int) -> list[Image.Image]:
    """PNG/JPEG/TIFF/BMP... Multi-page TIFF: a stack if every page has one size and mode, otherwise page 0 only."""
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        raise MedicalImageError(path, "not DICOM, NIfTI, .npy or an image Pillow can read (png/jpg/tif/bmp)") from None
    with img:
        pages = sample_indices(img.n_frames, frames) if _is_tiff_stack(img) else [0]
        arrays = []
        for page in pages:
            img.seek(page)
            img.load()  # decode now: a truncated file fails here, not inside the trainer
            arrays.append(_pillow_array(ImageOps.exif_transpose(img) if len(pages) == 1 else img))  # camera photos
    if arrays[0].ndim == 2:
        return _to_images(_percentile_unit(np.stack(arrays)))
    return _to_images(np.stack(arrays))


# ---------------------------------------------------------------- dispatch


def load_frames(path, *, frames: int = 8, window: Window = "auto") -> list[Image.Image]:
    """Any image reference -> a non-empty list of loaded RGB frames; MedicalImageError names the file otherwise.

    `window` applies to DICOM ('auto' = the file's own), NIfTI and .npy (a preset for CT in HU; else percentiles);
    8-bit PNG/JPEG/BMP are taken as displayed.
    """
    path = Path(path)
    with _errors_name(path):
        if not path.exists():
            raise MedicalImageError(path, "file not found")
        if path.is_dir():
            if not is_dicom(path):
                raise MedicalImageError(path, "folder holds no DICOM files (only DICOM series can be folders)")
            images = load_dicom_series(path, window=window, frames=frames)
        elif is_nifti(path):
            images = load_nifti(path, frames=frames, window=None if window == "auto" else window)
        elif path.suffix.lower() == ".npy":
            images = _load_npy(path, frames, window)
        elif is_dicom(path):
            images = load_dicom(path, window=window, frames=frames)
        else:
            images = _load_pillow(path, frames)
        if not images:
            raise MedicalImageError(path, "decoded to no frames")
        return images

"""Decode every image reference a record holds (DICOM file or series folder, NIfTI, .npy, PNG/JPEG/TIFF...) to frames.

`load_frames(path)` is the one entry point: it returns a non-empty list of loaded RGB `PIL.Image.Image`, one per
frame, or raises `MedicalImageError` naming the file. Volumes and cines become `frames` evenly spaced slices, which the
policy sees as a multi-image prompt (TRL 1.16 has no video column). Conventions, chosen so DICOM and NIfTI agree:
slices run along the slice normal in ascending patient coordinates (feet to head for axial), displayed radiologically
(anterior at the top, patient's right on the image's left, as DICOM stores axial images). Frames are not resized:
the processor's `min_pixels`/`max_pixels` decide the token cost. DICOM decoding lives in `dicom.py`, the intensity
mapping both share in `frames.py`; nibabel is imported inside `load_nifti` (heavy, and only volumes need it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from med_r1.data.dicom import is_dicom, load_dicom, load_dicom_series
from med_r1.data.frames import (
    MedicalImageError,
    Window,
    errors_name,
    percentile_unit,
    sample_indices,
    to_images,
    windowed,
)

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

    with errors_name(path):
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
            unit = percentile_unit(stack, sample=volume[volume != 0])
        else:
            unit = windowed(stack, window)
        return to_images(unit)


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
        return to_images(arr[..., :3] if arr.dtype == np.uint8 else percentile_unit(arr[..., :3]))
    if window not in (None, "auto"):
        return to_images(windowed(arr, window))
    return to_images(arr if arr.dtype == np.uint8 else percentile_unit(arr))


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
        return to_images(percentile_unit(np.stack(arrays)))
    return to_images(np.stack(arrays))


# ---------------------------------------------------------------- dispatch


def load_frames(path, *, frames: int = 8, window: Window = "auto") -> list[Image.Image]:
    """Any image reference -> a non-empty list of loaded RGB frames; MedicalImageError names the file otherwise.

    `window` applies to DICOM ('auto' = the file's own), NIfTI and .npy (a preset for CT in HU; else percentiles);
    8-bit PNG/JPEG/BMP are taken as displayed.
    """
    path = Path(path)
    with errors_name(path):
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

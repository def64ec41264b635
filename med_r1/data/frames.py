"""What every medical image decoder shares: the error that names the file, frame sampling, and intensity mapping
(CT windows in Hounsfield units, DICOM windowing, percentile stretching) down to RGB images.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from PIL import Image

from med_r1.errors import DataError

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


class MedicalImageError(DataError, ValueError):
    """An image file that cannot be turned into frames; the message names the file and what is wrong."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # picklable across DataLoader/multiprocessing workers despite the 2-argument __init__
        return type(self), (self.path, self.reason)


@contextmanager
def errors_name(path):
    """Turn any decoding failure into a MedicalImageError, so a corrupt file fails here and names itself."""
    try:
        yield
    except MedicalImageError:
        raise
    except FileNotFoundError:
        raise MedicalImageError(path, "file not found") from None
    except Exception as exc:
        raise MedicalImageError(path, f"{type(exc).__name__}: {exc}") from exc


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


def window_params(window: Window) -> tuple[float, float]:
    if isinstance(window, str):
        key = window.strip().lower().replace(" ", "-")
        if key not in WINDOW_PRESETS:
            raise ValueError(f"unknown window {window!r}; use 'auto', None or one of {', '.join(WINDOW_PRESETS)}")
        return WINDOW_PRESETS[key]
    width, level = window
    return float(width), float(level)


def apply_window(values: np.ndarray, width: float, level: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing to [0, 1]; SIGMOID and LINEAR_EXACT as the file asks."""
    x = values.astype(np.float64)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - level) / width))
    if function == "LINEAR_EXACT" or width <= 1:
        return np.clip((x - level) / max(width, 1e-6) + 0.5, 0.0, 1.0)
    return np.clip((x - (level - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def windowed(values: np.ndarray, window: Window) -> np.ndarray:
    """A preset window (by name) or an explicit (width, level) applied linearly, to [0, 1]."""
    return apply_window(values, *window_params(window))


def percentile_unit(values: np.ndarray, sample: np.ndarray | None = None) -> np.ndarray:
    """Stretch percentiles 0.5-99.5 of `sample` (default: all values) to [0, 1]; min/max if they coincide."""
    x = np.nan_to_num(values.astype(np.float64))
    ref = x.ravel() if sample is None else np.nan_to_num(sample.astype(np.float64)).ravel()
    if ref.size > 2_000_000:
        ref = ref[:: ref.size // 1_000_000]  # percentiles of a stride are as good and 10x faster
    lo, hi = np.percentile(ref, PERCENTILES) if ref.size else (0.0, 0.0)
    if hi <= lo and ref.size:
        lo, hi = min(ref.min(), x.min()), max(ref.max(), x.max())  # a mask: 99.5% background, or one non-zero value
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(x)


def to_images(unit: np.ndarray) -> list[Image.Image]:
    """(N, H, W) greyscale or (N, H, W, 3) colour in [0, 1] or uint8 -> N RGB images."""
    data = unit if unit.dtype == np.uint8 else (np.clip(unit, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if data.ndim == 3:
        data = np.repeat(data[..., None], 3, axis=-1)
    return [Image.fromarray(np.ascontiguousarray(frame[..., :3])) for frame in data]

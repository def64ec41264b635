"""Deterministic encoders and pixel helpers: PNG by our own encoder on zlib, JPEG by Pillow with fixed settings,
windows, percentile stretches and the downscale that keeps every image within MAX_SIDE."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

MAX_SIDE = 384
JPEG_QUALITY = 88


def stable_order(items: Sequence[str], seed: str) -> list[str]:
    """`items` in an order fixed by `seed` (sha256 of seed + item); platform and Python independent."""
    return sorted(items, key=lambda item: hashlib.sha256(f"{seed}\x00{item}".encode()).hexdigest())


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of a uint8 greyscale (H, W) or RGB (H, W, 3) array: IHDR, IDAT, IEND only, zlib level 9.

    Per row the filter (None/Sub/Up/Average/Paeth) with the smallest sum of absolute signed residuals is used, the
    usual libpng heuristic; ties go to the lower filter number. Integer arithmetic only.
    """
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError("png_bytes wants a uint8 (H, W) or (H, W, 3) array")
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    colour_type = {1: 0, 3: 2}[channels]
    raw = array.reshape(height, width * channels).astype(np.int16)
    left = np.zeros_like(raw)
    left[:, channels:] = raw[:, :-channels]
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    up_left = np.zeros_like(raw)
    up_left[1:, channels:] = raw[:-1, :-channels]
    p = left + up - up_left
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    predictions = (np.zeros_like(raw), left, up, (left + up) // 2, paeth)
    residuals = np.stack([(raw - pred) & 0xFF for pred in predictions])  # (5, H, W*C), values 0..255
    signed = np.where(residuals > 127, 256 - residuals, residuals)
    choice = np.argmin(signed.sum(axis=2, dtype=np.int64), axis=0)  # first minimum on ties
    rows = residuals[choice, np.arange(height)].astype(np.uint8)
    scanlines = np.concatenate([choice.astype(np.uint8)[:, None], rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(scanlines, 9)) + chunk(b"IEND", b"")
    )


def jpeg_bytes(array: np.ndarray) -> bytes:
    """Baseline JPEG of a uint8 RGB array: fixed quality, 4:2:0, standard Huffman tables, no EXIF/ICC/comment."""
    buf = io.BytesIO()
    Image.fromarray(array, "RGB").save(
        buf, "JPEG", quality=JPEG_QUALITY, subsampling=2, optimize=False, progressive=False
    )
    return buf.getvalue()


def to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Linear window (centre/width) to uint8."""
    low = centre - width / 2.0
    return to_uint8((np.asarray(values, dtype=np.float64) - low) / width * 255.0)


def percentile_window(values: np.ndarray, nonzero: bool = True, lo: float = 0.5, hi: float = 99.5) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    sample = values[values > 0] if nonzero else values.ravel()
    low, high = np.percentile(sample, [lo, hi])
    return to_uint8((values - low) / (high - low) * 255.0)


def fit(array: np.ndarray, max_side: int = MAX_SIDE) -> tuple[np.ndarray, str | None]:
    """Downscale (Lanczos, Pillow) so the long side is <= max_side; never upscale. Returns the array and a note."""
    height, width = array.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return array, None
    new_w, new_h = int(width * max_side / longest + 0.5), int(height * max_side / longest + 0.5)
    mode = "L" if array.ndim == 2 else "RGB"
    resized = np.asarray(Image.fromarray(array, mode).resize((new_w, new_h), Image.Resampling.LANCZOS))
    return resized, f"resized {width}x{height} -> {new_w}x{new_h} px (Pillow Lanczos)"

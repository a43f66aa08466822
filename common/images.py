"""Image files and pixels: decode a file, fit an image to a model's input.

Images everywhere are uint8 H×W×C, BGR for colour (what OpenCV reads and a camera gives), C = 1 or 3.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from common.errors import DataError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def image_files(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (suffixes matched case-insensitively)."""
    return sorted((f for f in folder.iterdir() if is_image_file(f)), key=lambda f: f.name)


def read_image(path: Path) -> np.ndarray:
    """Decode an image file as uint8 H×W×C (C = 1 grey or 3 BGR); 16-bit is scaled, alpha dropped."""
    try:
        buf = np.fromfile(path, np.uint8)
    except OSError as e:
        raise DataError(f"cannot read image {path} ({e.strerror or e})") from None
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise DataError(f"cannot read image {path}: not a valid image file; replace or remove it")
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(f"image {path} has {img.dtype} pixels; save it as 8- or 16-bit")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 4:
        img = img[:, :, :3]
    elif img.shape[2] == 2:
        img = img[:, :, :1]
    return img


def fit_image(img: np.ndarray, size: int | tuple[int, int], channels: int | None) -> np.ndarray:
    """Resize to size×size (or (H, W)) with INTER_AREA and convert grey<->BGR to `channels` (None: keep).

    The one place where camera or file pixels become model pixels; the model graph normalises them.
    """
    h, w = (size, size) if isinstance(size, int | np.integer) else size
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[:2] != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).reshape(h, w, img.shape[2])
    if channels == 1 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:, :, None]
    elif channels == 3 and img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img, dtype=np.uint8)


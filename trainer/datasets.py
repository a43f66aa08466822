"""Data sets for training and evaluation: MVTec-layout folders, plain folders of good images, MNIST IDX files.

`load_split` returns an ImageSet of uint8 N×H×W×C images (BGR or grey) at the requested size, in sorted order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from trainer.errors import DataError
from trainer.idx import read_idx

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MNIST_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("t10k", "images"): "t10k-images-idx3-ubyte.gz",
    ("t10k", "labels"): "t10k-labels-idx1-ubyte.gz",
}
_MNIST_RE = re.compile(r"^(train|t10k)-(images|labels)[-.]idx[13]-ubyte(\.gz)?$", re.IGNORECASE)
Layout = Literal["mvtec", "plain", "mnist"]


@dataclass
class ImageSet:
    images: np.ndarray  # uint8 N×H×W×C (already resized to the requested size)
    labels: np.ndarray  # int64 N, 0 = normal, 1 = anomalous
    kinds: list[str]  # per image: "good" or the defect type ("scratch", "digit_3", ...)
    masks: np.ndarray | None  # uint8 N×H×W in {0,255}, where ground-truth masks exist (zeros for good)
    names: list[str]  # path relative to the data set folder, or "mnist:train:123"

    def __len__(self) -> int:
        return len(self.images)


def load_split(
    source: str | Path,
    split: Literal["train", "test"],
    image_size: int,
    channels: int | None = None,
    mnist_digit: int | None = None,
) -> ImageSet:
    """Load one split of a data set folder, resized (INTER_AREA) to image_size and converted to `channels`.

    `masks` is None when the split has no ground-truth mask files at all (train splits, MNIST, a test
    split without ground_truth/); otherwise defect images without a mask file get an all-zero mask.
    """
    _check_request(split, image_size, channels)
    root = Path(source)
    layout = detect_layout(root)
    if layout != "mnist" and mnist_digit is not None:
        raise DataError(f"--mnist-digit applies to MNIST IDX folders only; {root} holds images ({layout} layout)")
    if layout == "mnist":
        return _load_mnist(root, split, image_size, channels, mnist_digit)
    if layout == "plain":
        if split == "test":
            raise DataError(f"{root} is a plain folder of good images, which has no test split; "
                            "use the MVTec layout (test/good, test/<defect>) to evaluate")
        return _load_classes(root, [(root, "good")], image_size, channels, with_masks=False)
    return _load_mvtec(root, split, image_size, channels)


def detect_layout(root: Path) -> Layout:
    """'mvtec' (a train/ or test/ folder), 'mnist' (IDX files) or 'plain' (images at the top level)."""
    if not root.exists():
        raise DataError(f"data folder {root} does not exist; check the path")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass the data set's folder")
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "mvtec"
    files = [f for f in root.iterdir() if f.is_file()]
    if any(_MNIST_RE.match(f.name) for f in files):
        return "mnist"
    if any(is_image_file(f) for f in files):
        return "plain"
    raise DataError(f"{root} is neither an MVTec-layout folder (train/good, test/good, test/<defect>), "
                    "a folder of good images, nor a folder of MNIST IDX files")


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


def fit_image(img: np.ndarray, size: int, channels: int | None) -> np.ndarray:
    """Resize to size×size with INTER_AREA and convert grey<->BGR to `channels` (None: keep)."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).reshape(size, size, img.shape[2])
    if channels == 1 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:, :, None]
    elif channels == 3 and img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img)


def _check_request(split: str, image_size: int, channels: int | None) -> None:
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test' (got {split!r})")
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer) or image_size <= 0:
        raise DataError(f"image size must be a positive number of pixels (got {image_size!r})")
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 (grey) or 3 (colour) (got {channels!r})")


# ---------------------------------------------------------------- image folders


def _load_mvtec(root: Path, split: str, size: int, channels: int | None) -> ImageSet:
    split_dir = root / split
    if not (split_dir / "good").is_dir():
        raise DataError(f"{split_dir / 'good'} does not exist; an MVTec-layout folder keeps the {split} "
                        f"split's normal images in {split}/good")
    classes = [(split_dir / "good", "good")]
    if split == "test":
        defects = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and d.name != "good")
        classes += [(split_dir / d, d) for d in defects]
    return _load_classes(root, classes, size, channels, with_masks=split == "test")


def _load_classes(
    root: Path, classes: list[tuple[Path, str]], size: int, channels: int | None, with_masks: bool
) -> ImageSet:
    images: list[np.ndarray] = []
    kinds: list[str] = []
    names: list[str] = []
    masks: list[np.ndarray | None] = []
    for folder, kind in classes:
        files = image_files(folder)
        if not files:
            rel = folder.relative_to(root).as_posix() if folder != root else str(root)
            raise DataError(f"{rel} has no images (looked for {' '.join(IMAGE_SUFFIXES)}) in {root}")
        for f in files:
            images.append(fit_image(read_image(f), size, None))
            kinds.append(kind)
            names.append(f.relative_to(root).as_posix())
            masks.append(_read_mask(root, kind, f, size) if with_masks and kind != "good" else None)
    own = 3 if any(im.shape[2] == 3 for im in images) else 1
    stacked = np.stack([fit_image(im, size, channels or own) for im in images])
    labels = np.array([0 if k == "good" else 1 for k in kinds], np.int64)
    return ImageSet(stacked, labels, kinds, _stack_masks(masks, size), names)


def _read_mask(root: Path, kind: str, image: Path, size: int) -> np.ndarray | None:
    """ground_truth/<kind>/<stem>_mask.<ext> resized with INTER_NEAREST to {0,255}, or None if absent."""
    folder = root / "ground_truth" / kind
    for suffix in (image.suffix, *IMAGE_SUFFIXES):
        path = folder / f"{image.stem}_mask{suffix}"
        if path.is_file():
            mask = read_image(path)
            mask = mask[:, :, 0] if mask.shape[2] == 1 else cv2.cvtColor(mask, cv2.COLOR_BGR2GRAY)
            mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
            return np.where(mask > 127, 255, 0).astype(np.uint8)
    return None


def _stack_masks(masks: Iterable[np.ndarray | None], size: int) -> np.ndarray | None:
    masks = list(masks)
    if all(m is None for m in masks):
        return None
    zero = np.zeros((size, size), np.uint8)
    return np.stack([zero if m is None else m for m in masks])


# ---------------------------------------------------------------- MNIST


def _mnist_file(root: Path, part: str, what: str) -> Path:
    found = sorted(
        (f for f in root.iterdir() if (m := _MNIST_RE.match(f.name)) and m.group(1).lower() == part
         and m.group(2).lower() == what),
        key=lambda f: (not f.name.endswith(".gz"), f.name),
    )
    if not found:
        raise DataError(f"{root} has no {MNIST_NAMES[(part, what)]} (or the same without .gz); an MNIST folder "
                        f"needs {', '.join(MNIST_NAMES.values())}")
    return found[0]


def _read_mnist(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    img_path, lbl_path = _mnist_file(root, part, "images"), _mnist_file(root, part, "labels")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{img_path} holds {images.dtype} data of shape {images.shape}; expected uint8 N×H×W images")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{lbl_path} holds {labels.shape} labels for {len(images)} images in {img_path.name}")
    return images, labels.astype(np.int64)


def _load_mnist(
    root: Path, split: str, size: int, channels: int | None, digit: int | None
) -> ImageSet:
    """One-class protocol: train = training images of `digit`; test = all t10k images, other digits anomalous."""
    if digit is None:
        raise DataError(f"{root} holds MNIST IDX files: choose the normal digit with --mnist-digit D (0-9)")
    if isinstance(digit, bool) or not isinstance(digit, int | np.integer) or not 0 <= digit <= 9:
        raise DataError(f"--mnist-digit must be a digit from 0 to 9 (got {digit!r})")
    part = "train" if split == "train" else "t10k"
    images, labels = _read_mnist(root, part)
    index = np.flatnonzero(labels == digit) if split == "train" else np.arange(len(labels))
    if len(index) == 0:
        raise DataError(f"{root}: the {part} files hold no images of digit {digit}")
    out = np.stack([fit_image(images[i][:, :, None], size, channels or 1) for i in index])
    ys = labels[index]
    kinds = ["good" if y == digit else f"digit_{y}" for y in ys]
    names = [f"mnist:{split}:{i}" for i in index]
    return ImageSet(out, (ys != digit).astype(np.int64), kinds, None, names)

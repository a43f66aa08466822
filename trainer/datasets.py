"""Data sets for training and evaluation: MVTec-layout folders, plain folders of good images, MNIST IDX files.

`load_split` returns an ImageSet of uint8 N×H×W×C images (BGR or grey) at the requested size, in sorted order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from common.errors import DataError
from common.images import fit_image, read_image
from common.layout import MNIST_FILE, MNIST_NAMES, class_files, detect_layout, find_mask, mvtec_classes
from trainer.idx import read_idx


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


def _check_request(split: str, image_size: int, channels: int | None) -> None:
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test' (got {split!r})")
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer) or image_size <= 0:
        raise DataError(f"image size must be a positive number of pixels (got {image_size!r})")
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 (grey) or 3 (colour) (got {channels!r})")


# ---------------------------------------------------------------- image folders


def _load_mvtec(root: Path, split: str, size: int, channels: int | None) -> ImageSet:
    return _load_classes(root, mvtec_classes(root, split), size, channels, with_masks=split == "test")


def _load_classes(
    root: Path, classes: list[tuple[Path, str]], size: int, channels: int | None, with_masks: bool
) -> ImageSet:
    images: list[np.ndarray] = []
    kinds: list[str] = []
    names: list[str] = []
    masks: list[np.ndarray | None] = []
    for f, kind in class_files(root, classes):
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
    path = find_mask(root, kind, image)
    if path is None:
        return None
    mask = read_image(path)
    mask = mask[:, :, 0] if mask.shape[2] == 1 else cv2.cvtColor(mask, cv2.COLOR_BGR2GRAY)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return np.where(mask > 127, 255, 0).astype(np.uint8)


def _stack_masks(masks: Iterable[np.ndarray | None], size: int) -> np.ndarray | None:
    masks = list(masks)
    if all(m is None for m in masks):
        return None
    zero = np.zeros((size, size), np.uint8)
    return np.stack([zero if m is None else m for m in masks])


# ---------------------------------------------------------------- MNIST


def _mnist_file(root: Path, part: str, what: str) -> Path:
    found = sorted(
        (f for f in root.iterdir() if (m := MNIST_FILE.match(f.name)) and m.group(1).lower() == part
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

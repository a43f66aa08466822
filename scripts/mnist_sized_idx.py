"""Write an MNIST-sized IDX folder (6,000 training images of one digit) from scikit-learn's digits.

For timing `trainer fit --mnist-digit` at MNIST's scale without MNIST's files (no download here):
each training image is a real handwritten digit, upsampled to 28×28 and shifted by up to 2 px.
Usage: python scripts/mnist_sized_idx.py OUT_DIR [DIGIT] [N]
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from sklearn.datasets import load_digits

from trainer.idx import write_idx


def main(out: Path, digit: int = 0, n: int = 6000, seed: int = 0) -> None:
    d = load_digits()
    imgs = (d.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    up = np.stack([cv2.resize(im, (20, 20), interpolation=cv2.INTER_CUBIC) for im in imgs])
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(d.target == digit)
    train = np.zeros((n, 28, 28), np.uint8)
    for i, j in enumerate(rng.choice(pool, n)):
        dy, dx = rng.integers(2, 7, 2)
        train[i, dy:dy + 20, dx:dx + 20] = up[j]
    test = np.zeros((len(up), 28, 28), np.uint8)
    test[:, 4:24, 4:24] = up
    out.mkdir(parents=True, exist_ok=True)
    write_idx(out / "train-images-idx3-ubyte.gz", train)
    write_idx(out / "train-labels-idx1-ubyte.gz", np.full(n, digit, np.uint8))
    write_idx(out / "t10k-images-idx3-ubyte.gz", test)
    write_idx(out / "t10k-labels-idx1-ubyte.gz", d.target.astype(np.uint8))
    print(f"wrote {n} training images of digit {digit} and {len(test)} test digits to {out}")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(Path(a[0]), *(int(v) for v in a[1:3]))

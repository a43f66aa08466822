"""Write scikit-learn's real handwritten digits (8×8, upsampled to 28×28) as MNIST IDX .gz files.

A stand-in MNIST folder for development and tests (no download here): half of the images seeded into
`train-*`, the other half into `t10k-*`. Usage: python scripts/digits_to_idx.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from sklearn.datasets import load_digits

from trainer.idx import write_idx


def main(out: Path, seed: int = 0) -> None:
    d = load_digits()
    imgs = (d.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    up = np.stack([cv2.resize(im, (28, 28), interpolation=cv2.INTER_CUBIC) for im in imgs])
    order = np.random.default_rng(seed).permutation(len(up))
    half = len(order) // 2
    out.mkdir(parents=True, exist_ok=True)
    for part, idx in (("train", order[:half]), ("t10k", order[half:])):
        write_idx(out / f"{part}-images-idx3-ubyte.gz", up[idx])
        write_idx(out / f"{part}-labels-idx1-ubyte.gz", d.target[idx].astype(np.uint8))
    print(f"wrote {len(order)} digits to {out} ({half} train, {len(order) - half} t10k)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

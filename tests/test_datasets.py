"""Tests for load_split on tiny data sets written here: MVTec layout (colour, grey), plain folders, MNIST IDX.

Every error path asserts on its message.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from common.errors import DataError
from synth.run import synthesize
from trainer.datasets import ImageSet, load_split
from trainer.idx import write_idx


def _colour(seed: int, size: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def mvtec(tmp_path: Path) -> Path:
    """train/good: 3, test/good: 2, test/crack: 2 (mask for 000 only: its left half), test/hole: 1."""
    root = tmp_path / "cat"
    for i in (2, 0, 1):  # written out of order: loading must sort
        _write(root / "train" / "good" / f"{i:03d}.png", _colour(i))
    for i in range(2):
        _write(root / "test" / "good" / f"{i:03d}.png", _colour(10 + i))
        _write(root / "test" / "crack" / f"{i:03d}.png", _colour(20 + i))
    _write(root / "test" / "hole" / "000.png", _colour(30))
    mask = np.zeros((40, 40), np.uint8)
    mask[:, :20] = 255
    _write(root / "ground_truth" / "crack" / "000_mask.png", mask)
    (root / "readme.txt").write_text("not an image")
    return root


def _check_types(s: ImageSet, n: int, size: int, c: int) -> None:
    assert s.images.shape == (n, size, size, c) and s.images.dtype == np.uint8
    assert s.labels.shape == (n,) and s.labels.dtype == np.int64
    assert len(s.kinds) == len(s.names) == n == len(s)


# ---------------------------------------------------------------- MVTec layout


def test_mvtec_train_is_sorted_resized_with_inter_area(mvtec: Path) -> None:
    s = load_split(mvtec, "train", 16)
    _check_types(s, 3, 16, 3)
    assert s.names == ["train/good/000.png", "train/good/001.png", "train/good/002.png"]
    assert s.kinds == ["good"] * 3 and not s.labels.any() and s.masks is None
    np.testing.assert_array_equal(s.images[1], cv2.resize(_colour(1), (16, 16), interpolation=cv2.INTER_AREA))


def test_mvtec_test_kinds_labels_and_masks(mvtec: Path) -> None:
    s = load_split(mvtec, "test", 20)
    _check_types(s, 5, 20, 3)
    assert s.kinds == ["good", "good", "crack", "crack", "hole"]
    assert s.labels.tolist() == [0, 0, 1, 1, 1]
    assert s.names[2] == "test/crack/000.png"
    assert s.masks is not None and s.masks.shape == (5, 20, 20) and s.masks.dtype == np.uint8
    assert set(np.unique(s.masks)) == {0, 255}
    assert (s.masks[2][:, :10] == 255).all() and not s.masks[2][:, 10:].any()  # nearest, aligned
    assert not s.masks[[0, 1, 3, 4]].any()  # good images and defects without a mask file: zeros


def test_mvtec_without_ground_truth_has_no_masks(mvtec: Path) -> None:
    (mvtec / "ground_truth" / "crack" / "000_mask.png").unlink()
    assert load_split(mvtec, "test", 8).masks is None


def test_grey_data_keeps_one_channel_and_converts_on_request(tmp_path: Path) -> None:
    grey = _colour(5)[:, :, 0]
    _write(tmp_path / "g" / "train" / "good" / "a.png", grey)
    own = load_split(tmp_path / "g", "train", 8)
    _check_types(own, 1, 8, 1)
    small = cv2.resize(grey, (8, 8), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(own.images[0, :, :, 0], small)
    colour = load_split(tmp_path / "g", "train", 8, channels=3)
    np.testing.assert_array_equal(colour.images[0], np.repeat(small[:, :, None], 3, axis=2))


def test_colour_to_grey_conversion(mvtec: Path) -> None:
    s = load_split(mvtec, "train", 16, channels=1)
    _check_types(s, 3, 16, 1)
    expected = cv2.cvtColor(cv2.resize(_colour(0), (16, 16), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(s.images[0, :, :, 0], expected)


def test_mixed_grey_and_colour_become_colour(tmp_path: Path) -> None:
    _write(tmp_path / "m" / "a.png", _colour(1)[:, :, 0])
    _write(tmp_path / "m" / "b.png", _colour(2))
    s = load_split(tmp_path / "m", "train", 8)
    _check_types(s, 2, 8, 3)
    assert (s.images[0, :, :, 0] == s.images[0, :, :, 2]).all()


def test_all_image_suffixes_case_insensitive_and_alpha_and_16_bit(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    for i, suffix in enumerate((".png", ".JPG", ".jpeg", ".bmp", ".tif", ".TIFF")):
        _write(folder / f"{i}{suffix}", _colour(i))
    _write(folder / "6.png", np.dstack([_colour(6), np.full((40, 40), 7, np.uint8)]))  # BGRA
    _write(folder / "7.png", _colour(7)[:, :, 0].astype(np.uint16) * 257)  # 16-bit grey
    (folder / "8.gif").write_bytes(b"GIF89a")  # not an accepted suffix: ignored
    s = load_split(folder, "train", 12)
    _check_types(s, 8, 12, 3)
    assert s.names == ["0.png", "1.JPG", "2.jpeg", "3.bmp", "4.tif", "5.TIFF", "6.png", "7.png"]
    np.testing.assert_array_equal(s.images[6], cv2.resize(_colour(6), (12, 12), interpolation=cv2.INTER_AREA))
    grey7 = cv2.resize(_colour(7)[:, :, 0], (12, 12), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(s.images[7, :, :, 1], grey7)


def test_plain_folder_trains_but_has_no_test_split(tmp_path: Path) -> None:
    for i in range(3):
        _write(tmp_path / "plain" / f"img{i}.jpg", _colour(i))
    s = load_split(tmp_path / "plain", "train", 16)
    _check_types(s, 3, 16, 3)
    assert s.names == ["img0.jpg", "img1.jpg", "img2.jpg"] and s.masks is None
    with pytest.raises(DataError, match="is a plain folder of good images, which has no test split; use the MVTec"):
        load_split(tmp_path / "plain", "test", 16)


def test_synthetic_line_loads_with_masks_on_its_defects(tmp_path: Path) -> None:
    synthesize(tmp_path / "line", size=64, n_train=2, n_test=8)
    s = load_split(tmp_path / "line", "test", 32)
    assert s.kinds == ["good"] * 4 + ["color", "flip", "missing", "scratch"]  # defects sorted by name
    assert s.masks is not None
    assert all(s.masks[i].any() == bool(s.labels[i]) for i in range(len(s)))


# ---------------------------------------------------------------- MNIST IDX


@pytest.fixture
def mnist(tmp_path: Path) -> Path:
    """train: 20 images, labels 0..9 twice, gzipped; t10k: 10 images, labels 9..0, raw (uncompressed)."""
    root = tmp_path / "mnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28), dtype=np.uint8))
    write_idx(root / "train-labels-idx1-ubyte.gz", np.tile(np.arange(10, dtype=np.uint8), 2))
    write_idx(root / "t10k-images-idx3-ubyte", rng.integers(0, 256, (10, 28, 28), dtype=np.uint8))
    write_idx(root / "t10k-labels-idx1-ubyte", np.arange(9, -1, -1, dtype=np.uint8))
    return root


def test_mnist_train_is_the_normal_digit_only(mnist: Path) -> None:
    s = load_split(mnist, "train", 32, mnist_digit=3)
    _check_types(s, 2, 32, 1)
    assert s.names == ["mnist:train:3", "mnist:train:13"] and s.kinds == ["good", "good"]
    assert not s.labels.any() and s.masks is None
    from trainer.idx import read_idx

    raw = read_idx(mnist / "train-images-idx3-ubyte.gz")[13]
    np.testing.assert_array_equal(s.images[1, :, :, 0], cv2.resize(raw, (32, 32), interpolation=cv2.INTER_AREA))


def test_mnist_test_is_every_t10k_image_other_digits_anomalous(mnist: Path) -> None:
    s = load_split(mnist, "test", 28, channels=3, mnist_digit=7)
    _check_types(s, 10, 28, 3)
    assert s.kinds[:3] == ["digit_9", "digit_8", "good"] and s.kinds[-1] == "digit_0"
    assert s.labels.tolist() == [1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
    assert s.names[2] == "mnist:test:2"


@pytest.mark.parametrize(
    ("digit", "message"),
    [(None, "holds MNIST IDX files: choose the normal digit with --mnist-digit D"),
     (10, "--mnist-digit must be a digit from 0 to 9 (got 10)"),
     (-1, "--mnist-digit must be a digit from 0 to 9 (got -1)")],
)
def test_mnist_digit_errors(mnist: Path, digit: int | None, message: str) -> None:
    with pytest.raises(DataError) as err:
        load_split(mnist, "train", 28, mnist_digit=digit)
    assert message in str(err.value)


def test_mnist_missing_file_is_named(mnist: Path) -> None:
    (mnist / "t10k-labels-idx1-ubyte").unlink()
    assert load_split(mnist, "train", 28, mnist_digit=1).images.shape[0] == 2
    with pytest.raises(DataError, match="has no t10k-labels-idx1-ubyte.gz \\(or the same without .gz\\)"):
        load_split(mnist, "test", 28, mnist_digit=1)


def test_mnist_wrong_magic(mnist: Path) -> None:
    (mnist / "t10k-images-idx3-ubyte").write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is not an IDX file: bad magic number"):
        load_split(mnist, "test", 28, mnist_digit=1)


def test_mnist_label_count_mismatch(mnist: Path) -> None:
    write_idx(mnist / "t10k-labels-idx1-ubyte", np.arange(4, dtype=np.uint8))
    with pytest.raises(DataError, match=r"holds \(4,\) labels for 10 images"):
        load_split(mnist, "test", 28, mnist_digit=1)


def test_mnist_images_of_the_wrong_shape(mnist: Path) -> None:
    write_idx(mnist / "t10k-images-idx3-ubyte", np.zeros((10, 784), np.uint8))
    with pytest.raises(DataError, match=r"holds uint8 data of shape \(10, 784\); expected uint8 N×H×W images"):
        load_split(mnist, "test", 28, mnist_digit=1)


# ---------------------------------------------------------------- errors


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data folder .*nowhere does not exist; check the path"):
        load_split(tmp_path / "nowhere", "train", 32)


def test_file_instead_of_folder(tmp_path: Path) -> None:
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"f\.png is not a folder"):
        load_split(tmp_path / "f.png", "train", 32)


def test_folder_of_something_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match="is neither an MVTec-layout folder .* nor a folder of MNIST IDX files"):
        load_split(tmp_path, "train", 32)


def test_empty_class_folder(mvtec: Path) -> None:
    for f in (mvtec / "test" / "good").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"^test/good has no images \(looked for .png .jpg"):
        load_split(mvtec, "test", 32)


def test_empty_defect_folder(mvtec: Path) -> None:
    (mvtec / "test" / "bent").mkdir()
    with pytest.raises(DataError, match="^test/bent has no images"):
        load_split(mvtec, "test", 32)


def test_split_without_good_folder(mvtec: Path) -> None:
    (mvtec / "train" / "good").rename(mvtec / "train" / "ok")
    with pytest.raises(DataError, match="train/good does not exist; an MVTec-layout folder keeps the train split"):
        load_split(mvtec, "train", 32)


def test_unreadable_image_is_named(mvtec: Path) -> None:
    (mvtec / "test" / "crack" / "001.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(DataError, match=r"cannot read image .*test/crack/001\.png: not a valid image file"):
        load_split(mvtec, "test", 32)


def test_empty_image_file_is_named(mvtec: Path) -> None:
    (mvtec / "train" / "good" / "003.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read image .*003\.png"):
        load_split(mvtec, "train", 32)


def test_unreadable_mask_is_named(mvtec: Path) -> None:
    (mvtec / "ground_truth" / "crack" / "000_mask.png").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"cannot read image .*000_mask\.png"):
        load_split(mvtec, "test", 32)


@pytest.mark.parametrize("size", [0, -8, 1.5, True])
def test_image_size_must_be_positive(mvtec: Path, size: object) -> None:
    with pytest.raises(DataError, match=f"image size must be a positive number of pixels \\(got {size!r}\\)"):
        load_split(mvtec, "train", size)  # type: ignore[arg-type]


def test_bad_channels_and_split(mvtec: Path) -> None:
    with pytest.raises(DataError, match=r"channels must be 1 \(grey\) or 3 \(colour\) \(got 2\)"):
        load_split(mvtec, "train", 16, channels=2)
    with pytest.raises(DataError, match="split must be 'train' or 'test' \\(got 'val'\\)"):
        load_split(mvtec, "val", 16)  # type: ignore[arg-type]


def test_mnist_digit_on_an_image_folder(mvtec: Path) -> None:
    with pytest.raises(DataError, match="--mnist-digit applies to MNIST IDX folders only"):
        load_split(mvtec, "train", 16, mnist_digit=3)

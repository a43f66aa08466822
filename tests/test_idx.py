"""Tests for the IDX reader and writer on small files written here: round trips, gzip, every validation.

Each damaged file must raise DataError with a message naming what is wrong.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from common.errors import DataError
from trainer.idx import encode_idx, parse_idx, read_idx, write_idx


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_round_trip_raw_and_gzipped(tmp_path: Path, name: str) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / name, images)
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\x00\x00")
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (5, 28, 28)
    np.testing.assert_array_equal(out, images)


def test_header_is_the_standard_mnist_one() -> None:
    data = encode_idx(np.zeros((2, 28, 28), np.uint8))
    assert data[:4] == b"\x00\x00\x08\x03"
    assert data[4:16] == (2).to_bytes(4, "big") + (28).to_bytes(4, "big") + (28).to_bytes(4, "big")
    assert len(data) == 16 + 2 * 28 * 28


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_every_idx_dtype_round_trips_big_endian(dtype: type) -> None:
    arr = np.arange(-3, 9).reshape(3, 4).astype(dtype)
    data = encode_idx(arr)
    out = parse_idx(data)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    if np.dtype(dtype).itemsize > 1:
        assert data[12:] == arr.astype(np.dtype(dtype).newbyteorder(">")).tobytes()


@settings(max_examples=25, deadline=None)
@given(arrays(np.int32, st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)))
def test_any_shape_round_trips(arr: np.ndarray) -> None:
    np.testing.assert_array_equal(parse_idx(encode_idx(arr)), arr)


def test_gzip_is_detected_by_content_not_by_name(tmp_path: Path) -> None:
    labels = np.arange(10, dtype=np.uint8)
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(gzip.compress(encode_idx(labels)))
    np.testing.assert_array_equal(read_idx(path), labels)


def test_wrong_magic_number(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match=r"x\.idx is not an IDX file: bad magic number 89504e47"):
        read_idx(path)


def test_empty_file() -> None:
    with pytest.raises(DataError, match="bad magic number empty"):
        parse_idx(b"", "empty.idx")


def test_unknown_type_code() -> None:
    with pytest.raises(DataError, match="unknown IDX type code 0x0a"):
        parse_idx(b"\x00\x00\x0a\x01" + (3).to_bytes(4, "big") + bytes(3))


def test_zero_dimensions() -> None:
    with pytest.raises(DataError, match="declares 0 dimensions"):
        parse_idx(b"\x00\x00\x08\x00")


def test_truncated_header() -> None:
    with pytest.raises(DataError, match="truncated: its header needs 16 bytes, the file has 10"):
        parse_idx(b"\x00\x00\x08\x03" + bytes(6), "t")


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_data(tmp_path: Path, gz: bool) -> None:
    data = encode_idx(np.zeros((4, 3, 3), np.uint8))[:-5]
    path = tmp_path / "cut-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match=r"cut-idx3-ubyte is truncated: shape \(4, 3, 3\) needs 36 bytes of data, found 31"):
        read_idx(path)


def test_too_long() -> None:
    with pytest.raises(DataError, match="is too long: shape .* needs 4 bytes of data, found 6"):
        parse_idx(encode_idx(np.zeros(4, np.uint8)) + b"\x00\x00")


def test_cut_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "a.gz"
    path.write_bytes(gzip.compress(encode_idx(np.zeros((50, 50), np.uint8)))[:30])
    with pytest.raises(DataError, match=r"a\.gz is a damaged gzip file"):
        read_idx(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read IDX file .*nope"):
        read_idx(tmp_path / "nope")


def test_unsupported_dtype_cannot_be_written() -> None:
    with pytest.raises(DataError, match="IDX cannot store dtype uint16"):
        encode_idx(np.zeros(3, np.uint16))

"""IDX files (the MNIST format): read and write, gzipped or not.

Every check raises DataError naming the file: magic number, dtype code, dimensions, data length.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from common.errors import DataError

# IDX type code -> big-endian numpy dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _raw_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read IDX file {path} ({e.strerror or e})") from None
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is a damaged gzip file ({e}); download or copy it again") from None


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode IDX bytes into a native-endian array of the stored shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{name} is not an IDX file: bad magic number {data[:4].hex() or 'empty'} "
                        "(expected 0000 then a type code and the number of dimensions)")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{name}: unknown IDX type code 0x{code:02x}; known: "
                        + ", ".join(f"0x{c:02x}" for c in IDX_DTYPES))
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} is truncated: its header needs {header} bytes, the file has {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "too long"
        raise DataError(f"{name} is {what}: shape {shape} needs {expected} bytes of data, found {found}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip detected by content, not by name) into a native-endian array."""
    path = Path(path)
    return parse_idx(_raw_bytes(path), str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes for an array of one of the IDX dtypes (uint8, int8, int16, int32, float32, float64)."""
    arr = np.asarray(array)
    for code, dtype in IDX_DTYPES.items():
        if arr.dtype.newbyteorder(">") == dtype or arr.dtype == dtype:
            header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
            return header + arr.astype(dtype).tobytes()
    raise DataError(f"IDX cannot store dtype {arr.dtype}; use uint8, int8, int16, int32, float32 or float64")


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write an IDX file, gzipped (reproducibly: no timestamp) when the name ends in .gz."""
    path = Path(path)
    data = encode_idx(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path

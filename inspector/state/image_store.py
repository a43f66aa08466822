"""Image store: encoded images of failed and error parts under root/<date>/<seq>_<roi>_<kind>.<ext>.
Atomic writes, oldest files deleted first to stay under a byte quota; disk faults return None, never raise."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_TMP_PREFIX = ".tmp-"
_EXT = {"jpeg": "jpg"}


def safe_name(part: str, fallback: str) -> str:
    """A file-name component: letters, digits, '_' and '-' only (no separators, no dots)."""
    cleaned = _UNSAFE.sub("-", str(part)).strip("-")[:64]
    return cleaned or fallback


def extension(fmt: str) -> str:
    """The file extension of an image format name ("jpeg" -> "jpg", "png" -> "png")."""
    return _EXT.get(fmt, fmt)


def image_name(seq: int, roi: str, kind: str, ext: str, ts: float | None = None) -> str:
    """The relative name `<YYYY-MM-DD UTC>/<seq>_<roi>_<kind>.<ext>` an image is stored under."""
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() if ts is None else ts))
    return f"{day}/{int(seq)}_{safe_name(roi, 'roi')}_{safe_name(kind, 'image')}.{safe_name(ext, 'bin').lower()}"


def resolve(root: str | Path, name: str) -> Path | None:
    """The path of a stored image, or None when `name` would leave `root`."""
    base = Path(root).resolve()
    path = (base / name).resolve()
    return path if path.is_relative_to(base) and path != base else None


def read_image(root: str | Path, name: str) -> bytes | None:
    """A stored image's bytes, or None when it is gone (quota), unreadable or outside root."""
    path = resolve(root, name)
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError:
        return None


class ImageStore:
    """Writes images atomically (temp file, fsync, os.replace) and keeps the total under quota_bytes.

    Owned by the publishing thread (not thread-safe). Other threads read with `read_image`; a file
    may disappear under them when the quota deletes it, which they see as None. The quota counts
    file sizes (st_size), not allocated blocks.
    """

    def __init__(self, root: str | Path, quota_bytes: int, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.quota_bytes = int(quota_bytes)
        self.fsync = fsync
        self._files: OrderedDict[str, int] = OrderedDict()  # relative name -> size, oldest first
        self._usage = 0
        self.counters = {"saved": 0, "deleted": 0, "faults": 0, "rejected": 0}
        self.last_error: str | None = None
        self._scan()

    def _fault(self, exc: OSError, what: str) -> None:
        self.counters["faults"] += 1
        self.last_error = f"image store {what}: {exc}"

    def _scan(self) -> None:
        """Account for the files an earlier run left (oldest first by mtime); remove stale temps."""
        found: list[tuple[float, str, int]] = []
        try:
            for day in sorted(p for p in self.root.iterdir() if p.is_dir()):
                for path in day.iterdir():
                    st = path.stat()
                    if path.name.startswith(_TMP_PREFIX):
                        path.unlink()
                    else:
                        found.append((st.st_mtime, f"{day.name}/{path.name}", st.st_size))
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._fault(exc, f"scan {self.root}")
        for _, name, size in sorted(found):
            self._files[name] = size
            self._usage += size

    def usage(self) -> int:
        """Bytes of stored images."""
        return self._usage

    def stats(self) -> dict[str, Any]:
        """Counters for the status topic."""
        return {**self.counters, "files": len(self._files), "bytes": self._usage,
                "quota_bytes": self.quota_bytes, "last_error": self.last_error}

    def save(self, seq: int, roi: str, kind: str, ext: str, data: bytes, ts: float | None = None) -> str | None:
        """Store one encoded image; returns its relative name, or None (fault or larger than the quota)."""
        if len(data) > self.quota_bytes:
            self.counters["rejected"] += 1
            return None
        name = image_name(seq, roi, kind, ext, ts)
        self._forget(name)
        if not self._make_room(len(data)):
            return None
        try:
            self._write_atomic(self.root / name, data)
        except OSError as exc:
            self._fault(exc, f"write {name}")
            return None
        self._files[name] = len(data)
        self._usage += len(data)
        self.counters["saved"] += 1
        return name

    def save_part(self, seq: int, images: Mapping[tuple[str, str], tuple[str, bytes]],
                  ts: float | None = None) -> dict[str, str]:
        """Store a part's images {(roi, kind): (ext, bytes)}; returns {"roi/kind": name} of those stored,
        the `images` argument of Journal.append."""
        stored = {}
        for (roi, kind), (ext, data) in images.items():
            name = self.save(seq, roi, kind, ext, data, ts)
            if name is not None:
                stored[f"{roi}/{kind}"] = name
        return stored

    def save_published(self, header: Mapping[str, Any], images: Sequence[bytes]) -> dict[str, str]:
        """Store the images of a failed or error result as published: `header["images"]` describes
        `images` one by one ({"roi", "kind", "format"}); a passed part stores nothing."""
        if header.get("verdict") == "pass":
            return {}
        seq = header.get("sequence", header.get("seq"))
        parts = {}
        for desc, blob in zip(header.get("images") or [], images, strict=False):
            fmt = str(desc.get("format", "bin")).lower()
            parts[(str(desc.get("roi")), str(desc.get("kind")))] = (extension(fmt), blob)
        return self.save_part(int(seq), parts, header.get("captured_at"))

    def read(self, name: str) -> bytes | None:
        return read_image(self.root, name)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{_TMP_PREFIX}{path.name}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def _forget(self, name: str) -> None:
        """Drop an entry about to be overwritten from the accounting."""
        size = self._files.pop(name, None)
        if size is not None:
            self._usage -= size

    def _make_room(self, size: int) -> bool:
        """Delete the oldest images until `size` more bytes fit; False when a deletion fails."""
        while self._files and self._usage + size > self.quota_bytes:
            name, old_size = next(iter(self._files.items()))
            path = self.root / name
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                self._fault(exc, f"delete {name}")
                return False
            del self._files[name]
            self._usage -= old_size
            self.counters["deleted"] += 1
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only succeeds once the day's folder is empty
        return True

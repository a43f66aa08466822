"""The image store on a real directory: layout, atomic writes, quota oldest-first, restarts, faults.
Faults are real: a root path under a regular file, a file-size limit (RLIMIT_FSIZE) root cannot bypass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from inspector.state.image_store import ImageStore, image_name, read_image, resolve

ROOT = Path(__file__).resolve().parents[1]
DAY = 1_764_400_000.0  # 2025-11-29 UTC


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_layout_names_and_atomic_write(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, quota_bytes=10_000)
    name = store.save(42, "top", "input", "png", b"\x89PNG data", ts=DAY)
    assert name == "2025-11-29/42_top_input.png"
    assert (tmp_path / name).read_bytes() == b"\x89PNG data"
    assert files(tmp_path) == [name]  # no temporary file left behind
    assert store.usage() == 9 and store.read(name) == b"\x89PNG data"


def test_unsafe_names_stay_inside_root(tmp_path: Path) -> None:
    assert image_name(1, "../../etc", "x/y", "p/ng", ts=DAY) == "2025-11-29/1_etc_x-y.p-ng"
    store = ImageStore(tmp_path / "img", quota_bytes=1000)
    name = store.save(1, "../..", "..", "png", b"x", ts=DAY)
    assert name is not None and (tmp_path / "img" / name).is_file()
    assert resolve(tmp_path / "img", "../secret") is None
    assert read_image(tmp_path / "img", "../../etc/passwd") is None


def test_quota_deletes_oldest_first(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, quota_bytes=5000)
    names = [store.save(seq, "top", "input", "png", bytes(1000), ts=DAY + seq * 40_000) for seq in range(1, 11)]
    assert store.usage() == 5000
    assert files(tmp_path) == sorted(names[5:])
    assert store.stats()["deleted"] == 5
    assert not (tmp_path / names[0].split("/")[0]).exists()  # emptied day folders go too


def test_image_larger_than_the_quota_is_refused(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, quota_bytes=100)
    assert store.save(1, "top", "input", "png", bytes(50)) is not None
    assert store.save(2, "top", "input", "png", bytes(101)) is None
    assert store.stats()["rejected"] == 1 and store.usage() == 50


def test_restart_accounts_for_earlier_files_and_removes_stale_temps(tmp_path: Path) -> None:
    first = ImageStore(tmp_path, quota_bytes=3000)
    old = [first.save(seq, "top", "input", "png", bytes(1000), ts=DAY) for seq in (1, 2, 3)]
    for i, name in enumerate(old):
        os.utime(tmp_path / name, (DAY + i, DAY + i))
    (tmp_path / "2025-11-29" / ".tmp-9_top_input.png").write_bytes(b"half")
    second = ImageStore(tmp_path, quota_bytes=3000)
    assert second.usage() == 3000 and second.stats()["files"] == 3
    new = second.save(4, "top", "input", "png", bytes(1000), ts=DAY)
    assert files(tmp_path) == sorted([old[1], old[2], new])


def test_save_part_and_save_published(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, quota_bytes=10_000)
    assert store.save_part(3, {("top", "input"): ("png", b"a"), ("top", "heatmap"): ("jpg", b"b")}, ts=DAY) == {
        "top/input": "2025-11-29/3_top_input.png", "top/heatmap": "2025-11-29/3_top_heatmap.jpg"}
    header = {"sequence": 7, "verdict": "fail", "captured_at": DAY,
              "images": [{"roi": "top", "kind": "input", "format": "png"},
                         {"roi": "top", "kind": "reconstruction", "format": "jpeg"}]}
    assert store.save_published(header, [b"i", b"r"]) == {
        "top/input": "2025-11-29/7_top_input.png", "top/reconstruction": "2025-11-29/7_top_reconstruction.jpg"}
    assert store.save_published({**header, "verdict": "pass"}, [b"i", b"r"]) == {}


def test_unwritable_root_returns_none_counts_and_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "images"
    blocker.write_text("a file where the image folder should be")
    store = ImageStore(blocker / "store", quota_bytes=10_000)
    assert store.save(1, "top", "input", "png", b"x") is None
    assert store.save(2, "top", "input", "png", b"x") is None
    assert store.stats()["faults"] == 3 and "write" in store.stats()["last_error"]  # the scan, two writes
    blocker.unlink()
    assert store.save(3, "top", "input", "png", b"x") is not None
    assert store.usage() == 1


_FSIZE = """
import json, resource, signal, sys
sys.path.insert(0, {root!r})
from inspector.state.image_store import ImageStore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write() fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
store = ImageStore(sys.argv[1], quota_bytes=10**6)
out = [store.save(seq, "top", "input", "png", bytes(size)) for seq, size in ((1, 1000), (2, 100_000), (3, 2000))]
print(json.dumps({{"names": out, "stats": store.stats()}}))
"""


def test_disk_full_for_real_under_a_file_size_limit(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-c", _FSIZE.format(root=str(ROOT)), str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    first, too_big, third = out["names"]
    assert first is not None and too_big is None and third is not None
    assert out["stats"]["faults"] == 1 and "File too large" in out["stats"]["last_error"]
    assert out["stats"]["bytes"] == 3000
    assert files(tmp_path) == sorted([first, third])  # the failed write left no temporary file


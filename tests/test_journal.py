"""The result journal on real SQLite files: order, restarts, retention, SIGKILL, full and unopenable disks.
Each fault is injected for real (a size cap SQLite enforces, a path root cannot create, a killed process)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from inspector.state.journal import Journal, publish_hook
from inspector.state.journal_reader import JournalReader, JournalUnavailable

ROOT = Path(__file__).resolve().parents[1]


def header(seq: int, verdict: str = "pass", **extra: Any) -> dict[str, Any]:
    """A result header shaped like inspector.stages.encode.build_outgoing's."""
    return {"schema_version": 1, "type": "result", "sequence": seq, "station_id": "st1", "run_id": "r1",
            "part_id": f"p{seq}", "frame": 10 * seq, "captured_at": 1000.0 + seq, "published_at": 1000.5 + seq,
            "verdict": verdict, "model_id": "ours-proj-abc",
            "rois": [{"name": "top", "score": 0.1 * seq, "threshold": 0.5},
                     {"name": "side", "score": 0.2, "threshold": 0.4}], **extra}


def fill(j: Journal, first: int, last: int) -> None:
    for seq in range(first, last + 1):
        j.append(header(seq, "fail" if seq % 3 == 0 else "pass"))


def test_append_and_read_back_every_column(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    h = header(1, "fail")
    raw = json.dumps(h, indent=None)
    j.append(h, {"top/input": "2026-11-29/1_top_input.png"}, raw=raw.encode())
    [row] = list(j.since(0))
    assert row["seq"] == 1 and row["verdict"] == "fail" and row["station"] == "st1"
    assert row["part_id"] == "p1" and row["frame"] == 10 and row["model_id"] == "ours-proj-abc"
    assert row["capture_ts"] == 1001.0 and row["publish_ts"] == 1001.5
    assert row["scores"] == {"top": 0.1, "side": 0.2}
    assert row["thresholds"] == {"top": 0.5, "side": 0.4}
    assert row["header_json"] == raw
    assert row["images"] == {"top/input": "2026-11-29/1_top_input.png"}
    mode = sqlite3.connect(tmp_path / "j.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert j._open().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    fast = Journal(tmp_path / "fast.db", synchronous="NORMAL")
    assert fast._open().execute("PRAGMA synchronous").fetchone()[0] == 1
    with pytest.raises(ValueError):
        Journal(tmp_path / "off.db", synchronous="OFF")


def test_sequence_continues_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "state" / "j.db"
    j = Journal(path)
    assert j.last_seq() == 0 and j.start_seq() == (1, True)
    fill(j, 1, 5)
    j.close()
    j2 = Journal(path)
    assert j2.last_seq() == 5 and j2.start_seq() == (6, True)
    with pytest.raises(ValueError, match="must increase"):
        j2.append(header(5))
    j2.append(header(6))
    assert [r["seq"] for r in j2.since(3, limit=10)] == [4, 5, 6]
    assert [r["seq"] for r in j2.since(0, limit=2)] == [1, 2]


def test_query_filters_and_newest_first_window(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    fill(j, 1, 12)
    assert [r["seq"] for r in j.query(limit=3)] == [10, 11, 12]
    assert [r["seq"] for r in j.query(verdict="fail")] == [3, 6, 9, 12]
    assert [r["seq"] for r in j.query(since=6, verdict="fail")] == [9, 12]
    assert [r["seq"] for r in j.query(since=2, limit=2)] == [3, 4]
    with pytest.raises(ValueError):
        j.query(verdict="maybe")


def test_invalid_headers_are_refused(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    with pytest.raises(ValueError, match="sequence"):
        j.append({"verdict": "pass"})
    with pytest.raises(ValueError, match="verdict"):
        j.append(header(1, "maybe"))
    assert j.last_seq() == 0


def test_retention_by_count_keeps_the_newest(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db", retention_rows=4, prune_every=0)
    fill(j, 1, 10)
    assert j.prune() == 6
    assert [r["seq"] for r in j.since(0)] == [7, 8, 9, 10]
    assert j.stats()["pruned"] == 6


def test_retention_by_age_and_sequence_survives_an_empty_journal(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db", retention_days=1.0, prune_every=0)
    fill(j, 1, 5)
    assert j.prune(now=time.time() + 0.5 * 86400) == 0
    assert j.prune(now=time.time() + 2 * 86400) == 5
    assert list(j.since(0)) == []
    j.close()
    assert Journal(tmp_path / "j.db").last_seq() == 5  # no reset to 0 after everything aged out


def test_automatic_prune_every_n_appends(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db", retention_rows=5, prune_every=10)
    fill(j, 1, 9)
    assert len(list(j.since(0))) == 9
    j.append(header(10))
    assert [r["seq"] for r in j.since(0)] == [6, 7, 8, 9, 10]


def test_restart_events(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    first = j.record_start(pid=111, model_id="m1")
    fill(j, 1, 3)
    second = j.record_start(pid=222, model_id="m2")
    assert second > first
    starts = JournalReader(tmp_path / "j.db").starts()
    assert [(s["start_id"], s["pid"], s["last_seq"]) for s in starts] == [(second, 222, 3), (first, 111, 0)]


def test_reader_in_another_thread_sees_commits_while_the_writer_holds_its_connection(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    fill(j, 1, 3)
    seen: list[list[int]] = []

    def read() -> None:
        reader = JournalReader(tmp_path / "j.db")
        seen.append([r["seq"] for r in reader.since(0)])
        reader.close()

    t = threading.Thread(target=read)
    t.start()
    t.join()
    assert seen == [[1, 2, 3]]
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _capture(errors, lambda: j.append(header(4))))
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], sqlite3.ProgrammingError)  # the writer is its thread's
    assert j.stats()["faults"] == 0  # misuse is not counted as a disk fault
    j.append(header(5))
    assert [r["seq"] for r in j.since(3)] == [4, 5]  # row 4 was held back, then written in order


def _capture(errors: list[BaseException], fn: Any) -> None:
    try:
        fn()
    except BaseException as exc:
        errors.append(exc)


def test_reader_of_a_missing_journal_raises_unavailable(tmp_path: Path) -> None:
    with pytest.raises(JournalUnavailable):
        JournalReader(tmp_path / "none.db").last_seq()


def test_full_disk_raises_unavailable_keeps_rows_and_recovers(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db", retry_s=0.0, prune_every=0)
    fill(j, 1, 3)
    conn = j._open()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite answers SQLITE_FULL beyond this
    big = "x" * 20000
    with pytest.raises(JournalUnavailable, match="SQLITE_FULL"):
        j.append(header(4, "fail", note=big))
    assert j.stats()["faults"] == 1 and j.stats()["pending"] == 1 and not j.stats()["available"]
    assert j.last_seq() == 4  # the next number stays 5 while the row waits
    # the failed connection was dropped; the reopened one has no cap: the disk "has room again"
    j.append(header(5))
    assert [r["seq"] for r in j.since(0)] == [1, 2, 3, 4, 5]
    assert j.stats()["pending"] == 0 and j.stats()["available"]
    assert sqlite3.connect(tmp_path / "j.db").execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_unopenable_path_raises_unavailable_and_recovers_when_fixed(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")  # root cannot create under it
    j = Journal(blocker / "j.db", retry_s=0.0)
    with pytest.raises(JournalUnavailable):
        j.last_seq()
    assert j.start_seq()[1] is False and j.start_seq()[0] > 10**12
    with pytest.raises(JournalUnavailable):
        j.append(header(1))
    with pytest.raises(JournalUnavailable):
        j.append(header(2))
    assert j.stats()["faults"] >= 3 and j.stats()["pending"] == 2
    blocker.unlink()
    j.append(header(3))
    assert [r["seq"] for r in j.since(0)] == [1, 2, 3]


def test_retry_window_does_not_touch_a_failed_disk_each_time(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("")
    j = Journal(blocker / "j.db", retry_s=60.0)
    with pytest.raises(JournalUnavailable):
        j.append(header(1))
    blocker.unlink()
    with pytest.raises(JournalUnavailable, match="still unavailable"):
        j.append(header(2))
    assert j.stats()["faults"] == 1


def test_backlog_is_bounded_and_drops_the_oldest(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("")
    j = Journal(blocker / "j.db", retry_s=0.0, backlog=3)
    for seq in range(1, 6):
        with pytest.raises(JournalUnavailable):
            j.append(header(seq))
    assert j.stats()["dropped"] == 2 and j.stats()["pending"] == 3
    blocker.unlink()
    assert j.flush() == 3
    assert [r["seq"] for r in j.since(0)] == [3, 4, 5]


def test_rows_numbered_before_the_journal_was_readable_never_collide(tmp_path: Path) -> None:
    path = tmp_path / "state" / "j.db"
    j = Journal(path)
    fill(j, 1, 5)
    j.close()
    (tmp_path / "state").rename(tmp_path / "away")
    (tmp_path / "state").write_text("")
    late = Journal(path, retry_s=0.0)
    with pytest.raises(JournalUnavailable):
        late.append(header(2, "error"))  # a pipeline that ignored start_seq()
    (tmp_path / "state").unlink()
    (tmp_path / "away").rename(tmp_path / "state")
    assert late.flush() == 0 and late.stats()["conflicts"] == 1
    assert [r["verdict"] for r in late.since(1, 1)] == ["pass"]  # the journaled row was not replaced


def test_publish_hook_journals_the_exact_published_header(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    saved: list[int] = []

    class Store:
        def save_published(self, h: dict[str, Any], images: list[bytes]) -> dict[str, str]:
            saved.append(h["sequence"])
            return {"top/input": "x.png"} if h["verdict"] != "pass" else {}

    hook = publish_hook(j, Store())
    h = header(1, "fail")
    hook(h, [b"png"])
    [row] = list(j.since(0))
    assert row["header_json"].encode() == json.dumps(h).encode()  # what Publisher sends
    assert row["images"] == {"top/input": "x.png"} and saved == [1]


_WRITER = """
import sys
sys.path.insert(0, {root!r})
from inspector.state.journal import Journal
j = Journal({path!r})
seq = j.last_seq()
while True:
    seq += 1
    j.append({{"sequence": seq, "verdict": "fail" if seq % 7 == 0 else "pass", "part_id": "p%d" % seq,
              "rois": [{{"name": "top", "score": 0.5, "threshold": 0.4}}], "pad": "x" * 300}})
    print(seq, flush=True)
"""


def test_sigkill_during_appends_loses_no_returned_row(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER.format(root=str(ROOT), path=str(path))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acknowledged = [int(proc.stdout.readline()) for _ in range(150)]
    os.kill(proc.pid, signal.SIGKILL)
    acknowledged += [int(line) for line in proc.stdout.read().split()]  # printed before the kill landed
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {r[0] for r in conn.execute("SELECT seq FROM verdicts")}
    conn.close()
    assert set(acknowledged) <= stored
    assert sorted(stored) == list(range(1, max(stored) + 1))  # gapless
    j = Journal(path)
    assert j.last_seq() == max(stored) >= max(acknowledged)
    j.append(header(j.last_seq() + 1))


_FS_FAULTS = """
import json, os, subprocess, sys
sys.path.insert(0, {root!r})
from inspector.state.image_store import ImageStore
from inspector.state.journal import Journal
from inspector.state.journal_reader import JournalUnavailable
d = sys.argv[1]
with open(os.path.join(d, "ballast"), "wb") as f:
    f.write(b"b" * 200_000)
j = Journal(os.path.join(d, "j.db"), retry_s=0.0, prune_every=0)
store = ImageStore(os.path.join(d, "images"), quota_bytes=10**9)
out, seq = {{}}, 0

def h(seq):
    return {{"sequence": seq, "verdict": "fail", "pad": "x" * 3000}}

for _ in range(2000):
    seq += 1
    try:
        j.append(h(seq))
    except JournalUnavailable as e:
        out["full_error"] = str(e)
        break
out["image_when_full"] = store.save(seq, "top", "input", "png", b"i" * 100_000)
os.remove(os.path.join(d, "ballast"))
seq += 1
j.append(h(seq))
out["image_after_free"] = store.save(seq, "top", "input", "png", b"i" * 1000)
j.close()  # the kernel refuses remount,ro while files are open for writing: this is a (re)open on ro
subprocess.run(["mount", "-o", "remount,ro", d], check=True)
seq += 1
try:
    j.append(h(seq))
except JournalUnavailable as e:
    out["ro_error"] = str(e)
out["image_when_ro"] = store.save(seq, "top", "input", "png", b"i" * 1000)
subprocess.run(["mount", "-o", "remount,rw", d], check=True)
seq += 1
j.append(h(seq))
out["seqs"] = [r["seq"] for r in j.since(0, 10000)]
out["last"] = seq
out["journal"], out["images"] = j.stats(), store.stats()
print(json.dumps(out))
"""


def _can_mount_tmpfs() -> bool:
    try:
        probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                               capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs root and mount namespaces (unshare -m)")
def test_real_full_then_read_only_filesystem(tmp_path: Path) -> None:
    """A 512 KiB tmpfs in a private mount namespace: filled for real, then remounted read-only
    (with the journal closed first: Linux refuses remount,ro while a file is open for writing)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = tmp_path / "faults.py"
    script.write_text(_FS_FAULTS.format(root=str(ROOT)))
    run = subprocess.run(["unshare", "-m", "sh", "-c",
                          f"mount -t tmpfs -o size=512k tmpfs {mnt} && exec {sys.executable} {script} {mnt}"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert "SQLITE_FULL" in out["full_error"]
    assert any(code in out["ro_error"] for code in ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR"))
    assert out["image_when_full"] is None and out["image_when_ro"] is None
    assert out["image_after_free"] is not None
    assert out["seqs"] == list(range(1, out["last"] + 1))  # rows held back during both faults are in
    assert out["journal"]["faults"] >= 2 and out["journal"]["pending"] == 0
    assert out["images"]["faults"] == 2


def test_start_in_the_main_thread_then_hand_the_writer_to_the_publish_thread(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    fill(j, 1, 2)
    j.close()
    daemon = Journal(tmp_path / "j.db")
    first, journaled = daemon.start_seq()
    start_id = daemon.record_start(os.getpid(), "m1")
    daemon.close()  # the hand-off: the publish thread's first append reopens the connection
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _capture(errors, lambda: daemon.append(header(first))))
    t.start()
    t.join()
    assert errors == [] and (first, journaled, start_id) == (3, True, 1)
    assert [r["seq"] for r in JournalReader(tmp_path / "j.db").since(0)] == [1, 2, 3]

"""The journal and image store wired into the pipeline: journaled before published, counts equal,
images kept whatever is sent, one commit per batch, sequence continuing across restarts, and disk
faults (injected for real) that never stop inspection or publishing."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import cv2
import pytest
from structlog.testing import capture_logs
from test_inspector_support import REPO, inspector_cmd, make_mean_model, subprocess_env, write_conveyor_video
from test_reliability_support import Run, Subscriber, integrity, journal_rows, json_logs, station_config

from inspector.cli import main
from inspector.records import Outgoing
from inspector.stages.encode import passed_part_kept
from inspector.state.journal_reader import JournalReader


def test_every_verdict_is_journaled_before_it_is_published_and_the_counts_agree(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=3)
    run = Run(station_config(v.video, tmp_path / "state"))
    send = run.pipeline.publisher._send
    missing_at_send: list[int] = []

    def checked_send(out: Outgoing) -> None:  # at the moment of sending, the row must be committed
        reader = JournalReader(tmp_path / "state" / "journal.db")
        rows = list(reader.since(out.header["sequence"] - 1, 1))
        reader.close()
        if not rows or rows[0]["seq"] != out.header["sequence"] or rows[0]["header_json"] != out.raw.decode():
            missing_at_send.append(out.header["sequence"])
        send(out)

    run.pipeline.publisher._send = checked_send  # type: ignore[method-assign]
    assert run.run().code == 0
    assert missing_at_send == []
    rows = journal_rows(tmp_path / "state" / "journal.db")
    status = run.status()
    assert len(rows) == len(run.headers) == status["parts_inspected"] == status["parts_triggered"] == v.frames
    assert [r["seq"] for r in rows] == [h["sequence"] for h in run.headers] == list(range(1, v.frames + 1))
    assert [json.loads(r["header_json"]) for r in rows] == run.headers
    assert status["journal"]["state"] == "ok" and status["journal"]["appended"] == v.frames


def test_failed_parts_images_are_stored_even_when_none_are_sent(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=3)
    cfg = station_config(v.video, tmp_path / "state", publish={"send_images": "none"},
                         state={"store_images": ["input", "heatmap"]})
    run = Run(cfg).run()
    rows = journal_rows(tmp_path / "state" / "journal.db")
    failed = [r for r in rows if r["verdict"] == "fail"]
    assert failed and all(h["images"] == [] for h in run.headers)  # nothing sent ...
    for row in rows:  # ... but every failed part's input and heat map kept; of passed parts, the input crop
        names = json.loads(row["images"])  # of one in 20 ([state] store_passed_every, tests/test_store_passed.py)
        if row["verdict"] == "pass":
            assert sorted(names) == (["center/input"] if passed_part_kept(row["seq"], 20) else [])
            continue
        assert sorted(names) == ["center/heatmap", "center/input"]
        image = cv2.imread(str(tmp_path / "state" / "images" / names["center/input"]))
        assert image is not None and image.shape == (32, 32, 3)
    sampled = sum(r["verdict"] == "pass" and passed_part_kept(r["seq"], 20) for r in rows)
    assert sampled >= 1 and run.status()["image_store"]["saved"] == 2 * len(failed) + sampled


def test_a_durable_journal_commits_once_per_batch_so_throughput_is_not_capped(tmp_path: Path) -> None:
    """synchronous=FULL costs one fsync per commit (3.7 ms here): one commit per part would cap the
    pipeline near 270 parts/s; everything waiting in the publisher's queue goes in one commit."""
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=30)
    cfg = station_config(v.video, tmp_path / "state", state={"synchronous": "FULL", "store_images": []},
                         publish={"send_images": "none"})
    run = Run(cfg)
    assert run.station.recorder is not None and run.station.recorder.journal is not None
    journal = run.station.recorder.journal
    commits: list[int] = []
    append_many = journal.append_many

    def counted(items: Any) -> None:
        commits.append(len(items))
        append_many(items)

    journal.append_many = counted  # type: ignore[method-assign]
    run.run()
    parts = len(run.headers)
    assert parts == v.frames == sum(commits) == len(journal_rows(tmp_path / "state" / "journal.db"))
    assert len(commits) <= parts / 4, f"{len(commits)} commits for {parts} parts"
    assert parts / run.seconds > 300, f"{parts / run.seconds:.0f} parts/s"


def test_sequence_numbers_continue_across_restarts_and_the_restart_is_announced(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=1)
    cfg = station_config(v.video, tmp_path / "state")
    first = Run(cfg).run()
    second = Run(cfg).run()
    n = v.frames
    assert [h["sequence"] for h in first.headers] == list(range(1, n + 1))
    assert [h["sequence"] for h in second.headers] == list(range(n + 1, 2 * n + 1))
    assert first.headers[0]["run_id"] != second.headers[0]["run_id"]
    s1, s2 = first.status(), second.status()
    assert (s1["start_id"], s1["restart"], s1["first_sequence"], s1["sequence_from_journal"]) == (1, False, 1, True)
    assert (s2["start_id"], s2["restart"], s2["first_sequence"], s2["sequence_from_journal"]) == (2, True, n + 1, True)
    assert [r["seq"] for r in journal_rows(tmp_path / "state" / "journal.db")] == list(range(1, 2 * n + 1))


def test_history_reads_the_journal_named_by_the_configuration(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=3)
    run = Run(station_config(v.video, tmp_path / "state")).run()
    config = tmp_path / "inspector.toml"
    config.write_text(f'[state]\ndir = "{tmp_path / "state"}"\n')
    capsys.readouterr()  # the run's own log lines
    assert main(["history", "--config", str(config), "--verdict", "fail", "--limit", "1000", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    failed = [h for h in run.headers if h["verdict"] == "fail"]
    assert [r["header"] for r in rows] == failed and len(failed) > 0
    assert main(["history", "--config", str(config), "--since", str(v.frames - 2)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("seq") and [line.split()[0] for line in table[1:]] == [str(v.frames - 1), str(v.frames)]


def _events(logs: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [e for e in logs if text in e["event"]]


def test_journal_unwritable_then_fixed_inspection_goes_on_and_the_journal_catches_up(tmp_path: Path) -> None:
    """journal.db is a directory (root cannot write through that): SQLITE_CANTOPEN. Results go on,
    the fault shows on the status topic and in one log line; once fixed, the held rows are written."""
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=2, fps=300.0)
    state = tmp_path / "state"
    (state / "journal.db").mkdir(parents=True)
    cfg = station_config(v.video, state, camera={"loop": True, "max_frames": 400, "fps": 300.0})
    statuses: list[dict[str, Any]] = []

    def fix_the_disk(header: dict[str, Any], _images: list[bytes]) -> None:
        if len(statuses) == 0 and len(run.headers) == 60:
            statuses.append(run.status())  # the fault, as the status topic shows it
            shutil.rmtree(state / "journal.db")

    run = Run(cfg, realtime=True, after=fix_the_disk)
    with capture_logs() as logs:
        run.run()
    # A camera-paced source drops frames when the machine falls behind (a real camera does too), and
    # says so: every one of the 400 frames is published or counted as dropped, with its reason.
    dropped = run.pipeline.stats.snapshot()["frames_dropped"]
    assert set(dropped) <= {"queue_full"}
    n = len(run.headers)
    assert run.code == 0 and n + sum(dropped.values()) == 400 and n >= 300
    assert run.pipeline.publisher.hook_errors == 0
    during = statuses[0]
    assert during["journal"]["state"] == "fault" and "journal.db" in during["journal"]["error"]
    # A batch is journaled (here: held) before any of its parts is sent, so when part 60 has just gone
    # out the rest of its batch is held too: 60 parts at least, fewer than one more batch.
    assert during["sequence_from_journal"] is False
    assert 60 <= during["journal"]["pending"] < 60 + cfg.engine.max_batch
    final = run.status()
    assert final["journal"]["state"] == "ok" and final["journal"]["pending"] == 0
    seqs = [h["sequence"] for h in run.headers]
    assert seqs[0] > 10**12 and seqs == list(range(seqs[0], seqs[0] + n))  # from the clock: never reused
    assert [r["seq"] for r in journal_rows(state / "journal.db")] == seqs  # nothing lost, gapless
    assert len(_events(logs, "journal unavailable")) == 1 and len(_events(logs, "journal recovered")) == 1


def test_image_store_unwritable_parts_are_still_journaled_and_published(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=3)
    state = tmp_path / "state"
    state.mkdir()
    (state / "images").write_text("a regular file where the image folder should be")
    with capture_logs() as logs:
        run = Run(station_config(v.video, state)).run()
    status = run.status()
    assert run.code == 0 and len(run.headers) == v.frames == status["journal"]["appended"]
    assert status["image_store"]["state"] == "fault" and status["image_store"]["faults"] > 0
    assert status["image_store"]["saved"] == 0
    assert all(json.loads(r["images"]) == {} for r in journal_rows(state / "journal.db"))
    assert len(_events(logs, "image store unavailable")) == 1


def _file_size_limit(limit: int) -> Any:
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@pytest.mark.slow
def test_disk_full_for_real_mid_replay_publishing_goes_on_and_status_says_so(tmp_path: Path) -> None:
    """RLIMIT_FSIZE (binds root too): the journal's WAL hits EFBIG (SQLITE_FULL) part-way through."""
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=24)
    model = make_mean_model(tmp_path / "model.onnx")
    endpoint = "ipc://" + str(tmp_path / "pub.ipc")
    config = tmp_path / "c.toml"
    config.write_text('[trigger]\nmode = "continuous"\n[publish]\nimages = ["input"]\nstatus_interval_s = 0.05\n')
    sub = Subscriber(endpoint)
    try:
        proc = subprocess.run(
            inspector_cmd("replay", str(v.video), "--model", str(model), "--config", str(config),
                          "--state", str(tmp_path / "state"), "--publish", endpoint),
            cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=60,
            preexec_fn=_file_size_limit(256 * 1024))
        sub.until(lambda: any(s.get("final") for s in sub.statuses), 10)
    finally:
        sub.close()
    assert proc.returncode == 0, proc.stderr
    final = sub.statuses[-1]
    assert final["final"] and final["parts_inspected"] == v.frames == len(sub.results)
    assert [h["sequence"] for h in sub.results] == list(range(1, v.frames + 1))
    assert final["journal"]["state"] == "fault" and final["journal"]["faults"] > 0
    assert "SQLITE_FULL" in final["journal"]["error"] or "IOERR" in final["journal"]["error"]
    assert final["image_store"]["state"] == "ok"  # a per-file limit: small images still fit
    journal = final["journal"]
    assert journal["appended"] + journal["pending"] == v.frames  # each verdict journaled or held, counted
    assert integrity(tmp_path / "state" / "journal.db") == "ok"
    rows = journal_rows(tmp_path / "state" / "journal.db")
    assert [r["seq"] for r in rows] == list(range(1, journal["appended"] + 1))  # what is there is gapless
    events = [e["event"] for e in json_logs(proc.stderr)]
    assert events.count("journal unavailable: inspection and publishing go on") == 1, proc.stderr[-2000:]
    assert "journal unavailable at exit: verdicts not journaled" in events  # the loss is said, with a count
    assert os.path.getsize(tmp_path / "state" / "journal.db") <= 256 * 1024

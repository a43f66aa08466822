"""Subscribers: none, one that never reads (throughput unaffected), one that disconnects and reconnects
and recovers every verdict through backfill, and `inspector listen` filling gaps across restarts."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from test_inspector_support import write_conveyor_video
from test_reliability_support import Run, journal_rows, station_config

from inspector.network.backfill import BackfillServer
from inspector.state.journal import Journal
from inspector.tools.listen import listen


def test_no_subscriber_every_part_is_still_inspected_and_journaled(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=3)
    cfg = station_config(v.video, tmp_path / "state", publish={"bind": "ipc://" + str(tmp_path / "p.ipc")})
    run = Run(cfg).run()
    status = run.status()
    assert run.code == 0 and status["subscribers"] == 0
    assert status["parts_inspected"] == v.frames == len(journal_rows(tmp_path / "state" / "journal.db"))


def _parts_per_s(tmp_path: Path, name: str, video: Path, slow: bool) -> tuple[float, dict[str, Any]]:
    endpoint = "ipc://" + str(tmp_path / f"{name}.ipc")
    cfg = station_config(video, tmp_path / name, publish={"bind": endpoint, "send_hwm": 10, "linger_ms": 100,
                                                          "wait_subscribers": int(slow), "wait_subscribers_s": 5})
    ctx = zmq.Context()
    never_reads = ctx.socket(zmq.SUB)
    never_reads.setsockopt(zmq.RCVHWM, 10)
    never_reads.setsockopt(zmq.SUBSCRIBE, b"")
    never_reads.setsockopt(zmq.LINGER, 0)
    if slow:
        never_reads.connect(endpoint)
    run = Run(cfg)
    run.run()
    never_reads.close()
    ctx.term()
    status = run.status()
    seconds = (run.pipeline.ended_mono - run.pipeline.started_mono)
    return status["parts_inspected"] / seconds, status


@pytest.mark.slow
def test_a_subscriber_that_never_reads_does_not_slow_the_daemon(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=40)  # ~600 frames, 3 images each
    runs = [_parts_per_s(tmp_path, f"{name}{i}", v.video, slow=name == "stuck")  # best of 2: a shared box
            for i in range(2) for name in ("alone", "stuck")]
    (alone, s_alone), (stuck, s_stuck) = max(runs[0::2], key=lambda r: r[0]), max(runs[1::2], key=lambda r: r[0])
    assert s_stuck["subscribers"] == 1 and s_alone["subscribers"] == 0
    assert s_alone["parts_inspected"] == s_stuck["parts_inspected"] == v.frames  # nothing lost on our side
    assert stuck > 0.5 * alone, f"{stuck:.0f} parts/s with a stuck subscriber vs {alone:.0f} without"
    print(f"parts/s without subscriber {alone:.0f}, with one that never reads {stuck:.0f}")


def _listen_in_thread(out: io.StringIO, **kwargs: Any) -> threading.Thread:
    t = threading.Thread(target=listen, kwargs={"out": out, "as_json": True, "timeout_s": 20, **kwargs}, daemon=True)
    t.start()
    return t


def _results(out: io.StringIO) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    return [h for h in lines if h.get("type") == "result"], lines[-1]


def test_a_subscriber_that_reconnects_recovers_every_verdict_through_backfill(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=2, fps=300.0)
    endpoint, backfill = "ipc://" + str(tmp_path / "pub.ipc"), "ipc://" + str(tmp_path / "backfill.ipc")
    cfg = station_config(v.video, tmp_path / "state", camera={"loop": True, "fps": 300.0},
                         publish={"bind": endpoint, "backfill_bind": backfill})
    run = Run(cfg, realtime=True).start()
    try:
        first = io.StringIO()
        _listen_in_thread(first, endpoint=endpoint, count=30).join(20)
        before, summary = _results(first)
        assert summary["received"] == 30 and summary["lost"] == 0
        last_seen = before[-1]["sequence"]
        # disconnected: the daemon goes on publishing what nobody hears
        deadline = time.monotonic() + 20
        while run.pipeline.publisher.next_sequence <= last_seen + 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        second = io.StringIO()
        _listen_in_thread(second, endpoint=endpoint, backfill_endpoint=backfill, since=last_seen, count=200).join(20)
    finally:
        run.stop()
    after, summary = _results(second)
    assert [h["sequence"] for h in after] == list(range(last_seen + 1, last_seen + 201))  # no hole, no duplicate
    recovered = [h for h in after if h.get("backfilled")]
    assert len(recovered) >= 100 and summary["recovered"] == len(recovered) and summary["lost"] == 0
    assert not after[-1].get("backfilled")  # caught up with the live stream
    assert run.status()["backfill"]["requests"] >= 1


def test_listen_fills_a_gap_from_the_journal_across_a_restart_and_reports_what_is_gone(tmp_path: Path) -> None:
    """Live stream 1, 2, 6 (6 from a restarted daemon: new run_id, sequence continued); the journal
    holds 1, 2, 4, 5, 6 (3 was deleted by retention): 4 and 5 are backfilled, 3 reported lost."""
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")

    def header(seq: int, run_id: str) -> dict[str, Any]:
        return {"schema_version": 1, "type": "result", "sequence": seq, "run_id": run_id, "part_id": f"p{seq}",
                "frame": seq, "verdict": "pass", "error": None, "latency_ms": 1.0, "images": [],
                "rois": [{"name": "center", "score": 1.0, "threshold": 2.0}]}

    headers = {s: header(s, "run-a" if s <= 3 else "run-b") for s in (1, 2, 4, 5, 6)}
    for h in headers.values():
        journal.append(h)
    journal.close()
    ctx = zmq.Context()
    server = BackfillServer("ipc://" + str(tmp_path / "bf.ipc"), tmp_path / "journal.db", context=ctx).start()
    pub = ctx.socket(zmq.XPUB)
    pub.bind("ipc://" + str(tmp_path / "pub.ipc"))
    out = io.StringIO()
    listener = _listen_in_thread(out, endpoint="ipc://" + str(tmp_path / "pub.ipc"),
                                 backfill_endpoint=server.endpoint, count=5)
    assert pub.poll(10000)
    pub.recv()  # the subscription arrived
    for seq in (1, 2, 6):
        pub.send_multipart([b"result", json.dumps(headers[seq]).encode()])
    listener.join(20)
    server.stop()
    pub.close(0)
    ctx.term()
    results, summary = _results(out)
    assert [h["sequence"] for h in results] == [1, 2, 4, 5, 6]
    assert [bool(h.get("backfilled")) for h in results] == [False, False, True, True, False]
    assert (summary["gaps"], summary["lost"], summary["recovered"]) == (1, 1, 2)

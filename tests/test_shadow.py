"""Shadow mode and `inspector compare` (issue 24): a candidate model scores the production model's crops,
its verdicts reach the `shadow` topic and the journal, never the production verdict nor the gateway.

Real ONNX Runtime sessions (the mean-pixel models of test_inspector_support), real replays of a conveyor
video in subprocesses, a real ZeroMQ subscriber and the gateway's real Feed, SQLite journals on disk.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from test_inspector_support import (
    REPO,
    FakeEngine,
    free_endpoint,
    inspector_cmd,
    make_mean_model,
    subprocess_env,
    write_conveyor_video,
)

from inspector.cli import main
from inspector.config import load_config
from inspector.errors import InspectorError
from inspector.gateway.feed import Feed, FeedOptions
from inspector.gateway.run import new_hub
from inspector.gateway.store import Store
from inspector.models.active import LoadedModel, ModelSet
from inspector.models.shadow import load_shadow
from inspector.records import Frame, Part, Roi
from inspector.stages.decide import score_and_decide
from inspector.stages.scoring import open_engine
from inspector.state.image_store import ImageStore
from inspector.state.journal import SHADOW_COLUMNS, Journal
from inspector.state.journal_reader import JournalReader
from inspector.state.labels import LabelOptions, write_labels
from inspector.tools.compare import CompareOptions, run_compare

PRODUCTION_T, SHADOW_T = 100.0, 80.0  # the mean-pixel scores: good parts ~84, defects ~116 (see the video)
JOURNALED = "seq, part_id, frame, verdict, scores, thresholds, model_id"


def candidate(path: Path, threshold: float | None = SHADOW_T, size: int = 32) -> Path:
    """A mean-pixel model with its own threshold and model_id (the manifest says which model it is)."""
    make_mean_model(path, size=size, threshold=threshold)
    manifest = path.with_suffix(".json")
    data = json.loads(manifest.read_text())
    data["model_id"] = "candidate-" + data["model_id"]
    manifest.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shadow")
    video = write_conveyor_video(root / "line.avi", n_parts=12)
    return {"root": root, "video": video.video, "toml": video.video.with_suffix(".toml"),
            "production": make_mean_model(root / "production" / "model.onnx", threshold=PRODUCTION_T),
            "candidate": candidate(root / "candidate" / "model.onnx")}


def inspector(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(inspector_cmd(*args), cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


def replay(line: dict[str, Path], state: Path, *extra: str, config: Path | None = None
           ) -> subprocess.CompletedProcess[str]:
    done = inspector("replay", str(line["video"]), "--model", str(line["production"]), "--config",
                     str(config or line["toml"]), "--state", str(state), *extra)
    assert done.returncode == 0, done.stderr
    return done


def journal_rows(state: Path, columns: str = "*") -> list[dict[str, Any]]:
    conn = sqlite3.connect(state / "journal.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT {columns} FROM verdicts ORDER BY seq")]
    finally:
        conn.close()


# --- the production verdict is untouched ----------------------------------------------------------------------
@pytest.mark.slow
def test_shadow_on_leaves_production_verdicts_bit_for_bit_and_journals_every_shadow_verdict(
        line: dict[str, Path], tmp_path: Path) -> None:
    replay(line, tmp_path / "plain")
    replay(line, tmp_path / "shadow", "--shadow", str(line["candidate"]))
    plain, shadow = journal_rows(tmp_path / "plain"), journal_rows(tmp_path / "shadow")
    assert len(plain) == 12
    for a, b in zip(plain, shadow, strict=True):  # part ids hold the run id: everything else exactly equal
        assert {k: a[k] for k in JOURNALED.split(", ") if k != "part_id"} == \
               {k: b[k] for k in JOURNALED.split(", ") if k != "part_id"}
        ha, hb = json.loads(a["header_json"]), json.loads(b["header_json"])
        assert [(r["score"], r["threshold"], r["verdict"]) for r in ha["rois"]] == \
               [(r["score"], r["threshold"], r["verdict"]) for r in hb["rois"]]
        assert a["shadow_verdict"] is None and a["shadow_model_id"] is None
    production_id = shadow[0]["model_id"]
    assert {r["verdict"] for r in shadow} == {"pass", "fail"}
    for r in shadow:  # every part has its shadow verdict; same crops, same mean-pixel graph: same scores
        assert r["shadow_model_id"] == "candidate-" + production_id and r["shadow_error"] is None
        assert json.loads(r["shadow_scores"]) == json.loads(r["scores"])
        assert json.loads(r["shadow_thresholds"]) == {"center": SHADOW_T}
        assert r["shadow_verdict"] == "fail"  # every part's mean pixel is above 80
        stored = json.loads(r["images"])
        assert set(stored) == {"center/input", "center/reconstruction", "center/heatmap"}  # disputed or failed
    # without a shadow a passed part keeps no heat map (at most a sampled input crop: [state] store_passed_every)
    assert all("center/heatmap" not in json.loads(r["images"]) for r in plain if r["verdict"] == "pass")

    out, report = tmp_path / "compare", tmp_path / "compare.json"
    done = inspector("compare", "--journal", str(tmp_path / "shadow" / "journal.db"), "--out", str(out),
                     "--json", str(report))
    assert done.returncode == 0, done.stderr
    passed = sum(r["verdict"] == "pass" for r in shadow)
    data = json.loads(report.read_text())
    table = data["agreement"]["table"]
    assert (table["pass"]["fail"], table["fail"]["fail"], table["pass"]["pass"], table["fail"]["pass"]) == \
           (passed, 12 - passed, 0, 0)
    assert data["agreement"]["agree"] == 12 - passed and data["agreement"]["decided"] == 12
    assert [d["sequence"] for d in data["disagreements"]] == [r["seq"] for r in shadow if r["verdict"] == "pass"]
    assert data["scores"]["shadow"]["above_threshold"] == 1.0
    assert data["scores"]["production"]["above_threshold"] == round((12 - passed) / 12, 6)
    assert sorted(p.name for p in out.glob("*.png") if p.name != "scores.png") == sorted(
        f"{r['seq']}_center_{k}.png" for r in shadow if r["verdict"] == "pass"
        for k in ("input", "reconstruction", "heatmap"))
    assert len((out / "index.csv").read_text().splitlines()) == 1 + passed
    assert f"agreement {(12 - passed) / 12:.4f}: {12 - passed} of 12" in done.stdout


# --- the shadow topic: to a subscriber in another process, never to the gateway ----------------------------
@pytest.mark.slow
def test_the_shadow_topic_reaches_a_subscriber_and_the_gateway_never_takes_it(
        line: dict[str, Path], tmp_path: Path) -> None:
    endpoint = free_endpoint()
    config = tmp_path / "line.toml"  # two subscribers (this test's and the gateway's) before the first result
    config.write_text(line["toml"].read_text() + "\n[publish]\nwait_subscribers = 2\nwait_subscribers_s = 30\n")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"shadow")  # before `result`: applied by the time the station counts us
    sub.setsockopt(zmq.SUBSCRIBE, b"result")
    sub.setsockopt(zmq.SUBSCRIBE, b"status")
    sub.connect(endpoint)
    store = Store(tmp_path / "gateway")
    hub = new_hub(store)
    feed = Feed(FeedOptions(endpoint, ""), store, hub, ctx)
    topics_at_gateway: list[bytes] = []
    handle = feed._handle
    feed._handle = lambda messages: (topics_at_gateway.extend(m[0] for m in messages), handle(messages))[1]  # type: ignore[method-assign]
    received: list[tuple[bytes, dict[str, Any]]] = []

    def receive() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not sub.poll(500):
                continue
            topic, raw, *_ = sub.recv_multipart()
            header = json.loads(raw)
            received.append((topic, header))
            if topic == b"status" and header.get("final"):
                return

    async def run() -> subprocess.CompletedProcess[str]:
        feed.start(asyncio.get_running_loop())
        listener = threading.Thread(target=receive)
        listener.start()
        done = await asyncio.to_thread(inspector, "replay", str(line["video"]), "--model", str(line["production"]),
                                       "--config", str(config), "--publish", endpoint,
                                       "--shadow", str(line["candidate"]))
        await asyncio.to_thread(listener.join, 30)
        for _ in range(100):
            if hub.last_sequence >= 12:
                break
            await asyncio.sleep(0.05)
        await asyncio.to_thread(feed.stop)
        return done

    done = asyncio.run(run())
    assert done.returncode == 0, done.stderr
    results = [h for t, h in received if t == b"result"]
    shadows = [h for t, h in received if t == b"shadow"]
    assert len(results) == 12 and [h["sequence"] for h in shadows] == [h["sequence"] for h in results]
    for r, s in zip(results, shadows, strict=True):
        assert s["type"] == "shadow" and s["part_id"] == r["part_id"] and s["model_id"].startswith("candidate-")
        assert s["production"] == {"model_id": r["model_id"], "verdict": r["verdict"]}
        assert [x["score"] for x in s["rois"]] == [x["score"] for x in r["rois"]]
        assert [(x["threshold"], x["verdict"]) for x in s["rois"]] == [(SHADOW_T, "fail")]
        assert s["verdict"] == "fail" and s["agrees"] == (r["verdict"] == "fail")
        assert "shadow" not in r  # the result header (the PLC's) says nothing of the shadow
    # the gateway: every result once, and not one shadow message even reached its socket
    assert b"result" in topics_at_gateway and b"shadow" not in topics_at_gateway
    assert [h["sequence"] for h in store.search()] == list(range(12, 0, -1)) and feed.stats.bad == 0
    store.close()
    sub.close(0)
    ctx.term()


# --- failures --------------------------------------------------------------------------------------------
class RecordingEngine(FakeEngine):
    """FakeEngine that keeps the arrays it was given (to check both engines scored the same one)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs: list[np.ndarray] = []

    def infer(self, images: np.ndarray) -> Any:
        self.inputs.append(images)
        return super().infer(images)


class NanEngine(RecordingEngine):
    def infer(self, images: np.ndarray) -> Any:
        r = super().infer(images)
        r.scores[:] = np.nan
        return r


def parts(n: int = 5) -> list[Part]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        rois = [Roi("a", 0, 0, 32, 32), Roi("b", 32, 0, 32, 32)]
        crops = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in rois]
        out.append(Part(f"p{i}", Frame(i, np.zeros((32, 64, 3), np.uint8), 0.0, 0.0), "continuous", rois, crops))
    out[2].crops, out[2].error = [], "crop failed: outside the frame"
    return out


def loaded(engine: FakeEngine, model_id: str, threshold: float) -> LoadedModel:
    return LoadedModel(engine, model_id, {"a": threshold, "b": threshold}, Path("x.onnx"), engine.manifest)  # type: ignore[arg-type]


def test_a_failing_shadow_engine_never_changes_the_production_verdict() -> None:
    batch = parts()
    alone = score_and_decide(ModelSet(loaded(RecordingEngine(max_batch=4), "prod", 128.0)), batch)
    for shadow_engine, why in ((RecordingEngine(max_batch=3, fail=True), "shadow engine failed: RuntimeError: CUDA"),
                               (NanEngine(max_batch=8), "engine returned a non-finite score")):
        production = RecordingEngine(max_batch=4)
        both = score_and_decide(ModelSet(loaded(production, "prod", 128.0), loaded(shadow_engine, "cand", 1.0)), batch)
        for a, b in zip(alone, both, strict=True):
            assert (a.verdict, a.error, a.model_id) == (b.verdict, b.error, b.model_id)
            assert [(r.score, r.threshold, r.verdict) for r in a.rois] == [(r.score, r.threshold, r.verdict) for r in b.rois]
            assert a.shadow is None and b.shadow is not None and b.shadow.model_id == "cand"
        assert [r.shadow.verdict for r in both] == ["error"] * 5  # type: ignore[union-attr]
        assert both[0].shadow.error.startswith(why) and both[2].shadow.error == "crop failed: outside the frame"  # type: ignore[union-attr]
        assert both[0].shadow.scores == {"a": None, "b": None}  # type: ignore[union-attr]
        # one stacked array, scored by both: the shadow's calls are views of the production's input
        stacked = production.inputs[0].base if production.inputs[0].base is not None else production.inputs[0]
        assert all(np.shares_memory(x, stacked) for x in shadow_engine.inputs + production.inputs)


def test_a_working_shadow_decides_against_its_own_threshold() -> None:
    production, shadow = RecordingEngine(), RecordingEngine()
    results = score_and_decide(ModelSet(loaded(production, "prod", 1000.0), loaded(shadow, "cand", 1.0)), parts())
    for r in results:
        assert r.shadow is not None and r.shadow.thresholds == {"a": 1.0, "b": 1.0}
        if r.error is None:
            assert r.verdict == "pass" and r.shadow.verdict == "fail"
            assert r.shadow.scores == {x.name: x.score for x in r.rois}


def test_an_incompatible_or_broken_shadow_model_is_a_one_line_error(line: dict[str, Path], tmp_path: Path) -> None:
    corrupt = candidate(tmp_path / "corrupt" / "model.onnx")
    corrupt.write_bytes(b"not an onnx file")
    cases = {
        candidate(tmp_path / "big" / "model.onnx", size=48): "takes 48×48×3 crops but the production model takes 32×32×3",
        candidate(tmp_path / "blind" / "model.onnx", threshold=None): "has no threshold in its manifest",
        tmp_path / "missing.onnx": "does not exist",
        corrupt: "sha256",
    }
    cfg0 = load_config(line["toml"])
    production = open_engine(cfg0.engine, line["production"])
    try:
        for path, why in cases.items():
            cfg = load_config(line["toml"], {"shadow": {"model": str(path)}})
            with pytest.raises(InspectorError) as err:
                load_shadow(cfg, production)
            message = str(err.value)
            assert message.startswith("[shadow] model: ") and why in message and "\n" not in message, message
            assert "remove `model` from [shadow]" in message
        assert load_shadow(cfg0, production) is None
    finally:
        production.close()
    big = tmp_path / "big" / "model.onnx"
    done = inspector("replay", str(line["video"]), "--model", str(line["production"]), "--config", str(line["toml"]),
                     "--shadow", str(big))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "[shadow] model: " in done.stderr and not done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(line["toml"].read_text() + f'\n[shadow]\nmodel = "{tmp_path / "missing.onnx"}"\n')
    done = inspector("check-config", str(bad))
    assert done.returncode == 2 and "[shadow] model" in done.stderr and "does not exist" in done.stderr


# --- compare ---------------------------------------------------------------------------------------------
def header(seq: int, verdict: str, score: float, model: str = "prod-1") -> dict[str, Any]:
    return {"sequence": seq, "part_id": f"part-{seq}", "frame": seq, "station_id": "s", "verdict": verdict,
            "model_id": model, "rois": [{"name": "center", "score": score, "threshold": 10.0,
                                         "verdict": verdict if verdict != "error" else "error"}]}


def shadow(seq: int, verdict: str, score: float | None, model: str = "cand-1") -> dict[str, Any]:
    return {"type": "shadow", "sequence": seq, "model_id": model, "verdict": verdict,
            "error": "shadow engine failed: boom" if verdict == "error" else None,
            "rois": [{"name": "center", "score": score, "threshold": 20.0, "verdict": verdict}]}


# (production verdict, score, shadow verdict, score): pp 4, pf 2, fp 1, ff 3, one shadow error, one without
KNOWN = [("pass", 5, "pass", 15), ("pass", 6, "pass", 16), ("pass", 7, "fail", 25), ("fail", 12, "fail", 30),
         ("pass", 8, "pass", 17), ("fail", 11, "pass", 19), ("pass", 9, "fail", 21), ("fail", 13, "fail", 22),
         ("pass", 4, "error", None), ("fail", 14, "fail", 40), ("pass", 3, "pass", 14), ("pass", 2, None, None)]


def known_journal(root: Path) -> Path:
    """12 journaled parts of the KNOWN table, the last without shadow; the images of part 3 (a disagreement)."""
    store = ImageStore(root / "images", 10**6, fsync=False)
    names = store.save_part(3, {("center", "input"): ("png", b"\x89PNG-3-input"),
                                ("center", "heatmap"): ("png", b"\x89PNG-3-heatmap")})
    journal = Journal(root / "journal.db", synchronous="NORMAL")
    journal.append_many([(header(i, p, ps), names if i == 3 else {}, None, shadow(i, s, ss) if s else None)
                         for i, (p, ps, s, ss) in enumerate(KNOWN, start=1)])
    journal.close()
    return root / "journal.db"


def test_compare_on_a_known_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = known_journal(tmp_path)
    write_labels(LabelOptions(journal, ("3", "6", "7"), "good"))  # 3, 7: production right; 6: shadow right
    write_labels(LabelOptions(journal, ("4",), "dent"))           # both right
    out, report = tmp_path / "cmp", tmp_path / "cmp.json"
    assert main(["compare", "--journal", str(journal), "--out", str(out), "--json", str(report)]) == 0
    text = capsys.readouterr().out
    data = json.loads(report.read_text())
    a = data["agreement"]
    assert a["table"]["pass"] == {"pass": 4, "fail": 2, "error": 1} and a["table"]["fail"] == {"pass": 1, "fail": 3, "error": 0}
    assert (a["agree"], a["decided"], a["disagree"], a["fraction"]) == (7, 10, 3, 0.7)
    assert a["errors"] == {"production": 0, "shadow": 1} and data["parts"] == 11
    assert data["shadow_errors"] == [["shadow engine failed: boom", 1]]
    assert [(d["sequence"], d["production"]["verdict"], d["shadow"]["verdict"], d["right"])
            for d in data["disagreements"]] == [(3, "pass", "fail", "production"), (6, "fail", "pass", "shadow"),
                                                (7, "pass", "fail", "production")]
    assert data["disagreements"][0]["shadow"]["scores"] == {"center": 25} and data["disagreements"][0]["files"] == [
        "3_center_input.png", "3_center_heatmap.png"]
    assert data["labels"] == {"labelled": 4, "both_right": 1, "production_only": 2, "shadow_only": 1, "neither": 0,
                              "production_accuracy": 0.75, "shadow_accuracy": 0.5}
    p, s = data["scores"]["production"], data["scores"]["shadow"]
    assert (p["count"], p["max"], p["p50"], p["above_threshold"], p["thresholds"]) == (11, 14.0, 8.0, round(4 / 11, 6), [10.0])
    assert (s["count"], s["max"], s["above_threshold"], s["thresholds"]) == (10, 40.0, 0.5, [20.0])
    assert sum(b["count"] for b in data["histograms"]["shadow"]) == 10
    assert (out / "3_center_input.png").read_bytes() == b"\x89PNG-3-input"
    assert len((out / "index.csv").read_text().splitlines()) == 4
    assert "agreement 0.7000: 7 of 10 part(s) decided by both; 3 disagree" in text
    assert "production pass              4           2" in text and "production fail              1           3" in text
    assert "both right 1, production only 2, shadow only 1, neither 0" in text

    assert main(["compare", "--journal", str(journal), "--since", "5", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert (data["parts"], data["first_sequence"], data["agreement"]["agree"]) == (6, 6, 3)  # 8, 10, 11


def test_compare_reports_the_newest_model_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    journal.append_many([(header(i, "pass", 1.0, "old"), {}, None, shadow(i, "fail", 30.0)) for i in (1, 2, 3)]
                        + [(header(i, "pass", 1.0, "new"), {}, None, shadow(i, "pass", 3.0)) for i in (4, 5)])
    journal.close()
    assert run_compare(CompareOptions(tmp_path / "journal.db", tmp_path / "images")) == 0
    text = capsys.readouterr().out
    assert "2 part(s) with a shadow verdict, sequences 4..5" in text and "agreement 1.0000" in text
    assert "not compared: 3 part(s) of production old vs shadow cand-1, sequences 1..3" in text


def test_compare_without_shadow_results_says_how_to_get_them(tmp_path: Path) -> None:
    journal = known_journal(tmp_path)
    for args, since in ((["--since", "11"], 11), ([], None)):
        if since is None:  # a journal with no shadow at all
            (tmp_path / "journal.db").unlink()
            plain = Journal(tmp_path / "journal.db", synchronous="NORMAL")
            plain.append_many([(header(1, "pass", 1.0), {}, None)])
            plain.close()
        done = inspector("compare", "--journal", str(journal), *args)
        assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
        assert done.stderr.strip().count("\n") == 0
        assert f"no shadow results since sequence {since or 0}" in done.stderr
        assert "set [shadow] model = " in done.stderr and "and run" in done.stderr
    done = inspector("compare", "--journal", str(tmp_path / "nothing.db"))
    assert done.returncode == 2 and "no journal at" in done.stderr


# --- journal migration -----------------------------------------------------------------------------------
OLD_SCHEMA = """
CREATE TABLE verdicts (seq INTEGER PRIMARY KEY, part_id TEXT, frame INTEGER, station TEXT,
    verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'fail', 'error')), scores TEXT NOT NULL,
    thresholds TEXT NOT NULL, capture_ts REAL, publish_ts REAL, model_id TEXT, header_json TEXT NOT NULL,
    images TEXT NOT NULL, journal_ts REAL NOT NULL);
CREATE TABLE starts (start_id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, pid INTEGER NOT NULL,
    model_id TEXT, last_seq INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('last_seq', 2);
INSERT INTO verdicts VALUES (1, 'a', 1, 's', 'pass', '{"center": 1.0}', '{"center": 10.0}', 0, 0, 'prod-1',
    '{"sequence": 1}', '{}', 0);
INSERT INTO verdicts VALUES (2, 'b', 2, 's', 'fail', '{"center": 11.0}', '{"center": 10.0}', 0, 0, 'prod-1',
    '{"sequence": 2}', '{}', 0);
"""


def test_an_old_journal_file_gets_the_shadow_columns(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    conn.close()
    assert inspector("compare", "--journal", str(path)).returncode == 2  # read-only: no columns, no shadow
    for _ in range(2):  # the second open finds the columns there: nothing to add
        journal = Journal(path, synchronous="NORMAL")
        assert journal.last_seq() == 2 + (_ > 0)
        if _ == 0:
            journal.append_many([(header(3, "pass", 2.0), {}, None, shadow(3, "fail", 25.0))])
        journal.close()
    rows = {r["seq"]: r for r in journal_rows(tmp_path)}
    assert all(rows[s][c] is None for s in (1, 2) for c in SHADOW_COLUMNS)
    assert (rows[3]["shadow_model_id"], rows[3]["shadow_verdict"], json.loads(rows[3]["shadow_scores"]),
            json.loads(rows[3]["shadow_thresholds"])) == ("cand-1", "fail", {"center": 25.0}, {"center": 20.0})
    reader = JournalReader(path)  # backfill and history read the same rows as before
    assert [r["seq"] for r in reader.since(0)] == [1, 2, 3]
    reader.close()
    done = inspector("compare", "--journal", str(path))
    assert done.returncode == 0 and "1 part(s) with a shadow verdict" in done.stdout

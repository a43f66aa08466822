"""Batching by size and by timeout; scoring failures give every part an error; per-ROI decisions.

Real queues and threads; the engine is an in-process fake or the tiny real ONNX model.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_inspector_support import FakeEngine, make_mean_model

from inspector.config import DecisionConfig, EngineConfig
from inspector.errors import InspectorError
from inspector.records import Frame, Part, Roi
from inspector.stages.batcher import END, Batcher
from inspector.stages.decide import decide, resolve_thresholds
from inspector.stages.scoring import Scored, engine_cpu_threads, open_engine, score_batch


def test_batch_fills_to_max_size_without_waiting() -> None:
    q: queue.Queue = queue.Queue()
    for i in range(10):
        q.put(i)
    b: Batcher[int] = Batcher(q, max_size=4, max_wait_s=5.0)
    t0 = time.monotonic()
    assert b.next_batch() == [0, 1, 2, 3]
    assert b.next_batch() == [4, 5, 6, 7]
    assert time.monotonic() - t0 < 0.5  # full batches never wait for max_wait


def test_batch_is_sent_after_max_wait_when_load_is_low() -> None:
    q: queue.Queue = queue.Queue()
    b: Batcher[int] = Batcher(q, max_size=8, max_wait_s=0.15)

    def producer() -> None:
        q.put(1)
        time.sleep(0.05)
        q.put(2)
        time.sleep(1.2)  # the third arrives long after the deadline: next batch
        q.put(3)
        q.put(END)

    threading.Thread(target=producer).start()
    t0 = time.monotonic()
    first = b.next_batch()
    waited = time.monotonic() - t0
    assert first == [1, 2]
    assert 0.12 < waited < 0.9  # max_wait after the first item; not waiting for the third
    assert b.next_batch() == [3]
    assert b.next_batch() == []  # ended
    assert b.ended


def test_end_flushes_a_partial_batch_at_once_and_sizes_count_crops() -> None:
    q: queue.Queue = queue.Queue()
    for item in ["a" * 3, "b" * 3, "c" * 2]:  # parts with 3, 3 and 2 crops
        q.put(item)
    q.put(END)
    b: Batcher[str] = Batcher(q, max_size=7, max_wait_s=10.0, size=len)
    t0 = time.monotonic()
    assert b.next_batch() == ["aaa", "bbb"]  # "cc" would make 8 > 7: held for the next batch
    assert b.next_batch() == ["cc"]
    assert b.next_batch() == []
    assert time.monotonic() - t0 < 1.0


def part(rois: list[str], value: int = 10, size: int = 32) -> Part:
    f = Frame(7, np.zeros((size, size * 3, 3), np.uint8), time.monotonic(), time.time())
    return Part("p", f, "continuous", [Roi(n, 0, 0, size, size) for n in rois],
                crops=[np.full((size, size, 3), value + 40 * i, np.uint8) for i in range(len(rois))])


def test_per_roi_thresholds_and_any_roi_fails_the_part() -> None:
    cfg = DecisionConfig(threshold=50.0, roi_thresholds={"left": 5.0})
    th = resolve_thresholds(["left", "right"], cfg, manifest_threshold=1000.0)
    assert th == {"left": 5.0, "right": 50.0}  # per ROI > decision.threshold > manifest
    assert resolve_thresholds(["a"], DecisionConfig(), manifest_threshold=3.0) == {"a": 3.0}
    with pytest.raises(InspectorError, match="no threshold for ROI 'a'"):
        resolve_thresholds(["a"], DecisionConfig(), manifest_threshold=None)

    engine = FakeEngine()
    (s,) = score_batch(engine, [part(["left", "right"], value=10)])  # scores 10 and 50
    r = decide(s, th, "m")
    assert [(x.name, x.score, x.verdict) for x in r.rois] == [("left", 10.0, "fail"), ("right", 50.0, "pass")]
    assert r.verdict == "fail"
    r = decide(s, {"left": 10.0, "right": 50.0}, "m")  # equal to the threshold passes: fail is score > threshold
    assert r.verdict == "pass"


def test_engine_failure_gives_every_part_of_the_batch_an_error_verdict() -> None:
    parts = [part(["a"]), part(["a", "b"]), part(["a"])]
    results = [decide(s, {"a": 1.0, "b": 1.0}, "m") for s in score_batch(FakeEngine(fail=True), parts)]
    assert [r.verdict for r in results] == ["error"] * 3
    assert all("illegal memory access" in (r.error or "") for r in results)
    assert all(x.score is None and x.verdict == "error" for r in results for x in r.rois)

    broken = part(["a"])
    broken.crops, broken.error = [], "crop failed: roi outside frame"
    ok, bad = (decide(s, {"a": 1000.0}, "m") for s in score_batch(FakeEngine(), [part(["a"]), broken]))
    assert (ok.verdict, bad.verdict, bad.error) == ("pass", "error", "crop failed: roi outside frame")

    nan = Scored(part(["a"]), scores=np.array([math.nan], np.float32))
    assert decide(nan, {"a": 1.0}, "m").verdict == "error"


def test_scoring_splits_batches_larger_than_the_engine_max_batch() -> None:
    engine = FakeEngine(max_batch=2)
    scored = score_batch(engine, [part(["a", "b", "c"]), part(["a", "b"])])
    assert engine.calls == [2, 2, 1]
    assert [len(s.scores) for s in scored] == [3, 2]  # type: ignore[arg-type]


def test_real_onnx_model_through_engines_load_engine(tmp_path: Path) -> None:
    model = make_mean_model(tmp_path / "model.onnx", size=32)
    engine = open_engine(EngineConfig(path=model, backend="onnxruntime", max_batch=4))
    try:
        scored = score_batch(engine, [part(["a", "b"], value=100)])
        assert np.allclose(scored[0].scores, [100.0, 140.0])  # type: ignore[arg-type]
        assert scored[0].reconstructions.shape == (2, 32, 32, 3)  # type: ignore[union-attr]
    finally:
        engine.close()
    with pytest.raises(InspectorError, match="does not exist"):
        open_engine(EngineConfig(path=tmp_path / "missing.onnx"))


def test_engine_cpu_threads_reach_onnx_runtime(tmp_path: Path) -> None:
    model = make_mean_model(tmp_path / "model.onnx", size=32)
    for threads, shards in ((1, 1), (3, 3)):
        engine = open_engine(EngineConfig(path=model, backend="onnxruntime", max_batch=8, cpu_threads=threads))
        try:
            assert (engine.threads, engine.shards) == (threads, shards)  # type: ignore[attr-defined]
            scored = score_batch(engine, [part(["a", "b", "c", "d", "e", "f"], value=10)])  # sharded at 3 threads
            assert np.allclose(scored[0].scores, [10.0, 50.0, 90.0, 130.0, 170.0, 210.0])  # type: ignore[arg-type]
        finally:
            engine.close()


def test_engine_threads_default_to_all_cores_but_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The camera, trigger and image encoding keep a core: the daemon's engine gets the others (at least 1);
    ENGINES_ORT_THREADS and [engine] cpu_threads override."""
    monkeypatch.delenv("ENGINES_ORT_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    assert engine_cpu_threads(EngineConfig()) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    assert engine_cpu_threads(EngineConfig()) == 1
    assert engine_cpu_threads(EngineConfig(cpu_threads=2)) == 2
    monkeypatch.setenv("ENGINES_ORT_THREADS", "2")
    model = make_mean_model(tmp_path / "model.onnx", size=32)
    engine = open_engine(EngineConfig(path=model, backend="onnxruntime", max_batch=8))
    try:
        assert engine.threads == 2  # type: ignore[attr-defined]
    finally:
        engine.close()

"""The drift watch (inspector/drift.py) and its reference, the manifest's normal_scores.

Synthetic score streams against a reference (no model): normal scores stay "ok", a shifted line warns
(once), a burst of real defects over a normal bulk does not; the manifest with and without normal_scores;
`trainer fit` -> `trainer export` carrying the held-out scores into the manifest, equal to what the exported
graph gives those images; `inspector replay --publish` in another process whose status topic carries the
drift object, with the [drift] section read from the TOML file.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs
from test_inspector_support import REPO, inspector_cmd, make_mean_model, subprocess_env, write_conveyor_video
from test_reliability_support import Subscriber

from common.manifest import Manifest, io_specs, read_manifest, reference_scores, write_manifest
from inspector.config import load_config
from inspector.drift import DriftWatch, Reference, ks_statistic, robust_spread
from inspector.errors import InspectorError

MODEL = "m-1"
THRESHOLD = 3.0      # mean + 3 sd of the N(0, 1) reference, as the trainer sets it


def settings(**kw: Any) -> SimpleNamespace:
    return SimpleNamespace(**{"enabled": True, "window": 200, "min_parts": 50, "warn_shift": 1.0, "max_fail_rate": 0.0,
                              **kw})


def reference(n: int = 40, seed: int = 0) -> SimpleNamespace:
    """A manifest stand-in: n held-out normal scores ~ N(0, 1), the size of a shipped model's reference."""
    return SimpleNamespace(normal_scores=reference_scores(np.random.default_rng(seed).normal(0, 1, n)))


def header(*scores: float | None, model_id: str = MODEL, verdict: str | None = None,
           threshold: float = THRESHOLD) -> dict[str, Any]:
    """A result header as the publisher's hooks see it (docs/protocol.md), one ROI per score."""
    rois = [{"name": f"r{i}", "score": s, "threshold": threshold,
             "verdict": "error" if s is None else "fail" if s > threshold else "pass"} for i, s in enumerate(scores)]
    if verdict is None:
        verdict = "fail" if any(r["verdict"] == "fail" for r in rois) else "pass"
    return {"model_id": model_id, "verdict": verdict, "rois": rois}


def watch_of(scores: np.ndarray, ref: Any = None, **kw: Any) -> DriftWatch:
    watch = DriftWatch(settings(**kw), MODEL, reference() if ref is None else ref)
    for s in scores:
        watch.observe(header(float(s)))
    return watch


# --- the statistics -----------------------------------------------------------------------------------
def test_ks_statistic_and_robust_spread_match_their_definitions() -> None:
    rng = np.random.default_rng(1)
    a, b = np.sort(rng.normal(0, 1, 150)), np.sort(rng.normal(0.5, 1, 90))
    grid = np.concatenate([a, b])
    brute = max(abs(np.mean(a <= x) - np.mean(b <= x)) for x in grid)
    assert ks_statistic(a, b) == pytest.approx(brute) and 0.1 < brute < 0.4
    assert ks_statistic(a, a) == 0.0
    assert robust_spread(np.sort(rng.normal(5, 2, 20_000))) == pytest.approx(2, rel=0.03)
    assert robust_spread(np.array([1.0] * 7 + [2.0])) > 0          # IQR 0: falls back, never divides by 0
    ref = Reference.of([0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert ref is not None and ref.exceedance(7) == 0.2 and ref.exceedance(-1) == 1.0 and ref.exceedance(9) == 0
    assert Reference.of([1.0] * 7) is None                        # too few scores for a reference


# --- synthetic score streams ---------------------------------------------------------------------------
def test_scores_from_the_reference_distribution_stay_ok() -> None:
    for seed in range(5):
        st = watch_of(np.random.default_rng(100 + seed).normal(0, 1, 200)).status()
        assert st["state"] == "ok", st
        assert abs(st["median_shift"]) < 0.6 and st["window_n"] == 200 and st["reference_n"] == 40
        assert st["fail_rate_recent"] <= 0.02 and "match the model's held-out good parts" in st["reason"]


def test_a_shifted_line_warns_once_with_a_reason_and_clears_with_hysteresis() -> None:
    rng = np.random.default_rng(2)
    watch = watch_of(rng.normal(0, 1, 200))
    assert watch.status()["state"] == "ok"
    with capture_logs() as logs:
        for s in rng.normal(2.4, 1, 200):
            watch.observe(header(float(s)))
        first, again = watch.status(), watch.status()
    assert first["state"] == again["state"] == "warning" and watch.warnings == 1
    assert first["median_shift"] == pytest.approx(2.4, abs=0.6)
    assert first["reason"].startswith("scores of good-looking parts have moved up by ")
    assert "False rejects will climb" in first["reason"] and "retrain" in first["reason"]
    assert first["fail_rate_recent"] > first["fail_rate_expected"]
    warned = [e for e in logs if e["log_level"] == "warning"]
    assert len(warned) == 1 and warned[0]["event"].startswith("drift warning: scores have moved")
    assert warned[0]["median_shift"] == first["median_shift"] and warned[0]["cause"] == first["cause"] == "shift"
    ref = watch.reference
    assert ref is not None
    between = ref.median + 0.87 * ref.spread + np.linspace(-0.5, 0.5, 200)   # median shift exactly 0.87
    for s in between:                          # between 0.75 and 1 spreads: still warning (no flapping) ...
        watch.observe(header(float(s)))
    assert (watch.status()["median_shift"], watch.status()["state"]) == (0.87, "warning")
    assert watch_of(between).status()["state"] == "ok"    # ... where a watch that was ok stays ok
    for s in between - 0.87 * ref.spread:      # back to normal: ok again, one info line, no new warning
        watch.observe(header(float(s)))
    with capture_logs() as logs:
        assert watch.status()["state"] == "ok"
    assert [e["log_level"] for e in logs] == ["info"] and watch.warnings == 1


def test_a_downward_shift_warns_that_defects_may_pass() -> None:
    st = watch_of(np.random.default_rng(3).normal(-2, 1, 200)).status()
    assert st["state"] == "warning" and "moved down" in st["reason"] and "may now pass defects" in st["reason"]


@pytest.mark.parametrize("share", [0.2, 0.4])
def test_a_burst_of_real_defects_over_a_normal_bulk_is_not_drift(share: float) -> None:
    rng = np.random.default_rng(4)
    n_bad = int(200 * share)
    scores = np.concatenate([rng.normal(0, 1, 200 - n_bad), rng.uniform(8, 40, n_bad)])
    rng.shuffle(scores)
    st = watch_of(scores).status()
    assert st["state"] == "ok", st
    assert abs(st["median_shift"]) < 0.6 and st["set_aside"] >= n_bad - 5
    assert st["fail_rate_recent"] == pytest.approx(share, abs=0.03) and st["ks"] >= share - 0.05
    assert "the bulk of the scores has not moved" in st["reason"] and st["cause"] is None
    # the same line whose good parts also moved: the set-aside defects do not hide it
    drifted = np.where(scores < 8, scores + 2, scores)
    assert watch_of(drifted).status()["state"] == "warning"


def test_max_fail_rate_warns_about_rejects_the_bulk_does_not_show() -> None:
    """Good parts of which a group scores like defects (the still-image model on the line's video): the bulk
    stays put, so only the opt-in reject limit warns; without it the reason still says what it sees."""
    rng = np.random.default_rng(10)
    scores = np.concatenate([rng.normal(0, 1, 160), rng.uniform(10, 17, 40)])
    rng.shuffle(scores)
    plain = watch_of(scores).status()
    assert plain["state"] == "ok" and plain["cause"] is None and plain["fail_rate_recent"] == 0.2
    assert "20 % of the last 200 parts fail" in plain["reason"] and "group of good parts" in plain["reason"]
    with capture_logs() as logs:
        limited = watch_of(scores, max_fail_rate=0.1).status()
    assert limited["state"] == "warning" and limited["cause"] == "rejects" and abs(limited["median_shift"]) < 0.6
    assert "above the 10 % limit ([drift] max_fail_rate)" in limited["reason"]
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "drift warning: more parts fail than [drift] max_fail_rate allows"]
    assert watch_of(scores, max_fail_rate=0.25).status()["state"] == "ok"


def test_unknown_without_a_reference_or_before_min_parts() -> None:
    st = watch_of(np.zeros(300), ref=SimpleNamespace(normal_scores=[])).status()
    assert st["state"] == "unknown" and "no held-out normal scores" in st["reason"] and st["reference_n"] == 0
    st = watch_of(np.zeros(300), ref=object()).status()           # a manifest without the field at all
    assert st["state"] == "unknown" and st["median_shift"] is None
    st = watch_of(np.random.default_rng(5).normal(0, 1, 49)).status()
    assert st["state"] == "unknown" and st["reason"].startswith("collecting: 49 of the 50 parts")
    off = DriftWatch(settings(enabled=False), MODEL, reference())
    off.observe(header(1.0))
    assert off.status() == {"state": "off", "reason": "drift watch off ([drift] enabled = false)"}


def test_errors_are_skipped_and_every_roi_counts_once_per_part() -> None:
    watch = DriftWatch(settings(min_parts=10, window=20), MODEL, reference())
    for _ in range(10):
        watch.observe(header(None, verdict="error"))
        watch.observe(header(None, 0.1))                  # one ROI without a score: the other counts
        watch.observe(header(0.2, 5.0))                   # two ROIs, one above its threshold: a failed part
    st = watch.status()
    assert st["window_n"] == 20 and st["fail_rate_recent"] == 0.5
    p = Reference.of(reference().normal_scores).exceedance(THRESHOLD)
    assert st["fail_rate_expected"] == pytest.approx((0.5 * p + 0.5 * (1 - (1 - p) ** 2)), abs=1e-4)
    for _ in range(30):                                   # the window keeps only the newest 20 parts
        watch.observe(header(0.0))
    assert watch.status()["window_n"] == 20 and watch.status()["fail_rate_recent"] == 0.0


def test_a_result_from_another_model_restarts_the_window_on_its_reference() -> None:
    asked: list[str] = []
    other = SimpleNamespace(normal_scores=reference_scores(np.random.default_rng(6).normal(10, 1, 30)))
    watch = DriftWatch(settings(min_parts=20), MODEL, reference(),
                       reference=lambda model_id: asked.append(model_id) or other)
    for s in np.random.default_rng(7).normal(0, 1, 100):
        watch.observe(header(float(s)))
    assert watch.status()["state"] == "ok"
    rng = np.random.default_rng(8)
    watch.observe(header(10.0, model_id="m-2", threshold=13.0))
    assert asked == ["m-2"] and watch.status()["window_n"] == 1 and watch.status()["reference_n"] == 30
    for s in rng.normal(10, 1, 50):
        watch.observe(header(float(s), model_id="m-2", threshold=13.0))
    st = watch.status()
    assert st["state"] == "ok" and st["model_id"] == "m-2" and st["window_n"] == 51
    watch.use_model("m-3", None)                          # the swap helper's call: no reference for it
    assert watch.status()["state"] == "unknown" and watch.status()["window_n"] == 0


def test_observe_and_status_from_two_threads() -> None:
    watch = DriftWatch(settings(window=500, min_parts=200), MODEL, reference())
    rng = np.random.default_rng(9)
    scores = rng.normal(0, 1, 20_000)
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            for s in scores:
                watch.observe(header(float(s)))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=publish)
    t.start()
    states = []
    while t.is_alive():
        states.append(watch.status()["state"])
    t.join()
    assert not errors and set(states) <= {"unknown", "ok"} and watch.status()["window_n"] == 500


# --- the reference: manifest and trainer ----------------------------------------------------------------
def _manifest(**kw: Any) -> Manifest:
    inputs, outputs = io_specs(32, 3)
    return Manifest(model_id="x-0123456789ab", variant="x", onnx_file="m.onnx", onnx_sha256="0" * 64,
                    inputs=inputs, outputs=outputs, image_size=32, channels=3, color_order="BGR", lambda_=0.1, **kw)


def test_manifest_round_trip_with_and_without_normal_scores(tmp_path: Path) -> None:
    scores = reference_scores([3.14159265, -1e-9, float("nan"), 2.0, 123456.789])
    assert scores == [-1e-9, 2.0, 3.14159, 123457.0]               # finite, sorted, 6 significant digits
    write_manifest(_manifest(normal_scores=scores), tmp_path / "a.onnx")
    assert read_manifest(tmp_path / "a.onnx").normal_scores == scores
    write_manifest(_manifest(), tmp_path / "b.onnx")
    assert read_manifest(tmp_path / "b.onnx").normal_scores == []
    old = json.loads((tmp_path / "b.json").read_text())
    del old["normal_scores"]                                       # a manifest written before the field
    (tmp_path / "c.json").write_text(json.dumps(old))
    assert read_manifest(tmp_path / "c.json").normal_scores == []
    old["normal_scores"] = ["high"]
    (tmp_path / "d.json").write_text(json.dumps(old))
    with pytest.raises(Exception, match="normal_scores"):
        read_manifest(tmp_path / "d.json")


def test_export_moves_the_held_out_scores_to_the_manifest(tmp_path: Path) -> None:
    from standin_detector import StandinDetector

    from trainer.export import export_detector

    det = StandinDetector()
    det.metrics = {"auroc": 0.9, "normal_scores": [0.3, 0.1, 0.2] * 4}
    m = export_detector(det, tmp_path / "m.onnx")
    assert m.normal_scores == sorted([0.3, 0.1, 0.2] * 4) and "normal_scores" not in m.metrics
    assert read_manifest(tmp_path / "m.onnx").normal_scores == m.normal_scores and det.metrics["auroc"] == 0.9
    assert export_detector(StandinDetector(), tmp_path / "n.onnx").normal_scores == []   # metrics without them


@pytest.mark.slow
def test_fit_then_export_ships_the_held_out_scores_the_graph_computes(tmp_path: Path) -> None:
    import onnxruntime as ort
    import torch

    from trainer.config import build_config
    from trainer.export import ExportOptions, run_export
    from trainer.fit import fit_arrays

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    images = np.stack([np.where((yy - 16) ** 2 + (xx - 16) ** 2 < rng.uniform(8, 11) ** 2, rng.uniform(150, 190), 30)
                       + rng.normal(0, 3, (32, 32)) for _ in range(100)]).clip(0, 255).astype(np.uint8)[..., None]
    cfg = build_config("ours-proj", {"image_size": 32, "channels": 1, "epochs": 1, "batch_size": 16, "device": "cpu"},
                       ["width=8", "max_width=32", "z_dim=16"])
    res = fit_arrays(images, cfg, out=tmp_path / "run", verbose=False, run_info={"data_dir": None})
    m = run_export(ExportOptions(tmp_path / "run", tmp_path / "m.onnx"))
    assert len(m.normal_scores) == len(res.val_indices) == 10 and m.normal_scores == sorted(m.normal_scores)
    held_out = images[np.asarray(res.val_indices)]
    onnx_scores = ort.InferenceSession(str(tmp_path / "m.onnx")).run(["score"], {"images": held_out})[0]
    np.testing.assert_allclose(m.normal_scores, np.sort(onnx_scores), rtol=2e-4, atol=1e-6)
    assert (m.threshold is not None and abs(m.threshold - (np.mean(onnx_scores) + 3 * np.std(onnx_scores, ddof=1)))
            < 1e-3 * max(1.0, abs(m.threshold)))


# --- configuration ------------------------------------------------------------------------------------
def test_drift_config_section(tmp_path: Path) -> None:
    assert load_config(None).drift.model_dump() == {"enabled": True, "window": 200, "min_parts": 50,
                                                   "warn_shift": 1.0, "max_fail_rate": 0.0}
    toml = tmp_path / "i.toml"
    toml.write_text("[drift]\nwindow = 40\nmin_parts = 10\nwarn_shift = 1.5\nmax_fail_rate = 0.1\n")
    assert load_config(toml).drift.model_dump() == {"enabled": True, "window": 40, "min_parts": 10, "warn_shift": 1.5,
                                                   "max_fail_rate": 0.1}
    toml.write_text("[drift]\nwindow = 40\nmin_parts = 41\n")
    with pytest.raises(InspectorError, match="min_parts"):
        load_config(toml)
    toml.write_text("[drift]\nwarn_shfit = 1\n")
    with pytest.raises(InspectorError, match="unknown field; allowed: enabled, window, min_parts, warn_shift, "
                                             "max_fail_rate"):
        load_config(toml)


# --- end to end -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_replay_publishes_the_drift_object_on_the_status_topic(tmp_path: Path) -> None:
    """A model whose held-out normals scored far below this line's parts: the replay's status topic (a
    subscriber here, the replay in another process) says "warning" with the numbers, the log warns once."""
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=12)
    model = make_mean_model(tmp_path / "model.onnx", size=32, normal_scores=[40 + 0.5 * i for i in range(20)])
    config = tmp_path / "line.toml"
    config.write_text(v.video.with_suffix(".toml").read_text() + "\n[drift]\nwindow = 12\nmin_parts = 5\n")
    endpoint = "ipc://" + str(tmp_path / "results.ipc")
    sub = Subscriber(endpoint)
    try:
        replay = subprocess.Popen(
            inspector_cmd("replay", str(v.video), "--model", str(model), "--config", str(config), "--publish", endpoint,
                          "--json", str(tmp_path / "replay.json")),
            cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert sub.until(lambda: any(s.get("final") for s in sub.statuses), 60)
        out, err = replay.communicate(timeout=30)
    finally:
        sub.close()
    assert replay.returncode == 0, err
    drift = sub.statuses[-1]["drift"]
    assert set(drift) >= {"state", "reason", "window_n", "median_shift", "ks", "fail_rate_recent",
                          "fail_rate_expected"}
    assert drift["state"] == "warning" and drift["window_n"] == 12 == len(sub.results)
    assert drift["median_shift"] > 5 and drift["ks"] == 1.0 and drift["model_id"] == sub.results[0]["model_id"]
    assert drift["fail_rate_recent"] == pytest.approx(4 / 12, abs=1e-3) and drift["fail_rate_expected"] == 0.0
    assert "moved up by" in drift["reason"]
    assert all(s["drift"]["state"] in ("unknown", "warning") for s in sub.statuses)
    assert json.loads((tmp_path / "replay.json").read_text())["drift"]["state"] == "warning"
    assert "drift: warning: scores of good-looking parts have moved up" in out
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert sum(e.get("event", "").startswith("drift warning") for e in logs) == 1

"""The pure parts of scripts/soak.py and scripts/measure_shipped.py: rates between samples, the steady window,
growth per hour, the configuration they write, accuracy per pass of a looped video (no daemon started here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from common.ground_truth import TruthPart

REPO = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


soak = _load("soak")


def _s(t: float, frames: int, parts: int, cpu: float = 0.0, rss: float = 100.0, fds: int = 20) -> dict[str, Any]:
    return {"t_s": t, "frames": frames, "parts": parts, "cpu_s": cpu, "rss_mib": rss, "fds": fds}


def test_rates_between_samples_and_over_the_window() -> None:
    assert soak.rates(None, _s(1, 30, 1)) == {"parts_per_s": None, "frames_per_s": None, "cpu_cores": None}
    assert soak.rates(_s(10, 300, 8, cpu=1.0), _s(20, 600, 18, cpu=1.5)) == {
        "parts_per_s": 1.0, "frames_per_s": 30.0, "cpu_cores": 0.05}
    assert soak.window_rates([_s(5, 150, 4), _s(10, 300, 8), _s(25, 750, 20)]) == {
        "frames_per_s": 30.0, "parts_per_s": 0.8}
    assert soak.window_rates([_s(5, 150, 4)]) == {"frames_per_s": None, "parts_per_s": None}


def test_percentile_and_growth_per_hour() -> None:
    assert soak.percentile([], 50) is None
    assert soak.percentile([1.0, 2.0, 3.0], 50) == 2.0
    rows = [{"t_s": t, "b": 1000 + 2 * t} for t in (0, 600, 1200, 1800)]  # 2 units a second
    assert soak.slope_per_hour(rows, "b") == pytest.approx(7200.0)
    assert soak.slope_per_hour(rows[:1], "b") is None


def test_the_steady_window_leaves_out_start_up_and_the_end() -> None:
    by_frames = [_s(i, i * 1000, i * 1000) for i in range(11)]  # a 10,000-frame run
    assert [s["frames"] for s in soak.steady_window(by_frames, 10_000, None)] == list(range(2000, 10_000, 1000))
    by_time = [_s(t, t * 30, t) for t in range(0, 700, 60)]  # a 10-minute run, sampled each minute
    assert [s["t_s"] for s in soak.steady_window(by_time, None, 600.0)] == list(range(120, 601, 60))
    once = [_s(t, t * 30, t) for t in (1, 5, 10)]  # one pass of a video: the last sample's time is the end
    assert [s["t_s"] for s in soak.steady_window(once, None, None)] == [5, 10]
    assert soak.steady_window([], None, None) == []


def test_memory_summary_reports_growth_over_the_steady_window() -> None:
    samples = [_s(0, 0, 0, rss=90.0, fds=15), _s(100, 1, 1, rss=100.0, fds=20), _s(200, 2, 2, rss=101.0, fds=21)]
    m = soak.memory_summary(samples, samples[1:])
    assert m["rss_mib_first"] == 90.0 and m["rss_growth_steady_mib"] == 1.0 and m["rss_mib_max"] == 101.0
    assert (m["fds_first"], m["fds_min"], m["fds_max"]) == (15, 20, 21)
    assert m["rss_slope_steady_mib_per_h"] == pytest.approx(36.0)


def test_the_configuration_written_is_toml_the_inspector_accepts(tmp_path: Path) -> None:
    from inspector.config import load_config

    base = tmp_path / "line.toml"
    base.write_text('station_id = "line"\n[camera]\nsource = "old.mp4"\nfps = 30\n[[rois]]\nname = "part"\nx = 128\n'
                    'y = 0\nwidth = 128\nheight = 128\n[trigger]\nmode = "presence"\n'
                    '[decision]\nroi_thresholds = { part = 1.5 }\n')
    data = soak.station_config(base, tmp_path / 'a "quoted" line.mp4', tmp_path / "m.onnx", None, True, None, tmp_path)
    path = tmp_path / "soak.toml"
    path.write_text(soak.toml_dumps(data))
    assert soak.tomllib.loads(path.read_text()) == data
    cfg = load_config(path)
    assert cfg.camera.fps == 30 and cfg.camera.loop and cfg.camera.max_frames == 0
    assert cfg.camera.source == str((tmp_path / 'a "quoted" line.mp4').resolve())
    assert cfg.trigger.mode == "presence" and cfg.rois[0].width == 128 and cfg.decision.roi_thresholds == {"part": 1.5}
    assert cfg.publish.bind == f"ipc://{tmp_path}/pub.ipc" and cfg.publish.backfill_bind == f"ipc://{tmp_path}/backfill.ipc"
    assert cfg.state.dir == tmp_path / "state"
    kept = soak.retention(path)
    assert kept["retention_days"] == 30.0 and kept["image_quota_bytes"] == 2 * 1024**3
    assert kept["source"].startswith("the configuration's defaults")
    with pytest.raises(ValueError):
        soak.toml_value(float("nan"))


def test_engine_threads_follow_the_daemons_rule(tmp_path: Path) -> None:
    from common.host import available_cores

    path = tmp_path / "a.toml"
    path.write_text('[engine]\nmax_batch = 8\n')
    assert soak.engine_threads(path, {}) == max(1, available_cores() - 1)
    assert soak.engine_threads(path, {"ENGINES_ORT_THREADS": "3"}) == 3
    path.write_text('[engine]\ncpu_threads = 2\n')
    assert soak.engine_threads(path, {"ENGINES_ORT_THREADS": "3"}) == 2


def test_accuracy_per_pass_of_a_looped_video() -> None:
    truth = [TruthPart("0", 10, 20, 15, "good"), TruthPart("1", 40, 50, 45, "scratch")]

    def h(frame: int, verdict: str, score: float) -> dict[str, Any]:
        return {"frame": frame, "verdict": verdict, "rois": [{"score": score, "threshold": 1.0}]}

    n = 60  # frames per pass
    headers = [h(15, "pass", 0.5), h(45, "fail", 2.0),           # pass 0: both right
               h(n + 16, "pass", 0.5), h(n + 44, "pass", 0.9),   # pass 1: the scratch passed
               h(2 * n + 15, "pass", 0.5)]                       # pass 2: incomplete, not counted
    loops = soak.evaluate_loops(headers, truth, n, 2)
    assert [x["accuracy"] for x in loops] == [1.0, 0.5]
    assert [x["wrong"] for x in loops] == [0, 1] and all(x["missed"] == 0 for x in loops)


def test_files_on_disk_are_counted(tmp_path: Path) -> None:
    assert soak.tree_bytes(tmp_path / "missing") == (0, 0)
    (tmp_path / "images" / "2026-12-06").mkdir(parents=True)
    (tmp_path / "images" / "2026-12-06" / "1_part_input.png").write_bytes(b"x" * 100)
    (tmp_path / "images" / "2").write_bytes(b"x" * 5)
    assert soak.tree_bytes(tmp_path / "images") == (105, 2)
    (tmp_path / "journal.db").write_bytes(b"x" * 4096)
    (tmp_path / "journal.db-wal").write_bytes(b"x" * 1000)
    (tmp_path / "journal.db-shm").write_bytes(b"x" * 32768)
    assert soak.journal_files(tmp_path) == (4096, 1000) and soak.journal_bytes(tmp_path) == 5096


def test_measure_shipped_labels_a_replay_summary() -> None:
    ms = _load("measure_shipped")
    replay = {"frames": 3500, "seconds": 2.0, "fps": 1750.0, "parts": 100, "parts_per_s": 50.0, "crops_per_s": 50.0,
              "accuracy": 0.98, "auroc": 0.99, "missed": 0, "duplicates": 0, "spurious": 0,
              "latency_p50_ms": 80.0, "latency_p99_ms": 90.0}
    f = ms.replay_figures(replay, rois=1)
    assert (f["frames_scored"], f["frames_skipped"]) == (100, 3400)
    assert set(ms.COUNTS) <= set(f)  # every figure the table labels is there

"""Tests for the synthetic production line: layout, determinism, defects and masks, the conveyor video.

Tiny sizes (32/64 px) and few images keep the whole file to a few seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.errors import DataError
from synth.defects import DEFECTS
from synth.parts import render_part
from synth.run import SynthOptions, run_synth, synthesize
from synth.scene import render_image
from synth.spec import PartSpec, sample_lighting, sample_part
from synth.stills import plan_test_split
from synth.video import LEAD_IN_FRAMES, belt_speed, plan_video, video_lighting
from trainer.cli import main

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def _pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def _render_pair(seed: int, size: int, defect: str, severity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(defective image, its mask, the same scene without the defect)."""
    rng = np.random.default_rng([seed, 123])
    light = sample_lighting(rng)
    spec = sample_part(rng, size, defect, severity)
    bad, mask = render_image(spec, light, size)
    good, _ = render_image(dataclasses.replace(spec, defect=None), light, size)
    return bad, mask, good


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).max(axis=2)


# ---------------------------------------------------------------- layout


def test_plan_is_half_good_and_shares_defects() -> None:
    assert plan_test_split(200) == {"good": 100, "scratch": 25, "color": 25, "missing": 25, "flip": 25}
    assert plan_test_split(1) == {"good": 1}
    assert plan_test_split(7) == {"good": 4, "scratch": 1, "color": 1, "missing": 1}
    assert sum(plan_test_split(13).values()) == 13


def test_layout_counts_and_formats(tmp_path: Path) -> None:
    summary = synthesize(tmp_path / "d", seed=3, size=32, n_train=5, n_test=10)
    root = tmp_path / "d"
    assert _pngs(root / "train" / "good") == [f"{i:03d}.png" for i in range(5)]
    expected = {"good": 5, "scratch": 2, "color": 1, "missing": 1, "flip": 1}
    assert summary["test"] == expected
    assert {d.name: len(_pngs(d)) for d in (root / "test").iterdir()} == expected
    assert not (root / "ground_truth" / "good").exists()
    for kind in DEFECTS:
        images, masks = _pngs(root / "test" / kind), _pngs(root / "ground_truth" / kind)
        assert masks == [n.replace(".png", "_mask.png") for n in images]
    img = cv2.imread(str(root / "train" / "good" / "000.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    mask = cv2.imread(str(root / "ground_truth" / "scratch" / "000_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
    rows = list(csv.DictReader((root / "test_index.csv").open()))
    assert len(rows) == 10 and {r["kind"] for r in rows} == set(expected)


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        synthesize(tmp_path / name, seed=seed, size=32, n_train=3, n_test=6)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 3 + 6 + 3
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert (tmp_path / "a" / files[0]).read_bytes() != (tmp_path / "c" / files[0]).read_bytes()


def test_rerun_replaces_its_own_images_and_classes(tmp_path: Path) -> None:
    synthesize(tmp_path, size=32, n_train=4, n_test=10)
    synthesize(tmp_path, size=32, n_train=2, n_test=2)
    assert _pngs(tmp_path / "train" / "good") == ["000.png", "001.png"]
    assert sorted(d.name for d in (tmp_path / "test").iterdir()) == ["good", "scratch"]
    assert sorted(d.name for d in (tmp_path / "ground_truth").iterdir()) == ["scratch"]


def test_an_image_does_not_depend_on_how_many_others_there_are(tmp_path: Path) -> None:
    """Good and flipped parts keep their images; the others' severities are stratified over their count."""
    synthesize(tmp_path / "small", size=32, n_train=1, n_test=8)
    synthesize(tmp_path / "large", size=32, n_train=3, n_test=16)
    for rel in ("train/good/000.png", "test/good/001.png", "test/flip/000.png"):
        assert (tmp_path / "small" / rel).read_bytes() == (tmp_path / "large" / rel).read_bytes(), rel


def test_refuses_a_folder_holding_someone_elses_data(tmp_path: Path) -> None:
    (tmp_path / "train" / "good").mkdir(parents=True)
    (tmp_path / "train" / "good" / "000.png").write_bytes(b"theirs")
    with pytest.raises(DataError, match="did not write; choose a new folder"):
        synthesize(tmp_path, size=32, n_train=1, n_test=1)
    assert (tmp_path / "train" / "good" / "000.png").read_bytes() == b"theirs"


# ---------------------------------------------------------------- the part and its defects


def test_good_image_shows_a_bright_part_on_a_dark_belt() -> None:
    rng = np.random.default_rng(0)
    spec = PartSpec(angle=0.3, scale=1.0, offset=(0.0, 0.0), seed=5)
    img, mask = render_image(spec, sample_lighting(rng), 64)
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    yy, xx = np.mgrid[0:64, 0:64]
    r = np.hypot(xx - 31.5, yy - 31.5)
    face, bore, belt = grey[(r > 10) & (r < 13)].mean(), grey[r < 4].mean(), grey[r > 31].mean()
    assert not mask.any()
    assert face > belt + 50 and face > bore + 50  # a bright metal ring; belt outside and through the bore


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("severity", [0.0, 1.0])
def test_mask_is_nonempty_and_marks_where_the_image_changed(defect: str, severity: float) -> None:
    for seed in range(4):
        bad, mask, good = _render_pair(seed, 64, defect, severity)
        diff = _diff(bad, good)
        inside, outside = diff[mask > 0], diff[mask == 0]
        assert inside.size >= 3, (seed, "empty mask")
        if defect == "flip":  # the mask is the whole (mirrored) part: bright metal, unlike the belt around it
            grey = cv2.cvtColor(bad, cv2.COLOR_BGR2GRAY).astype(np.float32)
            assert grey[mask > 0].mean() > grey[mask == 0].mean() + 40 and diff.max() > 60
        else:
            assert inside.mean() > 3.0 and inside.mean() > 2.5 * outside.mean(), (seed, inside.mean(), outside.mean())


@pytest.mark.parametrize("defect", ["scratch", "color", "missing"])
def test_severity_runs_from_subtle_to_obvious(defect: str) -> None:
    def strength(sev: float) -> float:
        return float(np.mean([_diff(*_render_pair(s, 64, defect, sev)[::2]).sum() for s in range(6)]))

    subtle, obvious = strength(0.0), strength(1.0)
    assert subtle > 0 and obvious > 3 * subtle


def test_subtle_defect_is_still_visible_in_its_mask() -> None:
    for defect in ("scratch", "color", "missing"):
        for seed in range(6):
            bad, mask, good = _render_pair(seed, 32, defect, 0.0)
            assert _diff(bad, good)[mask > 0].max() >= 12, (defect, seed)


def test_mirrored_part_is_not_any_rotation_of_the_part() -> None:
    """Chirality: no rotation of the good part covers the flipped silhouette."""
    light = sample_lighting(np.random.default_rng(0))
    flipped = PartSpec(angle=0.4, scale=1.0, offset=(0.0, 0.0), defect="flip")
    target = render_part(flipped, light, (64, 64), (31.5, 31.5), 64).alpha > 0.5
    best = 0.0
    for deg in range(0, 360, 2):
        good = PartSpec(angle=math.radians(deg), scale=1.0, offset=(0.0, 0.0))
        cand = render_part(good, light, (64, 64), (31.5, 31.5), 64).alpha > 0.5
        best = max(best, (target & cand).sum() / (target | cand).sum())
    assert best < 0.93
    same = render_part(dataclasses.replace(flipped, defect=None, angle=0.4), light, (64, 64), (31.5, 31.5), 64)
    assert ((same.alpha > 0.5) != target).sum() > 50


# ---------------------------------------------------------------- the video


def _read_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    ok, frame = cap.read()
    while ok:
        frames.append(frame)
        ok, frame = cap.read()
    cap.release()
    return frames


def test_video_frames_ground_truth_and_config(tmp_path: Path) -> None:
    size, video = 32, tmp_path / "line" / "belt.mp4"
    summary = synthesize(tmp_path / "d", seed=4, size=size, n_train=1, n_test=1, video=video, parts=4)
    frames = _read_frames(video)
    assert len(frames) == summary["video"]["frames"] and frames[0].shape == (size, 3 * size, 3)
    rows = list(csv.DictReader(video.with_suffix(".csv").open()))
    assert list(rows[0]) == ["part_id", "first_frame", "last_frame", "center_frame", "label"]
    assert [int(r["part_id"]) for r in rows] == [0, 1, 2, 3]
    assert int(rows[0]["first_frame"]) >= LEAD_IN_FRAMES
    assert int(rows[-1]["last_frame"]) < len(frames) - 1
    for r, nxt in zip(rows, rows[1:], strict=False):
        assert int(r["last_frame"]) + 2 < int(nxt["first_frame"])  # belt-only frames between parts
    light = video_lighting(4)
    passages = plan_video(4, size, 4, light)
    for r, p in zip(rows, passages, strict=True):
        first, last, center = int(r["first_frame"]), int(r["last_frame"]), int(r["center_frame"])
        assert first < center < last and r["label"] == p.label and r["label"] in ("good", *DEFECTS)
        crop = frames[center][:, size : 2 * size]
        empty = frames[first - 1][:, size : 2 * size]
        rendered, _ = render_image(p.spec, light, size)
        assert _diff(crop, rendered).mean() < 0.5 * _diff(empty, rendered).mean()
        changed = [int((_diff(frames[first + k][:, size : 2 * size], empty) > 30).sum()) for k in (-3, 4)]
        assert changed[0] == 0 and changed[1] > 3  # belt only before first_frame, the part soon after
    assert _diff(frames[0][:, size : 2 * size], frames[5][:, size : 2 * size]).mean() < 12  # belt only
    config = tomllib.loads(video.with_suffix(".toml").read_text())
    assert config["camera"]["source"] == str(video.resolve()) and config["camera"]["fps"] == 30
    assert config["rois"] == [{"name": "part", "x": size, "y": 0, "width": size, "height": size}]
    assert config["trigger"]["mode"] == "presence"


def test_a_recording_of_other_good_parts_of_the_same_line() -> None:
    """--first-part K: parts K, K+1, ... of the same line (each part drawn from its own seed);
    --defect-rate 0: only good ones, for `inspector collect`."""
    light = video_lighting(3)
    line = plan_video(3, 32, 12, light, defect_rate=0.5)
    later = plan_video(3, 32, 4, light, defect_rate=0.5, first_part=8)
    assert [p.part_id for p in later] == [8, 9, 10, 11]
    assert [(p.spec, p.label) for p in later] == [(p.spec, p.label) for p in line[8:]]
    assert {p.label for p in line} != {"good"}
    good = plan_video(3, 32, 12, light, defect_rate=0.0, first_part=100)
    assert {p.label for p in good} == {"good"} and good[0].part_id == 100


def test_video_parts_move_at_the_documented_speed() -> None:
    assert belt_speed(128) == 8 and belt_speed(32) == 2
    passages = plan_video(0, 32, 3, video_lighting(0))
    for p in passages:
        assert p.visible[0] < p.first_frame < p.center_frame < p.last_frame < p.visible[1]


def test_a_video_alone(tmp_path: Path) -> None:
    video = tmp_path / "good-parts.avi"
    summary = synthesize(tmp_path / "d", size=32, n_train=0, n_test=0, video=video, parts=2, defect_rate=0.0)
    assert summary["video"]["defective"] == 0 and len(_read_frames(video)) == summary["video"]["frames"]
    assert not list((tmp_path / "d").glob("*/*/*.png"))


def test_avi_video_is_written_with_mjpg(tmp_path: Path) -> None:
    video = tmp_path / "v.avi"
    summary = synthesize(tmp_path / "d", size=32, n_train=1, n_test=1, video=video, parts=1)
    assert len(_read_frames(video)) == summary["video"]["frames"]
    assert video.read_bytes()[:4] == b"RIFF"


# ---------------------------------------------------------------- errors and the CLI


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 31}, "--size must be between 32 and 1024 pixels (got 31)"),
        ({"size": 1025}, "--size must be between 32 and 1024 pixels (got 1025)"),
        ({"n_train": 0}, "--n-train and --n-test must be at least 1"),
        ({"n_test": 0}, "--n-train and --n-test must be at least 1"),
        ({"video": "v.mp4", "parts": 0}, "--parts must be at least 1 (got 0)"),
        ({"video": "v.mkv"}, "unsupported suffix '.mkv'; use .mp4 (mp4v) or .avi (MJPG)"),
        ({"defect_rate": 1.5}, "--defect-rate 1.5 is outside 0-1"),
        ({"first_part": -1}, "--first-part -1 must be >= 0"),
    ],
)
def test_impossible_requests_fail_with_one_clear_message(tmp_path: Path, kwargs: dict, message: str) -> None:
    if "video" in kwargs:
        kwargs["video"] = tmp_path / kwargs["video"]
    with pytest.raises(DataError) as err:
        synthesize(tmp_path / "d", **{"size": 32, "n_train": 1, "n_test": 1, **kwargs})
    assert message in str(err.value)
    assert not (tmp_path / "d").exists()


def test_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError, match=r"cannot write to .*file/out .*choose a writable output folder"):
        synthesize(blocker / "out", size=32, n_train=1, n_test=1)


def test_cli_reports_errors_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", str(tmp_path / "d"), "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: --size must be between 32 and 1024" in err


def test_run_synth_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = SynthOptions(out_dir=tmp_path / "d", seed=0, size=32, n_train=2, n_test=3, video=None, parts=40,
                        rotation=15.0, defect_rate=0.3, first_part=0)
    assert run_synth(args) == 0
    out = capsys.readouterr().out
    assert "2 train + 3 test images (2 good, 1 scratch), 32 px" in out


class _ClosedWriter:
    def __init__(self, *args: object) -> None:
        pass

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return False


def test_video_writer_that_cannot_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv2, "VideoWriter", _ClosedWriter)
    with pytest.raises(DataError, match=r"OpenCV cannot open a mp4v video writer for .*v\.mp4; try the other suffix"):
        synthesize(tmp_path / "d", size=32, n_train=1, n_test=1, video=tmp_path / "v.mp4", parts=1)


def test_video_that_reads_back_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("synth.video.count_frames", lambda path: 3)
    with pytest.raises(DataError, match=r"v\.avi reads back 3 frames instead of \d+; try the other suffix"):
        synthesize(tmp_path / "d", size=32, n_train=1, n_test=1, video=tmp_path / "v.avi", parts=1)

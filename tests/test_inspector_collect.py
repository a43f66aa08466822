"""`inspector collect`: a real video through the daemon's capture → trigger → crop, written as a data set
folder that the trainer's loader reads; bad input ends with a message and exit code 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
from test_inspector_support import GOOD_LEVEL, REPO, inspector_cmd, subprocess_env, write_conveyor_video

from trainer.datasets import load_split


def _collect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(inspector_cmd("collect", *args), cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=120)


def test_collect_writes_one_crop_per_part_from_its_best_centred_frame(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "good.avi", n_parts=9, defect_every=100)  # a recording of good parts
    out = tmp_path / "data"
    done = _collect(str(v.video), "--out", str(out), "--config", str(v.video.with_suffix(".toml")))
    assert done.returncode == 0, done.stderr
    assert f"collected 9 parts, 9 images -> {out / 'train' / 'good'}" in done.stdout
    files = sorted((out / "train" / "good").iterdir())
    assert len(files) == 9
    frames = [int(f.name.split("_")[0]) for f in files]
    for frame, row, f in zip(frames, v.rows, files, strict=True):       # each part once, inside its span
        assert row["first_frame"] <= frame <= row["last_frame"] and abs(frame - row["center_frame"]) <= 1
        assert f.name.endswith("_center.png")
        image = cv2.imread(str(f))
        assert image.shape == (64, 64, 3)                                 # the ROI at full resolution
        assert abs(image[24:40, 24:40].mean() - GOOD_LEVEL) < 15              # the part, centred
    split = load_split(out, "train", 32, 3, None)                         # what `trainer fit out` reads
    assert split.images.shape == (9, 32, 32, 3)

    more = _collect(str(v.video), "--out", str(out), "--config", str(v.video.with_suffix(".toml")),
                    "--into", "test/good", "--count", "4")
    assert more.returncode == 0 and len(list((out / "test" / "good").iterdir())) == 4


def test_collect_every_nth_frame_with_the_continuous_trigger(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "v.avi", n_parts=2)
    config = tmp_path / "every.toml"
    config.write_text(v.video.with_suffix(".toml").read_text().replace('mode = "presence"',
                                                                        'mode = "continuous"\nevery_n = 10'))
    done = _collect(str(v.video), "--out", str(tmp_path / "d"), "--config", str(config))
    assert done.returncode == 0, done.stderr
    numbers = sorted(int(f.name.split("_")[0]) for f in (tmp_path / "d" / "train" / "good").iterdir())
    assert numbers == list(range(0, v.frames, 10))


def test_collect_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "v.avi", n_parts=1)
    missing = _collect(str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "d"))
    assert missing.returncode == 2 and "neither a video file" in missing.stderr and "Traceback" not in missing.stderr
    external = tmp_path / "ext.toml"
    external.write_text(v.video.with_suffix(".toml").read_text().replace('mode = "presence"', 'mode = "external"'))
    ext = _collect(str(v.video), "--out", str(tmp_path / "d"), "--config", str(external))
    assert ext.returncode == 2 and "collect with mode" in ext.stderr
    escape = _collect(str(v.video), "--out", str(tmp_path / "d"), "--into", "../outside")
    assert escape.returncode == 2 and "inside OUT" in escape.stderr
    assert not (tmp_path / "outside").exists()


def test_a_video_with_no_part_in_the_roi_collects_nothing_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "belt.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (192, 64))
    for _ in range(30):
        writer.write(np.full((64, 192, 3), 60, np.uint8))
    writer.release()
    config = tmp_path / "c.toml"
    config.write_text('[[rois]]\nname = "center"\nx = 64\ny = 0\nwidth = 64\nheight = 64\n\n[trigger]\nmode = "presence"\n')
    done = _collect(str(path), "--out", str(tmp_path / "d"), "--config", str(config))
    assert done.returncode == 1 and "collected 0 parts" in done.stdout and "no part was triggered" in done.stderr


def test_a_labelled_recording_becomes_an_evaluation_set(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "day.avi", n_parts=9)          # every third part defective
    out = tmp_path / "eval"
    done = _collect(str(v.video), "--out", str(out), "--config", str(v.video.with_suffix(".toml")),
                    "--ground-truth", str(v.csv))
    assert done.returncode == 0, done.stderr
    assert "by label: defect 3, good 6" in done.stdout
    for label in ("good", "defect"):
        frames = sorted(int(f.name.split("_")[0]) for f in (out / "test" / label).iterdir())
        spans = [(r["first_frame"], r["last_frame"]) for r in v.rows if r["label"] == label]
        assert len(frames) == len(spans) and all(a <= f <= b for f, (a, b) in zip(frames, spans, strict=True))
    split = load_split(out, "test", 32, 3, None)                          # what `trainer evaluate --data` reads
    assert sorted(split.kinds) == ["defect"] * 3 + ["good"] * 6 and list(split.labels).count(1) == 3

    bad = tmp_path / "bad.csv"
    bad.write_text(v.csv.read_text().replace(",good", ",../good", 1))
    refused = _collect(str(v.video), "--out", str(tmp_path / "x"), "--config", str(v.video.with_suffix(".toml")),
                       "--ground-truth", str(bad))
    assert refused.returncode == 2 and "labels become folder names" in refused.stderr
    assert not (tmp_path / "x").exists()

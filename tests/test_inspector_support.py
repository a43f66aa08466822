"""Helpers for the inspector tests (no tests here): a tiny real ONNX model, a fake engine, a conveyor video.

The ONNX graph (score = mean pixel, identity reconstruction) runs through engines.load_engine, no torch.
"""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
GOOD_LEVEL, DEFECT_LEVEL = 140, 230  # part brightness; the mean-pixel model separates them at THRESHOLD
THRESHOLD = 100.0


def make_mean_model(path: Path, size: int = 32, channels: int = 3, threshold: float | None = THRESHOLD,
                    normal_scores: list[float] | None = None) -> Path:
    """MODEL.onnx + MODEL.json: score = mean of the crop's pixels (0..255), identity reconstruction;
    `normal_scores`: the manifest's held-out normal scores (the drift watch's reference), none by default."""
    import onnx
    from onnx import TensorProto, helper

    from common.manifest import Manifest, io_specs, model_id_for, sha256_file, write_manifest

    x = helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", size, size, channels])
    outs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("reconstruction", TensorProto.UINT8, ["N", size, size, channels]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["N", size, size])]
    nodes = [helper.make_node("Cast", ["images"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["xf"], ["score"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Identity", ["images"], ["reconstruction"]),
             helper.make_node("ReduceMean", ["xf"], ["anomaly_map"], axes=[3], keepdims=0)]
    graph = helper.make_graph(nodes, "mean_pixel", [x], outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="inspector-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    digest = sha256_file(path)
    inputs, outputs = io_specs(size, channels)
    manifest = Manifest(model_id=model_id_for("meanpixel", digest), variant="meanpixel", onnx_file=path.name,
                        onnx_sha256=digest, inputs=inputs, outputs=outputs, image_size=size, channels=channels,
                        color_order="BGR" if channels == 3 else "GRAY", threshold=threshold, lambda_=0.0,
                        normal_scores=sorted(normal_scores or []))
    write_manifest(manifest, path)
    return path


@dataclass
class FakeManifest:
    model_id: str = "fake-mean"
    threshold: float | None = THRESHOLD


@dataclass
class FakeResult:
    scores: np.ndarray
    reconstructions: np.ndarray
    maps: np.ndarray


class FakeEngine:
    """In-process stand-in with the Engine protocol: score = mean brightness; optionally fails or is slow."""

    backend = "fake"

    def __init__(self, size: int = 32, channels: int = 3, max_batch: int = 8, fail: bool = False,
                 delay_s: float = 0.0) -> None:
        self.manifest = FakeManifest()
        self.max_batch = max_batch
        self.input_shape = (size, size, channels)
        self.fail = fail
        self.delay_s = delay_s
        self.calls: list[int] = []

    def infer(self, images: np.ndarray) -> FakeResult:
        self.calls.append(len(images))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        assert images.dtype == np.uint8 and images.shape[1:] == self.input_shape and len(images) <= self.max_batch
        f = images.astype(np.float32)
        return FakeResult(f.mean(axis=(1, 2, 3)), images.copy(), f.mean(axis=3))

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class VideoTruth:
    video: Path
    csv: Path
    rows: list[dict[str, object]]
    frames: int
    size: int


def conveyor_frames(n_parts: int, size: int = 64, speed: int = 8, seed: int = 0, defect_every: int = 3,
                    lead_frames: int = 12, rng_texture: bool = True) -> tuple[list[np.ndarray], list[dict[str, object]]]:
    """Frames size×3·size of bright squares moving left to right on a scrolling textured belt, and the truth.

    A part's span is every frame in which it overlaps the centre square (the ROI); parts are spaced so that
    only one is in the ROI at a time, with belt-only frames between.
    """
    rng = np.random.default_rng(seed)
    h, w = size, 3 * size
    side = int(size * 0.6)
    gap = size // 4
    spacing = size + side + gap
    texture_w = w + spacing * (n_parts + 4)
    belt = (55 + rng.normal(0, 12, (h, texture_w))).clip(0, 255).astype(np.uint8) if rng_texture \
        else np.full((h, texture_w), 60, np.uint8)
    belt = cv2.GaussianBlur(belt, (3, 3), 0)
    starts = [-side - lead_frames * speed - i * spacing for i in range(n_parts)]  # left edge at frame 0
    labels = ["defect" if (i % defect_every == defect_every - 1) else "good" for i in range(n_parts)]
    n_frames = (w - starts[-1]) // speed + 2
    roi_lo, roi_hi = size, 2 * size
    top = (h - side) // 2
    frames, spans = [], {i: [] for i in range(n_parts)}
    for f in range(n_frames):
        off = (f * speed) % (texture_w - w)
        img = cv2.cvtColor(np.ascontiguousarray(belt[:, texture_w - w - off: texture_w - off]), cv2.COLOR_GRAY2BGR)
        for i, s in enumerate(starts):
            x0 = s + f * speed
            if x0 + side <= 0 or x0 >= w:
                continue
            level = DEFECT_LEVEL if labels[i] != "good" else GOOD_LEVEL
            img[top: top + side, max(0, x0): min(w, x0 + side)] = (level, level - 10, level + 10) \
                if level < 245 else level
            if x0 < roi_hi and x0 + side > roi_lo:
                spans[i].append(f)
        frames.append(img)
    rows = []
    for i in range(n_parts):
        centre = min(spans[i], key=lambda f, i=i: abs(starts[i] + f * speed + side / 2 - 1.5 * size))
        rows.append({"part_id": f"p{i:03d}", "first_frame": spans[i][0], "last_frame": spans[i][-1],
                     "center_frame": centre, "label": labels[i]})
    return frames, rows


def write_conveyor_video(path: Path, n_parts: int = 12, size: int = 64, fps: float = 30.0, **kw: object) -> VideoTruth:
    """An MJPG .avi (frame-exact with OpenCV here) plus PATH.csv ground truth and PATH.toml config."""
    frames, rows = conveyor_frames(n_parts, size, **kw)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (3 * size, size))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    csv_path = path.with_suffix(".csv")
    with csv_path.open("w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    path.with_suffix(".toml").write_text(
        f'station_id = "test-line"\n\n[camera]\nsource = "{path}"\nfps = {fps}\n\n'
        f'[[rois]]\nname = "center"\nx = {size}\ny = 0\nwidth = {size}\nheight = {size}\n\n'
        '[trigger]\nmode = "presence"\n')
    return VideoTruth(path, csv_path, rows, len(frames), size)


def inspector_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "inspector", *args]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(REPO), "ENGINES_ORT_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def start(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(inspector_cmd(*args), cwd=REPO, env=subprocess_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def close_stdin_and_wait(proc: subprocess.Popen, timeout_s: float = 10) -> None:
    """End a child that runs until its stdin closes (the test harnesses); killed if it does not within
    timeout_s."""
    with contextlib.suppress(OSError):
        assert proc.stdin is not None
        proc.stdin.close()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def free_endpoint() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"

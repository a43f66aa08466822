"""The conveyor video: parts crossing the camera one after another, with a ground-truth CSV and an inspector config.

Frames are size x 3*size; the centre square is the inspector's ROI, where each part passes in the pose of
a training image at its centre frame. `common.ground_truth` reads the CSV back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common.errors import DataError
from common.ground_truth import TruthPart, write_ground_truth
from synth.lines import Line, MetalLine, Spec
from synth.parts import Layers
from synth.scene import apply_camera, belt_texture, composite
from synth.spec import ROTATION_JITTER_DEG, Lighting, sample_lighting

FPS = 30
VIDEO_CODECS: dict[str, str] = {".mp4": "mp4v", ".avi": "MJPG"}
DEFECT_RATE = 0.3  # share of defective parts in the video
LEAD_IN_FRAMES = 40  # belt-only centre square at the start (an inspector learns the empty belt)


@dataclass(frozen=True)
class Passage:
    """One part crossing the camera: frames relative to the video, its sprite's visible frame range."""

    part_id: int
    spec: Spec
    center_frame: int
    first_frame: int  # first and last frame with the part at least partly inside the centre square
    last_frame: int
    visible: tuple[int, int]  # frames during which its sprite overlaps the frame at all

    @property
    def label(self) -> str:
        return self.spec.defect or "good"


def belt_speed(size: int) -> int:
    """Pixels per frame; an integer, so the sprite lands on whole pixels and matches the images exactly."""
    return max(1, round(size / 16))


def _sprite_left(size: int, v: int, t: int, center_frame: int, pad: int) -> int:
    """Frame column of the sprite's left edge; at center_frame the centre square shows a training image
    (the sprite's columns [pad, pad + size))."""
    return size - pad + v * (t - center_frame)


def video_lighting(seed: int) -> Lighting:
    """The one lighting of a seed's video (lamps do not change between parts)."""
    return sample_lighting(np.random.default_rng([seed, 3]))


def plan_video(seed: int, size: int, parts: int, light: Lighting,
               rotation: float = ROTATION_JITTER_DEG, defect_rate: float = DEFECT_RATE,
               first_part: int = 0, line: Line | None = None) -> list[Passage]:
    """Parts one after another, each leaving the centre square empty for a few frames before the next.

    Part p is drawn from its own seed (seed, p), so a recording starting at `first_part` shows other parts
    of the same line (same lamps, belt and camera) than one starting at 0."""
    line = line or MetalLine()
    v, gaps = belt_speed(size), np.random.default_rng([seed, 5])
    passages: list[Passage] = []
    first = LEAD_IN_FRAMES
    for p in range(first_part, first_part + parts):
        rng = np.random.default_rng([seed, 4, p])
        defects = line.defects
        defect = defects[int(rng.integers(len(defects)))] if rng.uniform() < defect_rate else None
        spec = line.sample(rng, size, defect, None, rotation)
        sprite, pad = line.sprite(spec, light, size)
        cols = np.flatnonzero(sprite.alpha.max(axis=0) > 0.25)
        base = _sprite_left(size, v, 0, 0, pad)
        e0 = math.ceil((size - int(cols[-1]) - base) / v)
        e1 = math.floor((2 * size - 1 - int(cols[0]) - base) / v)
        tc = first - e0
        visible = (tc - (base + sprite.alpha.shape[1]) // v - 1, tc + (3 * size - base) // v + 1)
        passages.append(Passage(p, spec, tc, tc + e0, tc + e1, visible))
        first = tc + e1 + 1 + int(gaps.integers(3, max(4, size // (2 * v)) + 1))
    return passages


def _frames(passages: list[Passage], n_frames: int, light: Lighting, seed: int, size: int,
            line: Line) -> Iterator[np.ndarray]:
    """Render every frame: a moving belt, the parts in view as sprites, the same camera as the images."""
    v, width, period = belt_speed(size), 3 * size, 8 * size
    belt = belt_texture(np.random.default_rng([seed, 6]), (size, period), size)
    noise = np.random.default_rng([seed, 7])
    cols = np.arange(width)
    cache: dict[int, tuple[Layers, int]] = {}
    lo = 0
    for t in range(n_frames):
        frame = belt[:, (cols - v * t) % period]
        while lo < len(passages) and passages[lo].visible[1] < t:
            cache.pop(passages[lo].part_id, None)
            lo += 1
        for p in passages[lo:]:
            if p.visible[0] > t:
                break
            if p.part_id not in cache:
                cache[p.part_id] = line.sprite(p.spec, light, size)
            sprite, pad = cache[p.part_id]
            composite(frame, sprite, _sprite_left(size, v, t, p.center_frame, pad))
        yield line.finish(apply_camera(frame, light, size, noise))


def count_frames(path: Path) -> int:
    """Frames OpenCV can read from a video file (grabbed one by one: container headers may lie)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.isOpened() and cap.grab():
        n += 1
    cap.release()
    return n


def _write_config(path: Path, video: Path, size: int) -> None:
    """An inspector config that replays the video with one ROI on its centre square."""
    source = json.dumps(str(video.resolve()))  # a JSON string is a valid TOML basic string
    path.write_text(
        f'station_id = "synthetic-line"\n\n[camera]\nsource = {source}\nfps = {FPS}\n\n'
        f'[[rois]]\nname = "part"\nx = {size}\ny = 0\nwidth = {size}\nheight = {size}\n\n'
        '[trigger]\nmode = "presence"\n'
    )


def write_video(path: Path, *, seed: int, size: int, parts: int,
                rotation: float = ROTATION_JITTER_DEG, defect_rate: float = DEFECT_RATE,
                first_part: int = 0, line: Line | None = None) -> dict[str, Any]:
    """Write the conveyor video, its ground-truth CSV and an inspector config; return a summary."""
    line = line or MetalLine()
    light = video_lighting(seed)
    passages = plan_video(seed, size, parts, light, rotation, defect_rate, first_part, line)
    n_frames = passages[-1].last_frame + 1 + LEAD_IN_FRAMES // 4
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {path.parent} ({e.strerror or e}); choose a writable --video path") from None
    fourcc = VIDEO_CODECS[path.suffix.lower()]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (3 * size, size))
    if not writer.isOpened():
        raise DataError(f"OpenCV cannot open a {fourcc} video writer for {path}; try the other suffix (.mp4 or .avi)")
    try:
        for frame in _frames(passages, n_frames, light, seed, size, line):
            writer.write(frame)
    finally:
        writer.release()
    got = count_frames(path)
    if got != n_frames:
        raise DataError(f"{path} reads back {got} frames instead of {n_frames}; try the other suffix (.mp4 or .avi)")
    csv_path, toml_path = path.with_suffix(".csv"), path.with_suffix(".toml")
    write_ground_truth(csv_path, [TruthPart(str(p.part_id), p.first_frame, p.last_frame, p.center_frame, p.label)
                                  for p in passages])
    _write_config(toml_path, path, size)
    return {
        "path": str(path), "csv": str(csv_path), "toml": str(toml_path), "frames": n_frames, "fps": FPS,
        "parts": parts, "defective": sum(p.spec.defect is not None for p in passages),
        "speed_px_per_frame": belt_speed(size),
    }

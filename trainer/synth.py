"""Synthetic production line: metal-nut-like parts on a conveyor belt, rendered with numpy and OpenCV.

Writes an MVTec-layout data set (train/good, test/<kind>, ground_truth masks) and optionally a conveyor video.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from trainer.errors import DataError

DEFECTS: tuple[str, ...] = ("scratch", "color", "missing", "flip")
MIN_SIZE, MAX_SIZE = 32, 1024
FPS = 30
VIDEO_CODECS: dict[str, str] = {".mp4": "mp4v", ".avi": "MJPG"}
DEFECT_RATE = 0.3  # share of defective parts in the video
LEAD_IN_FRAMES = 40  # belt-only centre square at the start (an inspector learns the empty belt)
MARKER = "synth.json"  # written last; marks a folder this module may overwrite

_SHIFT = 4  # fixed-point bits for sub-pixel OpenCV drawing
_ONE = 1 << _SHIFT
_METAL_TINT = np.array([1.0, 0.99, 0.96], np.float32) * 235.0  # steel, a touch cool (BGR)
_BELT_BGR = np.array([60.0, 65.0, 62.0], np.float32)  # dark grey-green rubber
_STAINS = np.array([[0.16, 0.33, 0.60], [0.20, 0.16, 0.14], [0.60, 0.40, 0.30]], np.float32)  # rust, oil, tint
_NAME_RE = re.compile(r"^\d+(_mask)?\.png$")

# Part geometry in part units (1.0 = image size): a chamfered hexagon with a bore and three hooked tabs.
_BODY_R, _BORE_R, _CHAMFER_R = 0.27, 0.105, 0.14
_TAB_ANGLES = (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)
_TAB_POLAR = (  # a radial stem with a flag at its tip on one side only: mirroring it shows
    (0.20, -0.20), (0.43, -0.14), (0.46, 0.0), (0.455, 0.22), (0.42, 0.40), (0.365, 0.34), (0.35, 0.15), (0.20, 0.20)
)


@dataclass(frozen=True)
class Lighting:
    """Camera and lamp: gain, contrast, per-channel cast, a linear light gradient and the lamp's direction."""

    gain: float
    contrast: float
    cast: tuple[float, float, float]
    grad_amp: float
    grad_angle: float
    light_angle: float  # direction from the part towards the lamp, radians, image axes (y down)


@dataclass(frozen=True)
class PartSpec:
    """One part's pose and defect; `seed` drives its grain, defect shape, belt patch and sensor noise."""

    angle: float
    scale: float
    offset: tuple[float, float]  # pixels from the image centre
    defect: str | None = None
    severity: float = 0.0  # 0 = subtle, 1 = obvious
    seed: int = 0


@dataclass
class Layers:
    """A rendered part on a canvas: colour (float BGR 0..255), coverage, cast shadow, defect mask."""

    color: np.ndarray
    alpha: np.ndarray
    shadow: np.ndarray
    mask: np.ndarray


# ---------------------------------------------------------------- sampling


def sample_lighting(rng: np.random.Generator) -> Lighting:
    cast = rng.uniform(0.96, 1.04, 3)
    return Lighting(
        gain=float(rng.uniform(0.85, 1.15)),
        contrast=float(rng.uniform(0.9, 1.1)),
        cast=(float(cast[0]), float(cast[1]), float(cast[2])),
        grad_amp=float(rng.uniform(0.0, 0.1)),
        grad_angle=float(rng.uniform(0.0, 2 * math.pi)),
        light_angle=math.radians(-135.0 + float(rng.uniform(-20.0, 20.0))),
    )


# Parts arrive against a guide rail: their orientation jitters about a nominal pose. 180 = any
# orientation (like MVTec AD's metal nut), a much harder task for reconstruction-based detectors.
ROTATION_JITTER_DEG = 15.0


def sample_part(
    rng: np.random.Generator, size: int, defect: str | None = None, severity: float | None = None,
    rotation: float = ROTATION_JITTER_DEG,
) -> PartSpec:
    """A random pose (±`rotation` degrees about the nominal orientation, ±2.5% of the size shift,
    ±5% scale) with the given defect; rotation 180 means any orientation."""
    offset = rng.uniform(-0.025, 0.025, 2) * size
    sev = float(rng.uniform()) if severity is None else float(severity)
    return PartSpec(
        angle=float(rng.uniform(-1.0, 1.0)) * math.radians(rotation),
        scale=float(rng.uniform(0.95, 1.05)),
        offset=(float(offset[0]), float(offset[1])),
        defect=defect,
        severity=sev,
        seed=int(rng.integers(2**31)),
    )


# ---------------------------------------------------------------- geometry


def _polar(points: tuple[tuple[float, float], ...], base: float) -> np.ndarray:
    return np.array([(r * math.cos(base + a), r * math.sin(base + a)) for r, a in points], np.float32)


def _body_outline() -> np.ndarray:
    corners = _polar(tuple((_BODY_R, k * math.pi / 3) for k in range(6)), math.pi / 6)
    pts = []
    for k in range(6):
        c, prev, nxt = corners[k], corners[k - 1], corners[(k + 1) % 6]
        pts += [c + 0.14 * (prev - c), c + 0.14 * (nxt - c)]
    return np.array(pts, np.float32)


def _tab_outlines() -> list[np.ndarray]:
    return [_polar(_TAB_POLAR, a) for a in _TAB_ANGLES]


def _to_pixels(pts: np.ndarray, spec: PartSpec, center: tuple[float, float], size: int) -> np.ndarray:
    """Part units -> canvas pixels: mirror (flip), rotate, scale, translate."""
    p = pts.astype(np.float64).copy()
    if spec.defect == "flip":
        p[:, 0] = -p[:, 0]
    c, s = math.cos(spec.angle), math.sin(spec.angle)
    rot = np.array([[c, -s], [s, c]])
    return p @ rot.T * (size * spec.scale) + np.asarray(center)


def _fixed(pts: np.ndarray) -> np.ndarray:
    return np.round(pts * _ONE).astype(np.int32)


def _fill(hw: tuple[int, int], polys: list[np.ndarray]) -> np.ndarray:
    """Anti-aliased coverage (0..1) of the union of polygons given in pixels."""
    canvas = np.zeros(hw, np.uint8)
    for poly in polys:  # one call each: fillPoly with several contours uses the even-odd rule
        cv2.fillPoly(canvas, [_fixed(poly)], 255, cv2.LINE_AA, _SHIFT)
    return canvas.astype(np.float32) / 255.0


def _disc(hw: tuple[int, int], center: np.ndarray, radius: float) -> np.ndarray:
    canvas = np.zeros(hw, np.uint8)
    cx, cy = _fixed(np.asarray(center, np.float64))
    cv2.circle(canvas, (int(cx), int(cy)), round(radius * _ONE), 255, -1, cv2.LINE_AA, _SHIFT)
    return canvas.astype(np.float32) / 255.0


def _blob(rng: np.random.Generator, n: int, radius: float) -> np.ndarray:
    """An irregular closed outline around (0, 0) in part units."""
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = radius * rng.uniform(0.7, 1.2, n)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1).astype(np.float32)


def _edge_point(rng: np.random.Generator) -> np.ndarray:
    """A point on the part's outline (body or tab), in part units, on a random ray from the centre."""
    polys = [_body_outline(), *_tab_outlines()]
    theta = rng.uniform(0, 2 * math.pi)
    ray = np.array([math.cos(theta), math.sin(theta)], np.float32)
    inside = 0.2
    for r in np.arange(0.2, 0.5, 0.004):
        p = (ray * r).astype(np.float32)
        if any(cv2.pointPolygonTest(poly, (float(p[0]), float(p[1])), False) >= 0 for poly in polys):
            inside = r
    return ray * inside


# ---------------------------------------------------------------- the part


def render_part(
    spec: PartSpec, light: Lighting, hw: tuple[int, int], center: tuple[float, float], size: int
) -> Layers:
    """Render the part with its defect on an `hw` canvas, its centre at `center` (pixels)."""
    px = size * spec.scale
    c_px = _to_pixels(np.zeros((1, 2), np.float32), spec, center, size)[0]
    body = _fill(hw, [_to_pixels(_body_outline(), spec, center, size)])
    tabs = _fill(hw, [_to_pixels(t, spec, center, size) for t in _tab_outlines()])
    bore = _disc(hw, c_px, _BORE_R * px)
    chamfer = np.clip(_disc(hw, c_px, _CHAMFER_R * px) - bore, 0, 1)
    good = np.maximum(body, tabs) * (1 - bore)
    alpha, mask = good, np.zeros(hw, np.uint8)
    drng = np.random.default_rng([spec.seed, 1])
    if spec.defect == "missing":
        alpha, mask = _cut_chunk(drng, spec, good, hw, center, size)
    shade = _metal_shading(spec, light, hw, c_px, px, body, tabs, chamfer, alpha)
    if spec.defect == "scratch":
        shade, mask = _scratch(drng, spec, shade, alpha, hw, center, size)
    color = shade[..., None] * _METAL_TINT
    if spec.defect == "color":
        color, mask = _stain(drng, spec, color, shade, alpha, hw, center, size)
    if spec.defect == "flip":
        mask = np.where(alpha > 0.5, 255, 0).astype(np.uint8)
    return Layers(color.astype(np.float32), alpha, _shadow(alpha, light, size), mask)


def _metal_shading(
    spec: PartSpec,
    light: Lighting,
    hw: tuple[int, int],
    c_px: np.ndarray,
    px: float,
    body: np.ndarray,
    tabs: np.ndarray,
    chamfer: np.ndarray,
    alpha: np.ndarray,
) -> np.ndarray:
    """Grey level 0..~1.1: machined face (conic highlight + specular), tilted tabs, bore chamfer, bevels."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = (xx - c_px[0]) / px, (yy - c_px[1]) / px
    phi = np.arctan2(dy, dx)
    la = light.light_angle
    lx, ly = math.cos(la), math.sin(la)
    conic = 0.5 + 0.5 * np.cos(2 * (phi - la))
    spec_hl = np.exp(-((dx - 0.1 * lx) ** 2 + (dy - 0.1 * ly) ** 2) / (2 * 0.11**2))
    face = 0.40 + 0.34 * conic + 0.26 * spec_hl
    tab = 0.40 + 0.22 * np.clip((dx * lx + dy * ly) / 0.45, -1, 1) + 0.08 * conic
    cham = 0.30 + 0.40 * (0.5 + 0.5 * np.cos(phi - la - math.pi))
    w_face = body * (1 - chamfer)
    w_tab = tabs * (1 - body)
    total = w_face + w_tab + chamfer + 1e-6
    shade = (face * w_face + tab * w_tab + cham * chamfer) / total
    grain_rng = np.random.default_rng([spec.seed, 0])
    grain = cv2.GaussianBlur(grain_rng.standard_normal(hw).astype(np.float32), (0, 0), 0.6)
    return shade + 0.035 * grain + _bevel(alpha, la, size=px)


def _bevel(alpha: np.ndarray, light_angle: float, size: float) -> np.ndarray:
    """Emboss the outline: edges whose outward normal faces the lamp light up, the others darken."""
    sigma = max(0.6, 0.008 * size)
    a = cv2.GaussianBlur(alpha, (0, 0), sigma)
    gx = cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=3) / 8
    facing = -(gx * math.cos(light_angle) + gy * math.sin(light_angle)) * (2.5 * sigma)
    return 0.35 * np.clip(facing, -1, 1)


def _shadow(alpha: np.ndarray, light: Lighting, size: int) -> np.ndarray:
    shift = -0.03 * size
    m = np.float32([[1, 0, shift * math.cos(light.light_angle)], [0, 1, shift * math.sin(light.light_angle)]])
    moved = cv2.warpAffine(alpha, m, (alpha.shape[1], alpha.shape[0]))
    return cv2.GaussianBlur(moved, (0, 0), max(0.8, 0.02 * size))


# ---------------------------------------------------------------- defects


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _cut_chunk(
    rng: np.random.Generator, spec: PartSpec, good: np.ndarray, hw: tuple[int, int],
    center: tuple[float, float], size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Bite a chunk out of the outline; the belt shows through. Mask: the material that is gone."""
    radius = max(_lerp(0.03, 0.10, spec.severity), 2.0 / size)
    chunk = _blob(rng, 10, radius) + _edge_point(rng)
    bite = _fill(hw, [_to_pixels(chunk, spec, center, size)])
    alpha = good * (1 - bite)
    return alpha, np.where((good > 0.5) & (bite > 0.5), 255, 0).astype(np.uint8)


def _scratch(
    rng: np.random.Generator, spec: PartSpec, shade: np.ndarray, alpha: np.ndarray, hw: tuple[int, int],
    center: tuple[float, float], size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """A thin slightly curved bright or dark line on the metal; longer and stronger with severity."""
    s = spec.severity
    r0, a0, theta = rng.uniform(0.15, 0.22), rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
    start = np.array([r0 * math.cos(a0), r0 * math.sin(a0)])
    direction = np.array([math.cos(theta), math.sin(theta)])
    length = _lerp(0.1, 0.5, s)
    bend = np.array([-direction[1], direction[0]]) * rng.uniform(-0.12, 0.12) * length
    t = np.linspace(0, 1, 12)[:, None]
    pts = start + direction * length * t + bend * 4 * t * (1 - t)
    line = np.zeros(hw, np.uint8)
    thickness = max(1, round(size / 128 * (1 + s)))
    cv2.polylines(line, [_fixed(_to_pixels(pts, spec, center, size))], False, 255, thickness, cv2.LINE_AA, _SHIFT)
    vis = line.astype(np.float32) / 255 * alpha
    sign = 1.0 if rng.uniform() < 0.6 else -1.0
    shade = shade + sign * _lerp(0.12, 0.5, s) * vis
    mask = cv2.dilate((line > 76).astype(np.uint8), np.ones((3, 3), np.uint8)) & (alpha > 0.5)
    return shade, mask.astype(np.uint8) * 255


def _stain(
    rng: np.random.Generator, spec: PartSpec, color: np.ndarray, shade: np.ndarray, alpha: np.ndarray,
    hw: tuple[int, int], center: tuple[float, float], size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """A soft irregular blotch of rust, oil or heat tint; larger and more opaque with severity."""
    s = spec.severity
    radius = max(_lerp(0.035, 0.12, s), 2.0 / size)
    r0, a0 = rng.uniform(0.15, 0.22), rng.uniform(0, 2 * math.pi)
    where = np.array([r0 * math.cos(a0), r0 * math.sin(a0)], np.float32)
    blob = _fill(hw, [_to_pixels(_blob(rng, 9, radius) + where, spec, center, size)])
    blob = cv2.GaussianBlur(blob, (0, 0), max(0.5, 0.25 * radius * size)) * alpha
    stain = _STAINS[rng.integers(len(_STAINS))] * 255 * (0.55 + 0.6 * shade[..., None])
    opacity = _lerp(0.3, 0.85, s) * blob[..., None]
    color = color * (1 - opacity) + stain * opacity
    return color, np.where((blob > 0.35) & (alpha > 0.5), 255, 0).astype(np.uint8)


# ---------------------------------------------------------------- belt, camera, composition


def _filtered_noise(rng: np.random.Generator, hw: tuple[int, int], sx: float, sy: float) -> np.ndarray:
    """Periodic Gaussian-filtered white noise of unit variance (the same statistics on any canvas)."""
    h, w = hw
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    gain = np.exp(-2 * math.pi**2 * ((sx * fx) ** 2 + (sy * fy) ** 2))
    spectrum = np.fft.rfft2(rng.standard_normal(hw)) * gain[:, : w // 2 + 1]
    noise = np.fft.irfft2(spectrum, s=hw)
    return (noise / math.sqrt(float(np.mean(gain**2)))).astype(np.float32)


def belt_texture(rng: np.random.Generator, hw: tuple[int, int], size: int) -> np.ndarray:
    """Conveyor belt: dark rubber with fine grain, streaks along the direction of travel and wear patches."""
    fine = _filtered_noise(rng, hw, 0.004 * size, 0.004 * size)
    streaks = _filtered_noise(rng, hw, 0.25 * size, 0.006 * size)
    patches = _filtered_noise(rng, hw, 0.08 * size, 0.08 * size)
    lum = 4.0 * fine + 3.0 * streaks + 4.0 * patches
    return _BELT_BGR + lum[..., None]


def composite(background: np.ndarray, layers: Layers, x0: int = 0) -> None:
    """Cast the shadow and lay the part onto `background` (float BGR) in place, left edge at column x0."""
    w = background.shape[1]
    lo, hi = max(0, x0), min(w, x0 + layers.alpha.shape[1])
    if lo >= hi:
        return
    sl = slice(lo - x0, hi - x0)
    alpha, shadow = layers.alpha[:, sl, None], layers.shadow[:, sl, None]
    region = background[:, lo:hi] * (1 - 0.5 * shadow)
    background[:, lo:hi] = region * (1 - alpha) + layers.color[:, sl] * alpha


def apply_camera(image: np.ndarray, light: Lighting, size: int, noise: np.random.Generator) -> np.ndarray:
    """Lamp gradient, gain, colour cast, contrast, slight optical blur and sensor noise -> uint8 BGR."""
    h, w = image.shape[:2]
    ys = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / size
    xs = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / size
    grad = 1 + light.grad_amp * (xs[None, :] * math.cos(light.grad_angle) + ys[:, None] * math.sin(light.grad_angle))
    out = image * (grad[..., None] * light.gain * np.asarray(light.cast, np.float32))
    out = (out - 110.0) * light.contrast + 110.0
    out = cv2.GaussianBlur(out, (0, 0), max(0.4, 0.004 * size))
    out += noise.standard_normal(out.shape, dtype=np.float32) * 2.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def part_center(spec: PartSpec, size: int) -> tuple[float, float]:
    c = (size - 1) / 2
    return c + spec.offset[0], c + spec.offset[1]


def render_image(spec: PartSpec, light: Lighting, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One inspection image (uint8 size×size×3 BGR) and its defect mask (uint8 size×size, 0/255)."""
    layers = render_part(spec, light, (size, size), part_center(spec, size), size)
    scene = belt_texture(np.random.default_rng([spec.seed, 2]), (size, size), size)
    composite(scene, layers)
    return apply_camera(scene, light, size, np.random.default_rng([spec.seed, 3])), layers.mask


# ---------------------------------------------------------------- the data set


@dataclass(frozen=True)
class SplitItem:
    kind: str
    index: int
    severity: float | None


def plan_test_split(n_test: int) -> dict[str, int]:
    """About half good, the rest shared round-robin among the defect types (kinds with 0 are left out)."""
    n_bad = n_test // 2
    plan = {"good": n_test - n_bad}
    for i, kind in enumerate(DEFECTS):
        n = n_bad // len(DEFECTS) + (1 if i < n_bad % len(DEFECTS) else 0)
        if n:
            plan[kind] = n
    return plan


def _severities(seed: int, kind_id: int, n: int) -> np.ndarray:
    """Stratified over [0, 1) so every class spans subtle to obvious, in shuffled order."""
    rng = np.random.default_rng([seed, 2, kind_id])
    return (rng.permutation(n) + rng.uniform(size=n)) / n


def _check_args(size: int, n_train: int, n_test: int, parts: int, video: Path | None) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise DataError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels (got {size}); try --size 128")
    if n_train < 0 or n_test < 0 or (video is None and (n_train < 1 or n_test < 1)):
        raise DataError(f"--n-train and --n-test must be at least 1 (got {n_train} and {n_test}); "
                        "0 and 0 with --video write the video alone")
    if video is not None:
        if parts < 1:
            raise DataError(f"--parts must be at least 1 (got {parts})")
        if video.suffix.lower() not in VIDEO_CODECS:
            raise DataError(f"--video {video}: unsupported suffix {video.suffix!r}; use .mp4 (mp4v) or .avi (MJPG)")


def _prepare_dir(out: Path) -> None:
    """Create OUT; refuse a folder holding a data set synth did not write; clear our own stale images."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".synth-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DataError(f"cannot write to {out} ({e.strerror or e}); choose a writable output folder") from None
    has_data = any((out / d).exists() for d in ("train", "test", "ground_truth"))
    if has_data and not (out / MARKER).is_file():
        raise DataError(f"{out} already holds a data set that trainer synth did not write; choose a new folder")
    for sub in ("train", "test", "ground_truth"):
        for folder in (out / sub).glob("*/"):
            for f in folder.glob("*.png"):
                if _NAME_RE.match(f.name):
                    f.unlink()
            if not any(folder.iterdir()):  # an empty class folder would fail to load
                folder.rmdir()


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise DataError(f"could not write {path}; check free disk space and permissions")


def _write_train(out: Path, seed: int, size: int, n: int, rotation: float) -> None:
    for i in range(n):
        rng = np.random.default_rng([seed, 0, i])
        light = sample_lighting(rng)
        image, _ = render_image(sample_part(rng, size, rotation=rotation), light, size)
        _write_png(out / "train" / "good" / f"{i:03d}.png", image)


def _write_test(out: Path, seed: int, size: int, n_test: int, rotation: float) -> list[SplitItem]:
    items: list[SplitItem] = []
    for kind, n in plan_test_split(n_test).items():
        kind_id = ("good", *DEFECTS).index(kind)  # fixed, so a class's images do not depend on n_test
        severities = _severities(seed, kind_id, n)
        for i in range(n):
            rng = np.random.default_rng([seed, 1, kind_id, i])
            light = sample_lighting(rng)
            defect = None if kind == "good" else kind
            sev = None if defect in (None, "flip") else float(severities[i])
            image, mask = render_image(sample_part(rng, size, defect, sev or 0.0, rotation), light, size)
            _write_png(out / "test" / kind / f"{i:03d}.png", image)
            if defect:
                _write_png(out / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
            items.append(SplitItem(kind, i, sev))
    return items


def _write_index(out: Path, items: list[SplitItem]) -> None:
    """OUT/test_index.csv: every test image with its kind and severity (empty for good and flip)."""
    with (out / "test_index.csv").open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file", "kind", "severity"])
        for it in items:
            sev = "" if it.severity is None else f"{it.severity:.3f}"
            w.writerow([f"test/{it.kind}/{it.index:03d}.png", it.kind, sev])


# ---------------------------------------------------------------- the conveyor video


@dataclass(frozen=True)
class Passage:
    """One part crossing the camera: frames relative to the video, its sprite's visible frame range."""

    part_id: int
    spec: PartSpec
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


def _sprite(spec: PartSpec, light: Lighting, size: int) -> Layers:
    """The part on a size x 2*size canvas whose columns [size//2, size//2 + size) are a training image."""
    cx, cy = part_center(spec, size)
    return render_part(spec, light, (size, 2 * size), (cx + size // 2, cy), size)


def _sprite_left(size: int, v: int, t: int, center_frame: int) -> int:
    """Frame column of the sprite's left edge; at center_frame the centre square shows a training image."""
    return size - size // 2 + v * (t - center_frame)


def video_lighting(seed: int) -> Lighting:
    """The one lighting of a seed's video (lamps do not change between parts)."""
    return sample_lighting(np.random.default_rng([seed, 3]))


def plan_video(seed: int, size: int, parts: int, light: Lighting,
               rotation: float = ROTATION_JITTER_DEG, defect_rate: float = DEFECT_RATE,
               first_part: int = 0) -> list[Passage]:
    """Parts one after another, each leaving the centre square empty for a few frames before the next.

    Part p is drawn from its own seed (seed, p), so a recording starting at `first_part` shows other parts
    of the same line (same lamps, belt and camera) than one starting at 0."""
    v, gaps = belt_speed(size), np.random.default_rng([seed, 5])
    passages: list[Passage] = []
    first = LEAD_IN_FRAMES
    for p in range(first_part, first_part + parts):
        rng = np.random.default_rng([seed, 4, p])
        defect = DEFECTS[int(rng.integers(len(DEFECTS)))] if rng.uniform() < defect_rate else None
        spec = sample_part(rng, size, defect, rotation=rotation)
        cols = np.flatnonzero(_sprite(spec, light, size).alpha.max(axis=0) > 0.25)
        base = _sprite_left(size, v, 0, 0)
        e0 = math.ceil((size - int(cols[-1]) - base) / v)
        e1 = math.floor((2 * size - 1 - int(cols[0]) - base) / v)
        tc = first - e0
        visible = (tc - (base + 2 * size) // v - 1, tc + (3 * size - base) // v + 1)
        passages.append(Passage(p, spec, tc, tc + e0, tc + e1, visible))
        first = tc + e1 + 1 + int(gaps.integers(3, max(4, size // (2 * v)) + 1))
    return passages


def _frames(passages: list[Passage], n_frames: int, light: Lighting, seed: int, size: int) -> Iterator[np.ndarray]:
    """Render every frame: a moving belt, the parts in view as sprites, the same camera as the images."""
    v, width, period = belt_speed(size), 3 * size, 8 * size
    belt = belt_texture(np.random.default_rng([seed, 6]), (size, period), size)
    noise = np.random.default_rng([seed, 7])
    cols = np.arange(width)
    cache: dict[int, Layers] = {}
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
                cache[p.part_id] = _sprite(p.spec, light, size)
            composite(frame, cache[p.part_id], _sprite_left(size, v, t, p.center_frame))
        yield apply_camera(frame, light, size, noise)


def _count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.isOpened() and cap.grab():
        n += 1
    cap.release()
    return n


def _write_ground_truth(path: Path, passages: list[Passage]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["part_id", "first_frame", "last_frame", "center_frame", "label"])
        for p in passages:
            w.writerow([p.part_id, p.first_frame, p.last_frame, p.center_frame, p.label])


def _write_config(path: Path, video: Path, size: int) -> None:
    source = json.dumps(str(video.resolve()))  # a JSON string is a valid TOML basic string
    path.write_text(
        f'station_id = "synthetic-line"\n\n[camera]\nsource = {source}\nfps = {FPS}\n\n'
        f'[[rois]]\nname = "part"\nx = {size}\ny = 0\nwidth = {size}\nheight = {size}\n\n'
        '[trigger]\nmode = "presence"\n'
    )


def write_video(path: Path, *, seed: int, size: int, parts: int,
                rotation: float = ROTATION_JITTER_DEG, defect_rate: float = DEFECT_RATE,
                first_part: int = 0) -> dict[str, Any]:
    """Write the conveyor video, its ground-truth CSV and an inspector config; return a summary."""
    light = video_lighting(seed)
    passages = plan_video(seed, size, parts, light, rotation, defect_rate, first_part)
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
        for frame in _frames(passages, n_frames, light, seed, size):
            writer.write(frame)
    finally:
        writer.release()
    got = _count_frames(path)
    if got != n_frames:
        raise DataError(f"{path} reads back {got} frames instead of {n_frames}; try the other suffix (.mp4 or .avi)")
    csv_path, toml_path = path.with_suffix(".csv"), path.with_suffix(".toml")
    _write_ground_truth(csv_path, passages)
    _write_config(toml_path, path, size)
    return {
        "path": str(path), "csv": str(csv_path), "toml": str(toml_path), "frames": n_frames, "fps": FPS,
        "parts": parts, "defective": sum(p.spec.defect is not None for p in passages),
        "speed_px_per_frame": belt_speed(size),
    }



def synthesize(
    out_dir: str | Path,
    *,
    seed: int = 0,
    size: int = 128,
    n_train: int = 400,
    n_test: int = 200,
    video: str | Path | None = None,
    parts: int = 40,
    rotation: float = ROTATION_JITTER_DEG,
    defect_rate: float = DEFECT_RATE,
    first_part: int = 0,
) -> dict[str, Any]:
    """Write the data set (and the video) and return a summary dict; deterministic by seed."""
    out, video_path = Path(out_dir), None if video is None else Path(video)
    _check_args(size, n_train, n_test, parts, video_path)
    if not 0.0 <= rotation <= 180.0:
        raise DataError(f"--rotation {rotation} is outside 0-180 degrees (180 = any orientation)")
    if not 0.0 <= defect_rate <= 1.0:
        raise DataError(f"--defect-rate {defect_rate} is outside 0-1 (0 = a recording of good parts only)")
    if first_part < 0:
        raise DataError(f"--first-part {first_part} must be >= 0")
    _prepare_dir(out)
    start = time.perf_counter()
    _write_train(out, seed, size, n_train, rotation)
    items = _write_test(out, seed, size, n_test, rotation)
    _write_index(out, items)
    summary: dict[str, Any] = {"out_dir": str(out), "seed": seed, "size": size, "rotation": rotation, "train": n_train, "test": plan_test_split(n_test)}
    if video_path is not None:
        summary["video"] = write_video(video_path, seed=seed, size=size, parts=parts, rotation=rotation,
                                       defect_rate=defect_rate, first_part=first_part)
    (out / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary


def run_synth(args: argparse.Namespace) -> int:
    s = synthesize(
        args.out_dir, seed=args.seed, size=args.size, n_train=args.n_train, n_test=args.n_test,
        video=args.video, parts=args.parts, rotation=args.rotation, defect_rate=args.defect_rate,
        first_part=args.first_part,
    )
    kinds = ", ".join(f"{n} {k}" for k, n in s["test"].items())
    print(f"trainer synth: {s['train']} train + {sum(s['test'].values())} test images ({kinds}), "
          f"{s['size']} px, in {s['out_dir']}")
    if "video" in s:
        v = s["video"]
        print(f"trainer synth: video {v['path']} ({v['frames']} frames, {v['parts']} part(s), "
              f"{v['defective']} defective) + {Path(v['csv']).name} + {Path(v['toml']).name}")
    print(f"trainer synth: done in {s['seconds']} s")
    return 0

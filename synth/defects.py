"""The defect kinds, each drawn onto a rendered part with the mask of the pixels it changed.

"flip" (a mirrored part) has no drawing of its own: `geometry.to_pixels` mirrors the outline and
`parts.render_part` marks the whole part in its mask.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from synth.geometry import SHIFT, blob, edge_point, fill, fixed, to_pixels
from synth.spec import PartSpec

DEFECTS: tuple[str, ...] = ("scratch", "color", "missing", "flip")

_STAINS = np.array([[0.16, 0.33, 0.60], [0.20, 0.16, 0.14], [0.60, 0.40, 0.30]], np.float32)  # rust, oil, tint


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def cut_chunk(
    rng: np.random.Generator, spec: PartSpec, good: np.ndarray, hw: tuple[int, int],
    center: tuple[float, float], size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Bite a chunk out of the outline; the belt shows through. Mask: the material that is gone."""
    radius = max(_lerp(0.03, 0.10, spec.severity), 2.0 / size)
    chunk = blob(rng, 10, radius) + edge_point(rng)
    bite = fill(hw, [to_pixels(chunk, spec, center, size)])
    alpha = good * (1 - bite)
    return alpha, np.where((good > 0.5) & (bite > 0.5), 255, 0).astype(np.uint8)


def scratch(
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
    cv2.polylines(line, [fixed(to_pixels(pts, spec, center, size))], False, 255, thickness, cv2.LINE_AA, SHIFT)
    vis = line.astype(np.float32) / 255 * alpha
    sign = 1.0 if rng.uniform() < 0.6 else -1.0
    shade = shade + sign * _lerp(0.12, 0.5, s) * vis
    mask = cv2.dilate((line > 76).astype(np.uint8), np.ones((3, 3), np.uint8)) & (alpha > 0.5)
    return shade, mask.astype(np.uint8) * 255


def stain(
    rng: np.random.Generator, spec: PartSpec, color: np.ndarray, shade: np.ndarray, alpha: np.ndarray,
    hw: tuple[int, int], center: tuple[float, float], size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """A soft irregular blotch of rust, oil or heat tint; larger and more opaque with severity."""
    s = spec.severity
    radius = max(_lerp(0.035, 0.12, s), 2.0 / size)
    r0, a0 = rng.uniform(0.15, 0.22), rng.uniform(0, 2 * math.pi)
    where = np.array([r0 * math.cos(a0), r0 * math.sin(a0)], np.float32)
    patch = fill(hw, [to_pixels(blob(rng, 9, radius) + where, spec, center, size)])
    patch = cv2.GaussianBlur(patch, (0, 0), max(0.5, 0.25 * radius * size)) * alpha
    tint = _STAINS[rng.integers(len(_STAINS))] * 255 * (0.55 + 0.6 * shade[..., None])
    opacity = _lerp(0.3, 0.85, s) * patch[..., None]
    color = color * (1 - opacity) + tint * opacity
    return color, np.where((patch > 0.35) & (alpha > 0.5), 255, 0).astype(np.uint8)

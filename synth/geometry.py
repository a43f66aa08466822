"""The part's shape in part units (1.0 = image size) and anti-aliased rasterisation onto a canvas."""

from __future__ import annotations

import math

import cv2
import numpy as np

from synth.spec import PartSpec

SHIFT = 4  # fixed-point bits for sub-pixel OpenCV drawing
_ONE = 1 << SHIFT

# A chamfered hexagon with a bore and three hooked tabs.
BODY_R, BORE_R, CHAMFER_R = 0.27, 0.105, 0.14
_TAB_ANGLES = (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)
_TAB_POLAR = (  # a radial stem with a flag at its tip on one side only: mirroring it shows
    (0.20, -0.20), (0.43, -0.14), (0.46, 0.0), (0.455, 0.22), (0.42, 0.40), (0.365, 0.34), (0.35, 0.15), (0.20, 0.20)
)


def _polar(points: tuple[tuple[float, float], ...], base: float) -> np.ndarray:
    return np.array([(r * math.cos(base + a), r * math.sin(base + a)) for r, a in points], np.float32)


def body_outline() -> np.ndarray:
    corners = _polar(tuple((BODY_R, k * math.pi / 3) for k in range(6)), math.pi / 6)
    pts = []
    for k in range(6):
        c, prev, nxt = corners[k], corners[k - 1], corners[(k + 1) % 6]
        pts += [c + 0.14 * (prev - c), c + 0.14 * (nxt - c)]
    return np.array(pts, np.float32)


def tab_outlines() -> list[np.ndarray]:
    return [_polar(_TAB_POLAR, a) for a in _TAB_ANGLES]


def to_pixels(pts: np.ndarray, spec: PartSpec, center: tuple[float, float], size: int) -> np.ndarray:
    """Part units -> canvas pixels: mirror (flip), rotate, scale, translate."""
    p = pts.astype(np.float64).copy()
    if spec.defect == "flip":
        p[:, 0] = -p[:, 0]
    c, s = math.cos(spec.angle), math.sin(spec.angle)
    rot = np.array([[c, -s], [s, c]])
    return p @ rot.T * (size * spec.scale) + np.asarray(center)


def fixed(pts: np.ndarray) -> np.ndarray:
    """Pixels -> OpenCV fixed-point coordinates with SHIFT fractional bits."""
    return np.round(pts * _ONE).astype(np.int32)


def fill(hw: tuple[int, int], polys: list[np.ndarray]) -> np.ndarray:
    """Anti-aliased coverage (0..1) of the union of polygons given in pixels."""
    canvas = np.zeros(hw, np.uint8)
    for poly in polys:  # one call each: fillPoly with several contours uses the even-odd rule
        cv2.fillPoly(canvas, [fixed(poly)], 255, cv2.LINE_AA, SHIFT)
    return canvas.astype(np.float32) / 255.0


def disc(hw: tuple[int, int], center: np.ndarray, radius: float) -> np.ndarray:
    """Anti-aliased coverage (0..1) of a disc given in pixels."""
    canvas = np.zeros(hw, np.uint8)
    cx, cy = fixed(np.asarray(center, np.float64))
    cv2.circle(canvas, (int(cx), int(cy)), round(radius * _ONE), 255, -1, cv2.LINE_AA, SHIFT)
    return canvas.astype(np.float32) / 255.0


def blob(rng: np.random.Generator, n: int, radius: float) -> np.ndarray:
    """An irregular closed outline around (0, 0) in part units."""
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = radius * rng.uniform(0.7, 1.2, n)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1).astype(np.float32)


def edge_point(rng: np.random.Generator) -> np.ndarray:
    """A point on the part's outline (body or tab), in part units, on a random ray from the centre."""
    polys = [body_outline(), *tab_outlines()]
    theta = rng.uniform(0, 2 * math.pi)
    ray = np.array([math.cos(theta), math.sin(theta)], np.float32)
    inside = 0.2
    for r in np.arange(0.2, 0.5, 0.004):
        p = (ray * r).astype(np.float32)
        if any(cv2.pointPolygonTest(poly, (float(p[0]), float(p[1])), False) >= 0 for poly in polys):
            inside = r
    return ray * inside

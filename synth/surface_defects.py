"""The defect painter of photographed surfaces: five kinds drawn onto a part's colour, each with its exact mask.

A part's colour is float BGR (0..255) on a canvas; `center` and `size` place the part image (size×size) on it
and `light_angle` is the lamp's direction, so grooves and pits are shaded the way the part is lit. The mask
is 255 where the painting changed the pixels visibly (by more than VISIBLE grey levels). Every field ends
where its strength drops below 1%, so the pixels away from a defect are untouched.

This painter is for test parts only: the trainer's simulated anomalies must never use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from synth.geometry import blob, fill

SURFACE_DEFECTS: tuple[str, ...] = ("scratch", "hole", "stain", "crack", "contamination")
VISIBLE = 12.0  # grey levels: a change this large is seen at a glance on a textured surface
_SHIFT = 4
_LUMA = np.array([0.114, 0.587, 0.299], np.float32)  # BGR -> grey, as cv2.COLOR_BGR2GRAY
# Foreign particles (BGR): rust flake, black rubber, blue plastic, white grit, green paint.
_PARTICLES = np.array([[40, 80, 150], [28, 28, 30], [175, 115, 45], [225, 228, 222], [60, 140, 70]], np.float32)
_RUST, _OIL = np.array([0.3, 0.42, 0.68], np.float32), np.array([0.33, 0.36, 0.4], np.float32)  # colour factors
_DEPOSIT = np.array([215, 218, 218], np.float32)  # limescale, dust


@dataclass(frozen=True)
class Site:
    """Where a defect goes: the part image's centre and size on the canvas, and the lamp's direction."""

    center: tuple[float, float]
    size: int
    light_angle: float
    grey: bool = False  # a monochrome camera: only grey-level differences are seen

    @property
    def light(self) -> tuple[float, float]:
        return math.cos(self.light_angle), math.sin(self.light_angle)

    def spot(self, rng: np.random.Generator, spread: float = 0.3) -> np.ndarray:
        """A random point within ±spread of the part size around the part's centre (pixels)."""
        return np.asarray(self.center) + rng.uniform(-spread, spread, 2) * self.size

    def _origin(self, n: int) -> tuple[int, int]:
        return (int(math.floor(self.center[0] + 0.5)) - n // 2, int(math.floor(self.center[1] + 0.5)) - n // 2)

    def inside(self, hw: tuple[int, int]) -> np.ndarray:
        """Boolean canvas mask of the part image (size×size around the centre)."""
        x0, y0 = self._origin(self.size)
        out = np.zeros(hw, bool)
        out[max(0, y0) : max(0, y0 + self.size), max(0, x0) : max(0, x0 + self.size)] = True
        return out

    def noise(self, rng: np.random.Generator, hw: tuple[int, int], sigma: float) -> np.ndarray:
        """Blurred unit-variance noise drawn over 2·size around the part's centre and laid on the canvas (0
        elsewhere): the same draws whatever the canvas, so a part image and the video's sprite agree."""
        n = 2 * self.size
        patch = _blur(rng.standard_normal((n, n)).astype(np.float32), sigma)
        patch /= patch.std() + 1e-6
        x0, y0 = self._origin(n)
        out = np.zeros(hw, np.float32)
        ys, xs = slice(max(0, y0), max(0, min(hw[0], y0 + n))), slice(max(0, x0), max(0, min(hw[1], x0 + n)))
        out[ys, xs] = patch[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        return out


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _luma(color: np.ndarray) -> np.ndarray:
    return color @ _LUMA


def _foreign(rng: np.random.Generator, color: np.ndarray, where: np.ndarray, grey: bool) -> int:
    """A particle colour that stands out from the surface under it (by grey level on a monochrome camera)."""
    local = np.median(color[where], axis=0) if where.any() else np.full(3, 128.0, np.float32)
    if grey:
        gap = np.abs(_PARTICLES @ _LUMA - float(local @ _LUMA))
        far = np.flatnonzero(gap > 55)
    else:
        gap = np.abs(_PARTICLES - local).max(axis=1)
        far = np.flatnonzero(gap > 70)
    return int(far[int(rng.integers(len(far)))]) if len(far) else int(np.argmax(gap))


def _local_level(color: np.ndarray, where: np.ndarray) -> float:
    """The median grey level of the colour where `where` holds (128 where it holds nowhere)."""
    return float(np.median(_luma(color[where]))) if where.any() else 128.0


def _finite(field: np.ndarray) -> np.ndarray:
    """Cut a smooth field's tails: below 1% it is exactly 0, so nothing far away changes."""
    return np.where(field < 0.01, 0.0, field).astype(np.float32)


def _blur(field: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(field, (0, 0), max(0.3, sigma))


def _relief(height: np.ndarray, light: tuple[float, float]) -> np.ndarray:
    """How much a height field's slopes face the lamp (positive: lit), per pixel."""
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) / 8
    return -(gx * light[0] + gy * light[1])


def _stroke(hw: tuple[int, int], pts: np.ndarray, widths: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A polyline drawn segment by segment with varying width (pixels) and strength (0..1): a field 0..1."""
    canvas = np.zeros(hw, np.uint8)
    fixed = np.round(pts * (1 << _SHIFT)).astype(np.int32)
    for i in range(len(pts) - 1):
        a, b = (int(fixed[i, 0]), int(fixed[i, 1])), (int(fixed[i + 1, 0]), int(fixed[i + 1, 1]))
        cv2.line(canvas, a, b, int(round(255 * values[i])), max(1, int(round(widths[i]))), cv2.LINE_AA, _SHIFT)
    return canvas.astype(np.float32) / 255.0


def _walk(rng: np.random.Generator, start: np.ndarray, heading: float, length: float, step: float,
          wiggle: float) -> np.ndarray:
    """A jagged path: straight steps whose heading jumps at random about a slowly drifting direction."""
    n = max(2, int(math.ceil(length / step)))
    drift = rng.normal(0, 0.08, n).cumsum()
    angles = heading + drift + rng.normal(0, wiggle, n)
    steps = np.stack([np.cos(angles), np.sin(angles)], 1) * step
    return np.vstack([start, start + np.cumsum(steps, 0)])


def scratch(rng: np.random.Generator, s: float, color: np.ndarray, site: Site) -> np.ndarray:
    """A thin curved groove, lighter (bared material) or darker (dirt), soft-edged, fading at both ends;
    its walls catch the lamp on one side. Longer, wider and stronger with severity."""
    size, hw = site.size, color.shape[:2]
    length = size * _lerp(0.35, 0.8, s) * rng.uniform(0.85, 1.15)
    width = max(1.0, size * _lerp(0.018, 0.035, s))
    theta = rng.uniform(0, 2 * math.pi)
    d = np.array([math.cos(theta), math.sin(theta)])
    mid = site.spot(rng, 0.15)
    bend = np.array([-d[1], d[0]]) * rng.uniform(-0.15, 0.15) * length
    t = np.linspace(0, 1, 33)
    pts = mid + d * length * (t[:, None] - 0.5) + bend * 4 * (t * (1 - t))[:, None]
    taper = np.sin(math.pi * np.clip(t * 1.08 - 0.04, 0.02, 0.98)) ** 0.6
    wear = np.interp(t, np.linspace(0, 1, 6), rng.uniform(0.6, 1.0, 6))  # deeper and shallower along it
    field = _finite(_blur(_stroke(hw, pts, width * (0.5 + 0.5 * taper), taper * wear), 0.25 * width))
    lum = _local_level(color, (field > 0.3) & site.inside(hw))
    coin = rng.uniform()
    bright = lum < 90 or (lum < 185 and coin < 0.55)
    k = _lerp(0.6, 1.0, s) * rng.uniform(0.85, 1.0)
    if bright:  # bared material: lighter than the surface around it
        out = color + (np.minimum(255, color * 1.35 + 70) - color) * (k * field)[..., None]
    else:  # a groove holding dirt
        out = color * (1 - 0.6 * k * field)[..., None]
    wall = _relief(field, site.light) * width
    return out + (35 * k * np.clip(wall, -1, 1))[..., None]


def hole(rng: np.random.Generator, s: float, color: np.ndarray, site: Site) -> np.ndarray:
    """A dark pit: a shadowed floor, the far wall lit by the lamp, and a pale crushed rim around it."""
    size, hw = site.size, color.shape[:2]
    r = max(1.8, size * _lerp(0.035, 0.085, s) * rng.uniform(0.85, 1.15))
    c = site.spot(rng, 0.25)
    outline = blob(rng, 12, 1.0) * np.array([1.0, rng.uniform(0.7, 1.0)])
    rot = rng.uniform(0, math.pi)
    m = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
    pit = _blur(fill(hw, [outline @ m.T * r + c]), 0.12 * r)
    bowl = _blur(pit, 0.35 * r)
    wall = _relief(-bowl, site.light) * r  # a depression: the far wall faces the lamp
    rim = _finite(np.clip(_blur(cv2.dilate(pit, np.ones((3, 3), np.uint8), iterations=max(1, round(0.2 * r))),
                                0.2 * r) - pit, 0, 1))
    floor = color * _lerp(0.35, 0.12, s) + 6
    depth = _finite(pit * (0.75 + 0.25 * bowl))
    out = color * (1 - depth[..., None]) + floor * depth[..., None]
    out = out + (255 - out) * (0.25 * rim)[..., None]
    return out + color * (0.8 * np.clip(wall, 0, 1) * pit)[..., None]


def stain(rng: np.random.Generator, s: float, color: np.ndarray, site: Site) -> np.ndarray:
    """A soft low-frequency blotch, uneven in density, with a soft edge: rust or oil (darker) on a light
    surface, a pale deposit on a dark one, any of them in between."""
    size, hw = site.size, color.shape[:2]
    r = size * _lerp(0.1, 0.22, s) * rng.uniform(0.85, 1.15)
    c = site.spot(rng, 0.2)
    polys = [blob(rng, 9, r * rng.uniform(0.45, 0.75)) + c + rng.uniform(-0.5, 0.5, 2) * r
             for _ in range(int(rng.integers(3, 6)))]
    patch = np.zeros(hw, np.float32)
    for p in polys:
        patch = np.maximum(patch, fill(hw, [p]))
    grain = site.noise(rng, hw, 0.15 * r)
    alpha = _finite(_blur(patch, 0.18 * r) * np.clip(0.85 + 0.2 * grain, 0.5, 1.0))
    opacity = _lerp(0.7, 1.0, s)
    lum = _local_level(color, (patch > 0.5) & site.inside(hw))
    kind = int(rng.integers(3)) if 90 <= lum <= 150 else (int(rng.integers(2)) if lum > 150 else 2)
    if kind == 0:  # rust: darker and warmer, the texture still showing
        tint = color * _RUST
    elif kind == 1:  # oil: much darker, a touch yellow-brown
        tint = color * _OIL
    else:  # a pale deposit over the texture
        tint = 0.3 * color + 0.7 * _DEPOSIT
    a = (opacity * alpha)[..., None]
    return color * (1 - a) + tint * a


def crack(rng: np.random.Generator, s: float, color: np.ndarray, site: Site) -> np.ndarray:
    """A thin jagged dark line with one to three branches, widest where it started (on a dark surface its
    crushed edges show pale instead)."""
    size, hw = site.size, color.shape[:2]
    length = size * _lerp(0.35, 0.85, s) * rng.uniform(0.85, 1.15)
    width = max(1.0, size * _lerp(0.01, 0.021, s))
    step = max(1.5, 0.035 * size)
    heading = rng.uniform(0, 2 * math.pi)
    start = site.spot(rng, 0.15) - np.array([math.cos(heading), math.sin(heading)]) * length / 2
    main = _walk(rng, start, heading, length, step, 0.45)
    paths = [(main, width)]
    for _ in range(1 + int(rng.integers(0, 1 + round(2 * s)))):
        at = main[int(rng.integers(len(main) // 4, max(len(main) // 4 + 1, 3 * len(main) // 4)))]
        side = heading + rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.1)
        paths.append((_walk(rng, at, side, length * rng.uniform(0.2, 0.45), step, 0.5), 0.7 * width))
    field = np.zeros(hw, np.float32)
    for pts, w in paths:
        t = np.linspace(0, 1, len(pts))
        field = np.maximum(field, _stroke(hw, pts, w * (1.0 - 0.6 * t), 1.0 - 0.35 * t))
    field = _finite(_blur(field, 0.4))
    depth = _lerp(0.55, 0.85, s) * rng.uniform(0.9, 1.0)
    if _local_level(color, (field > 0.3) & site.inside(hw)) < 70:  # on a dark surface: pale crushed edges
        return color + (np.minimum(255, color * 1.35 + 70) - color) * (0.8 * depth * field)[..., None]
    out = color * (1 - depth * field)[..., None]
    return out + (30 * depth * np.clip(_relief(-field, site.light) * 2, 0, 1))[..., None]


def contamination(rng: np.random.Generator, s: float, color: np.ndarray, site: Site) -> np.ndarray:
    """A foreign particle (rust flake, rubber, plastic, grit, paint) lying on the surface: its own colour and
    grain, lit on the lamp's side, casting a short shadow."""
    size, hw = site.size, color.shape[:2]
    r = max(1.8, size * _lerp(0.03, 0.075, s) * rng.uniform(0.85, 1.15))
    c = site.spot(rng, 0.25)
    body = fill(hw, [blob(rng, 9, 1.0) * r + c])
    lx, ly = site.light
    m = np.float32([[1, 0, -0.35 * r * lx], [0, 1, -0.35 * r * ly]])
    shadow = _finite(_blur(cv2.warpAffine(body, m, (hw[1], hw[0])), 0.25 * r) * (1 - body))
    base = _PARTICLES[_foreign(rng, color, (body > 0.5) & site.inside(hw), site.grey)]
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float32)
    dome = np.clip(((xx - c[0]) * lx + (yy - c[1]) * ly) / r, -1, 1)
    grain = site.noise(rng, hw, 0.6) * 10
    particle = base * (0.85 + 0.3 * dome)[..., None] + grain[..., None]
    out = color * (1 - 0.45 * shadow)[..., None]
    return out * (1 - body[..., None]) + particle * body[..., None]


_PAINTERS: dict[str, Callable[[np.random.Generator, float, np.ndarray, Site], np.ndarray]] = {
    "scratch": scratch, "hole": hole, "stain": stain, "crack": crack, "contamination": contamination,
}


_AREAS = ("hole", "stain", "contamination")  # kinds that cover an area: their masks have no holes


def visible_mask(before: np.ndarray, after: np.ndarray, grey: bool = False) -> np.ndarray:
    """uint8 0/255: where `after` differs visibly from `before` (grey level change when grey, else any channel)."""
    delta = np.abs(_luma(after) - _luma(before)) if grey else np.abs(after - before).max(axis=2)
    return np.where(delta > VISIBLE, 255, 0).astype(np.uint8)


def paint_defect(kind: str, rng: np.random.Generator, severity: float, color: np.ndarray,
                 site: Site) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect of `kind` onto a copy of `color`; return (painted colour clipped to 0..255, mask)."""
    after = np.clip(_PAINTERS[kind](rng, float(severity), color.astype(np.float32), site), 0, 255)
    mask = visible_mask(color, after, site.grey)
    return after.astype(np.float32), _fill_holes(mask) if kind in _AREAS else mask


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Mark what the mask encloses too (a pit's floor between its rim, a stain's lighter patch)."""
    outside = np.pad(mask, 1)
    cv2.floodFill(outside, None, (0, 0), 255)
    return mask | (255 - outside[1:-1, 1:-1])

"""One part rendered with its defect: machined-steel shading, bevelled edges and a cast shadow, as layers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from synth.defects import cut_chunk, scratch, stain
from synth.geometry import BORE_R, CHAMFER_R, body_outline, disc, fill, tab_outlines, to_pixels
from synth.spec import Lighting, PartSpec

_METAL_TINT = np.array([1.0, 0.99, 0.96], np.float32) * 235.0  # steel, a touch cool (BGR)


@dataclass
class Layers:
    """A rendered part on a canvas: colour (float BGR 0..255), coverage, cast shadow, defect mask."""

    color: np.ndarray
    alpha: np.ndarray
    shadow: np.ndarray
    mask: np.ndarray


def render_part(
    spec: PartSpec, light: Lighting, hw: tuple[int, int], center: tuple[float, float], size: int
) -> Layers:
    """Render the part with its defect on an `hw` canvas, its centre at `center` (pixels)."""
    px = size * spec.scale
    c_px = to_pixels(np.zeros((1, 2), np.float32), spec, center, size)[0]
    body = fill(hw, [to_pixels(body_outline(), spec, center, size)])
    tabs = fill(hw, [to_pixels(t, spec, center, size) for t in tab_outlines()])
    bore = disc(hw, c_px, BORE_R * px)
    chamfer = np.clip(disc(hw, c_px, CHAMFER_R * px) - bore, 0, 1)
    good = np.maximum(body, tabs) * (1 - bore)
    alpha, mask = good, np.zeros(hw, np.uint8)
    drng = np.random.default_rng([spec.seed, 1])
    if spec.defect == "missing":
        alpha, mask = cut_chunk(drng, spec, good, hw, center, size)
    shade = _metal_shading(spec, light, hw, c_px, px, body, tabs, chamfer, alpha)
    if spec.defect == "scratch":
        shade, mask = scratch(drng, spec, shade, alpha, hw, center, size)
    color = shade[..., None] * _METAL_TINT
    if spec.defect == "color":
        color, mask = stain(drng, spec, color, shade, alpha, hw, center, size)
    if spec.defect == "flip":
        mask = np.where(alpha > 0.5, 255, 0).astype(np.uint8)
    return Layers(color.astype(np.float32), alpha, cast_shadow(alpha, light, size), mask)


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


def cast_shadow(alpha: np.ndarray, light: Lighting, size: int) -> np.ndarray:
    """The part's shadow on the belt: its coverage shifted away from the lamp and blurred."""
    shift = -0.03 * size
    m = np.float32([[1, 0, shift * math.cos(light.light_angle)], [0, 1, shift * math.sin(light.light_angle)]])
    moved = cv2.warpAffine(alpha, m, (alpha.shape[1], alpha.shape[0]))
    return cv2.GaussianBlur(moved, (0, 0), max(0.8, 0.02 * size))

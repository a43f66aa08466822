"""Parts cut from a photographed material: square tiles at random places, angles, scales and shades of it.

The photograph is the material. A part image (size×size) always shows TILE_FRACTION of the photograph's
shorter side, at any --size, so a 64 px and a 128 px line show the same material at two resolutions; when
that asks for more pixels than the photograph has, it is scaled up (bicubic) and `Material.zoom` > 1 says
by how much. Each tile is cut at a random place, turned within ±rotation, its texture scaled ±5% and given
its own brightness and contrast (±7%, ±10%); where a cut reaches past the photograph's border the
photograph is mirrored there.

A tile is a square of TILE_SIDE × size lying on the belt in the middle of the part image, like the metal
parts: mostly surface, with a strip of belt along its edges (and in the corners when it is turned). It
never covers the whole image, so the inspector's presence trigger sees where it is and fires with the tile
centred, as it does for the metal parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from synth.geometry import fill
from synth.parts import Layers, cast_shadow
from synth.spec import Lighting
from synth.surface_defects import Site, paint_defect
from synth.surface_source import Photo

TILE_FRACTION = 0.25  # a part image spans this share of the photograph's shorter side
TILE_SIDE = 0.9  # the tile's side as a share of the part image's


@dataclass(frozen=True)
class Material:
    """The photograph at the render scale: float32 BGR, `zoom` render pixels per photograph pixel."""

    texture: np.ndarray
    zoom: float
    tile: float  # tile side in pixels
    grey: bool
    mean: np.ndarray  # per-channel mean of the texture: the pivot of each tile's brightness and contrast


@dataclass(frozen=True)
class SurfaceSpec:
    """One tile: its cut (texture pixels) and pose, its shade, its defect; `seed` drives defect and noise."""

    angle: float
    scale: float
    cut: tuple[float, float]
    brightness: float
    contrast: float
    defect: str | None = None
    severity: float = 0.0
    seed: int = 0


def prepare_material(photo: Photo, size: int) -> Material:
    """The photograph scaled so a size-px part image spans TILE_FRACTION of its shorter side."""
    zoom = size / (TILE_FRACTION * min(photo.image.shape[:2]))
    interp = cv2.INTER_AREA if zoom < 1 else cv2.INTER_CUBIC
    texture = cv2.resize(photo.image, None, fx=zoom, fy=zoom, interpolation=interp).astype(np.float32)
    texture = np.clip(texture, 0, 255)
    return Material(texture, zoom, TILE_SIDE * size, photo.grey, texture.reshape(-1, 3).mean(axis=0))


def sample_tile(rng: np.random.Generator, material: Material, defect: str | None = None,
                severity: float | None = None, rotation: float = 15.0) -> SurfaceSpec:
    """A random tile of the material: where it is cut, its angle, scale, brightness and contrast."""
    angle = float(rng.uniform(-1.0, 1.0)) * math.radians(rotation)
    scale = float(rng.uniform(0.95, 1.05))
    h, w = material.texture.shape[:2]
    reach = material.tile / math.sqrt(2) / 0.95  # half the tile's diagonal in texture pixels
    cut = [float(rng.uniform(reach, n - reach)) if n > 2 * reach else float(rng.uniform(0, n)) for n in (w, h)]
    brightness, contrast = float(rng.uniform(0.93, 1.07)), float(rng.uniform(0.9, 1.1))
    sev = float(rng.uniform()) if severity is None else float(severity)
    return SurfaceSpec(angle, scale, (cut[0], cut[1]), brightness, contrast, defect, sev, int(rng.integers(2**31)))


def render_tile(spec: SurfaceSpec, material: Material, light: Lighting, hw: tuple[int, int],
                center: tuple[float, float], size: int) -> Layers:
    """The tile with its defect on an `hw` canvas, the part image's centre at `center` (pixels)."""
    c, s = math.cos(spec.angle) / spec.scale, math.sin(spec.angle) / spec.scale
    a = np.array([[c, s], [-s, c]])  # canvas offset -> texture offset: turn back by the angle, undo the scale
    b = np.asarray(spec.cut) - a @ np.asarray(center)
    m = np.hstack([a, b[:, None]]).astype(np.float64)
    color = cv2.warpAffine(material.texture, m, (hw[1], hw[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REFLECT_101)
    mean = material.mean
    color = np.clip((color - mean) * spec.contrast + mean * spec.brightness, 0, 255).astype(np.float32)
    alpha = fill(hw, [_tile_outline(spec, material.tile, center)])
    mask = np.zeros(hw, np.uint8)
    if spec.defect is not None:
        site = Site(center, size, light.light_angle, material.grey)
        color, mask = paint_defect(spec.defect, np.random.default_rng([spec.seed, 1]), spec.severity, color, site)
        mask = np.where(alpha > 0.5, mask, 0).astype(np.uint8)
    return Layers(color, alpha, cast_shadow(alpha, light, size), mask)


def without_defect(spec: SurfaceSpec) -> SurfaceSpec:
    """The same tile, cut and lit the same way, with no defect (for checks of what a defect changed)."""
    return replace(spec, defect=None)


def _tile_outline(spec: SurfaceSpec, side: float, center: tuple[float, float]) -> np.ndarray:
    """The tile's four corners in canvas pixels."""
    half = side / 2
    corners = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    c, s = math.cos(spec.angle), math.sin(spec.angle)
    return corners @ np.array([[c, -s], [s, c]]).T + np.asarray(center)

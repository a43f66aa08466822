"""Belt, composition and camera: a rendered part laid on the conveyor and seen through the camera."""

from __future__ import annotations

import math

import cv2
import numpy as np

from synth.parts import Layers, render_part
from synth.spec import Lighting, PartSpec

_BELT_BGR = np.array([60.0, 65.0, 62.0], np.float32)  # dark grey-green rubber


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
    """The part's centre in a size x size image (pixels): the image centre plus its offset."""
    c = (size - 1) / 2
    return c + spec.offset[0], c + spec.offset[1]


def render_image(spec: PartSpec, light: Lighting, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One inspection image (uint8 size×size×3 BGR) and its defect mask (uint8 size×size, 0/255)."""
    layers = render_part(spec, light, (size, size), part_center(spec, size), size)
    scene = belt_texture(np.random.default_rng([spec.seed, 2]), (size, size), size)
    composite(scene, layers)
    return apply_camera(scene, light, size, np.random.default_rng([spec.seed, 3])), layers.mask

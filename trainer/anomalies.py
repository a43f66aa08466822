"""Simulated anomalies for training: normal images with a foreign region blended in, and its exact mask.

What a pixel judge learns from when there are no defect images (DRAEM, Zavrtanik et al. 2021; CutPaste;
NSA): a region is cut out of a normal image by a random shape and filled with something that does not
belong there. Nothing here knows any real or painted defect; the shapes and fillings are generic:

- shapes: thresholded smooth noise (Perlin-like blobs of random scale and area), thin random strokes
  (scratch- and crack-like curves), and ellipses;
- fillings: another normal image of the batch (flipped, rotated, colour-shifted: texture that is
  real but out of place), the same image shifted (a patch of itself, misplaced), a procedural noise
  texture of random colour, and the image itself made brighter/darker or shifted in colour.

`simulate(x, fraction, gen)` corrupts `fraction` of a batch (N×C×H×W in [-1, 1]) and returns the
corrupted batch and the masks N×1×H×W in {0, 1}; the others pass unchanged with empty masks. Its
randomness comes from `gen`, or torch's global generator (what a resumed training run restores).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

SHAPES = ("blobs", "strokes", "ellipses")
FILLS = ("other", "shifted", "noise", "tone")
MIN_AREA = 0.005      # smallest share of the image a simulated anomaly covers
MAX_AREA = 0.25       # largest


def smooth_noise(n: int, size: int, cells: int, gen: torch.Generator | None, octaves: int = 3) -> torch.Tensor:
    """Fractal value noise N×1×size×size, zero mean and unit spread per image: `cells` random values
    per side bicubically upsampled, plus `octaves - 1` finer octaves at half the amplitude each."""
    out = torch.zeros(n, 1, size, size)
    amp = 1.0
    for k in range(octaves):
        c = min(size, cells * 2**k)
        grid = torch.randn(n, 1, c + 1, c + 1, generator=gen)
        out += amp * F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=True)
        amp /= 2
    out -= out.mean(dim=(2, 3), keepdim=True)
    return out / out.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)


def blob_mask(size: int, gen: torch.Generator | None) -> torch.Tensor:
    """1×size×size in {0, 1}: smooth noise of 2–8 cells per side above the quantile that leaves a random
    area between MIN_AREA and MAX_AREA (Perlin-like blobs, one or several)."""
    cells = int(torch.randint(2, 9, (1,), generator=gen))
    noise = smooth_noise(1, size, cells, gen)[0]
    area = MIN_AREA + (MAX_AREA - MIN_AREA) * float(torch.rand(1, generator=gen)) ** 2
    level = torch.quantile(noise.flatten(), 1.0 - area)
    return (noise > level).float()


def stroke_mask(size: int, rng: np.random.Generator) -> torch.Tensor:
    """1×size×size in {0, 1}: 1–3 random smooth curves (a random walk with inertia), 1 to size/16 px
    wide, between a fifth and the whole of the image long."""
    canvas = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        p = rng.uniform(0, size, 2)
        heading = rng.uniform(0, 2 * math.pi)
        steps = int(rng.integers(6, 24))
        step_len = rng.uniform(size / 5, size) / steps
        width = int(rng.integers(1, max(2, size // 16) + 1))
        points = [p.copy()]
        for _ in range(steps):
            heading += rng.normal(0, 0.35)
            p = p + step_len * np.array([math.cos(heading), math.sin(heading)])
            points.append(p.copy())
        pts = np.round(np.array(points) * 4).astype(np.int32)   # 2 fractional bits
        cv2.polylines(canvas, [pts], False, 1, width, cv2.LINE_8, shift=2)
    return torch.from_numpy(canvas).float()[None]


def ellipse_mask(size: int, rng: np.random.Generator) -> torch.Tensor:
    """1×size×size in {0, 1}: 1–3 filled ellipses, axes between size/32 and size/5."""
    canvas = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        center = tuple(int(v) for v in rng.uniform(0, size, 2))
        axes = tuple(int(v) for v in rng.uniform(max(1, size / 32), size / 5, 2))
        cv2.ellipse(canvas, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return torch.from_numpy(canvas).float()[None]


def random_mask(size: int, gen: torch.Generator | None, rng: np.random.Generator) -> torch.Tensor:
    """One mask of a random shape family; never empty."""
    while True:
        shape = SHAPES[int(torch.randint(len(SHAPES), (1,), generator=gen))]
        if shape == "blobs":
            m = blob_mask(size, gen)
        elif shape == "strokes":
            m = stroke_mask(size, rng)
        else:
            m = ellipse_mask(size, rng)
        if m.sum() > 0:
            return m


def _signed(gen: torch.Generator | None, low: float, high: float, shape: tuple[int, ...] = (1,)) -> torch.Tensor:
    """Uniform magnitudes in [low, high] with random signs: a change that is never nothing."""
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)
    return sign * (low + (high - low) * torch.rand(shape, generator=gen))


def _colour_jitter(img: torch.Tensor, gen: torch.Generator | None, strength: float) -> torch.Tensor:
    """C×H×W in [-1, 1] with a random gain and offset (and per-channel offsets for colour), each at least
    a quarter of `strength` away from no change."""
    c = img.shape[0]
    gain = 1.0 + _signed(gen, strength / 4, strength)
    offset = _signed(gen, strength / 4, strength)
    per_channel = 0.5 * _signed(gen, 0.0, strength, (c, 1, 1)) if c > 1 else 0.0
    return (img * gain + offset + per_channel).clamp(-1, 1)


def fill_for(x: torch.Tensor, i: int, kind: str, gen: torch.Generator | None) -> torch.Tensor:
    """What region i's anomaly is filled with (C×H×W in [-1, 1]), from the batch x (N×C×H×W)."""
    img = x[i]
    n, c, h, w = x.shape
    if kind == "other":          # real texture from elsewhere, out of place
        j = int(torch.randint(n, (1,), generator=gen))
        other = torch.rot90(x[j], int(torch.randint(4, (1,), generator=gen)), dims=(1, 2))
        if torch.rand(1, generator=gen) < 0.5:
            other = other.flip(2)
        return _colour_jitter(other, gen, 0.5)
    if kind == "shifted":        # a patch of the part itself, misplaced
        dy, dx = (int(v) for v in torch.randint(h // 8, h // 2 + 1, (2,), generator=gen))
        return torch.roll(img, shifts=(dy, dx), dims=(1, 2))
    if kind == "noise":          # a procedural texture of random colour and grain
        cells = int(torch.randint(4, max(5, h // 2), (1,), generator=gen))
        tex = smooth_noise(1, h, cells, gen)[0].expand(c, h, w) * float(torch.rand(1, generator=gen))
        tint = 2 * torch.rand(c, 1, 1, generator=gen) - 1
        return (tint + 0.5 * tex).clamp(-1, 1)
    # "tone": the region itself, brighter or darker and shifted in colour
    return _colour_jitter(img, gen, 0.6)


VISIBLE = 0.08        # a change counts where the 3×3 mean of |Δ| (channel max) exceeds this (~10 grey levels)


def visible_change(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """1×H×W in {0, 1}: where `after` (C×H×W) differs visibly from `before`: a filling that happens to
    look like what it covers (the same texture, a faint tone) is no anomaly and is not labelled one."""
    diff = (after - before).abs().amax(dim=0, keepdim=True)
    return (F.avg_pool2d(diff[None], 3, stride=1, padding=1, count_include_pad=False)[0] > VISIBLE).float()


def simulate(x: torch.Tensor, fraction: float, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x with simulated anomalies in `fraction` of its images, masks N×1×H×W in {0, 1}).

    Each chosen image gets one random mask and filling, blended with an opacity between 0.3 and 1 through
    the mask softened by a 1-px blur (no razor edge to give it away); the mask says where it was blended
    and changed the image visibly (it may be empty: then the image is an example of a normal one).
    """
    device, x = x.device, x.detach().cpu()
    n, _, h, _ = x.shape
    out = x.clone()
    masks = torch.zeros(n, 1, h, h)
    if fraction <= 0:
        return out.to(device), masks.to(device)
    rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen)))
    chosen = torch.rand(n, generator=gen) < fraction
    for i in torch.nonzero(chosen).flatten().tolist():
        m = random_mask(h, gen, rng)
        kind = FILLS[int(torch.randint(len(FILLS), (1,), generator=gen))]
        fill = fill_for(x, i, kind, gen)
        opacity = 0.3 + 0.7 * float(torch.rand(1, generator=gen))
        soft = F.avg_pool2d(m[None], 3, stride=1, padding=1, count_include_pad=False)[0]
        out[i] = x[i] * (1 - opacity * soft) + fill * opacity * soft
        masks[i] = m * visible_change(x[i], out[i])
    return out.to(device), masks.to(device)

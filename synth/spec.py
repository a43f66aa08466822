"""What to render: a part's pose and defect, the camera and lamp, and how to draw them at random."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Parts arrive against a guide rail: their orientation jitters about a nominal pose. 180 = any
# orientation (like MVTec AD's metal nut), a much harder task for reconstruction-based detectors.
ROTATION_JITTER_DEG = 15.0


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

"""What a line makes: the machined metal parts (the default) or tiles cut from a photographed surface.

`stills` and `video` render through a `Line`: it samples a part, renders it as an inspection image with its
mask, renders it as the video's sprite, and finishes every camera image (a grey photograph is seen by a
monochrome camera: the three channels of every image and frame are equal).
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from synth.defects import DEFECTS
from synth.parts import Layers, render_part
from synth.scene import apply_camera, belt_texture, composite, part_center, render_image
from synth.spec import Lighting, PartSpec, sample_part
from synth.surface_defects import SURFACE_DEFECTS
from synth.surface_parts import Material, SurfaceSpec, render_tile, sample_tile

Spec = PartSpec | SurfaceSpec


class Line(Protocol):
    """The parts of one production line."""

    defects: tuple[str, ...]

    def sample(self, rng: np.random.Generator, size: int, defect: str | None, severity: float | None,
               rotation: float) -> Spec: ...

    def image(self, spec: Spec, light: Lighting, size: int) -> tuple[np.ndarray, np.ndarray]: ...

    def sprite(self, spec: Spec, light: Lighting, size: int) -> tuple[Layers, int]: ...

    def finish(self, image: np.ndarray) -> np.ndarray: ...


class MetalLine:
    """The default line: metal-nut-like parts (`synth.parts`) with the defects of `synth.defects`."""

    defects = DEFECTS

    def sample(self, rng: np.random.Generator, size: int, defect: str | None, severity: float | None,
               rotation: float) -> Spec:
        return sample_part(rng, size, defect, severity, rotation)

    def image(self, spec: Spec, light: Lighting, size: int) -> tuple[np.ndarray, np.ndarray]:
        assert isinstance(spec, PartSpec)
        return render_image(spec, light, size)

    def sprite(self, spec: Spec, light: Lighting, size: int) -> tuple[Layers, int]:
        """The part on a size x 2*size canvas whose columns [size//2, size//2 + size) are a training image."""
        assert isinstance(spec, PartSpec)
        cx, cy = part_center(spec, size)
        return render_part(spec, light, (size, 2 * size), (cx + size // 2, cy), size), size // 2

    def finish(self, image: np.ndarray) -> np.ndarray:
        return image


class SurfaceLine:
    """Tiles cut from a photographed material (`synth.surface_parts`) with the defects of `synth.surface_defects`."""

    defects = SURFACE_DEFECTS

    def __init__(self, material: Material) -> None:
        self.material = material

    def sample(self, rng: np.random.Generator, size: int, defect: str | None, severity: float | None,
               rotation: float) -> Spec:
        return sample_tile(rng, self.material, defect, severity, rotation)

    def image(self, spec: Spec, light: Lighting, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The tile filling a size×size inspection image (uint8 BGR) and its defect mask (uint8, 0/255)."""
        assert isinstance(spec, SurfaceSpec)
        c = (size - 1) / 2
        layers = render_tile(spec, self.material, light, (size, size), (c, c), size)
        scene = belt_texture(np.random.default_rng([spec.seed, 2]), (size, size), size)
        composite(scene, layers)
        image = apply_camera(scene, light, size, np.random.default_rng([spec.seed, 3]))
        return self.finish(image), layers.mask

    def sprite(self, spec: Spec, light: Lighting, size: int) -> tuple[Layers, int]:
        """The whole tile on a canvas wide enough for it at any angle; columns [pad, pad + size) are the
        inspection image."""
        assert isinstance(spec, SurfaceSpec)
        pad = max(0, int(np.ceil((self.material.tile * np.sqrt(2) - size) / 2))) + 2
        c = (size - 1) / 2
        return render_tile(spec, self.material, light, (size, size + 2 * pad), (pad + c, c), size), pad

    def finish(self, image: np.ndarray) -> np.ndarray:
        if not self.material.grey:
            return image
        return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)

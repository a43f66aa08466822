"""The photograph a surface line's parts are cut from: an image file, or a photograph shipped with scikit-image.

`--surface PATH` reads any image file OpenCV decodes (`common.images.read_image`); `--surface skimage:NAME`
reads one of the photographs inside the scikit-image package (imported only then; nothing is downloaded).
The result is always uint8 H×W×3 BGR: a grey photograph becomes three equal channels and is marked `grey`,
so the line renders it as a monochrome camera would (see `synth.lines.SurfaceLine`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.errors import DataError
from common.images import read_image

SKIMAGE_PREFIX = "skimage:"
MIN_PHOTO_PX = 32  # shorter side; smaller images are too small to cut parts from

# Photographs that scikit-image ships inside its package (no download), by its own function names.
SKIMAGE_PHOTOS: dict[str, str] = {
    "astronaut": "astronaut.png", "camera": "camera.png", "cat": "chelsea.png", "cell": "cell.png",
    "chelsea": "chelsea.png", "clock": "clock_motion.png", "coffee": "coffee.png", "coins": "coins.png",
    "hubble_deep_field": "hubble_deep_field.jpg", "immunohistochemistry": "ihc.png", "moon": "moon.png",
    "rocket": "rocket.jpg", "text": "text.png",
}
# Textures kept aside for independent checks of the detector: never develop, train or tune on them.
HELD_OUT: tuple[str, ...] = ("brick", "grass", "gravel", "retina")


@dataclass(frozen=True)
class Photo:
    """A surface photograph: `image` uint8 H×W×3 BGR, `grey` when it had no colour, `source` as given."""

    image: np.ndarray
    grey: bool
    source: str


def load_photo(source: str) -> Photo:
    """Read SOURCE (an image file path or `skimage:NAME`) as a BGR photograph; DataError if it cannot be used."""
    if source.startswith(SKIMAGE_PREFIX):
        image = read_image(_skimage_file(source[len(SKIMAGE_PREFIX):]))
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"--surface {source}: no such image file; give a photograph's path or skimage:NAME "
                            f"(e.g. skimage:moon)")
        image = read_image(path)
    h, w = image.shape[:2]
    if min(h, w) < MIN_PHOTO_PX:
        raise DataError(f"--surface {source}: the photograph is {w}x{h} px; parts need at least "
                        f"{MIN_PHOTO_PX} px on its shorter side")
    grey = image.shape[2] == 1 or _is_grey(image)
    if image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return Photo(np.ascontiguousarray(image), grey, source)


def _is_grey(image: np.ndarray) -> bool:
    """A colour file whose three channels are equal (a grey photograph saved as RGB)."""
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def _skimage_file(name: str) -> Path:
    """The file of a photograph scikit-image ships; refuse held-out, unknown and download-only names."""
    if name in HELD_OUT:
        raise DataError(f"--surface skimage:{name} is kept for independent checks of the detector "
                        f"({', '.join(HELD_OUT)}); develop on another photograph, e.g. skimage:moon")
    shipped = ", ".join(sorted(SKIMAGE_PHOTOS))
    try:
        import skimage.data
    except ImportError:
        raise DataError(f"--surface skimage:{name} needs scikit-image: pip install scikit-image") from None
    if name not in SKIMAGE_PHOTOS:
        why = ("is not offered: it needs a download or is not a usable photograph"
               if name in getattr(skimage.data, "__all__", ()) else "is not a scikit-image sample")
        raise DataError(f"--surface skimage:{name} {why}; use one of the photographs shipped with "
                        f"scikit-image: {shipped}")
    path = Path(skimage.data.__file__).parent / SKIMAGE_PHOTOS[name]
    if not path.is_file():
        raise DataError(f"--surface skimage:{name}: this scikit-image installation has no {path.name}; "
                        f"reinstall scikit-image (pip install --force-reinstall scikit-image)")
    return path

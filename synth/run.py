"""Render a synthetic line: the options of `trainer synth`, their checks, and the run that writes it all."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import DataError
from synth.lines import Line, MetalLine, SurfaceLine
from synth.spec import ROTATION_JITTER_DEG
from synth.stills import MARKER, plan_test_split, prepare_dir, write_stills
from synth.surface_parts import TILE_FRACTION, prepare_material
from synth.surface_source import load_photo
from synth.video import DEFECT_RATE, VIDEO_CODECS, write_video

MIN_SIZE, MAX_SIZE = 32, 1024


@dataclass(frozen=True)
class SynthOptions:
    """The flags of `trainer synth` (see trainer/cli.py for their help)."""

    out_dir: Path
    seed: int = 0
    size: int = 128
    n_train: int = 400
    n_test: int = 200
    video: Path | None = None
    parts: int = 40
    defect_rate: float = DEFECT_RATE
    first_part: int = 0
    rotation: float = ROTATION_JITTER_DEG
    surface: str | None = None


def _check_args(size: int, n_train: int, n_test: int, parts: int, video: Path | None) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise DataError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels (got {size}); try --size 128")
    if n_train < 0 or n_test < 0 or (video is None and (n_train < 1 or n_test < 1)):
        raise DataError(f"--n-train and --n-test must be at least 1 (got {n_train} and {n_test}); "
                        "0 and 0 with --video write the video alone")
    if video is not None:
        if parts < 1:
            raise DataError(f"--parts must be at least 1 (got {parts})")
        if video.suffix.lower() not in VIDEO_CODECS:
            raise DataError(f"--video {video}: unsupported suffix {video.suffix!r}; use .mp4 (mp4v) or .avi (MJPG)")


def synthesize(
    out_dir: str | Path,
    *,
    seed: int = 0,
    size: int = 128,
    n_train: int = 400,
    n_test: int = 200,
    video: str | Path | None = None,
    parts: int = 40,
    rotation: float = ROTATION_JITTER_DEG,
    defect_rate: float = DEFECT_RATE,
    first_part: int = 0,
    surface: str | None = None,
) -> dict[str, Any]:
    """Write the data set (and the video) and return a summary dict; deterministic by seed.

    `surface` (an image file or `skimage:NAME`): the parts are tiles cut from that photograph
    (`synth.surface_parts`) with the surface defects; without it, the metal parts."""
    out, video_path = Path(out_dir), None if video is None else Path(video)
    _check_args(size, n_train, n_test, parts, video_path)
    if not 0.0 <= rotation <= 180.0:
        raise DataError(f"--rotation {rotation} is outside 0-180 degrees (180 = any orientation)")
    if not 0.0 <= defect_rate <= 1.0:
        raise DataError(f"--defect-rate {defect_rate} is outside 0-1 (0 = a recording of good parts only)")
    if first_part < 0:
        raise DataError(f"--first-part {first_part} must be >= 0")
    line, about = _line(surface, size)
    prepare_dir(out)
    start = time.perf_counter()
    write_stills(out, seed=seed, size=size, n_train=n_train, n_test=n_test, rotation=rotation, line=line)
    summary: dict[str, Any] = {"out_dir": str(out), "seed": seed, "size": size, "rotation": rotation,
                               "train": n_train, "test": plan_test_split(n_test, line.defects)}
    if about:
        summary["surface"] = about
    if video_path is not None:
        summary["video"] = write_video(video_path, seed=seed, size=size, parts=parts, rotation=rotation,
                                       defect_rate=defect_rate, first_part=first_part, line=line)
    (out / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary


def _line(surface: str | None, size: int) -> tuple[Line, dict[str, Any]]:
    """The line to render and what synth.json records about its surface (nothing for the metal parts)."""
    if surface is None:
        return MetalLine(), {}
    photo = load_photo(surface)
    material = prepare_material(photo, size)
    h, w = photo.image.shape[:2]
    return SurfaceLine(material), {"source": surface, "photo_px": [w, h], "grey": photo.grey,
                                   "tile_fraction": TILE_FRACTION, "zoom": round(material.zoom, 4)}


def run_synth(options: SynthOptions) -> int:
    """`trainer synth`: write everything the options ask for and print a short summary."""
    s = synthesize(
        options.out_dir, seed=options.seed, size=options.size, n_train=options.n_train, n_test=options.n_test,
        video=options.video, parts=options.parts, rotation=options.rotation, defect_rate=options.defect_rate,
        first_part=options.first_part, surface=options.surface,
    )
    if "surface" in s:
        _print_surface(s["surface"], s["size"])
    kinds = ", ".join(f"{n} {k}" for k, n in s["test"].items())
    print(f"trainer synth: {s['train']} train + {sum(s['test'].values())} test images ({kinds}), "
          f"{s['size']} px, in {s['out_dir']}")
    if "video" in s:
        v = s["video"]
        print(f"trainer synth: video {v['path']} ({v['frames']} frames, {v['parts']} part(s), "
              f"{v['defective']} defective) + {Path(v['csv']).name} + {Path(v['toml']).name}")
    print(f"trainer synth: done in {s['seconds']} s")
    return 0


def _print_surface(about: dict[str, Any], size: int) -> None:
    w, h = about["photo_px"]
    colour = "grey" if about["grey"] else "colour"
    print(f"trainer synth: parts cut from {about['source']} ({w}x{h} px, {colour}); a part spans "
          f"{about['tile_fraction']:.0%} of its shorter side")
    if about["zoom"] > 1:
        print(f"trainer synth: note: the photograph is scaled up {about['zoom']:.2f}x to give {size} px parts, "
              f"so they look softer than it; a larger photograph (or a smaller --size) keeps them sharp")

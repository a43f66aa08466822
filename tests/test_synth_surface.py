"""Tests for the photographed-surface line (`trainer synth --surface`): tiles cut from a photograph, the surface
defect painter and its masks, the video with ground truth that `inspector collect` cuts, and the refusals.

Tiny sizes and few images; photographs are scikit-image's shipped samples (tests that need it skip without
it) or image files written here.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_inspector_support import REPO, inspector_cmd, subprocess_env

from common.errors import DataError
from synth.lines import SurfaceLine
from synth.run import synthesize
from synth.spec import sample_lighting
from synth.surface_defects import SURFACE_DEFECTS
from synth.surface_parts import TILE_SIDE, SurfaceSpec, prepare_material, render_tile, without_defect
from synth.surface_source import HELD_OUT, load_photo
from trainer.cli import main


def _photo_file(path: Path, size: tuple[int, int] = (160, 200)) -> Path:
    """A colour 'photograph' of a speckled warm stone, written as an image file a user would give."""
    rng = np.random.default_rng(7)
    h, w = size
    lum = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 3) * 60
    lum += cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.8) * 15
    image = np.clip(np.array([110, 140, 175], np.float32) + lum[..., None], 0, 255).astype(np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def _line(source: str, size: int) -> SurfaceLine:
    return SurfaceLine(prepare_material(load_photo(source), size))


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).max(axis=2)


def _tile_region(size: int) -> slice:
    """Rows/columns of the part image that the tile covers at any angle (its inscribed disc's square)."""
    half = int(TILE_SIDE * size / 2 * 0.7)
    return slice(size // 2 - half, size // 2 + half)


# ---------------------------------------------------------------- the line and its files


def test_a_photographed_line_renders_the_same_bytes_for_a_seed(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    for name in ("a", "b"):
        synthesize(tmp_path / name, seed=2, size=32, n_train=3, n_test=12, surface="skimage:coins")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    kinds = {p.parts[1] for p in files if p.parts[0] == "test"}
    assert kinds == {"good", *SURFACE_DEFECTS} and len(files) == 3 + 12 + 6
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    summary = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert summary["surface"]["source"] == "skimage:coins" and summary["surface"]["grey"] is True
    rows = list(csv.DictReader((tmp_path / "a" / "test_index.csv").open()))
    assert {r["kind"] for r in rows} == {"good", *SURFACE_DEFECTS}
    for kind in SURFACE_DEFECTS:
        masks = sorted((tmp_path / "a" / "ground_truth" / kind).glob("*_mask.png"))
        assert [m.name.replace("_mask", "") for m in masks] == sorted(p.name for p in
                                                                       (tmp_path / "a" / "test" / kind).glob("*.png"))


def test_a_grey_photograph_gives_grey_images() -> None:
    pytest.importorskip("skimage")
    line = _line("skimage:moon", 32)
    rng = np.random.default_rng(1)
    image, _ = line.image(line.sample(rng, 32, "stain", 0.8, 15.0), sample_lighting(rng), 32)
    assert image.shape == (32, 32, 3)
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])


def test_good_tiles_differ_but_are_all_the_same_material() -> None:
    pytest.importorskip("skimage")
    size = 48
    line = _line("skimage:coffee", size)
    photo = load_photo("skimage:coffee").image.reshape(-1, 3).astype(np.float64)
    inner = _tile_region(size)
    tiles = []
    for i in range(12):
        rng = np.random.default_rng([5, i])
        image, mask = line.image(line.sample(rng, size, None, None, 15.0), sample_lighting(rng), size)
        assert not mask.any()
        tiles.append(image[inner, inner].astype(np.float64))
    for a in range(len(tiles)):
        for b in range(a + 1, len(tiles)):
            assert np.abs(tiles[a] - tiles[b]).mean() > 5, (a, b)  # every part its own piece
    means = np.array([t.reshape(-1, 3).mean(axis=0) for t in tiles])
    assert np.all(np.abs(means.mean(axis=0) - photo.mean(axis=0)) < 0.25 * photo.mean(axis=0))
    assert list(np.argsort(means.mean(axis=0))) == list(np.argsort(photo.mean(axis=0)))  # same hue order
    assert np.all(means[:, 2] > means[:, 0])  # coffee is red-brown in every part


# ---------------------------------------------------------------- the defect painter


@pytest.mark.parametrize("kind", SURFACE_DEFECTS)
@pytest.mark.parametrize(("size", "severity"), [(48, 0.1), (64, 0.9)])
def test_a_defect_changes_the_pixels_in_its_mask_and_none_far_away(kind: str, size: int, severity: float) -> None:
    pytest.importorskip("skimage")
    line = _line("skimage:immunohistochemistry", size)
    for i in range(3):
        rng = np.random.default_rng([11, i])
        light = sample_lighting(rng)
        spec = line.sample(rng, size, kind, severity, 15.0)
        bad, mask = line.image(spec, light, size)
        good, none = line.image(without_defect(spec), light, size)
        assert not none.any() and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
        inside = mask > 0
        diff = _diff(bad, good)
        assert inside.sum() >= 4, (kind, i)
        assert np.median(diff[inside]) > 8, (kind, i)  # the marked pixels did change
        dist = cv2.distanceTransform(np.where(inside, 0, 255).astype(np.uint8), cv2.DIST_L2, 3)
        assert diff[dist > 0.12 * size + 3].max() == 0, (kind, i)  # nothing away from the defect did


@pytest.mark.parametrize("kind", ["scratch", "crack"])
def test_lines_are_long_and_a_few_pixels_wide_on_a_64_px_part(kind: str) -> None:
    pytest.importorskip("skimage")
    line = _line("skimage:moon", 64)
    for i in range(4):
        rng = np.random.default_rng([3, i])
        _, mask = line.image(line.sample(rng, 64, kind, 0.6, 15.0), sample_lighting(rng), 64)
        pts = cv2.findNonZero(mask)
        (_, (w, h), _) = cv2.minAreaRect(pts)
        assert max(w, h) >= 20, (kind, i, w, h)  # tens of pixels long
        assert 1 <= (mask > 0).sum() / max(w, h) <= 8, (kind, i)  # and a few wide


# ---------------------------------------------------------------- the video and `inspector collect`


def _read_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_a_surface_video_is_collected_into_labelled_folders(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    size, video = 64, tmp_path / "line" / "tiles.avi"
    summary = synthesize(tmp_path / "d", seed=5, size=size, n_train=0, n_test=0, video=video, parts=8,
                         defect_rate=0.5, surface="skimage:immunohistochemistry")
    rows = list(csv.DictReader(video.with_suffix(".csv").open()))
    assert len(rows) == 8 and {r["label"] for r in rows} - {"good"} <= set(SURFACE_DEFECTS)
    assert {r["label"] for r in rows} != {"good"}
    frames = _read_frames(video)
    assert len(frames) == summary["video"]["frames"]
    for r in rows:  # belt only before a tile arrives, the tile filling the centre square at its centre frame
        first, center = int(r["first_frame"]), int(r["center_frame"])
        empty, crop = frames[first - 1][:, size:2 * size], frames[center][:, size:2 * size]
        inner = _tile_region(size)
        assert _diff(crop, empty)[inner, inner].mean() > 20
    out = tmp_path / "eval"
    done = subprocess.run(inspector_cmd("collect", str(video), "--out", str(out), "--config",
                                        str(video.with_suffix(".toml")), "--ground-truth", str(video.with_suffix(".csv"))),
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for label in {r["label"] for r in rows}:
        frames_of = sorted(int(f.name.split("_")[0]) for f in (out / "test" / label).iterdir())
        spans = [(int(r["first_frame"]), int(r["last_frame"])) for r in rows if r["label"] == label]
        assert len(frames_of) == len(spans)
        assert all(a <= f <= b for f, (a, b) in zip(frames_of, spans, strict=True))


def test_a_tile_in_the_video_is_the_tile_of_the_still() -> None:
    """The sprite's centre square is the still's tile, defect and mask included."""
    pytest.importorskip("skimage")
    from synth.video import plan_video, video_lighting

    size = 48
    line, light = _line("skimage:astronaut", size), video_lighting(1)
    for p in plan_video(1, size, 4, light, defect_rate=1.0, line=line):
        assert isinstance(p.spec, SurfaceSpec)
        sprite, pad = line.sprite(p.spec, light, size)
        c = (size - 1) / 2
        still = render_tile(p.spec, line.material, light, (size, size), (c, c), size)
        assert np.array_equal(sprite.mask[:, pad:pad + size], still.mask) and still.mask.any()
        assert np.abs(sprite.color[:, pad:pad + size] - still.color).max() < 1.0


# ---------------------------------------------------------------- a user's photograph and the refusals


def test_a_users_photograph_file_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = _photo_file(tmp_path / "stone.jpg")
    assert main(["synth", str(tmp_path / "d"), "--surface", str(photo), "--size", "48", "--n-train", "2",
                 "--n-test", "6", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert f"parts cut from {photo} (200x160 px, colour)" in out
    assert "scaled up 1.20x" in out  # 48 px parts span 40 px of the photograph
    image = cv2.imread(str(tmp_path / "d" / "train" / "good" / "000.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (48, 48, 3) and not np.array_equal(image[..., 0], image[..., 2])
    assert json.loads((tmp_path / "d" / "synth.json").read_text())["surface"]["source"] == str(photo)


@pytest.mark.parametrize("name", HELD_OUT)
def test_held_out_photographs_are_refused(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", str(tmp_path / "d"), "--surface", f"skimage:{name}", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"skimage:{name} is kept for independent checks" in err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("skimage:eagle", "skimage:eagle is not offered: it needs a download or is not a usable photograph"),
        ("skimage:lily", "skimage:lily is not offered: it needs a download"),
        ("skimage:nonesuch", "skimage:nonesuch is not a scikit-image sample"),
    ],
)
def test_names_that_need_a_download_or_do_not_exist_are_refused(
    tmp_path: Path, source: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("skimage")
    assert main(["synth", str(tmp_path / "d"), "--surface", source, "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "coins, hubble_deep_field" in err


def test_missing_and_unreadable_photographs_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((20, 50, 3), np.uint8))
    for source, message in ((str(tmp_path / "none.jpg"), "no such image file"),
                            (str(bad), "not a valid image file"),
                            (str(tiny), "the photograph is 50x20 px; parts need at least 32 px")):
        assert main(["synth", str(tmp_path / "d"), "--surface", source, "--size", "32"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "d").exists()


def test_without_scikit_image_a_sample_name_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(DataError, match="needs scikit-image: pip install scikit-image"):
        load_photo("skimage:moon")

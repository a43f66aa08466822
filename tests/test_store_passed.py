"""`[state] store_passed_every`: the input crop of about one passed part in N is kept in the image store
(inspector/stages/encode.py `passed_part_kept`), chosen by sequence number, so `inspector dataset` has
confirmed-good parts for train/good. A real pipeline run (the reliability tests' in-process station over
a real video, journal and image store on disk) checks the journal's `images` column part by part."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from test_inspector_support import write_conveyor_video
from test_reliability_support import Run, journal_rows, station_config

from inspector.config import InspectorConfig
from inspector.stages.encode import passed_part_kept


@pytest.mark.parametrize("every", [1, 2, 3, 5, 7, 10, 20, 25])
def test_one_sequence_in_each_block_of_n_and_the_kept_ones_fall_on_both_sides_of_the_dataset_split(
        every: int) -> None:
    seqs = range(1, 400 * every)
    kept = [s for s in seqs if passed_part_kept(s, every)]
    for block in range(1, 399):  # every whole block of `every` numbers keeps exactly one
        assert sum(passed_part_kept(s, every) for s in range(block * every, (block + 1) * every)) == 1
    assert [s for s in range(1, 400 * every) if passed_part_kept(s, every)] == kept  # deterministic
    if every > 1:  # `inspector dataset`: sequence % 5 == 0 -> test/good, else train/good: both get some
        test_share = sum(s % 5 == 0 for s in kept) / len(kept)
        assert 0.1 < test_share < 0.35, (every, test_share)


def test_zero_or_negative_keeps_nothing() -> None:
    assert not any(passed_part_kept(s, 0) for s in range(1, 1000))
    assert not any(passed_part_kept(s, -3) for s in range(1, 1000))


def test_the_default_is_20_and_negative_is_refused() -> None:
    assert InspectorConfig().state.store_passed_every == 20
    with pytest.raises(ValueError, match="store_passed_every"):
        InspectorConfig(state={"store_passed_every": -1})


def _run(tmp_path: Path, **state: object) -> tuple[list[dict], Path]:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=4)
    cfg = station_config(v.video, tmp_path / "state", publish={"send_images": "none"},
                         state={"store_images": ["input", "heatmap"], **state})
    run = Run(cfg).run()
    assert run.code == 0 and len(run.headers) == v.frames
    return journal_rows(tmp_path / "state" / "journal.db"), tmp_path / "state" / "images"


def test_passed_parts_at_the_chosen_sequences_keep_their_input_crop_only(tmp_path: Path) -> None:
    rows, images = _run(tmp_path, store_passed_every=3)
    passed = [r for r in rows if r["verdict"] == "pass"]
    kept = [r for r in passed if passed_part_kept(r["seq"], 3)]
    assert len(passed) >= 9 and len(kept) >= 3 and any(r["verdict"] == "fail" for r in rows)
    for row in rows:
        names = json.loads(row["images"])
        if row["verdict"] != "pass":  # failed parts: every configured kind, as before
            assert sorted(names) == ["center/heatmap", "center/input"], row["seq"]
        elif passed_part_kept(row["seq"], 3):
            assert sorted(names) == ["center/input"], row["seq"]  # no heat map of a passed part
            crop = cv2.imread(str(images / names["center/input"]))
            assert crop is not None and crop.shape == (32, 32, 3)
        else:
            assert names == {}, row["seq"]


def test_zero_keeps_no_passed_part_and_no_image_store_keeps_nothing(tmp_path: Path) -> None:
    rows, _ = _run(tmp_path / "off", store_passed_every=0)
    assert any(r["verdict"] == "pass" for r in rows)
    assert all(json.loads(r["images"]) == {} for r in rows if r["verdict"] == "pass")
    rows, images = _run(tmp_path / "nostore", store_passed_every=1, store_images=[])
    assert all(json.loads(r["images"]) == {} for r in rows) and not images.exists()

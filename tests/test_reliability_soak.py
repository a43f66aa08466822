"""A short soak (scripts/soak.py): `inspector run` over a looped video at 1000 fps for 5000 frames,
journaling and publishing; RSS and open file descriptors sampled. The long run's figures are in
docs/research/bench/soak.json (`python scripts/soak.py`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_short_soak_no_memory_or_descriptor_growth_and_every_verdict_accounted_for() -> None:
    spec = importlib.util.spec_from_file_location("soak", REPO / "scripts" / "soak.py")
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    s = soak.soak(frames=5000, fps=1000.0, sample_s=0.25, echo=False)
    assert s["exit_code"] == 0, s["stderr_tail"]
    dropped = sum((s["frames_dropped"] or {}).values())
    assert s["frames_captured"] == 5000 and s["parts_inspected"] == 5000 - dropped
    assert s["parts_inspected"] == s["results_received"] == s["journaled"]  # inspected = published = journaled
    assert s["journal_integrity"] == "ok" and s["journal_state"] == "ok"
    assert s["image_store_bytes"] <= s["image_quota_bytes"]
    assert s["samples"] >= 5
    assert s["rss_growth_steady_mib"] <= 8.0, s
    assert s["fds_max"] - s["fds_min"] <= 3, s

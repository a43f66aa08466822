"""Spreads over seeds are sample standard deviations (ddof 1), in the report code and in the committed
benchmark tables made from results.json (issue 22: two or three seeds with ddof 0 understate the spread by
a factor sqrt(n / (n - 1)), 1.22 for three)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from trainer.bench_report import table_digits, table_folder, write_report

BENCH = Path(__file__).resolve().parents[1] / "docs" / "research" / "bench"
CELL = re.compile(r"(\d\.\d{3}) ± (\d\.\d{3})")


def _rec(dataset: str, method: str, seed: int, auroc: float, **defects: float) -> dict[str, object]:
    return {"dataset": dataset, "method": method, "seed": seed, "image_auroc": auroc, "per_defect_auroc": defects,
            "train_seconds": 10.0, "images_per_s": 100.0}


def test_folder_and_digit_tables_use_the_sample_standard_deviation() -> None:
    values = [0.96, 0.98, 0.99]
    folder = table_folder([_rec("line", "ae", s, v, scratch=v - 0.1) for s, v in enumerate(values)], ["ae"])
    sample, population = np.std(values, ddof=1), np.std(values)
    assert f"{np.mean(values):.3f} ± {sample:.3f}" in folder and f"± {population:.3f}" not in folder
    assert f"{np.mean(values) - 0.1:.3f} ± {sample:.3f}" in folder          # per defect too
    # MNIST: the mean over digits per seed, then the spread of those means over seeds
    digits = [_rec(f"digit_{d}", "ae", s, v + d / 100) for s, v in enumerate(values) for d in (0, 1)]
    per_seed = [v + 0.005 for v in values]
    row = table_digits(digits, ["ae"]).splitlines()[2]
    assert f"| {np.mean(per_seed):.3f} ± {np.std(per_seed, ddof=1):.3f} |" in row


def _committed_with_spreads() -> list[Path]:
    return sorted(p for p in BENCH.glob("*/results.json")
                  if any(CELL.search(ln) for ln in p.with_name("results.md").read_text().splitlines()
                         if ln.startswith("|")))


def test_the_line_tables_are_among_the_committed_tables_with_spreads() -> None:
    assert {"line", "line-128px"} <= {p.parent.name for p in _committed_with_spreads()}


@pytest.mark.parametrize("results", _committed_with_spreads(), ids=lambda p: p.parent.name)
def test_committed_tables_show_sample_standard_deviations(results: Path, tmp_path: Path) -> None:
    """Each committed table with a ± is what today's report code makes of its results.json."""
    data = json.loads(results.read_text())
    mnist = all(r["dataset"].startswith("digit_") for r in data["records"])
    write_report(tmp_path, data["records"], data["meta"], mnist, "regenerated")
    committed = [ln for ln in results.with_name("results.md").read_text().splitlines() if ln.startswith("|")]
    regenerated = [ln for ln in (tmp_path / "results.md").read_text().splitlines() if ln.startswith("|")]
    assert committed == regenerated
    assert "sample standard deviation" in results.with_name("results.md").read_text()

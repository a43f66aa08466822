"""trainer bench: planning, resumable results, the two table layouts, and its error paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserError
from synth.run import synthesize
from trainer.bench import parse_digits, parse_methods
from trainer.bench_report import table_folder
from trainer.cli import main
from trainer.idx import write_idx


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("line")
    synthesize(out, seed=3, size=32, n_train=40, n_test=24)
    return out


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny IDX folder: digit 0 = dark frame with a bright ring, digit 1 = a bright bar."""
    out = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)

    def digits(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 2, n).astype(np.uint8)
        imgs = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
        yy, xx = np.mgrid[:28, :28]
        ring = np.abs(np.hypot(yy - 14, xx - 14) - 8) < 2
        for img, lab in zip(imgs, labels, strict=True):
            if lab == 0:
                img[ring] = 220
            else:
                img[4:24, 12:16] = 220
        return imgs, labels

    for part, n in (("train", 60), ("t10k", 40)):
        imgs, labels = digits(n)
        write_idx(out / f"{part}-images-idx3-ubyte.gz", imgs)
        write_idx(out / f"{part}-labels-idx1-ubyte.gz", labels)
    return out


def test_parse_digits_and_methods() -> None:
    assert parse_digits("0-9") == list(range(10))
    assert parse_digits("1,3,7") == [1, 3, 7]
    for bad in ("a-b", "3-12", ""):
        with pytest.raises(UserError, match="mnist-digits"):
            parse_digits(bad)
    assert parse_methods("pca, ae") == ["pca", "ae"]
    with pytest.raises(UserError, match="unknown method.*resnet"):
        parse_methods("pca,resnet")


def test_folder_bench_writes_table1_layout_and_resumes(line: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    assert main(["bench", str(line), "--out", str(out), "--models", "pca,knn", "--image-size", "32"]) == 0
    data = json.loads((out / "results.json").read_text())
    records = data["records"]
    assert {r["method"] for r in records} == {"pca", "knn"}
    for r in records:
        assert 0.0 <= r["image_auroc"] <= 1.0
        assert set(r["per_defect_auroc"]) == {"scratch", "color", "missing", "flip"}
        assert r["images_per_s"] > 0
    md = (out / "results.md").read_text()
    assert "| method | image AUROC | color | flip | missing | scratch |" in md
    assert (out / "results.png").stat().st_size > 1000

    # A second call with one more method keeps the finished records and runs only the new one.
    before = {(r["method"], r["image_auroc"]) for r in records}
    capsys.readouterr()
    assert main(["bench", str(line), "--out", str(out), "--models", "pca,knn,ae", "--image-size", "32",
                 "--epochs", "1"]) == 0
    assert "3 runs (2 already done)" in capsys.readouterr().out
    records = json.loads((out / "results.json").read_text())["records"]
    assert len(records) == 3
    assert before <= {(r["method"], r["image_auroc"]) for r in records}
    assert "| ae |" in (out / "results.md").read_text()


def test_mnist_bench_has_a_column_per_digit_and_a_mean(mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    assert main(["bench", str(mnist), "--out", str(out), "--models", "pca,knn", "--mnist-digits", "0-1",
                 "--seeds", "2"]) == 0
    records = json.loads((out / "results.json").read_text())["records"]
    assert len(records) == 2 * 2 * 2
    assert {r["dataset"] for r in records} == {"digit_0", "digit_1"}
    # The two digits are trivially separable: the yardsticks must find that.
    assert min(r["image_auroc"] for r in records) > 0.95
    md = (out / "results.md").read_text()
    assert "| method | 0 | 1 | mean | train s |" in md


def test_first_seed_runs_later_seeds_alone_and_merges_into_one_row(line: Path, tmp_path: Path) -> None:
    # Two benches run the seeds of one row apart (0, then 1-2); merged they are one row over three seeds.
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["bench", str(line), "--out", str(a), "--models", "knn"]) == 0
    assert main(["bench", str(line), "--out", str(b), "--models", "knn", "--first-seed", "1", "--seeds", "2"]) == 0
    seeds_b = sorted(r["seed"] for r in json.loads((b / "results.json").read_text())["records"])
    assert seeds_b == [1, 2]
    assert "--first-seed 1" in (b / "results.md").read_text()
    assert main(["bench", str(line), "--out", str(a), "--merge", str(b)]) == 0
    records = json.loads((a / "results.json").read_text())["records"]
    assert sorted(r["seed"] for r in records) == [0, 1, 2]


@pytest.mark.parametrize(("argv", "message"), [
    (["--models", "pca,nope"], "unknown method"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--first-seed", "-1"], "--first-seed must be 0 or more"),
    (["--mnist-digits", "0-9"], "--mnist-digits applies to MNIST"),
    (["--models", "pca", "--image-size", "100"], "bad value for image_size: 100"),
])
def test_bench_cli_errors_are_one_line(line: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       argv: list[str], message: str) -> None:
    assert main(["bench", str(line), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_bench_needs_digits_for_mnist_and_an_existing_folder(mnist: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(mnist), "--out", str(tmp_path / "o")]) == 2
    assert "--mnist-digits" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err


def test_set_items_make_labelled_ablation_rows(line: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    common = ["bench", str(line), "--out", str(out), "--image-size", "32", "--epochs", "1", "--models", "ae,pca"]
    assert main(common) == 0
    assert main([*common, "--set", "shift=0"]) == 0
    records = json.loads((out / "results.json").read_text())["records"]
    # pca takes no training options: it is not run twice; ae gets a second, labelled row.
    assert sorted(r["method"] for r in records) == ["ae", "ae [shift=0]", "pca"]
    ablation = next(r for r in records if r["sets"])
    assert ablation["variant"] == "ae" and ablation["sets"] == ["shift=0"]
    md = (out / "results.md").read_text()
    assert "| ae |" in md and "| ae [shift=0] |" in md and "| pca |" in md


def test_bad_set_fails_before_training(line: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(line), "--out", str(tmp_path / "o"), "--set", "nonsense=1"]) == 2
    assert "unknown option 'nonsense'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "results.json").exists()


def test_folder_table_shows_slow_methods_with_a_decimal() -> None:
    def record(method: str, ips: float) -> dict[str, object]:
        return {"method": method, "image_auroc": 0.5, "per_defect_auroc": {"scratch": 0.5},
                "train_seconds": 12.3, "images_per_s": ips}
    rows = table_folder([record("anogan", 0.4), record("ae", 52.6)], ["anogan", "ae"]).splitlines()
    assert rows[2].endswith("| 12 | 0.4 |")  # AnoGAN's z search: under one image a second, not "0"
    assert rows[3].endswith("| 12 | 53 |")


def test_table_rows_put_plain_methods_first_in_their_order() -> None:
    from trainer.bench_report import row_order

    # as a resumed file may hold them: an ablation, a baseline and variants, in the order they were run
    ran = ["ours-proj [ema=0]", "pca", "ae", "ours-proj", "knn", "ae [shift=0]"]
    assert row_order(ran) == ["ours-proj", "ae", "pca", "knn", "ours-proj [ema=0]", "ae [shift=0]"]


def test_merge_joins_benches_run_apart_without_overwriting(mnist: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["bench", str(mnist), "--out", str(a), "--models", "pca", "--mnist-digits", "0"]) == 0
    assert main(["bench", str(mnist), "--out", str(b), "--models", "pca,knn", "--mnist-digits", "0-1"]) == 0
    mine = json.loads((a / "results.json").read_text())["records"][0]
    capsys.readouterr()
    assert main(["bench", str(mnist), "--out", str(a), "--mnist-digits", "0-1", "--merge", str(b)]) == 0
    assert "3 records added, 1 already in" in capsys.readouterr().out
    records = json.loads((a / "results.json").read_text())["records"]
    assert sorted((r["dataset"], r["method"]) for r in records) == [
        ("digit_0", "knn"), ("digit_0", "pca"), ("digit_1", "knn"), ("digit_1", "pca")]
    assert records[0] == mine                                   # the record already there is kept as it was
    md = (a / "results.md").read_text()
    assert "| method | 0 | 1 | mean | train s |" in md and "| knn |" in md
    # Merging again adds nothing (and trains nothing, so it needs no --mnist-digits); a folder without
    # results and --out itself are one-line errors.
    assert main(["bench", str(mnist), "--out", str(a), "--merge", str(b / "results.json")]) == 0
    assert len(json.loads((a / "results.json").read_text())["records"]) == 4
    capsys.readouterr()
    for other in (tmp_path / "nothing", a):
        assert main(["bench", str(mnist), "--out", str(a), "--mnist-digits", "0-1", "--merge", str(other)]) == 2
        err = capsys.readouterr().err
        assert "--merge" in err or "no results.json" in err
        assert "Traceback" not in err and err.count("\n") == 1


def test_recorded_rows_of_retired_options_still_merge_and_report(mnist: Path, tmp_path: Path) -> None:
    """Rows of old runs are recorded results: their --set labels may name options retired since."""
    old = tmp_path / "old"
    old.mkdir()
    record = {"dataset": "digit_0", "method": "ours-proj [adv_balance=true]", "variant": "ours-proj",
              "sets": ["adv_balance=true"], "seed": 0, "image_auroc": 0.915, "per_defect_auroc": {},
              "train_seconds": 2270.0, "images_per_s": 500.0, "n_test": 100}
    (old / "results.json").write_text(json.dumps({"schema": 1, "meta": {"machine": "then"}, "records": [record]}))
    out = tmp_path / "bench"
    assert main(["bench", str(mnist), "--out", str(out), "--models", "pca", "--mnist-digits", "0"]) == 0
    assert main(["bench", str(mnist), "--out", str(out), "--merge", str(old)]) == 0
    assert record in json.loads((out / "results.json").read_text())["records"]
    assert "| ours-proj [adv_balance=true] | 0.915 |" in (out / "results.md").read_text()
    assert main(["bench", str(mnist), "--out", str(out), "--models", "pca", "--mnist-digits", "0"]) == 0  # resumes


def test_category_table_has_a_column_per_category_the_mean_and_the_worst() -> None:
    from trainer.bench_report import table_categories

    def rec(dataset: str, method: str, seed: int, a: float) -> dict[str, object]:
        return {"dataset": dataset, "method": method, "seed": seed, "image_auroc": a, "train_seconds": 10.0,
                "per_defect_auroc": {}, "images_per_s": 100.0}

    records = [rec("moon", "ours-proj", 0, 0.90), rec("moon", "ours-proj", 1, 0.94),
               rec("stone", "ours-proj", 0, 0.80), rec("stone", "ours-proj", 1, 0.80), rec("moon", "pca", 0, 0.7)]
    lines = table_categories(records, ["ours-proj", "pca"]).splitlines()
    assert lines[0] == "| method | moon | stone | mean | worst | train s |"
    # sample standard deviation of 0.90 and 0.94 is 0.028 (population: 0.020)
    assert lines[2] == "| ours-proj | 0.920 ± 0.028 | 0.800 ± 0.000 | 0.860 | 0.800 | 10 |"
    assert lines[3] == "| pca | 0.700 | – | – | – | 10 |"          # a method missing a category has no mean

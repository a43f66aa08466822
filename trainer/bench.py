"""`trainer bench`: every detector variant and the classical yardsticks on the same splits, one table.

Records (method × data set or digit × seed) go to DIR/results.json as they finish, so an interrupted
run resumes; DIR/results.md has the paper's Table 1 layout (folder data) or per-digit columns (MNIST).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from common.auroc import auroc
from common.errors import DataError, UserError
from common.layout import detect_layout
from trainer.baselines import BASELINES
from trainer.bench_report import METHODS, images_per_s_text, write_report
from trainer.config import build_config, with_mnist_defaults
from trainer.datasets import ImageSet, load_split

RESULTS_SCHEMA = 1


@dataclass(frozen=True)
class Job:
    dataset: str          # "line" (the folder's name) or "digit_3"
    method: str
    seed: int
    mnist_digit: int | None
    sets: tuple[str, ...] = ()   # --set KEY=VALUE items for the trained variants (an ablation row)

    @property
    def label(self) -> str:
        """The table row: the method, plus its --set items for an ablation (baselines take none)."""
        if not self.sets or self.method in BASELINES:
            return self.method
        return f"{self.method} [{' '.join(self.sets)}]"

    @property
    def key(self) -> str:
        return record_key(self.dataset, self.label, self.seed)


def record_key(dataset: str, label: str, seed: int) -> str:
    """One run's identity in results.json: what resuming compares."""
    return f"{dataset}|{label}|{seed}"


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UserError(f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(METHODS)}")
    return methods


def parse_digits(text: str) -> list[int]:
    """'0-9' -> [0..9]; '1,3,7' -> [1, 3, 7]."""
    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-", 1))
            digits = list(range(lo, hi + 1))
        else:
            digits = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"bad --mnist-digits {text!r}; write a range like 0-9 or a list like 1,3,7") from None
    if not digits or any(d < 0 or d > 9 for d in digits):
        raise UserError(f"bad --mnist-digits {text!r}; digits lie in 0-9")
    return digits


def plan_jobs(data_dir: Path, methods: list[str], digits: list[int] | None, seeds: int,
              sets: tuple[str, ...] = (), first_seed: int = 0) -> list[Job]:
    if digits is None:
        datasets: list[tuple[str, int | None]] = [(data_dir.resolve().name, None)]
    else:
        datasets = [(f"digit_{d}", d) for d in digits]
    return [Job(name, m, s, d, sets) for name, d in datasets for m in methods
            for s in range(first_seed, first_seed + seeds)]


def score_method(job: Job, train: ImageSet, test: ImageSet, image_size: int, epochs: int | None
                 ) -> tuple[np.ndarray, float, float]:
    """Fit one method on the normal training images, score the test set: (scores, train s, images/s)."""
    t0 = time.perf_counter()
    if job.method in BASELINES:
        model = BASELINES[job.method]().fit(train.images)
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        scores = model.score(test.images)
    else:
        from trainer.evaluate import score_images
        from trainer.fit import fit_arrays

        overrides: dict[str, Any] = {"image_size": image_size, "channels": train.images.shape[-1],
                                     "seed": job.seed, "epochs": epochs}
        cfg = build_config(job.method, with_mnist_defaults(overrides, job.mnist_digit is not None), list(job.sets))
        result = fit_arrays(train.images, cfg, verbose=False)
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        scores, _, _ = score_images(cfg, result.nets, test.images)
    infer_s = time.perf_counter() - t1
    return np.asarray(scores, dtype=np.float64), train_s, len(test.images) / max(infer_s, 1e-9)


def make_record(job: Job, test: ImageSet, scores: np.ndarray, train_s: float, ips: float) -> dict[str, Any]:
    """One results.json record: image AUROC overall and per defect type (that type against the good images)."""
    kinds = np.asarray(test.kinds)
    good = kinds == "good"
    image_auroc = auroc(test.labels, scores)
    if image_auroc is None:
        raise DataError(f"the test split of {job.dataset} holds one class only; a benchmark needs good and "
                        "defective images")
    per_defect = {
        k: auroc(np.r_[np.zeros(good.sum()), np.ones((kinds == k).sum())], np.r_[scores[good], scores[kinds == k]])
        for k in sorted(set(test.kinds) - {"good"})
    }
    return {"dataset": job.dataset, "method": job.label, "variant": job.method, "sets": list(job.sets), "seed": job.seed,
            "image_auroc": image_auroc, "per_defect_auroc": per_defect,
            "train_seconds": round(train_s, 2), "images_per_s": round(ips, 1), "n_test": len(test)}


class ResultsFile:
    """results.json, rewritten atomically after every record so an interrupted run loses nothing."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if path.is_file():
            try:
                self.records = json.loads(path.read_text())["records"]
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{path} is not a results file of trainer bench; move it away or choose another --out") from None
        self.meta = meta

    def done(self) -> set[str]:
        return {record_key(r["dataset"], r["method"], r["seed"]) for r in self.records}

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._write()

    def merge(self, other: Path) -> tuple[int, int]:
        """Add another bench's records (its folder or results.json) that this file lacks: (added, skipped).

        A record whose key (data set, row, seed) is already here is skipped, never overwritten.
        """
        path = other / "results.json" if other.is_dir() else other
        if not path.is_file():
            raise UserError(f"{other}: no results.json of trainer bench there; name a bench --out folder")
        try:
            records = json.loads(path.read_text())["records"]
            keys = [record_key(r["dataset"], r["method"], r["seed"]) for r in records]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path} is not a results file of trainer bench") from None
        done = self.done()
        fresh = [r for r, k in zip(records, keys, strict=True) if k not in done]
        self.records.extend(fresh)
        self._write()
        return len(fresh), len(records) - len(fresh)

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"schema": RESULTS_SCHEMA, "meta": self.meta, "records": self.records}, indent=1))
        tmp.replace(self.path)


def run_jobs(jobs: list[Job], data_dir: Path, results: ResultsFile, image_size: int, epochs: int | None,
             on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
    done = results.done()
    todo = [j for j in jobs if j.key not in done]
    cache: dict[int | None, tuple[ImageSet, ImageSet]] = {}
    for job in tqdm(todo, desc="bench", disable=None):
        if job.mnist_digit not in cache:
            cache.clear()
            cache[job.mnist_digit] = (load_split(data_dir, "train", image_size, mnist_digit=job.mnist_digit),
                                      load_split(data_dir, "test", image_size, mnist_digit=job.mnist_digit))
        train, test = cache[job.mnist_digit]
        scores, train_s, ips = score_method(job, train, test, image_size, epochs)
        record = make_record(job, test, scores, train_s, ips)
        results.add(record)
        if on_record:
            on_record(record)


@dataclass(frozen=True)
class BenchOptions:
    """`trainer bench DATA --out DIR ...`: which methods on which data, how many seeds, or a merge."""

    data_dir: Path
    out: Path
    methods: tuple[str, ...] = METHODS
    epochs: int | None = None
    image_size: int | None = None
    digits: tuple[int, ...] | None = None   # the normal digits of an MNIST folder
    seeds: int = 1
    first_seed: int = 0
    sets: tuple[str, ...] = ()              # --set items for the trained methods (an ablation row)
    merge: tuple[Path, ...] = ()            # other bench folders to merge instead of running


def run_bench(opts: BenchOptions) -> int:
    data_dir = opts.data_dir
    if opts.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if opts.first_seed < 0:
        raise UserError("--first-seed must be 0 or more")
    if opts.epochs is not None and opts.epochs < 1:
        raise UserError("--epochs must be at least 1")
    layout = detect_layout(data_dir)  # raises DataError for a missing or unrecognised folder
    mnist = layout == "mnist"
    if mnist and opts.digits is None and not opts.merge:  # merging trains nothing: no digits needed
        raise UserError(f"{data_dir} holds MNIST IDX files: say which normal digits with --mnist-digits 0-9")
    if not mnist and opts.digits is not None:
        raise UserError(f"--mnist-digits applies to MNIST IDX folders; {data_dir} is a {layout} folder")
    if layout == "plain":
        raise UserError(f"{data_dir} has good images only; a benchmark needs a test split (MVTec layout or MNIST)")
    # the size `trainer fit` would train this data at: the same defaults, resolved the same way
    image_size = build_config(overrides=with_mnist_defaults({"image_size": opts.image_size}, mnist)).model.image_size
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.machine()}, {_cpu_count()} CPU cores, Python {platform.python_version()}",
            "data": str(data_dir), "image_size": image_size, "epochs": opts.epochs}
    results = ResultsFile(out / "results.json", meta)
    if opts.merge:   # recorded rows are kept as they are, --set labels of since retired options included
        return merge_benches(out, results, list(opts.merge), mnist)
    build_config("ours-proj", None, list(opts.sets))  # a bad --set fails now, not after hours of training
    jobs = plan_jobs(data_dir, list(opts.methods), list(opts.digits) if opts.digits is not None else None,
                     opts.seeds, opts.sets, opts.first_seed)
    print(f"trainer bench: {len(jobs)} runs ({len(results.done() & {j.key for j in jobs})} already done) -> {out}")

    def show(r: dict[str, Any]) -> None:
        tqdm.write(f"  {r['dataset']:>10s} {r['method']:<12s} seed {r['seed']}  AUROC {r['image_auroc']:.3f}  "
                   f"train {r['train_seconds']:.0f}s  {images_per_s_text(r['images_per_s'])} img/s")

    command = "trainer bench " + " ".join(_argv_of(opts))
    try:
        run_jobs(jobs, data_dir, results, image_size, opts.epochs, on_record=show)
    finally:
        if results.records:
            write_report(out, results.records, results.meta, mnist, command)
    print((out / "results.md").read_text())
    return 0


def merge_benches(out: Path, results: ResultsFile, others: list[Path], mnist: bool) -> int:
    """`trainer bench DATA --out DIR --merge OTHER...`: one table from benches that ran apart."""
    for other in others:
        if other.resolve() == out.resolve():
            raise UserError(f"--merge {other} is --out itself; name the other bench folders")
    for other in others:
        added, skipped = results.merge(other)
        print(f"merged {other}: {added} records added, {skipped} already in {out} (kept as they were)")
    if results.records:
        write_report(out, results.records, results.meta, mnist, f"trainer bench (merged from {', '.join(map(str, others))})")
        print((out / "results.md").read_text())
    return 0


def _cpu_count() -> int:
    from common.host import available_cores

    return available_cores()


def _digits_text(digits: tuple[int, ...]) -> str:
    """(0, 1, ..., 9) -> '0-9'; (1, 3, 7) -> '1,3,7' (as --mnist-digits takes them)."""
    if len(digits) > 1 and list(digits) == list(range(digits[0], digits[-1] + 1)):
        return f"{digits[0]}-{digits[-1]}"
    return ",".join(map(str, digits))


def _argv_of(opts: BenchOptions) -> list[str]:
    """The command line that runs this bench (for the report's header)."""
    parts = [str(opts.data_dir), "--out", str(opts.out), "--models", ",".join(opts.methods)]
    for flag, value in (("--epochs", opts.epochs), ("--image-size", opts.image_size),
                        ("--mnist-digits", None if opts.digits is None else _digits_text(opts.digits))):
        if value is not None:
            parts += [flag, str(value)]
    seeds = ["--seeds", str(opts.seeds)] + (["--first-seed", str(opts.first_seed)] if opts.first_seed else [])
    return [*parts, *seeds, *[f"--set {item}" for item in opts.sets]]

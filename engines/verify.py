"""`engines verify MODEL [--data DIR]`: the deployed engine's scores against the ONNX FP32 reference.

Without TensorRT the FP16 graph runs in ONNX Runtime instead. That alone shows only that rounding the
weights is harmless (ONNX Runtime computes every node in FP32 on a CPU), so for an FP16 graph or engine
verify also runs the graph with FP16 storage emulated (`engines/fp16_emulate.py`): what a strongly typed
TensorRT computes, known before a box is touched.

Fidelity is judged where it matters to a verdict: the largest score deviation as a share of the distance
from the good parts' typical score to the threshold (or of the good scores' spread), the pass/fail
verdicts that change at the threshold, and ΔAUROC when the images are labelled. A per-score relative
deviation is reported but not judged: scores standardised around 0 make it meaningless.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.auroc import auroc
from common.images import fit_image, image_files, read_image
from common.layout import class_files, labelled_classes
from common.manifest import Manifest, read_manifest
from engines.base import Engine, InferResult, infer_in_batches
from engines.errors import EngineError
from engines.fp16 import fp16_bytes
from engines.fp16_emulate import Emulation, by_op_type, emulate, summary
from engines.onnxruntime_engine import OnnxRuntimeEngine, default_threads
from engines.select import engine_file_for, onnx_for
from engines.tensorrt_engine import tensorrt_available

AUROC_TOL = 0.002
SCORE_TOL = 0.05     # largest |Δscore| allowed, as a share of the score scale (see score_scale)
EMULATED = "fp16 storage emulated"


@dataclass
class Comparison:
    candidate: str
    images: int
    score_max_abs_dev: float
    score_mean_abs_dev: float
    score_max_rel_dev: float      # max |Δs|/|s| per image: reported, not judged
    score_scale: float            # what |Δs| is judged against (score_scale_source says which)
    score_scale_source: str
    score_dev_of_scale: float     # max |Δs| / score_scale
    threshold: float | None
    verdict_flips: int | None     # images whose pass/fail at the threshold differs from the reference
    map_max_abs_dev: float
    recon_max_abs_dev: int
    order_flips: int              # pairs of images the candidate ranks the other way round than the reference
    auroc_reference: float | None
    auroc_candidate: float | None
    auroc_delta: float | None
    ok: bool
    emulated: Comparison | None = None                       # FP16 storage emulated, beside an FP16 candidate
    fp16: dict[str, Any] = field(default_factory=dict)       # the emulation's kept nodes, overflow, per op type


def load_images(data: str | Path, size: int, channels: int, limit: int | None = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (and labels: 0 good, 1 defect) from an MVTec-layout folder's test split, or images without
    labels from a plain folder; each read and fitted to the model's input as the trainer does."""
    root = Path(data)
    if not root.is_dir():
        raise EngineError(f"data folder {root} not found")
    test = root / "test" if (root / "test").is_dir() else root
    labelled = (test / "good").is_dir()
    if labelled:
        files = class_files(root, labelled_classes(test))
    elif image_files(root):
        files = [(f, "") for f in image_files(root)]
    else:
        raise EngineError(f"no images in {root} (expected test/good and test/<defect> folders, or image files)")
    if limit is not None and len(files) > limit:
        idx = np.random.default_rng(0).choice(len(files), limit, replace=False)
        files = [files[i] for i in sorted(idx)]
    images = np.stack([fit_image(read_image(f), size, channels) for f, _ in files])
    labels = np.array([0 if kind == "good" else 1 for _, kind in files], dtype=np.int64)
    return images, (labels if labelled else None)


def sample_images(manifest: Manifest, n: int = 64, seed: int = 0) -> np.ndarray:
    """Deterministic noise images when no data folder is given."""
    h, w, c = manifest.input_shape
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def order_flips(ref: np.ndarray, got: np.ndarray, max_images: int = 2000) -> int:
    """Pairs (i, j) whose score order differs between reference and candidate (first max_images only)."""
    a, b = ref[:max_images].astype(np.float64), got[:max_images].astype(np.float64)
    i, j = np.triu_indices(len(a), 1)
    return int(np.count_nonzero(np.sign(a[i] - a[j]) != np.sign(b[i] - b[j])))


def score_scale(ref: np.ndarray, labels: np.ndarray | None, threshold: float | None) -> tuple[float, str]:
    """The scale a score deviation is judged on: the threshold's distance from the good images' median
    score; the good scores' sd without a threshold (or with one below that median); without labels the sd
    of all the reference scores."""
    good = ref[labels == 0].astype(np.float64) if labels is not None else np.empty(0)
    if len(good) >= 2:
        centre = float(np.median(good))
        if threshold is not None and threshold > centre:
            return threshold - centre, f"threshold {threshold:.4g} - median good score {centre:.4g}"
        sd = float(good.std(ddof=1))
        if sd > 0:
            return sd, f"sd of the {len(good)} good scores"
    sd = float(ref.astype(np.float64).std(ddof=1)) if len(ref) >= 2 else 0.0
    if sd > 0:
        return sd, f"sd of all {len(ref)} scores (no labelled good images)"
    return 1.0, "1 (the scores do not vary)"


def compare(name: str, ref: InferResult, got: InferResult, labels: np.ndarray | None,
            threshold: float | None = None, auroc_tol: float = AUROC_TOL, score_tol: float = SCORE_TOL
            ) -> Comparison:
    """The candidate's outputs against the reference's. ok: finite scores, max |Δs| within score_tol of the
    score scale (so any verdict that changes at the threshold belongs to an image that close to it), and
    |ΔAUROC| within auroc_tol when there are labels."""
    dev = np.abs(got.scores.astype(np.float64) - ref.scores)
    rel = float(np.max(dev / np.maximum(np.abs(ref.scores), 1e-12)))
    scale, source = score_scale(ref.scores, labels, threshold)
    a_ref = auroc(labels, ref.scores) if labels is not None else None
    a_got = auroc(labels, got.scores) if labels is not None and np.isfinite(got.scores).all() else None
    delta = None if a_ref is None or a_got is None else a_got - a_ref
    flips = None if threshold is None else int(np.count_nonzero((ref.scores > threshold) != (got.scores > threshold)))
    of_scale = float(dev.max()) / scale if np.isfinite(dev).all() else float("inf")
    auroc_ok = a_ref is None or (delta is not None and abs(delta) <= auroc_tol)
    ok = of_scale <= score_tol and auroc_ok
    return Comparison(candidate=name, images=len(ref.scores), score_max_abs_dev=float(dev.max()),
                      score_mean_abs_dev=float(dev.mean()), score_max_rel_dev=rel, score_scale=scale,
                      score_scale_source=source, score_dev_of_scale=of_scale, threshold=threshold,
                      verdict_flips=flips, map_max_abs_dev=float(np.abs(got.maps - ref.maps).max()),
                      recon_max_abs_dev=int(np.abs(got.reconstructions.astype(int) - ref.reconstructions).max()),
                      order_flips=order_flips(ref.scores, got.scores),
                      auroc_reference=a_ref, auroc_candidate=a_got, auroc_delta=delta, ok=bool(ok))


def fp16_details(em: Emulation) -> dict[str, Any]:
    """The emulation's report for the JSON record: kept nodes, overflow, the worst nodes, per op type."""
    worst = sorted(em.nodes, key=lambda s: s.rel_err, reverse=True)[:10]
    return {"rounded_values": em.rounded, "kept_fp32": em.kept, "summary": summary(em),
            "overflow": [asdict(s) for s in em.overflows()], "largest_rel_err": [asdict(s) for s in worst],
            "by_op_type": by_op_type(em.nodes)}


def verify(model: str | Path, data: str | Path | None = None, limit: int | None = None,
           auroc_tol: float = AUROC_TOL, score_tol: float = SCORE_TOL,
           notes: list[str] | None = None, emulate_fp16: bool = True) -> list[Comparison]:
    """Compare every candidate available here (TensorRT engine, else the FP16 graph in ONNX Runtime); an FP16
    candidate also gets the FP16-storage emulation beside it (`emulate_fp16`), which must pass too where it
    stands in for TensorRT.

    `notes`, when given, receives a line per candidate that could not run here and why."""
    path = Path(model)
    if not path.is_file():
        raise EngineError(f"model file {path} not found")
    manifest, onnx_file = onnx_for(path)
    if data is None and notes is not None:
        notes.append("no --data: random images, so no AUROC; pass an MVTec-layout folder for it")
    if data is not None:
        images, labels = load_images(data, manifest.image_size, manifest.channels, limit)
    else:
        images, labels = sample_images(manifest, limit or 64), None
    reference = OnnxRuntimeEngine(onnx_file, manifest)
    ref = infer_in_batches(reference, images)
    reference.close()
    candidates: list[tuple[str, Engine, bool, bool]] = []   # name, engine, FP16, the emulation stands in for it
    engine_file = engine_file_for(path)
    trt_ok, why = tensorrt_available()
    if trt_ok and engine_file is not None:
        from engines.tensorrt_engine import TensorRTEngine

        trt_manifest = read_manifest(engine_file)
        precision = trt_manifest.tensorrt.precision if trt_manifest.tensorrt else "?"
        candidates.append((f"tensorrt {precision}", TensorRTEngine(engine_file, trt_manifest), precision == "fp16",
                           False))
    else:
        if notes is not None:
            missing = path.with_suffix(".engine").name
            notes.append(f"tensorrt not checked ({why if not trt_ok else f'no engine {missing}'}); "
                         "checked the FP16 graph in ONNX Runtime and with FP16 storage emulated instead")
        candidates.append(("onnxruntime fp16 graph", OnnxRuntimeEngine(fp16_bytes(onnx_file), manifest), True, True))
    threshold = manifest.threshold
    results = []
    for name, engine, half, stands_in in candidates:
        try:
            result = compare(name, ref, infer_in_batches(engine, images), labels, threshold, auroc_tol, score_tol)
        finally:
            engine.close()
        if emulate_fp16 and half:
            em = emulate(onnx_file, images, threads=default_threads())
            result.emulated = compare(EMULATED, ref, em.result, labels, threshold, auroc_tol, score_tol)
            result.fp16 = fp16_details(em)
            result.ok = result.ok and (result.emulated.ok or not stands_in)
        results.append(result)
    return results


def format_table(results: list[Comparison], score_tol: float = SCORE_TOL, auroc_tol: float = AUROC_TOL) -> str:
    def f(v: float | int | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    def row(r: Comparison, name: str) -> str:
        flips = "-" if r.verdict_flips is None else f"{r.verdict_flips}/{r.images}"
        return (f"{name:<32} {r.images:>6} {r.score_max_abs_dev:>9.2e} {r.score_dev_of_scale:>8.3f} {flips:>9} "
                f"{f(r.auroc_reference, '.4f'):>9} {f(r.auroc_candidate, '.4f'):>7} {f(r.auroc_delta, '+.4f'):>8} "
                f"{r.order_flips:>7}  {'yes' if r.ok else 'NO'}")

    head = (f"{'candidate vs onnxruntime fp32':<32} {'images':>6} {'max|Δs|':>9} {'÷ scale':>8} {'verdicts':>9} "
            f"{'AUROC ref':>9} {'AUROC':>7} {'ΔAUROC':>8} {'swapped':>7}  ok")
    lines = [head]
    for r in results:
        lines.append(row(r, r.candidate))
        if r.emulated is not None:
            lines.append(row(r.emulated, "  " + r.emulated.candidate))
    if results:
        r = results[0]
        lines.append(f"scale {r.score_scale:.4g} = {r.score_scale_source}; ok: max|Δs| <= {score_tol:g} x scale"
                     f"{f', |ΔAUROC| <= {auroc_tol:g}' if r.auroc_reference is not None else ''}; "
                     "verdicts: pass/fail changed at the threshold; swapped: image pairs ranked the other way")
    for r in results:
        lines.extend(r.fp16.get("summary", []))
    return "\n".join(lines)


def as_records(results: list[Comparison]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]

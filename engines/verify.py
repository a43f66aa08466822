"""`engines verify MODEL [--data DIR]`: the deployed engine's scores against the ONNX FP32 reference.

Without TensorRT the FP16 graph runs in ONNX Runtime instead, so FP16 loss is known before a box is touched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.auroc import auroc
from common.images import fit_image, image_files, read_image
from common.layout import class_files, labelled_classes
from common.manifest import Manifest, read_manifest
from engines.base import Engine, InferResult, infer_in_batches
from engines.errors import EngineError
from engines.fp16 import fp16_bytes
from engines.onnxruntime_engine import OnnxRuntimeEngine
from engines.select import engine_file_for, onnx_for
from engines.tensorrt_engine import tensorrt_available

AUROC_TOL = 0.002
SCORE_RTOL = 0.01


@dataclass
class Comparison:
    candidate: str
    images: int
    score_max_abs_dev: float
    score_mean_abs_dev: float
    score_max_rel_dev: float
    map_max_abs_dev: float
    recon_max_abs_dev: int
    order_flips: int              # pairs of images the candidate ranks the other way round than the reference
    auroc_reference: float | None
    auroc_candidate: float | None
    auroc_delta: float | None
    ok: bool


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


def compare(name: str, ref: InferResult, got: InferResult, labels: np.ndarray | None,
            auroc_tol: float = AUROC_TOL, score_rtol: float = SCORE_RTOL) -> Comparison:
    dev = np.abs(got.scores.astype(np.float64) - ref.scores)
    rel = float(np.max(dev / np.maximum(np.abs(ref.scores), 1e-12)))
    a_ref = auroc(labels, ref.scores) if labels is not None else None
    a_got = auroc(labels, got.scores) if labels is not None else None
    delta = None if a_ref is None or a_got is None else a_got - a_ref
    ok = rel <= score_rtol and (delta is None or abs(delta) <= auroc_tol)
    return Comparison(candidate=name, images=len(ref.scores), score_max_abs_dev=float(dev.max()),
                      score_mean_abs_dev=float(dev.mean()), score_max_rel_dev=rel,
                      map_max_abs_dev=float(np.abs(got.maps - ref.maps).max()),
                      recon_max_abs_dev=int(np.abs(got.reconstructions.astype(int) - ref.reconstructions).max()),
                      order_flips=order_flips(ref.scores, got.scores),
                      auroc_reference=a_ref, auroc_candidate=a_got, auroc_delta=delta, ok=ok)


def verify(model: str | Path, data: str | Path | None = None, limit: int | None = None,
           auroc_tol: float = AUROC_TOL, score_rtol: float = SCORE_RTOL,
           notes: list[str] | None = None) -> list[Comparison]:
    """Compare every candidate available here (TensorRT engine, else the FP16 graph in ONNX Runtime).

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
    candidates: list[tuple[str, Engine]] = []
    engine_file = engine_file_for(path)
    trt_ok, why = tensorrt_available()
    if trt_ok and engine_file is not None:
        from engines.tensorrt_engine import TensorRTEngine

        trt_manifest = read_manifest(engine_file)
        precision = trt_manifest.tensorrt.precision if trt_manifest.tensorrt else "?"
        candidates.append((f"tensorrt {precision}", TensorRTEngine(engine_file, trt_manifest)))
    else:
        if notes is not None:
            missing = path.with_suffix(".engine").name
            notes.append(f"tensorrt not checked ({why if not trt_ok else f'no engine {missing}'}); "
                         "checked the FP16 graph in ONNX Runtime instead")
        candidates.append(("onnxruntime fp16 graph", OnnxRuntimeEngine(fp16_bytes(onnx_file), manifest)))
    results = []
    for name, engine in candidates:
        try:
            results.append(compare(name, ref, infer_in_batches(engine, images), labels, auroc_tol, score_rtol))
        finally:
            engine.close()
    return results


def format_table(results: list[Comparison]) -> str:
    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    head = (f"{'candidate vs onnxruntime fp32':<30} {'images':>6} {'max|Δs|':>9} {'mean|Δs|':>9} {'max rel':>8} "
            f"{'AUROC ref':>9} {'AUROC':>7} {'ΔAUROC':>8} {'flips':>6}  ok")
    rows = [f"{r.candidate:<30} {r.images:>6} {r.score_max_abs_dev:>9.2e} {r.score_mean_abs_dev:>9.2e} "
            f"{r.score_max_rel_dev:>8.1e} {f(r.auroc_reference, '.4f'):>9} {f(r.auroc_candidate, '.4f'):>7} "
            f"{f(r.auroc_delta, '+.4f'):>8} {r.order_flips:>6}  {'yes' if r.ok else 'NO'}" for r in results]
    return "\n".join([head, *rows])


def as_records(results: list[Comparison]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]

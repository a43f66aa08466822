"""`trainer export RUN_DIR --out MODEL.onnx`: the scoring path E→G→D as one ONNX graph, plus MODEL.json.

The graph takes uint8 N×H×W×C (BGR) crops and does the normalisation itself; export checks it against torch.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import platform
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from common.errors import UserError
from common.manifest import (
    INPUT_NAME,
    OUTPUT_NAMES,
    Manifest,
    io_specs,
    model_id_for,
    reference_scores,
    sha256_file,
    write_manifest,
)
from trainer.detector import NORMAL_SCORES, ExportableDetector, load_detector
from trainer.models import bake_spectral_norm
from trainer.onnx_passes import count_ops, fold_batchnorm, spectral_norm_leftovers, strip_debug_metadata
from trainer.tensors import from_uint8, to_uint8

OPSET = 18
MIN_OPSET = 17
SCORE_RTOL = 1e-4            # ONNX Runtime vs torch, relative, on the scores
SCORE_ATOL = 1e-7            # floor for scores that are (almost) zero
NORMALIZE = "x/127.5-1"


class ScoringGraph(nn.Module):
    """uint8 N×H×W×C (BGR) -> (score float32 N, reconstruction uint8 N×H×W×C, anomaly_map float32 N×H×W).

    The module torch.onnx.export traces, and what a torch-eager run of the exported graph runs.
    """

    def __init__(self, detector: ExportableDetector, rgb_model: bool = False) -> None:
        super().__init__()
        self.detector = detector
        self.rgb_model = rgb_model   # a detector trained on RGB gets its channels swapped inside the graph

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # uint8 only at the boundary, through a Cast: TensorRT allows uint8 I/O tensors nothing but a cast.
        x = from_uint8(images)
        if self.rgb_model:
            x = x.flip(1)
        score, recon, amap = self.detector(x)
        if self.rgb_model:
            recon = recon.flip(1)
        return score.to(torch.float32), to_uint8(recon), amap.to(torch.float32)


def input_spec(detector: ExportableDetector) -> tuple[int, int, bool]:
    """(size, channels, rgb_model) from the detector's `spec`, or a UserError for what export cannot do."""
    spec = detector.spec or {}
    missing = [k for k in ("size", "channels", "color_order", "normalize") if k not in spec]
    if missing:
        raise UserError(f"the detector's input spec lacks {', '.join(missing)}; re-save the checkpoint")
    if spec["normalize"] != NORMALIZE:
        raise UserError(f"input normalisation {spec['normalize']!r} is not supported; export knows {NORMALIZE!r}")
    size, channels, order = int(spec["size"]), int(spec["channels"]), str(spec["color_order"]).upper()
    if channels not in (1, 3):
        raise UserError(f"{channels} input channels: export supports 1 (grey) or 3 (BGR)")
    if channels == 3 and order not in ("BGR", "RGB"):
        raise UserError(f"colour order {order!r} is not supported; use BGR or RGB")
    return size, channels, channels == 3 and order == "RGB"


def strip_for_export(detector: ExportableDetector) -> ExportableDetector:
    """A deep copy in eval mode with every spectral norm baked into plain weights (the detector stays as it is)."""
    return bake_spectral_norm(copy.deepcopy(detector).eval())


def scoring_graph(detector: ExportableDetector) -> ScoringGraph:
    """The module export traces: the detector's baked copy behind the uint8 boundary, in eval mode."""
    return ScoringGraph(strip_for_export(detector), input_spec(detector)[2]).eval()


def sample_images(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Deterministic check images: half uniform noise, half smooth gradients with a bright square."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1)
    for i in range(n // 2):
        base = 255 * (0.3 + 0.4 * (yy * rng.random() + xx * rng.random()) / 2)
        img = np.repeat(base[..., None], channels, axis=2)
        a, b = sorted(rng.integers(0, size, 2))
        img[a:b + 1, a:b + 1] = 230
        imgs[i] = np.clip(img, 0, 255).astype(np.uint8)
    return imgs


def _export_graph(model: ScoringGraph, example: torch.Tensor, path: Path) -> None:
    names = dict(input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES))
    batch = torch.export.Dim("N", min=1, max=4096)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    try:
        exporter_log.setLevel(logging.ERROR)   # "torchvision is not installed" and other chatter
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=OPSET,
                              dynamic_shapes=({0: batch},), external_data=False, verbose=False, **names)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; report the first line
        raise UserError(f"torch.onnx.export failed: {str(exc).strip().splitlines()[0]}") from None
    finally:
        exporter_log.setLevel(level)


def _finish_graph(path: Path, size: int, channels: int) -> onnx.ModelProto:
    """Fold leftover BatchNorm, check opset, I/O contract, spectral-norm leftovers and onnx.checker."""
    model = onnx.load(str(path))
    strip_debug_metadata(model)
    fold_batchnorm(model)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise UserError(f"exported opset {opset} < {MIN_OPSET}; upgrade torch/onnxscript")
    if count_ops(model, "BatchNormalization"):
        raise UserError("BatchNormalization nodes remain after folding (non-constant statistics?)")
    leftovers = spectral_norm_leftovers(model)
    if leftovers:
        raise UserError(f"spectral-norm computations remain in the graph: {', '.join(leftovers[:4])}")
    inputs, outputs = io_specs(size, channels)
    want = {s.name: (s.dtype, s.shape) for s in inputs + outputs}
    elem = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.FLOAT: "float32"}
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        got = (elem.get(vi.type.tensor_type.elem_type, str(vi.type.tensor_type.elem_type)), dims)
        if want.pop(vi.name, None) != got:
            raise UserError(f"exported tensor {vi.name!r} is {got}, the contract wants {io_specs(size, channels)}")
    if want:
        raise UserError(f"exported graph lacks {', '.join(want)}")
    onnx.checker.check_model(model, full_check=True)
    return model


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def producer_versions() -> dict[str, str]:
    import onnxruntime
    import onnxscript

    try:
        ours = metadata.version("bigan-inspect")
    except metadata.PackageNotFoundError:
        ours = "unknown"
    return {"bigan-inspect": ours, "python": platform.python_version(), "torch": torch.__version__,
            "onnx": onnx.__version__, "onnxscript": onnxscript.__version__,
            "onnxruntime": onnxruntime.__version__, "exporter": f"torch.onnx dynamo, opset {OPSET}"}


def check_parity(model: ScoringGraph, onnx_file: Path, images: np.ndarray) -> dict[str, float]:
    """ONNX Runtime against torch on the same images, one batch and singly; UserError beyond tolerance."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        ref = [t.numpy() for t in model(torch.from_numpy(images))]
    got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
    single = np.concatenate([session.run(["score"], {INPUT_NAME: images[i:i + 1]})[0]
                             for i in range(len(images))])
    scale = np.abs(ref[0])
    rel = max(float(np.max(np.abs(s - ref[0]) / np.maximum(scale, SCORE_ATOL / SCORE_RTOL)))
              for s in (got[0], single))
    figures = {"score_max_rel_dev": rel,
               "score_max_abs_dev": float(np.max(np.abs(got[0] - ref[0]))),
               "map_max_abs_dev": float(np.max(np.abs(got[2] - ref[2]))),
               "recon_max_abs_dev": float(np.max(np.abs(got[1].astype(int) - ref[1].astype(int))))}
    if not rel <= SCORE_RTOL:
        raise UserError(f"export check failed: ONNX Runtime scores differ from torch by {rel:.2e} relative "
                        f"(limit {SCORE_RTOL:.0e}) on {len(images)} images; max abs {figures['score_max_abs_dev']:.2e}, "
                        f"map max abs {figures['map_max_abs_dev']:.2e}, reconstruction max {figures['recon_max_abs_dev']:.0f} "
                        "grey levels; nothing was written")
    return figures


def export_detector(detector: ExportableDetector, out: str | Path, check_images: np.ndarray | None = None
                    ) -> Manifest:
    """Export a detector (forward(x in [-1,1]) -> score, recon, amap) to OUT (.onnx) and OUT's .json."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise UserError(f"--out must name a .onnx file, got {out}")
    size, channels, _ = input_spec(detector)
    model = scoring_graph(detector)
    images = check_images if check_images is not None else sample_images(6, size, channels)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        _export_graph(model, torch.from_numpy(images[:2].copy()), tmp)
        graph = _finish_graph(tmp, size, channels)
        onnx.save(graph, str(tmp))
        figures = check_parity(model, tmp, images)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    sha = sha256_file(out)
    inputs, outputs = io_specs(size, channels)
    variant, threshold = str(detector.variant), detector.threshold
    metrics = dict(detector.metrics or {})
    normal_scores = reference_scores(metrics.pop(NORMAL_SCORES, None) or [])  # top level, not in metrics
    manifest = Manifest(
        model_id=model_id_for(variant, sha), variant=variant, onnx_file=out.name, onnx_sha256=sha,
        inputs=inputs, outputs=outputs, image_size=size, channels=channels,
        color_order="BGR" if channels == 3 else "GRAY",
        threshold=None if threshold is None else float(threshold), lambda_=float(detector.lam),
        metrics=_jsonable({**metrics, "export_parity": figures,
                           "score_terms": {"pair_weight": float(detector.pair_weight),
                                           "code_weight": float(detector.code_weight)}}),
        producer=producer_versions(), normal_scores=normal_scores)
    write_manifest(manifest, out)
    return manifest


@dataclass(frozen=True)
class ExportOptions:
    """`trainer export RUN_DIR --out MODEL.onnx`."""

    run_dir: Path
    out: Path


def run_export(opts: ExportOptions) -> Manifest:
    """Load RUN_DIR's checkpoint as a Detector, export it (see export_detector) and say what was written."""
    manifest = export_detector(load_detector(opts.run_dir), opts.out)
    parity = manifest.metrics.get("export_parity", {})
    print(f"wrote {opts.out} and {opts.out.with_suffix('.json')}: {manifest.model_id}, "
          f"{manifest.image_size}×{manifest.image_size}×{manifest.channels}, threshold {manifest.threshold}, "
          f"ONNX Runtime vs torch max rel. score deviation {parity.get('score_max_rel_dev', float('nan')):.1e}")
    if not manifest.normal_scores:
        print("note: no held-out normal scores in the checkpoint, so the daemon's drift watch has no reference "
              "for this model; `trainer evaluate RUN_DIR` then export again adds them", flush=True)
    return manifest

"""`trainer export`: contract of the graph (names, dtypes, shapes, dynamic batch), folding, parity, manifest.

Against the tiny stand-in detector, and the real Detector from trainer.detector where it is importable.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from standin_detector import StandinDetector, exported_standin
from torch.nn.utils import parametrize

from common.errors import UserError
from common.manifest import read_manifest, sha256_file
from trainer.export import ScoringGraph, check_parity, export_detector, input_spec, sample_images
from trainer.onnx_passes import count_ops, fold_batchnorm, spectral_norm_leftovers


@pytest.fixture(scope="module")
def model() -> Path:
    return exported_standin(3)


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]


def test_graph_contract(model: Path) -> None:
    g = onnx.load(str(model))
    onnx.checker.check_model(g, full_check=True)
    assert max(o.version for o in g.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ins = {v.name: (v.type.tensor_type.elem_type, _dims(v)) for v in g.graph.input}
    outs = {v.name: (v.type.tensor_type.elem_type, _dims(v)) for v in g.graph.output}
    assert list(ins) == ["images"] and list(outs) == ["score", "reconstruction", "anomaly_map"]
    assert ins["images"][0] == TensorProto.UINT8 and ins["images"][1][1:] == [32, 32, 3]
    assert isinstance(ins["images"][1][0], str)                        # only the batch is dynamic
    assert outs["score"][0] == TensorProto.FLOAT and len(outs["score"][1]) == 1
    assert outs["reconstruction"][0] == TensorProto.UINT8 and outs["reconstruction"][1][1:] == [32, 32, 3]
    assert outs["anomaly_map"][0] == TensorProto.FLOAT and outs["anomaly_map"][1][1:] == [32, 32]
    assert count_ops(g, "BatchNormalization") == 0
    assert spectral_norm_leftovers(g) == []
    assert not any(n.metadata_props for n in g.graph.node)   # no stack traces: same weights, same sha256
    # TensorRT: a uint8 network input/output may only be converted (Cast), nothing else may touch it.
    assert [n.op_type for n in g.graph.node if "images" in n.input] == ["Cast"]
    assert [n.op_type for n in g.graph.node if "reconstruction" in n.output] == ["Cast"]


@pytest.mark.parametrize("n", [1, 5])
def test_dynamic_batch_and_parity_with_torch(model: Path, n: int) -> None:
    images = sample_images(n, 32, 3, seed=n)
    score, recon, amap = ort.InferenceSession(str(model)).run(None, {"images": images})
    det = StandinDetector()
    with torch.inference_mode():   # the un-exported detector, with its spectral norm still parametrised
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        t_score, t_recon, t_amap = det(x)
    assert score.shape == (n,) and recon.shape == (n, 32, 32, 3) and amap.shape == (n, 32, 32)
    np.testing.assert_allclose(score, t_score.numpy(), rtol=1e-4)
    np.testing.assert_allclose(amap, t_amap.numpy(), rtol=1e-4, atol=1e-5)
    t_img = torch.clamp(torch.round((t_recon + 1) * 127.5), 0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    assert np.abs(recon.astype(int) - t_img.numpy().astype(int)).max() <= 1


def test_manifest_written_beside(model: Path) -> None:
    m = read_manifest(model)
    assert m.onnx_file == "model.onnx" and m.onnx_sha256 == sha256_file(model)
    assert m.model_id == f"standin-{m.onnx_sha256[:12]}"
    assert (m.threshold, m.lambda_, m.variant, m.channels, m.color_order) == (0.42, 0.1, "standin", 3, "BGR")
    assert m.metrics["auroc"] == 0.9 and m.metrics["export_parity"]["score_max_rel_dev"] <= 1e-4
    assert {"torch", "onnx", "onnxruntime"} <= set(m.producer)
    assert [t.name for t in m.outputs] == ["score", "reconstruction", "anomaly_map"]


def test_export_leaves_the_detector_alone() -> None:
    det = StandinDetector()
    before = copy.deepcopy(det.state_dict())
    from trainer.export import strip_for_export

    stripped = strip_for_export(det)
    assert not any(parametrize.is_parametrized(m) for m in stripped.modules())
    assert any(parametrize.is_parametrized(m) for m in det.modules())
    assert all(torch.equal(before[k], v) for k, v in det.state_dict().items())


def test_grey_model(tmp_path: Path) -> None:
    m = export_detector(StandinDetector(channels=1), tmp_path / "grey.onnx")
    assert m.channels == 1 and m.color_order == "GRAY" and m.inputs[0].shape == [-1, 32, 32, 1]
    out = ort.InferenceSession(str(tmp_path / "grey.onnx")).run(None, {"images": sample_images(2, 32, 1)})
    assert out[1].shape == (2, 32, 32, 1)


def test_rgb_trained_model_gets_bgr_input() -> None:
    det = StandinDetector()
    images = torch.from_numpy(sample_images(2, 32, 3))
    with torch.inference_mode():
        bgr_out = ScoringGraph(det, rgb_model=False)(images.flip(3))   # the detector sees RGB either way
        rgb_out = ScoringGraph(det, rgb_model=True)(images)
    torch.testing.assert_close(rgb_out[0], bgr_out[0])
    torch.testing.assert_close(rgb_out[1], bgr_out[1].flip(3))


def test_parity_failure_reports_figures(model: Path) -> None:
    other = StandinDetector(seed=1)
    with pytest.raises(UserError, match=r"differ from torch by .* relative \(limit 1e-04\)"):
        check_parity(ScoringGraph(other).eval(), model, sample_images(4, 32, 3))


def test_failed_export_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object) -> None:
        raise UserError("export check failed: (injected)")

    monkeypatch.setattr("trainer.export.check_parity", fail)
    with pytest.raises(UserError, match="injected"):
        export_detector(StandinDetector(), tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_requests() -> None:
    det = StandinDetector()
    with pytest.raises(UserError, match=r"\.onnx"):
        export_detector(det, "model.pt")
    det.spec = {**det.spec, "normalize": "imagenet"}
    with pytest.raises(UserError, match="normalisation"):
        input_spec(det)


def _bn_graph() -> onnx.ModelProto:
    """x -> Conv -> BN -> ConvTranspose -> BN -> y1, and BN(x) -> y2 (a BN with no conv before it)."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int, lo: float = -1.0, hi: float = 1.0) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.uniform(lo, hi, shape).astype(np.float32), name)

    inits = [init("w1", 4, 3, 3, 3), init("b1", 4), init("w2", 4, 2, 4, 4)]
    for bn, c in (("bn1", 4), ("bn2", 2), ("bn3", 3)):
        inits += [init(f"{bn}_g", c, lo=0.5, hi=1.5), init(f"{bn}_b", c), init(f"{bn}_m", c),
                  init(f"{bn}_v", c, lo=0.5, hi=1.5)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "bn1_g", "bn1_b", "bn1_m", "bn1_v"], ["n1"], name="bn1"),
             helper.make_node("ConvTranspose", ["n1", "w2"], ["c2"], name="convt", strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c2", "bn2_g", "bn2_b", "bn2_m", "bn2_v"], ["y1"], name="bn2"),
             helper.make_node("BatchNormalization", ["x", "bn3_g", "bn3_b", "bn3_m", "bn3_v"], ["y2"], name="bn3",
                              epsilon=1e-3)]
    graph = helper.make_graph(
        nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1, 2, 16, 16]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 3, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_fold_batchnorm_is_exact() -> None:
    g = _bn_graph()
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    before = ort.InferenceSession(g.SerializeToString()).run(None, {"x": x})
    assert fold_batchnorm(g) == 3
    onnx.checker.check_model(g, full_check=True)
    assert count_ops(g, "BatchNormalization") == 0
    assert sorted(n.op_type for n in g.graph.node) == ["Add", "Conv", "ConvTranspose", "Mul"]
    after = ort.InferenceSession(g.SerializeToString()).run(None, {"x": x})
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_spectral_norm_leftovers_are_seen() -> None:
    g = _bn_graph()
    assert spectral_norm_leftovers(g) == []
    g.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "D.0.parametrizations.weight.original"))
    g.graph.node.append(helper.make_node("ReduceL2", ["x"], ["norm"], name="sigma"))
    assert len(spectral_norm_leftovers(g)) == 2


def test_real_detector_exports_through_the_cli(tmp_path: Path) -> None:
    """A tiny real checkpoint (32 px) through `trainer export`, if the trainer's checkpoint code is here."""
    ckpt = pytest.importorskip("trainer.checkpoint", reason="trainer.checkpoint not available")
    from trainer.cli import main
    from trainer.config import Config
    from trainer.detector import attach_score_stats, fit_score_stats
    from trainer.models import build_networks

    cfg = Config()
    cfg.model.image_size, cfg.model.width, cfg.model.z_dim = 32, 8, 16
    torch.manual_seed(0)
    nets = build_networks(cfg.model)
    for n in nets.values():
        n.eval()
    attach_score_stats(cfg, nets)    # the shipped default standardises the map per pixel
    fit_score_stats(cfg, nets, torch.rand(6, 3, 32, 32) * 2 - 1)
    ckpt.save(tmp_path / "run" / "model.pt", ckpt.make_payload(cfg, nets, threshold=0.3, metrics={"auroc": 0.5}))
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "real.onnx")]) == 0
    m = read_manifest(tmp_path / "real.onnx")
    assert m.variant == cfg.model.variant and m.threshold == 0.3 and m.lambda_ == pytest.approx(cfg.score.lam)
    assert count_ops(onnx.load(str(tmp_path / "real.onnx")), "BatchNormalization") == 0
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x.onnx")]) == 2
    del nets["S"]   # a checkpoint whose config asks for statistics it does not hold is refused, not guessed
    ckpt.save(tmp_path / "bad" / "model.pt", ckpt.make_payload(cfg, nets, threshold=0.3))
    assert main(["export", str(tmp_path / "bad"), "--out", str(tmp_path / "y.onnx")]) == 2

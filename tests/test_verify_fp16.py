"""FP16 storage emulation, the nodes kept FP32, and `engines verify`'s verdict on a meaningful scale.

Hand-made graphs where FP16 and FP32 arithmetic visibly differ, and a detector trained here by the trainer
(32 px, one epoch: a fidelity check needs a real graph, not a good one).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from common.manifest import INPUT_NAME, read_manifest
from engines.base import InferResult
from engines.cli import main as engines_main
from engines.fp16 import convert, fp16_bytes, fp16_model, keep_fp32_nodes, named, toposort
from engines.fp16_emulate import Emulator, emulate, emulation_graph, open_session
from engines.onnxruntime_engine import OnnxRuntimeEngine
from engines.verify import compare, load_images, verify

N = 20_000


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(MODEL.onnx, its labelled data): `trainer synth` + `trainer fit --epochs 1` + `trainer export`, 32 px."""
    trainer_cli = pytest.importorskip("trainer.cli")
    root = tmp_path_factory.mktemp("fp16-trained")
    data, run, model = root / "line", root / "run", root / "model.onnx"
    assert trainer_cli.main(["synth", str(data), "--size", "32", "--n-train", "60", "--n-test", "200"]) == 0
    assert trainer_cli.main(["fit", str(data), "--out", str(run), "--image-size", "32", "--epochs", "1"]) == 0
    assert trainer_cli.main(["export", str(run), "--out", str(model)]) == 0
    return model, data


def _sum_graph() -> onnx.ModelProto:
    """x (N floats) -> sum = ReduceSum(x); bigsum = ReduceSum(4·x): over FP16's range for x ≈ 1."""
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    four = numpy_helper.from_array(np.array(4.0, np.float32), "four")
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["sum"], name="sum", keepdims=0),
             helper.make_node("Mul", ["x", "four"], ["x4"], name="times4"),
             helper.make_node("ReduceSum", ["x4", "axes"], ["bigsum"], name="bigsum", keepdims=0)]
    graph = helper.make_graph(nodes, "sums", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, []) for n in ("sum", "bigsum")],
                              [axes, four])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_emulation_rounds_every_node_output() -> None:
    x = np.full(N, 1.001, np.float32)          # FP16 holds 1.0009765625; the sum 20019.5 is 20016 in FP16
    em = Emulator(_sum_graph(), keep=set())
    got = em.run({"x": x})
    fp32 = ort.InferenceSession(_sum_graph().SerializeToString()).run(None, {"x": x})
    assert fp32[0] == pytest.approx(20020, abs=0.5) and fp32[1] == pytest.approx(80080, abs=2)
    assert got["sum"] == 20016.0 and np.isinf(got["bigsum"])
    stats = {s.node: s for s in em.stats()}
    assert stats["bigsum"].overflow and stats["bigsum"].nonfinite == 1 and stats["bigsum"].ref_max_abs > 65504
    assert not stats["sum"].overflow and stats["sum"].max_abs_err == pytest.approx(4.0, abs=0.5)
    assert not stats["times4"].overflow and stats["times4"].rel_err < 1e-3


def test_kept_nodes_are_not_rounded_in_emulation_or_graph() -> None:
    x = np.full(N, 1.001, np.float32)
    got = Emulator(_sum_graph(), keep={"sum", "bigsum"}).run({"x": x})
    assert got["sum"] == pytest.approx(20020, abs=0.5)             # x read in FP32, sum kept FP32
    assert got["bigsum"] == pytest.approx(N * 4.00390625, rel=1e-6)  # 4·x stored in FP16, then summed in FP32
    half = convert(named(_sum_graph()), keep={"sum", "bigsum"})
    types = _types(half)
    assert all(types[t] == TensorProto.FLOAT for n in half.graph.node if n.name in ("sum", "bigsum")
               for t in [n.input[0], *n.output])
    assert types["x4"] == TensorProto.FLOAT16                      # the Mul is FP16 in the graph
    out = ort.InferenceSession(half.SerializeToString()).run(None, {"x": x})
    assert out[0] == pytest.approx(20020, abs=0.5) and np.isfinite(out[1])


def test_onnxruntime_keeps_the_rounding_casts() -> None:
    m, rounded = emulation_graph(named(_sum_graph()), keep=set())
    assert rounded == 5          # x on its way into the Mul and the sum; the outputs of sum, Mul, bigsum; 4.0
    open_session(m)              # raises if the optimiser folded any of them away
    x = np.full(N, 1.001, np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL   # what a plain session would do
    plain = ort.InferenceSession(m.SerializeToString(), so).run(None, {"x": x})
    assert plain[0] == open_session(m).run(None, {"x": x})[0] == 20016.0


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {**{v.name: v.type.tensor_type.elem_type for v in values},
            **{i.name: i.data_type for i in model.graph.initializer}}


def storage_graph(fp16: onnx.ModelProto) -> onnx.ModelProto:
    """An independent oracle: the FP16 graph itself, every FP16 tensor computed in FP32 and rounded."""
    m = copy.deepcopy(fp16)
    types = _types(m)
    for init in m.graph.initializer:
        if init.data_type == TensorProto.FLOAT16:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    nodes = []
    for n in m.graph.node:
        to_half = n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT16
        tail = []
        for k, o in enumerate(n.output):
            if types.get(o) == TensorProto.FLOAT16:
                n.output[k] = o + "__o"
                if not to_half:
                    tail.append(helper.make_node("Cast", [o + "__o"], [o + "__h"], to=TensorProto.FLOAT16))
                tail.append(helper.make_node("Cast", [o + "__h" if not to_half else o + "__o"], [o],
                                             to=TensorProto.FLOAT))
        nodes += [n, *tail]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    del m.graph.value_info[:]
    return m


def test_trained_model_keeps_reductions_and_score_tail_fp32(trained: tuple[Path, Path]) -> None:
    model, _ = trained
    fp32 = named(onnx.load(str(model)))
    keep = keep_fp32_nodes(fp32)
    ops = {n.name: n.op_type for n in fp32.graph.node}
    assert set(keep.values()) == {"reduction", "score statistics", "score tail"}
    assert all(ops[n].startswith("Reduce") for n, why in keep.items() if why == "reduction")
    assert not any(ops[n] in ("Conv", "ConvTranspose") for n in keep)
    half = fp16_model(model)
    types = _types(half)
    for node in half.graph.node:
        floats = [t for t in [*node.input, *node.output] if types.get(t) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
        if node.name in keep:
            assert all(types[t] == TensorProto.FLOAT for t in floats), node.name
        elif node.op_type in ("Conv", "ConvTranspose"):
            assert all(types[t] == TensorProto.FLOAT16 for t in floats), node.name
    producers = {o: n.name for n in half.graph.node for o in n.output}
    assert producers["score"] in keep and producers["anomaly_map"] in keep   # straight out, no FP16 round trip
    emulated, _ = emulation_graph(fp32, keep)
    raw = {n.output[0] for n in emulated.graph.node if n.output and n.output[0].endswith("__raw")}
    assert not any(o + "__raw" in raw for n in fp32.graph.node if n.name in keep for o in n.output)
    assert any(o + "__raw" in raw for n in fp32.graph.node if n.op_type == "Conv" for o in n.output)


@pytest.mark.parametrize("keep", [None, set()], ids=["kept-fp32", "all-fp16"])
def test_emulation_is_what_the_fp16_graph_computes(trained: tuple[Path, Path], keep: set[str] | None) -> None:
    """Bit for bit: the emulation of the FP32 graph = the exported FP16 graph under FP16 storage."""
    model, data = trained
    images, _ = load_images(data, 32, 3, limit=32)
    em = emulate(model, images, keep=keep, per_node=False)
    oracle = open_session(storage_graph(fp16_model(model, keep)))
    score, recon, amap = oracle.run(None, {INPUT_NAME: images})
    np.testing.assert_array_equal(em.result.scores, score)
    np.testing.assert_array_equal(em.result.maps, amap)
    np.testing.assert_array_equal(em.result.reconstructions, recon)
    fp32 = ort.InferenceSession(str(model)).run(["score"], {INPUT_NAME: images})[0]
    assert np.abs(score - fp32).max() > 0                       # FP16 storage does change the scores


def _scaled(model: Path, factor: float) -> bytes:
    """The graph with a Mul by `factor` after the convolution that feeds the score statistics (the blur)."""
    m = named(onnx.load(str(model)))
    keep = keep_fp32_nodes(m)
    producer = {o: n for n in m.graph.node for o in n.output}
    stat = next(n for n in m.graph.node if keep.get(n.name) == "score statistics"
                and producer[n.input[0]].op_type == "Conv")
    src = stat.input[0]
    stat.input[0] = src + "_scaled"
    m.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "broken_factor"))
    m.graph.node.append(helper.make_node("Mul", [src, "broken_factor"], [src + "_scaled"], name="broken"))
    toposort(m.graph)
    onnx.checker.check_model(m)
    return m.SerializeToString()


def test_verify_says_yes_for_the_fp16_graph(trained: tuple[Path, Path]) -> None:
    model, data = trained
    [r] = verify(model, data)
    assert r.ok and r.emulated is not None and r.emulated.ok
    for c in (r, r.emulated):
        assert c.images == 200 and c.threshold == read_manifest(model).threshold
        assert c.score_scale_source.startswith("threshold") and c.score_dev_of_scale <= 0.05
        assert c.auroc_delta is not None and abs(c.auroc_delta) <= 0.002
        assert c.verdict_flips is not None and c.verdict_flips <= 2
    assert r.fp16["overflow"] == [] and "reduction" in r.fp16["kept_fp32"].values()


def test_verify_says_no_for_a_broken_node(trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = trained
    broken = _scaled(model, 1.05)
    monkeypatch.setattr("engines.verify.fp16_bytes", lambda _: fp16_bytes(broken))
    [r] = verify(model, data)
    assert not r.ok and r.score_dev_of_scale > 0.05
    assert r.emulated is not None and r.emulated.ok      # the emulation of the real graph is still faithful
    manifest = read_manifest(model)
    images, labels = load_images(data, 32, 3)
    assert labels is not None
    ref = OnnxRuntimeEngine(model, manifest).infer(images[:32])
    bad = compare("broken", ref, emulate(broken, images[:32], per_node=False).result, labels[:32],
                  manifest.threshold)
    assert not bad.ok and bad.score_dev_of_scale > 0.05


def _result(scores: np.ndarray) -> InferResult:
    n = len(scores)
    return InferResult(scores.astype(np.float32), np.zeros((n, 2, 2, 1), np.uint8), np.zeros((n, 2, 2), np.float32))


def test_scores_near_zero_are_judged_against_the_threshold_not_themselves() -> None:
    """The demo's case: standardised scores around 0, max |Δs| 0.074, threshold 3.3: faithful, even though
    one score's relative deviation is 0.8."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    ref = np.concatenate([rng.normal(0, 1, 100), rng.normal(8, 3, 100)])
    ref[0] = 0.09
    got = ref + rng.uniform(-0.05, 0.05, 200)
    got[0] = ref[0] + 0.074
    c = compare("fp16", _result(ref), _result(got), labels, threshold=3.3)
    assert c.ok and c.score_max_rel_dev > 0.8 and c.score_dev_of_scale < 0.03 and c.auroc_delta == 0.0
    assert c.score_scale == pytest.approx(3.3 - np.median(ref[:100]))
    worse = compare("x1.05", _result(ref), _result(ref * 1.05), labels, threshold=3.3)
    assert not worse.ok and worse.score_dev_of_scale > 0.05
    near = ref.copy()
    near[150] = 3.31                       # a defect just above the threshold, pushed below it by 0.02
    flipped = compare("near", _result(near), _result(near - np.where(np.arange(200) == 150, 0.02, 0)), labels, 3.3)
    assert flipped.verdict_flips == 1 and flipped.ok     # within the tolerance band: allowed to go either way
    no_threshold = compare("sd", _result(ref), _result(got), labels, threshold=None)
    assert no_threshold.score_scale_source.startswith("sd of the 100 good") and no_threshold.verdict_flips is None


def test_verify_cli_reports_the_emulation(trained: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    model, data = trained
    out = tmp_path / "v.json"
    assert engines_main(["verify", str(model), "--data", str(data), "--limit", "64", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fp16 storage emulated" in text and "overflow" in text and "scale" in text
    [record] = json.loads(out.read_text())
    assert record["ok"] is True and record["emulated"]["ok"] is True
    assert record["fp16"]["kept_fp32"] and "Conv" in record["fp16"]["by_op_type"]
    assert engines_main(["verify", str(model), "--data", str(data), "--limit", "16", "--no-emulate-fp16",
                         "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["emulated"] is None

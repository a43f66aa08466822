"""FP16 storage emulated in ONNX Runtime: what a strongly typed TensorRT computes for the FP16 graph.

ONNX Runtime runs the FP16 graph (`engines/fp16.py`) on the CPU by inserting casts around every node that
has no FP16 kernel and folding the casts between such nodes away: the weights are rounded, the arithmetic
is not. On TensorRT 11 every FP16 tensor of that graph really is stored in FP16. This module rewrites the
FP32 graph so that every float output of every node the FP16 graph computes in FP16 goes through
Cast(FLOAT16) -> Cast(FLOAT) before its consumers, rounds the weights those nodes read, and leaves the
nodes the FP16 graph keeps in FP32 (`engines.fp16.keep_fp32_nodes` and the converter's own list) unrounded,
rounding their outputs only where an FP16 node reads them, as the FP16 graph does. The session runs with
graph optimisations off and checks that its casts survive.

What it does not emulate: rounding inside a node (TensorRT accumulates FP16 convolutions in FP32 and
rounds the result; a reduction left in FP16 might accumulate in FP16: `keep_fp32_nodes` keeps every
reduction FP32 so that question does not arise), and kernels' own order of operations.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from common.manifest import INPUT_NAME, OUTPUT_NAMES
from engines.base import InferResult
from engines.errors import EngineError
from engines.fp16 import blocked_nodes, float16_tools, keep_fp32_nodes, named, toposort

FP16_MAX = 65504.0


@dataclass
class NodeStat:
    """One float output of one node: the FP32 graph's values against the emulation's, over all images."""

    node: str
    op_type: str
    output: str
    fp32: bool                 # kept FP32 in the FP16 graph (its output is not rounded)
    ref_max_abs: float         # largest |x| in the FP32 graph
    nonfinite: int             # inf/nan elements in the emulation (none in the FP32 graph)
    max_abs_err: float         # largest |emulated - FP32| where both are finite
    rel_err: float             # max_abs_err / ref_max_abs

    @property
    def overflow(self) -> bool:
        return self.nonfinite > 0 or (not self.fp32 and self.ref_max_abs > FP16_MAX)


@dataclass
class Emulation:
    result: InferResult
    rounded: int                                   # values rounded to FP16 (node outputs, inputs, edges)
    kept: dict[str, str]                           # node -> why it stays FP32
    nodes: list[NodeStat] = field(default_factory=list)

    def overflows(self) -> list[NodeStat]:
        return [s for s in self.nodes if s.overflow]


def _round_array(a: np.ndarray) -> np.ndarray:
    """A weight as the FP16 converter stores it (tiny values kept nonzero, huge ones clamped), back in FP32."""
    flat = np.asarray(a, np.float32).reshape(-1)
    return float16_tools().convert_np_to_float16(flat).astype(np.float32).reshape(np.shape(a))


def _float_types(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)
    return {v.name for v in values if v.type.tensor_type.elem_type == TensorProto.FLOAT}


def _rounding(src: str, dst: str) -> list[onnx.NodeProto]:
    half = dst + "__fp16"
    return [helper.make_node("Cast", [src], [half], to=TensorProto.FLOAT16, name=half + "_cast"),
            helper.make_node("Cast", [half], [dst], to=TensorProto.FLOAT, name=dst + "__fp32_cast")]


def emulation_graph(model: onnx.ModelProto, keep: set[str] | dict[str, str] | None = None
                    ) -> tuple[onnx.ModelProto, int]:
    """The FP32 `model` (named) with FP16 storage emulated, and how many values it rounds (see module doc)."""
    m = named(copy.deepcopy(model))
    keep = keep_fp32_nodes(m) if keep is None else keep
    blocked = blocked_nodes(m, keep)
    floats = _float_types(m)
    graph = m.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    rounded = 0
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and any(c.name not in blocked for c in consumers.get(init.name, [])):
            init.CopyFrom(numpy_helper.from_array(_round_array(numpy_helper.to_array(init)), init.name))
            rounded += 1
    nodes: list[onnx.NodeProto] = []
    # graph inputs and blocked nodes' outputs: rounded only on the way into an FP16 node
    edges = [i.name for i in graph.input if i.name in floats]
    for node in graph.node:
        if node.op_type == "Constant" and node.name not in blocked:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(numpy_helper.from_array(_round_array(numpy_helper.to_array(attr.t)), attr.t.name))
                    rounded += 1
            nodes.append(node)
        elif node.name in blocked:
            nodes.append(node)
            edges.extend(o for o in node.output if o in floats)
        else:   # an FP16 node: every float output stored in FP16
            tail: list[onnx.NodeProto] = []
            for i, out in enumerate(node.output):
                if out in floats:
                    node.output[i] = out + "__raw"
                    tail.extend(_rounding(out + "__raw", out))
                    rounded += 1
            nodes.extend([node, *tail])
    for name in edges:
        half_readers = [c for c in consumers.get(name, []) if c.name not in blocked]
        if half_readers:
            for c in half_readers:
                c.input[:] = [name + "__r16" if i == name else i for i in c.input]
            nodes.extend(_rounding(name, name + "__r16"))
            rounded += 1
    del graph.node[:]
    graph.node.extend(nodes)
    toposort(graph)
    return m, rounded


def _half_casts(model: onnx.ModelProto) -> set[str]:
    return {n.name for n in model.graph.node if n.op_type == "Cast"
            and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in n.attribute)}


def _exact_in_half(model: onnx.ModelProto, cast_name: str) -> bool:
    """Whether a rounding cast reads a value FP16 holds exactly (uint8/int8/bool, or a Cast of one): ONNX
    Runtime folds such cast chains even with optimisations off, which changes nothing."""
    small = {TensorProto.UINT8, TensorProto.INT8, TensorProto.BOOL}
    typed = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.value_info)}
    producer = {o: n for n in model.graph.node for o in n.output}
    name = next(n for n in model.graph.node if n.name == cast_name).input[0]
    src = producer.get(name)
    return typed.get(name) in small or (src is not None and src.op_type == "Cast" and typed.get(src.input[0]) in small)


def open_session(model: onnx.ModelProto, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with graph optimisations off; EngineError if ONNX Runtime dropped a rounding cast anyway."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        so.optimized_model_filepath = str(Path(tmp) / "as_run.onnx")
        session = ort.InferenceSession(model.SerializeToString(), sess_options=so,
                                       providers=["CPUExecutionProvider"])
        as_run = onnx.load(so.optimized_model_filepath)
    lost = [c for c in _half_casts(model) - _half_casts(as_run) if not _exact_in_half(model, c)]
    if lost:
        raise EngineError(f"ONNX Runtime removed {len(lost)} of the emulation's FP16 rounding casts "
                          f"({', '.join(sorted(lost)[:3])}); the FP16 emulation cannot be trusted here")
    return session


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = copy.deepcopy(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in have)
    return m


def _watched(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str]]:
    floats = _float_types(model)
    return [(n, o) for n in model.graph.node for o in n.output if o in floats and n.op_type != "Constant"]


class Emulator:
    """The FP32 graph with FP16 storage emulated, ready to run; with `per_node`, also the FP32 graph itself,
    both with every node's float outputs exposed, and the per-node figures gathered over all runs."""

    def __init__(self, onnx_model: str | Path | bytes | onnx.ModelProto,
                 keep: set[str] | dict[str, str] | None = None, per_node: bool = True, threads: int = 1) -> None:
        if isinstance(onnx_model, onnx.ModelProto):
            fp32 = named(copy.deepcopy(onnx_model))
        else:
            raw = onnx_model if isinstance(onnx_model, bytes) else Path(onnx_model).read_bytes()
            fp32 = named(onnx.load_from_string(raw))
        keep = keep_fp32_nodes(fp32) if keep is None else keep
        self.keep = dict(keep) if isinstance(keep, dict) else {name: "kept" for name in keep}
        emulated, self.rounded = emulation_graph(fp32, self.keep)
        self._watched = _watched(fp32) if per_node else []
        self._names = [o for _, o in self._watched]
        self._blocked = blocked_nodes(fp32, self.keep)
        self._emu = open_session(_with_outputs(emulated, self._names), threads)
        self._ref = open_session(_with_outputs(fp32, self._names), threads) if per_node else None
        self._acc = {o: [0.0, 0, 0.0] for o in self._names}   # FP32 max |x|, inf/nan, max |err|

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output of the emulated graph (the graph's own and, with per_node, each node's) by name."""
        got = dict(zip([o.name for o in self._emu.get_outputs()], self._emu.run(None, feeds), strict=True))
        if self._ref is not None:
            want = dict(zip(self._names, self._ref.run(self._names, feeds), strict=True))
            for o in self._names:
                a, b = want[o].astype(np.float64), got[o].astype(np.float64)
                finite = np.isfinite(a) & np.isfinite(b)
                acc = self._acc[o]
                acc[0] = max(acc[0], float(np.abs(a[np.isfinite(a)]).max(initial=0.0)))
                acc[1] += int(np.count_nonzero(~np.isfinite(b)))
                acc[2] = max(acc[2], float(np.abs(a - b)[finite].max(initial=0.0)))
        return got

    def stats(self) -> list[NodeStat]:
        out = []
        for n, o in self._watched:
            ref_max, nonfinite, err = self._acc[o]
            out.append(NodeStat(node=n.name, op_type=n.op_type, output=o, fp32=n.name in self._blocked,
                                ref_max_abs=ref_max, nonfinite=int(nonfinite), max_abs_err=err,
                                rel_err=err / ref_max if ref_max > 0 else 0.0))
        return out


def emulate(onnx_file: str | Path | bytes, images: np.ndarray, keep: set[str] | dict[str, str] | None = None,
            batch: int = 8, per_node: bool = True, threads: int = 1) -> Emulation:
    """The exported graph (uint8 images N×H×W×C -> score, reconstruction, anomaly_map) with FP16 storage
    emulated, in batches; `keep` defaults to `engines.fp16.keep_fp32_nodes`, as `engines.fp16` converts."""
    em = Emulator(onnx_file, keep, per_node, threads)
    parts = []
    for start in range(0, len(images), batch):
        got = em.run({INPUT_NAME: images[start:start + batch]})
        parts.append(InferResult(*(np.ascontiguousarray(got[n]) for n in OUTPUT_NAMES)))
    return Emulation(result=InferResult.concatenate(parts), rounded=em.rounded, kept=em.keep, nodes=em.stats())


def summary(em: Emulation) -> list[str]:
    """Lines for a report: what was rounded and kept, overflow, the largest relative error."""
    reasons: dict[str, int] = {}
    for why in em.kept.values():
        reasons[why] = reasons.get(why, 0) + 1
    kept = ", ".join(f"{why} {n}" for why, n in sorted(reasons.items())) or "none"
    lines = [f"fp16 emulation: {em.rounded} values rounded to FP16; kept FP32: {len(em.kept)} nodes ({kept})"]
    if em.nodes:
        over = em.overflows()
        half = [s for s in em.nodes if not s.fp32] or em.nodes
        top = max(half, key=lambda s: s.ref_max_abs)
        worst = max(em.nodes, key=lambda s: s.rel_err)
        lines.append("overflow (> 65,504 or inf/nan): " + (", ".join(
            f"{s.node} ({s.op_type}, max |x| {s.ref_max_abs:.3g}, {s.nonfinite} inf/nan)" for s in over[:5])
            if over else f"none; largest |x| stored in FP16 {top.ref_max_abs:.3g} at {top.node} ({top.op_type}), "
            f"{top.ref_max_abs / FP16_MAX:.1%} of the range"))
        lines.append(f"largest relative error: {worst.rel_err:.1e} at {worst.node} ({worst.op_type}"
                     f"{', FP32' if worst.fp32 else ''})")
    return lines


def by_op_type(stats: list[NodeStat]) -> dict[str, dict[str, float]]:
    """Per op type: nodes, the largest |x| in FP32, inf/nan count, the largest relative error."""
    out: dict[str, dict[str, float]] = {}
    for s in stats:
        d = out.setdefault(s.op_type, {"outputs": 0, "ref_max_abs": 0.0, "nonfinite": 0, "max_rel_err": 0.0})
        d["outputs"] += 1
        d["ref_max_abs"] = max(d["ref_max_abs"], s.ref_max_abs)
        d["nonfinite"] += s.nonfinite
        d["max_rel_err"] = max(d["max_rel_err"], s.rel_err)
    return out

"""Graph checks and rewrites on an exported ONNX model (onnx + numpy only): BatchNorm folding, leftovers.

Used by `trainer export` after torch.onnx.export, for what the exporter's own optimiser did not fold.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Ops a spectral-norm parametrisation leaves behind when it is exported instead of baked into the weights.
_SN_OP_TYPES = {"ReduceL2", "LpNormalization", "ReduceSumSquare", "Sqrt"}
_SN_NAME_MARKS = ("parametrizations", "weight_orig")
_SN_NAME_ENDS = ("weight_u", "weight_v", "._u", "._v")


def count_ops(model: onnx.ModelProto, op_type: str) -> int:
    return sum(1 for n in model.graph.node if n.op_type == op_type)


def spectral_norm_leftovers(model: onnx.ModelProto) -> list[str]:
    """Names of nodes/initialisers that look like an un-removed spectral norm (empty when clean)."""
    found = [f"{n.op_type}:{n.name}" for n in model.graph.node if n.op_type in _SN_OP_TYPES]
    for init in model.graph.initializer:
        if any(mark in init.name for mark in _SN_NAME_MARKS) or init.name.endswith(_SN_NAME_ENDS):
            found.append(f"initializer:{init.name}")
    return found


def strip_debug_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node stack traces and FX names: they hold workstation paths and source line
    numbers, which would change the file's sha256 (and model_id) with every edit of unrelated code."""
    for item in list(model.graph.node) + list(model.graph.value_info) + list(model.graph.input) + \
            list(model.graph.output) + list(model.graph.initializer):
        del item.metadata_props[:]
        item.doc_string = ""


def _bn_affine(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel (scale, shift) of an inference-mode BatchNormalization with constant parameters."""
    inits = {i.name: i for i in model.graph.initializer}
    if len(node.output) != 1 or any(name not in inits for name in node.input[1:5]):
        return None
    gamma, beta, mean, var = (numpy_helper.to_array(inits[name]).astype(np.float64) for name in node.input[1:5])
    eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def _fold_into_conv(model: onnx.ModelProto, conv: onnx.NodeProto, scale: np.ndarray, shift: np.ndarray) -> bool:
    """W' = W·scale, b' = b·scale + shift on the output channels of a Conv / ConvTranspose (group 1)."""
    inits = {i.name: i for i in model.graph.initializer}
    if conv.input[1] not in inits or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits):
        return False
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    if conv.op_type == "ConvTranspose" and group != 1:
        return False
    w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
    axis = 0 if conv.op_type == "Conv" else 1
    shape = [1] * w.ndim
    shape[axis] = -1
    w = w * scale.reshape(shape)
    b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 and conv.input[2] \
        else np.zeros_like(scale)
    b = b * scale + shift
    w_name, b_name = conv.name + "_bnfold_W", conv.name + "_bnfold_B"
    model.graph.initializer.extend([numpy_helper.from_array(w.astype(np.float32), w_name),
                                    numpy_helper.from_array(b.astype(np.float32), b_name)])
    del conv.input[1:]
    conv.input.extend([w_name, b_name])
    return True


def fold_batchnorm(model: onnx.ModelProto) -> int:
    """Remove every BatchNormalization: into the producing Conv/ConvTranspose when it is the sole consumer,
    otherwise as an exact per-channel Mul + Add. Returns how many were removed; unused initialisers go."""
    graph = model.graph
    producers = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            consumers[name] = consumers.get(name, 0) + 1
    graph_outputs = {o.name for o in graph.output}
    removed = 0
    new_nodes: list[onnx.NodeProto] = []
    for node in list(graph.node):
        if node.op_type != "BatchNormalization":
            new_nodes.append(node)
            continue
        affine = _bn_affine(model, node)
        if affine is None:
            new_nodes.append(node)
            continue
        scale, shift = affine
        src, dst = node.input[0], node.output[0]
        conv = producers.get(src)
        if (conv is not None and conv.op_type in ("Conv", "ConvTranspose") and consumers.get(src) == 1
                and src not in graph_outputs and _fold_into_conv(model, conv, scale, shift)):
            conv.output[0] = dst
        else:
            shape = [1, -1] + [1] * max(0, _rank(model, src) - 2)   # broadcast over N×C×...
            s_name, t_name = node.name + "_scale", node.name + "_shift"
            graph.initializer.extend([
                numpy_helper.from_array(scale.reshape(shape).astype(np.float32), s_name),
                numpy_helper.from_array(shift.reshape(shape).astype(np.float32), t_name)])
            mid = dst + "_bnscaled"
            new_nodes.append(helper.make_node("Mul", [src, s_name], [mid], name=node.name + "_mul"))
            new_nodes.append(helper.make_node("Add", [mid, t_name], [dst], name=node.name + "_add"))
        removed += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    _drop_unused_initializers(model)
    return removed


def _rank(model: onnx.ModelProto, name: str) -> int:
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return 4


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for n in model.graph.node for name in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)

"""FP16 version of an exported graph (float tensors inside in half precision, the graph's I/O unchanged).

For TensorRT 11's strongly typed builds and for checking FP16 fidelity (docs/engines.md, `engines verify`).

Not every node is worth half precision. `keep_fp32_nodes` picks the nodes that stay FP32 in the FP16
graph: every reduction (a sum or mean over 16k pixels accumulates, and overflows, in FP16), the score
statistics' arithmetic around them (`(map - mean) / scale` and the like: a difference of two close numbers
divided by a small scale), and the score's tail after a reduction (N numbers per batch: free in FP32).
The convolutions, the bulk of the work, stay FP16. `engines/fp16_emulate.py` computes what this graph
gives under FP16 storage, node by node, so the choice can be checked before a GPU is touched.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import onnx

from engines.errors import EngineError

# Ops whose output folds many elements into one: kept FP32, and so is everything downstream of them.
REDUCTION_OPS = frozenset({
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare", "ReduceL1",
    "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "TopK", "GlobalAveragePool", "GlobalMaxPool",
    "GlobalLpPool", "CumSum"})
# Element-wise arithmetic with a constant operand (the score statistics' mean, scale, weights) and ops that
# only move data: walked back from a reduction's input, they stay FP32 with it.
STATISTICS_OPS = frozenset({"Sub", "Div", "Mul", "Add", "Pow", "Clip"})
SHAPE_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity"})
# Heavy ops never kept FP32 by the tail rule (the networks' layers).
HEAVY_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def float16_tools() -> ModuleType:
    """onnxruntime's FP16 converter (a fork of onnxconverter_common's), imported when first needed."""
    try:
        from onnxruntime.transformers import float16
    except ImportError as exc:
        raise EngineError(f"the FP16 graph needs onnxruntime's transformers tools ({exc}); "
                          "`pip install onnxruntime onnx`") from None
    return float16


def named(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every node uniquely named (in place): block lists and reports go by node name."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op_type}__{i}"
        seen.add(node.name)
    return model


def _constants(model: onnx.ModelProto) -> set[str]:
    return {i.name for i in model.graph.initializer} | \
        {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}


def keep_fp32_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> why it stays FP32 in the FP16 graph (see the module's docstring); `model` must be `named`."""
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    constants = _constants(model)
    keep: dict[str, str] = {n.name: "reduction" for n in nodes if n.op_type in REDUCTION_OPS}
    # The score statistics: constant-operand arithmetic (and reshapes) feeding a reduction.
    stack = [n.input[0] for n in nodes if n.name in keep and n.input]
    while stack:
        p = producer.get(stack.pop())
        if p is None or p.name in keep:
            continue
        data = [i for i in p.input if i and i not in constants]
        if p.op_type in SHAPE_OPS:
            keep[p.name] = "score statistics"
            stack.append(p.input[0])
        elif p.op_type in STATISTICS_OPS and len(data) == 1 and len(p.input) > 1:
            keep[p.name] = "score statistics"
            stack.append(data[0])
    # The tail: whatever a reduction's output flows into, up to the next heavy layer, and not on the way
    # to an image output (a pooling inside a network would otherwise pull the rest of it into FP32).
    image_path = _ancestors(model, [o.name for o in model.graph.output
                                    if o.type.tensor_type.elem_type != FLOAT])
    stack = [o for n in nodes if keep.get(n.name) == "reduction" for o in n.output]
    while stack:
        for c in consumers.get(stack.pop(), []):
            if c.name not in keep and c.op_type not in HEAVY_OPS and c.name not in image_path:
                keep[c.name] = "score tail"
                stack.extend(c.output)
    return keep


def _ancestors(model: onnx.ModelProto, values: list[str]) -> set[str]:
    """Names of the nodes the given values depend on."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found: set[str] = set()
    stack = list(values)
    while stack:
        node = producer.get(stack.pop())
        if node is not None and node.name not in found:
            found.add(node.name)
            stack.extend(node.input)
    return found


def blocked_nodes(model: onnx.ModelProto, keep: set[str] | dict[str, str]) -> set[str]:
    """Names of the nodes the converter leaves FP32: `keep` and the ops it never converts (its default list)."""
    default = set(float16_tools().DEFAULT_OP_BLOCK_LIST)
    return set(keep) | {n.name for n in model.graph.node if n.op_type in default}


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def _rename(graph: onnx.GraphProto, old: str, new: str, outputs_too: bool = False) -> None:
    for n in graph.node:
        n.input[:] = [new if i == old else i for i in n.input]
        if outputs_too:
            n.output[:] = [new if o == old else o for o in n.output]


def _fp32_between_kept(model: onnx.ModelProto, blocked: set[str]) -> int:
    """Remove the converter's FP32 -> FP16 -> FP32 round trips: it stores every blocked node's output in
    FP16, even when only blocked nodes or an FP32 graph output read it, and casts FP32 weights of blocked
    nodes to FP32. Returns how many casts to FP32 were removed."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    fp32_inputs = {i.name for i in graph.input if i.type.tensor_type.elem_type == FLOAT}
    fp32_weights = {i.name for i in graph.initializer if i.data_type == FLOAT}
    outputs = {o.name for o in graph.output}
    removed: list[onnx.NodeProto] = []
    for down in [n for n in graph.node if _cast_to(n) == FLOAT]:
        src = down.input[0]
        if src in fp32_weights and down.output[0] not in outputs:   # an FP32 weight cast to FP32
            _rename(graph, down.output[0], src)
            removed.append(down)
            continue
        up = producer.get(src)
        if up is None or _cast_to(up) != FLOAT16:
            continue
        src = up.input[0]                          # FP32 -> (up) FP16 -> (down) FP32: is src FP32?
        src_node = producer.get(src)
        if (src_node is None and src not in fp32_inputs) or (src_node is not None and src_node.name not in blocked):
            continue
        target = down.output[0]
        if target not in outputs:
            _rename(graph, target, src)
        elif src_node is not None:                 # the FP32 value itself becomes the graph output
            _rename(graph, src, target, outputs_too=True)
            producer[target] = producer.pop(src)
        else:
            continue                               # an FP32 input passed straight to an output: left alone
        removed.append(down)
    for node in removed:
        graph.node.remove(node)
    used = {i for n in graph.node for i in n.input} | outputs
    renamed: set[str] = set()
    for node in [n for n in graph.node if _cast_to(n) == FLOAT16 and n.output[0] not in used]:
        graph.node.remove(node)
        if node.input[0] not in outputs:           # the FP32 value gets its own name back
            _rename(graph, node.input[0], node.output[0], outputs_too=True)
            renamed.add(node.output[0])
    values = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    for vi in list(graph.value_info):
        if vi.name not in values:
            graph.value_info.remove(vi)
        elif vi.name in renamed:
            vi.type.tensor_type.elem_type = FLOAT
    return len(removed)


def convert(model: onnx.ModelProto, keep: set[str] | dict[str, str] | None = None) -> onnx.ModelProto:
    """The FP16 graph of a `named` FP32 model (changed in place): `keep` (default: keep_fp32_nodes) and the
    converter's own block list stay FP32, and so do the values that pass only between them."""
    float16 = float16_tools()
    keep = keep_fp32_nodes(model) if keep is None else keep
    blocked = blocked_nodes(model, keep)
    # keep_io_types: score/anomaly_map stay float32 and images/reconstruction stay uint8 at the boundary.
    converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=sorted(keep),
                                                 op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST))
    _fp32_between_kept(converted, blocked)
    toposort(converted.graph)
    return converted


def toposort(graph: onnx.GraphProto) -> None:
    """Nodes in an order where every value is produced before it is read (the converter appends its casts)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, order = list(graph.node), []
    while pending:
        rest = [n for n in pending if not set(n.input) <= ready]
        done = [n for n in pending if set(n.input) <= ready]
        if not done:
            raise EngineError(f"the FP16 graph has a cycle or an unknown input at {rest[0].name!r}")
        for n in done:
            ready.update(n.output)
        order.extend(done)
        pending = rest
    del graph.node[:]
    graph.node.extend(order)


def fp16_model(onnx_file: str | Path | bytes, keep: set[str] | dict[str, str] | None = None) -> onnx.ModelProto:
    raw = onnx_file if isinstance(onnx_file, bytes) else Path(onnx_file).read_bytes()
    return convert(named(onnx.load_from_string(raw)), keep)


def fp16_bytes(onnx_file: str | Path | bytes, keep: set[str] | dict[str, str] | None = None) -> bytes:
    """The serialised FP16 graph (see `convert`)."""
    return fp16_model(onnx_file, keep).SerializeToString()


def fp16_path(onnx_file: str | Path) -> Path:
    """MODEL.fp16.onnx beside MODEL.onnx."""
    p = Path(onnx_file)
    return p.with_name(p.stem + ".fp16.onnx")


def write_fp16(onnx_file: str | Path, out: str | Path | None = None) -> Path:
    target = Path(out) if out is not None else fp16_path(onnx_file)
    target.write_bytes(fp16_bytes(onnx_file))
    return target

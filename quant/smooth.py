"""SmoothQuant-style scale migration (Xiao et al., 2023) before dynamic int8: per-channel activation outliers moved
into the weights, so one activation scale per tensor fits the rest of the channels.

For a MatMul y = x W, with s_j = max|x_j|^alpha / max|W_j,:|^(1 - alpha) for each input channel j,
y = (x / s) (s W): the graph gets one Mul(x, 1/s) per smoothed input (shared by every MatMul that reads x, so Q, K
and V share one) and each weight row j is multiplied by s_j before it is quantized per output channel. In fp32 the
graph computes the same function (tests/test_int8_fidelity.py checks it); in int8 the activation's per-tensor scale
is no longer set by a few outlier channels, which is what costs compact's per-tensor dynamic int8 its fidelity on
BERT-family models (measured on all-MiniLM-L6-v2: bench/results/int8_variants.md).

The Mul cannot be folded into the LayerNorm before Q/K/V and the FFN input: in a post-LN encoder the same LayerNorm
output is also the residual, which must stay unscaled; before the FFN output projection it follows GELU. The
attention output projection is not smoothed (measured: its per-tensor error is already ~1e-4 in cosine).

max|x_j| is measured on calibration feeds (real task text) by running the fp32 graph with ONNX Runtime.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

# weights of the attention output projection: compact's attention.out_proj, transformers' attention.output.dense
_ATTENTION_OUTPUT = re.compile(r"attention\.(out_proj|output\.dense)\b")
MIN_SCALE, MAX_SCALE = 1e-2, 1e2  # bounds on s: a channel that never fires must not blow up its weight row


def smoothable(model, chosen: list[str]) -> dict[str, list]:
    """The MatMuls among `chosen` (node names) to smooth, grouped by the activation they read."""
    initializers = {i.name for i in model.graph.initializer}
    names = set(chosen)
    groups: dict[str, list] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.name in names and node.input[1] in initializers \
                and not _ATTENTION_OUTPUT.search(node.input[1]):
            groups.setdefault(node.input[0], []).append(node)
    return groups


def activation_ranges(model, feeds: list[dict], tensors: list[str]) -> dict[str, np.ndarray]:
    """max |x_j| over every row of every feed, per channel j (the last axis), of each tensor, running `model` (fp32)
    with ONNX Runtime."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in outputs:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "probe.onnx"
        onnx.save(probe, str(path))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    ranges: dict[str, np.ndarray] = {}
    for feed in feeds:
        values = session.run(tensors, {k: v for k, v in feed.items() if k in names})
        for name, value in zip(tensors, values):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    return ranges


def migration_scales(x_range: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """s_j = max|x_j|^alpha / max|W_j|^(1-alpha), W (in, out), over every weight reading x; clipped."""
    w_range = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    scales = np.maximum(x_range, 1e-5) ** alpha / np.maximum(w_range, 1e-5) ** (1 - alpha)
    return np.clip(scales, MIN_SCALE, MAX_SCALE).astype(np.float32)


def smooth_graph(model, chosen: list[str], feeds: list[dict], alpha: float) -> int:
    """Migrate activation scales into the weights of the `chosen` MatMuls (see the module doc), in place, measuring
    activations on `feeds`. Returns how many activations were smoothed."""
    from onnx import helper, numpy_helper

    groups = smoothable(model, chosen)
    if not groups:
        return 0
    ranges = activation_ranges(model, feeds, sorted(groups))
    initializers = {i.name: i for i in model.graph.initializer}
    shared = [w for nodes in groups.values() for w in {n.input[1] for n in nodes}]
    if len(shared) != len(set(shared)):
        raise ValueError("a weight is read by MatMuls of two different activations; it cannot take one scale each")
    muls = {}
    for x, nodes in groups.items():
        weights = {n.input[1]: numpy_helper.to_array(initializers[n.input[1]]) for n in nodes}
        scales = migration_scales(ranges[x], list(weights.values()), alpha)
        for name, weight in weights.items():
            initializers[name].CopyFrom(numpy_helper.from_array(weight * scales[:, None], name))
        inverse, smoothed = f"{x}_smooth_inv", f"{x}_smooth"
        model.graph.initializer.append(numpy_helper.from_array((1 / scales).astype(np.float32), inverse))
        muls[nodes[0].name] = helper.make_node("Mul", [x, inverse], [smoothed], name=f"{x}_smooth")
        for node in nodes:
            node.input[0] = smoothed
    ordered = []
    for node in model.graph.node:  # each Mul right before the first MatMul reading it (topological order kept)
        if node.name in muls:
            ordered.append(muls[node.name])
        ordered.append(node)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return len(groups)

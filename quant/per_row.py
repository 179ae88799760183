"""Per-row (per-token) dynamic int8 activations for chosen MatMuls, built in the graph from standard ops and ORT's
MatMulIntegerToFloat (activation_granularity="ffn_out_per_row").

Why in the graph: ORT's fast dynamic int8 kernels (DynamicQuantizeMatMul, MatMulIntegerToFloat) take one scalar
activation scale, so a per-tensor scale is set by the largest value of any token; the FFN output projection's input
follows GELU, has the outlier-heavy channels of BERT-family models and cannot take a SmoothQuant scale folded into a
LayerNorm. Scaling each row (token) separately is what LiteRT and CTranslate2 do.

For y = x W + b with x (rows, K) following GELU (x >= -0.17) or ReLU (x >= 0), lower bound L (a scalar, or per
channel when a smoothing Mul sits between the activation and the MatMul):

    xs = x - L                                   (> 0, so every one of uint8's 256 codes is used)
    s  = ReduceMax(xs, last axis) / 255          one scale per row, shape (rows,); > 0 as xs > 0
    q  = QuantizeLinear(xs, s, axis=0)           uint8, zero point 0
    y  = MatMulIntegerToFloat(q, Wq, 1, w_scale) * s[:, None] + (b + L @ W_deq)

U8S8 is the x86 fast path of MatMulInteger (measured here: S8S8 was 20x slower); the shift by L replaces an
asymmetric per-row zero point, which MatMulIntegerToFloat does not take, and its product with the weight folds into
the bias. The weight is symmetric int8 per output channel, as quantize_dynamic's per-channel weights.

Not measured: x86 CPUs without VNNI run U8S8 with 16-bit pair sums that can saturate (255 * 127 * 2 > 32767), which
ORT's `reduce_range` option exists for; per-row codes use the full uint8 range on every row, so that case is more
likely than with a per-tensor scale. This CPU (AVX512-VNNI, AMX) and ARM kernels accumulate in 32 bits.
"""

from __future__ import annotations

import numpy as np

from .config import Int8Config, QuantConfigError
from .onnx_passes import is_ffn_output, layer_index, symmetric_codes

# min of x * Phi(x) is -0.16997 (the tanh approximation's too). Shifting by a hair more keeps every xs > 0, so each
# row's max, and its scale, is positive without a Max(eps) node; ReLU gets a tiny shift for the same reason (a row of
# zeros). The shift's product with the weight goes into the bias, so it costs no accuracy.
GELU_MIN, RELU_MIN = 0.17, 1e-6


def lower_bound(model, tensor: str) -> np.ndarray | None:
    """The smallest value `tensor` can take, when it is a GELU or ReLU output, optionally times a constant
    (SmoothQuant's Mul): a scalar or one value per channel. None when unknown."""
    from onnx import numpy_helper

    produced_by = {out: node for node in model.graph.node for out in node.output}
    initializers = {i.name: i for i in model.graph.initializer}
    node, factor = produced_by.get(tensor), np.float32(1)
    if node is not None and node.op_type == "Mul":
        const = [name for name in node.input if name in initializers]
        if len(const) == 1:
            factor = numpy_helper.to_array(initializers[const[0]]).astype(np.float32)
            node = produced_by.get(next(name for name in node.input if name not in initializers))
    if node is None:
        return None
    if node.op_type == "Gelu":
        # a negative smoothing factor would flip the bound; migration scales are positive (quant/smooth.py)
        return (-GELU_MIN * np.abs(factor)).astype(np.float32)
    if node.op_type == "Relu":
        return (-RELU_MIN * np.abs(factor)).astype(np.float32)
    return None


def per_row_node(model, node_name: str, config: Int8Config) -> bool:
    """Whether MatMul `node_name` gets per-row activation scales (quant/per_row.py): the FFN output projections
    under ffn_out_per_row, only those of the last `per_row_layers` layers when that is set. A projection whose input
    is not a known GELU/ReLU output (no lower bound to shift by) stays per_tensor."""
    if config.activation_granularity != "ffn_out_per_row":
        return False
    node = next(n for n in model.graph.node if n.name == node_name)
    if not is_ffn_output(node.input[1]) or lower_bound(model, node.input[0]) is None:
        return False
    if not config.per_row_layers:
        return True
    layers = [layer_index(n.input[1]) for n in model.graph.node
              if n.op_type == "MatMul" and len(n.input) > 1 and is_ffn_output(n.input[1])]
    last = max(i for i in layers if i is not None)
    return layer_index(node.input[1]) > last - config.per_row_layers


def _bias_add(graph, product: str):
    """The Add that reads `product` and a constant bias (gemm_to_matmul's MatMul + Add), and the bias's name."""
    initializers = {i.name for i in graph.initializer}
    readers = [n for n in graph.node if product in n.input]
    if len(readers) == 1 and readers[0].op_type == "Add":
        other = [name for name in readers[0].input if name != product]
        if len(other) == 1 and other[0] in initializers:
            return readers[0], other[0]
    return None, None


def _ranks(model) -> dict[str, int]:
    """The rank of each tensor ONNX shape inference knows (none when it stops at a contrib op or symbolic shape)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # nothing known: compact's 2-D layout is assumed
        return {}
    return {info.name: len(info.type.tensor_type.shape.dim) for info in list(inferred.graph.value_info)
            + list(inferred.graph.input) if info.type.tensor_type.HasField("shape")}


def rewrite_per_row(model, node_names: list[str], per_channel: bool = True) -> int:
    """Replace each MatMul in `node_names` (constant fp32 weight, input following GELU or ReLU) by the per-row int8
    product of the module doc, in place; weights per output channel or per tensor. Returns how many were rewritten.
    QuantizeLinear's per-axis scale is 1-D, so each input must be 2-D (tokens, features), as compact's exports are."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    targets = {n.name: n for n in graph.node if n.name in set(node_names)}
    if not targets:
        return 0
    shared = {"axis": np.array([-1], np.int64), "inv255": np.array(1 / 255, np.float32), "one": np.array(1, np.float32)}
    graph.initializer.extend(numpy_helper.from_array(v, f"per_row_{k}") for k, v in shared.items())
    replaced, ranks = {}, _ranks(model)
    for name, node in targets.items():
        x, weight_name = node.input[0], node.input[1]
        bound = lower_bound(model, x)
        if node.op_type != "MatMul" or weight_name not in initializers or bound is None:
            raise QuantConfigError(f"{name}: per-row activation scales are built for MatMuls with a constant weight "
                                   "whose input follows GELU or ReLU (the FFN output projection).")
        if ranks.get(x, 2) != 2:
            raise QuantConfigError(f"per-row activation scales need 2-D MatMul inputs (tokens, features); {x!r} has "
                                   f"rank {ranks[x]}. Use activation_granularity='per_tensor'.")
        weight = numpy_helper.to_array(initializers[weight_name]).astype(np.float32)
        replaced[name] = _per_row_nodes(graph, node, weight, bound, per_channel)
    ordered = [new for node in graph.node for new in replaced.get(node.name, [node])]
    del graph.node[:]
    graph.node.extend(ordered)
    read = {name for node in graph.node for name in node.input}
    unused = [i for i in graph.initializer if i.name not in read]  # the fp32 weights and biases replaced
    for initializer in unused:
        graph.initializer.remove(initializer)
    return len(replaced)


def _per_row_nodes(graph, node, weight: np.ndarray, bound: np.ndarray, per_channel: bool) -> list:
    """The nodes replacing MatMul `node` (weight (K, N)); folds L @ W into its bias Add (or adds one)."""
    from onnx import helper, numpy_helper

    x, out, name = node.input[0], node.output[0], node.name
    codes, scale = symmetric_codes(weight.T, 8)  # per output channel: rows of W^T
    if not per_channel:  # one scale for the tensor, stored per channel (MatMulIntegerToFloat takes either)
        codes, scale = symmetric_codes(weight.reshape(1, -1), 8)
        codes, scale = codes.reshape(weight.shape).T, np.full((weight.shape[1], 1), scale.item(), np.float32)
    dequantized = (codes.astype(np.float32) * scale).T
    correction = (np.broadcast_to(bound, (weight.shape[0],)) @ dequantized).astype(np.float32)
    graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(codes.T), f"{name}_w_int8"),
                              numpy_helper.from_array(scale[:, 0], f"{name}_w_scale"),
                              numpy_helper.from_array(-bound, f"{name}_shift")])
    add, bias = _bias_add(graph, out)
    if add is not None:  # b + L @ W_deq into a new initializer (the old one could be shared)
        value = numpy_helper.to_array(next(i for i in graph.initializer if i.name == bias)).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(value + correction, f"{name}_bias"))
        add.input[list(add.input).index(bias)] = f"{name}_bias"
        tail, scaled = [], out
    else:
        graph.initializer.append(numpy_helper.from_array(correction, f"{name}_correction"))
        scaled = f"{name}_scaled"
        tail = [helper.make_node("Add", [scaled, f"{name}_correction"], [out], name=f"{name}_correction")]
    return [
        helper.make_node("Add", [x, f"{name}_shift"], [f"{name}_xs"], name=f"{name}_shift"),
        helper.make_node("ReduceMax", [f"{name}_xs", "per_row_axis"], [f"{name}_max"], keepdims=0,
                         name=f"{name}_row_max"),
        helper.make_node("Mul", [f"{name}_max", "per_row_inv255"], [f"{name}_row_scale"], name=f"{name}_scale"),
        helper.make_node("QuantizeLinear", [f"{name}_xs", f"{name}_row_scale"], [f"{name}_q"], axis=0,
                         name=f"{name}_quantize"),
        helper.make_node("MatMulIntegerToFloat", [f"{name}_q", f"{name}_w_int8", "per_row_one", f"{name}_w_scale"],
                         [f"{name}_int_product"], domain="com.microsoft", name=name),
        helper.make_node("Unsqueeze", [f"{name}_row_scale", "per_row_axis"], [f"{name}_row_scale_col"],
                         name=f"{name}_scale_col"),
        helper.make_node("Mul", [f"{name}_int_product", f"{name}_row_scale_col"], [scaled], name=f"{name}_rescale"),
    ] + tail

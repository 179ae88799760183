"""Passes over an exported CompactBert ONNX graph that onnxruntime.quantization does not make for us.

  - the exporter writes every nn.Linear as Gemm(transB=1), which ORT's dynamic quantizer skips (it quantizes MatMul),
    so `gemm_to_matmul` rewrites them as MatMul + Add first, keeping the weight's name so a weight can still be
    traced to its module (`module_kind`: QAT scales, keep_fp32);
  - `quantize_embeddings` stores embedding tables at 8, 4, 2 or 1 bits with per-row scales;
  - `float_consumers_read_float` keeps the QDQ quantizer from quantizing the residual stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .config import KEEPABLE, Int8Config, QuantConfigError


QUANTIZED_OPS = {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "MatMulInteger", "QLinearMatMul",
                 "DynamicQuantizeMatMul", "MatMulNBits", "QGemm", "GatherBlockQuantized"}


class AlreadyQuantizedError(ValueError):
    pass


def module_kind(name: str) -> str | None:
    """The keep_fp32 kind of a module or weight, from its name (exported initializers keep parameter names)."""
    for kind in KEEPABLE:
        if kind in name:
            return kind
    return None


def check_not_quantized(model_or_path) -> None:
    import onnx

    model = onnx.load(str(model_or_path), load_external_data=False) if isinstance(model_or_path, (str, Path)) \
        else model_or_path
    found = sorted({n.op_type for n in model.graph.node} & QUANTIZED_OPS)
    if any(i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for i in model.graph.initializer):
        found.append("int8 weights")
    if found:
        raise AlreadyQuantizedError(
            f"this graph is already quantized (it has {', '.join(found)}); quantizing twice compounds the error. "
            "Quantize the fp32 export (the folder `compact export` or `compact run` wrote) instead.")


def gemm_to_matmul(model) -> list[str]:
    """Rewrite Gemm(A, W, b, transB=1) with a constant W as MatMul(A, W^T) + b, in place. Returns the MatMul names.

    The transposed weight keeps W's name, so later passes still see which module it came from."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    nodes, names = [], []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in initializers:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        initializers[node.input[1]].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(weight), node.input[1]))
        has_bias = len(node.input) > 2 and node.input[2]
        product = node.output[0] + "_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], node.input[1]], [product], name=node.name))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=node.name + "_bias"))
        names.append(node.name)
    del graph.node[:]
    graph.node.extend(nodes)
    # the exporter recorded shapes of the old (untransposed) weights; let shape inference redo them
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return names


def nodes_to_quantize(model, config: Int8Config) -> list[str]:
    """MatMuls with a weight whose module is not kept fp32. Attention's activation-by-activation MatMuls stay fp32,
    as in Q8BERT (only weight-bearing layers are quantized)."""
    initializers = {i.name for i in model.graph.initializer}
    keep = set(config.keep_fp32)
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and node.input[1] in initializers and module_kind(node.input[1]) not in keep]


def is_ffn_output(weight: str) -> bool:
    """The FFN output projection's weight (compact's layers.N.ffn_out, transformers' layer.N.output.dense, not
    attention.output.dense): the outlier-heavy channels of BERT-family models sit there."""
    return re.search(r"layers?\.\d+\.(ffn_out|output\.dense)\b", weight) is not None


def per_block_node(model, node_name: str, granularity: str) -> bool:
    """Whether MatMul `node_name` gets per-block activation scales (MatMulNBits) under activation_granularity."""
    if granularity == "per_block":
        return True
    if granularity != "ffn_out_per_block":
        return False
    node = next(n for n in model.graph.node if n.name == node_name)
    return is_ffn_output(node.input[1])


def layer_index(weight: str) -> int | None:
    """The encoder layer a weight belongs to (layers.N / layer.N), or None."""
    found = re.search(r"layers?\.(\d+)\.", weight)
    return int(found.group(1)) if found else None


# the position and token-type tables, when not kept fp32, are stored at 8 bits whatever the word embeddings' width:
# they are small, and the training side (quant.qat.swap_linear_and_embeddings) puts them on the same 8-bit grid
OTHER_TABLE_BITS = 8


def table_bits(name: str, word_bits: int) -> int:
    """The width an embedding table (a module or weight name) is trained and stored at: the word embeddings at the
    config's `word_bits`, every other table at OTHER_TABLE_BITS."""
    return word_bits if module_kind(name) == "word_embeddings" else OTHER_TABLE_BITS


def quantize_embeddings(model, keep_fp32: Iterable[str], bits: int = 8) -> list[str]:
    """Store the word embeddings at `bits` (8, 4, 2 or 1) and each other embedding table that is not kept fp32 at
    OTHER_TABLE_BITS, with one symmetric scale per row, in place. Returns the tables' names.

        8 bits:      Gather(int8 table) -> Cast -> Mul(Gather(row scales))
        4/2/1 bits:  Gather(uint8 table, 2 or 4 codes per byte) -> BitShift/BitwiseAnd per code -> Concat -> Reshape
                   -> Cast -> Sub(offset) -> Mul(Gather(row scales))

    Written here because ORT's quantizers do not do it: the QDQ quantizer leaves a Gather fp32 unless its consumer is
    quantized (ours is an Add), and the dynamic one uses one scale for the whole table and 8 bits only. Standard ops
    only, so it loads from .ort (the unpacking follows the Gather of run-time ids, so the .ort converter cannot fold
    it back to fp32) and only the gathered rows are unpacked."""
    from onnx import helper, numpy_helper

    if bits not in (8, 4, 2, 1):
        raise QuantConfigError(f"embedding bits must be 8, 4, 2 or 1, got {bits}.")
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    keep, done, nodes = set(keep_fp32), [], []
    for node in graph.node:
        table = node.input[0] if node.op_type == "Gather" else None
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        kind = module_kind(table) if table in initializers else None
        if kind is None or kind in keep or axis != 0:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[table]).astype(np.float32)
        width = table_bits(table, bits)
        codes, scale = symmetric_codes(weight, width)
        ids, out, name = node.input[1], node.output[0], node.name
        scale_name = table + "_row_scale"
        graph.initializer.append(numpy_helper.from_array(scale, scale_name))
        if width == 8:
            initializers[table].CopyFrom(numpy_helper.from_array(codes, table))
            nodes += [helper.make_node("Gather", [table, ids], [out + "_q"], name=name, axis=0),
                      helper.make_node("Cast", [out + "_q"], [out + "_codes"], name=name + "_cast", to=1)]
        else:
            nodes += _packed_gather(graph, initializers[table], codes, width, ids, out, name)
        nodes += [
            helper.make_node("Gather", [scale_name, ids], [out + "_scale"], name=name + "_scale", axis=0),
            helper.make_node("Mul", [out + "_codes", out + "_scale"], [out], name=name + "_dequant"),
        ]
        done.append(table)
    del graph.node[:]
    graph.node.extend(nodes)
    return done


def symmetric_codes(weight: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric codes in [-(2^(b-1)-1), 2^(b-1)-1] (int8) and the (rows, 1) float32 scales. 1 bit: codes
    sign(w) in {-1, +1} (0 -> +1) and scale mean|w| (XNOR-Net's optimum, as BinaryBERT binarizes embeddings)."""
    if bits == 1:
        scale = np.maximum(np.abs(weight).mean(axis=1, keepdims=True), 1e-8).astype(np.float32)
        return np.where(weight >= 0, 1, -1).astype(np.int8), scale
    qmax = 2 ** (bits - 1) - 1
    scale = (np.maximum(np.abs(weight).max(axis=1, keepdims=True), 1e-12) / qmax).astype(np.float32)
    return np.clip(np.round(weight / scale), -qmax, qmax).astype(np.int8), scale


def _packed_gather(graph, table, codes: np.ndarray, bits: int, ids: str, out: str, name: str) -> list:
    from onnx import TensorProto, helper, numpy_helper

    per_byte = 8 // bits
    # stored unsigned: code + offset (1 bit: (code + 1) / 2, so -1 -> 0 and +1 -> 1); decoded as stored * step - offset
    step, offset = (2, 1) if bits == 1 else (1, 2 ** (bits - 1))
    rows, width = codes.shape
    if width % per_byte:
        raise QuantConfigError(f"{bits}-bit embeddings pack {per_byte} codes per byte; the width {width} is not a "
                               f"multiple of {per_byte}. Use 8-bit embeddings for this model.")
    unsigned = ((codes.astype(np.int16) + offset) // step).astype(np.uint8).reshape(rows, width // per_byte, per_byte)
    packed = np.zeros((rows, width // per_byte), dtype=np.uint8)
    for k in range(per_byte):  # code j of a row sits in byte j // per_byte at bit (j % per_byte) * bits
        packed |= unsigned[:, :, k] << np.uint8(k * bits)
    table.CopyFrom(numpy_helper.from_array(packed, table.name))
    consts = {f"{name}_mask": np.array(2 ** bits - 1, dtype=np.uint8), f"{name}_offset": np.array(offset, np.float32),
              **({f"{name}_step": np.array(step, np.float32)} if step != 1 else {}),
              f"{name}_last": np.array([-1], dtype=np.int64), f"{name}_axis": np.array([-1], dtype=np.int64)}
    consts.update({f"{name}_shift{k}": np.array(k * bits, dtype=np.uint8) for k in range(per_byte)})
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    nodes = [helper.make_node("Gather", [table.name, ids], [out + "_packed"], name=name, axis=0)]
    parts = []
    for k in range(per_byte):
        shifted, part = f"{out}_shift{k}", f"{out}_part{k}"
        nodes += [helper.make_node("BitShift", [out + "_packed", f"{name}_shift{k}"], [shifted], direction="RIGHT",
                                   name=f"{name}_shift{k}"),
                  helper.make_node("BitwiseAnd", [shifted, f"{name}_mask"], [part + "_m"], name=f"{name}_mask{k}"),
                  helper.make_node("Unsqueeze", [part + "_m", f"{name}_axis"], [part], name=f"{name}_unsq{k}")]
        parts.append(part)
    nodes += [
        helper.make_node("Concat", parts, [out + "_interleaved"], axis=-1, name=name + "_concat"),
        helper.make_node("Shape", [ids], [out + "_ids_shape"], name=name + "_ids_shape"),
        helper.make_node("Concat", [out + "_ids_shape", f"{name}_last"], [out + "_shape"], axis=0,
                         name=name + "_shape"),
        helper.make_node("Reshape", [out + "_interleaved", out + "_shape"], [out + "_unpacked"], name=name + "_rows"),
        helper.make_node("Cast", [out + "_unpacked"], [out + "_unsigned"], to=TensorProto.FLOAT, name=name + "_cast"),
    ]
    if step != 1:
        nodes.append(helper.make_node("Mul", [out + "_unsigned", f"{name}_step"], [out + "_stepped"],
                                      name=name + "_step"))
    nodes.append(helper.make_node("Sub", [out + "_stepped" if step != 1 else out + "_unsigned", f"{name}_offset"],
                                  [out + "_codes"], name=name + "_center"))
    return nodes


def float_consumers_read_float(model) -> int:
    """Give fp32 consumers of a quantized activation the float tensor back, in place; returns how many inputs moved.

    ORT's QDQ quantizer routes every consumer of a quantized tensor through its DequantizeLinear, so a LayerNorm
    output that feeds both the next MatMul and the residual Add would quantize the residual stream too, which neither
    the fp32 model nor QAT does (measured: the QDQ graph then drifted 8x further from the PyTorch QAT model than
    float32 from float64). The MatMul, the op being quantized, keeps reading the dequantized value, and so does the
    bias Add after a quantized MatMul product."""
    produced_by = {out: node for node in model.graph.node for out in node.output}
    moved = 0
    for node in model.graph.node:
        if node.op_type in ("MatMul", "QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            dq = produced_by.get(name)
            q = produced_by.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear":
                continue
            # a quantized MatMul's product is what its bias Add must read (that is what QAT trains); only quantized
            # MatMul *inputs* (LayerNorm outputs, attention outputs, ...) go back to other consumers as floats
            if not is_quantized_product(q.input[0], produced_by):
                node.input[i] = q.input[0]
                moved += 1
    return moved


def is_quantized_product(tensor: str, produced_by: dict) -> bool:
    """Whether `tensor` is the output of a MatMul with a quantized weight (not attention's activation MatMuls)."""
    matmul = produced_by.get(tensor)
    if matmul is None or matmul.op_type != "MatMul":
        return False
    weight = produced_by.get(matmul.input[1])
    return weight is not None and weight.op_type == "DequantizeLinear" and weight.input[0] not in produced_by

"""The exported attention of each layer as one com.microsoft MultiHeadAttention node.

torch.onnx's dynamo exporter writes `scaled_dot_product_attention` as about twenty small nodes per layer: a reshape
and a transpose for each of Q, K and V, a shape computation and three more nodes for K's transpose, two scalings, the
mask add, softmax, two matmuls, and a transpose and reshape back. At SST-2's 25 tokens those nodes cost more than
their arithmetic. ONNX Runtime's CPU kernel for MultiHeadAttention does the same work in one node; it took the 45%
SST-2 SubTransformer's int8 graph from 0.924 to 0.819 ms at real lengths, 1 thread
(bench/results/compare_sst2_fused.md; per-op profile: bench/results/attention_fusion.md).

onnxruntime.transformers' optimizer makes this fusion for Hugging Face's BERT graph, but it does not recognise the
graph the dynamo exporter writes for CompactBert (checked with onnxruntime 1.32: it fuses nothing), so the pattern
is matched here, for the one exporter and model family we own. Every rewrite is checked by the export's parity test
against PyTorch, padded batches included. A layer whose attention probabilities are read elsewhere (token pruning
scores tokens with them) keeps its decomposed form, as does any layer that does not match exactly.

MultiHeadAttention is a contrib op: ONNX Runtime's CPU execution provider runs it, on phones too (it is listed in
`required_operators.config` for a reduced build), but NNAPI and CoreML do not, and a graph meant for them should be
exported with fuse_attention=False.
"""

from __future__ import annotations

import numpy as np

MASK_INPUT = "attention_mask"
MASK_INT32 = "attention_mask_int32"


class _Graph:
    """Producers and consumers of each tensor, and constant values, of an onnx GraphProto."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    def made_by(self, name: str, op_type: str):
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_consumer(self, name: str, op_type: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def scalar(self, name: str) -> float | None:
        value = self.constants.get(name)
        return float(value.reshape(())) if value is not None and value.size == 1 else None

    def is_mask_of(self, name: str, graph_input: str, depth: int = 8) -> bool:
        """Whether `name` is the additive mask made from the whole of `graph_input`: casts, an unsqueeze and
        arithmetic with constants, nothing that selects positions (token pruning gathers a shorter mask)."""
        for _ in range(depth):
            if name == graph_input:
                return True
            node = self.producer.get(name)
            if node is None or node.op_type not in ("Cast", "Unsqueeze", "Sub", "Mul"):
                return False
            inputs = [i for i in node.input if i not in self.constants]
            if len(inputs) != 1:
                return False
            name = inputs[0]
        return name == graph_input


def _head_view(g: _Graph, transposed: str):
    """The (B, S, heads, head_dim) view of a projection behind `transposed` = Transpose(Reshape(projection)):
    returns (projection, its shape Concat), or None."""
    transpose = g.made_by(transposed, "Transpose")
    if transpose is None or list(transpose.attribute[0].ints) != [0, 2, 1, 3]:
        return None
    reshape = g.made_by(transpose.input[0], "Reshape")
    shape = g.made_by(reshape.input[1], "Concat") if reshape is not None else None
    if shape is None or len(shape.input) != 4:
        return None
    return reshape.input[0], shape


def _match_layer(g: _Graph, softmax):
    """One layer's attention around `softmax`, as the dynamo exporter writes it, or None when it differs."""
    pv = g.only_consumer(softmax.output[0], "MatMul")  # token pruning also reads the probabilities: no match
    add = g.made_by(softmax.input[0], "Add")
    axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
    if pv is None or add is None or pv.input[0] != softmax.output[0] or axis not in (-1, 3):
        return None
    qk = g.made_by(add.input[0], "MatMul")
    if qk is None or not g.is_mask_of(add.input[1], MASK_INPUT):
        return None
    q_scale, k_scale = g.made_by(qk.input[0], "Mul"), g.made_by(qk.input[1], "Mul")
    if q_scale is None or k_scale is None:
        return None
    scale_q, scale_k = g.scalar(q_scale.input[1]), g.scalar(k_scale.input[1])
    query = _head_view(g, q_scale.input[0])
    value = _head_view(g, pv.input[1])
    if None in (scale_q, scale_k, query, value):
        return None
    # K^T: the exporter transposes the (B, heads, S, d) key through a flatten, a 3-D transpose and a reshape; walk
    # back to the key's own head view, the same Reshape + Transpose as Q and V
    name = k_scale.input[0]
    for _ in range(6):
        key = _head_view(g, name)
        if key is not None:
            break
        node = g.producer.get(name)
        if node is None or node.op_type not in ("Reshape", "Transpose"):
            return None
        name = node.input[0]
    else:
        return None
    heads = g.constants.get(query[1].input[2])
    back = g.only_consumer(pv.output[0], "Transpose")
    flat = g.only_consumer(back.output[0], "Reshape") if back is not None else None
    if heads is None or heads.size != 1 or flat is None or list(back.attribute[0].ints) != [0, 2, 1, 3]:
        return None
    return {"query": query[0], "key": key[0], "value": value[0], "batch_and_length": query[1].input[:2],
            "heads": int(heads.reshape(())), "scale": scale_q * scale_k, "flat": flat}


def fuse_attention(model) -> int:
    """Rewrite, in place, each matching layer's attention in an exported CompactBert onnx ModelProto as
    MultiHeadAttention; return how many layers were fused (0 leaves the model unchanged)."""
    from onnx import TensorProto, helper, numpy_helper

    g = _Graph(model.graph)
    if MASK_INPUT not in {i.name for i in model.graph.input}:
        return 0
    layers = [layer for node in model.graph.node if node.op_type == "Softmax"
              for layer in [_match_layer(g, node)] if layer is not None]
    if not layers:
        return 0
    minus_one = "mha_minus_one"
    replaced = {}
    for index, layer in enumerate(layers):
        p = f"mha_{index}_"
        shape_3d = helper.make_node("Concat", [*layer["batch_and_length"], minus_one], [p + "shape"], axis=0,
                                    name=p + "shape")
        views = [helper.make_node("Reshape", [layer[part], p + "shape"], [p + part], name=p + part)
                 for part in ("query", "key", "value")]
        attention = helper.make_node(
            "MultiHeadAttention", [p + "query", p + "key", p + "value", "", MASK_INT32], [p + "out"],
            domain="com.microsoft", num_heads=layer["heads"], scale=layer["scale"], name=p + "attention")
        flat = layer["flat"]
        back = helper.make_node("Reshape", [p + "out", flat.input[1]], list(flat.output), name=p + "flat")
        replaced[id(flat)] = [shape_3d, *views, attention, back]
    nodes = [helper.make_node("Cast", [MASK_INPUT], [MASK_INT32], to=TensorProto.INT32, name=MASK_INT32)]
    for node in model.graph.node:
        nodes.extend(replaced.get(id(node), [node]))
    model.graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), minus_one))
    _keep_only_needed(model, nodes)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(layers)


def _keep_only_needed(model, nodes) -> None:
    """Set the graph's nodes to those of `nodes` (in order) that the outputs need, and drop initializers and
    value_info that no kept node uses or makes."""
    needed = {out.name for out in model.graph.output}
    kept = []
    for node in reversed(nodes):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    kept.reverse()
    del model.graph.node[:]
    model.graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    initializers = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    made = {out for node in kept for out in node.output}
    infos = [info for info in model.graph.value_info if info.name in made]
    del model.graph.value_info[:]
    model.graph.value_info.extend(infos)

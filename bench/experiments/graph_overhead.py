"""Where the combined SST-2 model's time goes at 25 tokens: how many nodes ONNX Runtime runs (after its own graph
optimizations) for the HAT SubTransformer alone and with token pruning, and what a node costs by itself, timed on
chains of cheap nodes at SST-2's shape. Answers whether the ops token pruning adds (top-k, gathers, masks) are a
fixed cost worth removing. Results: bench/results/graph_overhead.{json,md} (docs/combined.md).

    R=runs-folder OMP_NUM_THREADS=1 python bench/experiments/graph_overhead.py
"""
import collections
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from compact_nlp.io import write_json, write_text

R = Path(os.environ["R"])
GRAPHS = {"HAT alone (int8 PTQ)": R / "hat/sst2/sub-0.5-searched/model/model.onnx",
          "combined: HAT + token pruning + int8 QAT": R / "combined/sst2/model/model.onnx"}


def optimized_nodes(path: Path) -> collections.Counter:
    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(scratch) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def chain(op_pairs: int) -> bytes:
    """Shape -> Reshape pairs on a (1, 25, 384) float tensor: nodes that do almost no work."""
    nodes, previous = [], "x"
    for i in range(op_pairs):
        nodes += [helper.make_node("Shape", [previous], [f"s{i}"]),
                  helper.make_node("Reshape", [previous, f"s{i}"], [f"y{i}"])]
        previous = f"y{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 25, 384])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()


def median_us(model: bytes, calls: int = 2000) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed = {"x": np.random.default_rng(0).random((1, 25, 384), dtype=np.float32)}
    for _ in range(100):
        session.run(None, feed)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


nodes = {name: optimized_nodes(path) for name, path in GRAPHS.items()}
short, long = median_us(chain(10)), median_us(chain(310))
per_node_us = (long - short) / 600
added = sum(nodes[list(GRAPHS)[1]].values()) - sum(nodes[list(GRAPHS)[0]].values())
results = {"what": __doc__.split("\n\n")[0].replace("\n", " "),
           "nodes_after_ort_optimization": {name: {"total": sum(c.values()), "by_op": dict(c.most_common())}
                                            for name, c in nodes.items()},
           "nodes_added_by_token_pruning": added,
           "chain_us": {"20 nodes": round(short, 1), "620 nodes": round(long, 1)},
           "per_node_us": round(per_node_us, 3), "added_nodes_cost_ms": round(added * per_node_us / 1e3, 3)}
write_json(Path("bench/results/graph_overhead.json"), results)
rows = [f"| {name} | {sum(c.values())} |" for name, c in nodes.items()]
write_text(Path("bench/results/graph_overhead.md"), "\n".join([
    "# Nodes ONNX Runtime runs, and what a node costs (SST-2 models, 1 thread)", "",
    "| graph (after ORT_ENABLE_ALL) | nodes |", "|---|---|", *rows, "",
    f"Token pruning adds {added} nodes. A node that does almost nothing costs {per_node_us:.3f} us "
    f"(Shape/Reshape chains at (1, 25, 384): {short:.1f} us for 20 nodes, {long:.1f} us for 620), so the added "
    f"nodes cost about {added * per_node_us / 1e3:.3f} ms per call.", ""]))
print(open("bench/results/graph_overhead.md").read())

"""Where the time of the decomposed attention goes, and what the one-node attention changes (docs/design.md,
"Attention"): ONNX Runtime's profiler on the same int8 model exported both ways, and whether onnxruntime.transformers'
own optimizer fuses the attention of compact's graph or of transformers 5's BERT graph.

    python bench/experiments/attention_fusion.py --model HAT_OUT/sub-0.5-searched/pytorch --hf-model FT --glue-dir DIR \\
        --out bench/results/attention_fusion

--model: a compact classifier folder (fp32 weights); --hf-model: a fine-tuned full model, exported through
transformers' own BertForSequenceClassification as the bench's peers are. Per-op kernel times come from ORT's
profiler (1 thread, the first 200 dev inputs at their real lengths, 3 passes); profiling adds its own cost per node,
so the bench (`compact bench`) is where the end-to-end times are, not here.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort
from transformers import AutoTokenizer

from compact_nlp.auto import AutoCompactModelForSequenceClassification
from compact_nlp.bench import real_sentences
from compact_nlp.compare import export_hf_model
from compact_nlp.export.onnx import export_onnx
from compact_nlp.io import write_json
from compact_nlp.quant.config import Int8Config
from compact_nlp.quant.onnx_int8 import gemm_to_matmul, quantize_graph
from compact_nlp.runtime import session_options

ATTENTION_OPS = ("Attention", "MultiHeadAttention", "QAttention")


def profile(path: Path, feeds: list[dict], scratch: Path, passes: int = 3) -> dict:
    options = session_options(threads=1)
    options.enable_profiling = True
    options.profile_file_prefix = str(scratch / path.stem)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(passes):
        for feed in feeds:
            session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = passes * len(feeds)
    per_op, nodes = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
            nodes[event["args"]["op_name"]] += 1
    run_us = [e["dur"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    return {"kernel_us_per_run": round(sum(per_op.values()) / runs, 1),
            "model_run_us_median_profiled": statistics.median(run_us),
            "ops": {op: {"us_per_run": round(us / runs, 1), "nodes": nodes[op] // runs}
                    for op, us in per_op.most_common()}}


def attention_nodes_after_ort_optimizer(path: Path, scratch: Path, num_heads: int = 0, hidden: int = 0) -> int:
    from onnxruntime.transformers.optimizer import optimize_model

    graph = onnx.load(str(path))
    gemm_to_matmul(graph)  # the BERT fusions look for MatMul + Add, not Gemm
    prepared = scratch / f"{path.stem}_matmul.onnx"
    onnx.save(graph, str(prepared))
    optimized = optimize_model(str(prepared), model_type="bert", num_heads=num_heads, hidden_size=hidden)
    return sum(node.op_type in ATTENTION_OPS for node in optimized.model.graph.node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--hf-model", required=True)
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    model = AutoCompactModelForSequenceClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    sentences, source = real_sentences(args.glue_dir, limit=200)
    result = {"model": args.model, "config": {"hidden": model.config.hidden_size,
                                              "heads": list(model.config.num_heads_per_layer)},
              "inputs": f"{len(sentences)} real sentences ({source}), batch 1, 1 thread, 3 passes",
              "onnxruntime": ort.__version__}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        names = None
        for form, fused in (("decomposed", False), ("fused", True)):
            fp32 = scratch / f"{form}.onnx"
            export_onnx(model, fp32, fuse_attention=fused)
            int8 = scratch / f"{form}_int8.onnx"
            quantize_graph(fp32, int8, Int8Config())
            names = names or [i.name for i in onnx.load(str(int8)).graph.input]
            feeds = [{k: v for k, v in tokenizer(s, return_tensors="np").items() if k in names} for s in sentences]
            result[form] = profile(int8, feeds, scratch)
            result[form]["nodes"] = len(onnx.load(str(int8)).graph.node)
        hf = scratch / "hf.onnx"
        export_hf_model(Path(args.hf_model), hf)
        hf_config = json.loads((Path(args.hf_model) / "config.json").read_text())
        heads = hf_config.get("num_heads_per_layer", [hf_config.get("num_attention_heads", 0)])[0]
        result["ort_optimizer_attention_nodes"] = {
            "compact graph (decomposed)": attention_nodes_after_ort_optimizer(scratch / "decomposed.onnx", scratch),
            "transformers 5 BertForSequenceClassification": attention_nodes_after_ort_optimizer(
                hf, scratch, heads, hf_config.get("hidden_size", 0)),
        }
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    ops = sorted(set(result["decomposed"]["ops"]) | set(result["fused"]["ops"]),
                 key=lambda op: -result["decomposed"]["ops"].get(op, {"us_per_run": 0})["us_per_run"])
    lines = [f"# Attention as one node: ONNX Runtime's profiler, int8, {result['inputs']}", "",
             f"Model: {args.model} (hidden {result['config']['hidden']}, heads {result['config']['heads']}); "
             f"onnxruntime {ort.__version__}. Kernel time per run (us) by op type; profiling adds its own cost, so "
             "end-to-end times are in the bench reports.", "",
             "| op | decomposed us/run | nodes | fused us/run | nodes |", "|---|---|---|---|---|"]
    for op in ops:
        d, f = result["decomposed"]["ops"].get(op, {}), result["fused"]["ops"].get(op, {})
        lines.append(f"| {op} | {d.get('us_per_run', '')} | {d.get('nodes', '')} | {f.get('us_per_run', '')} | "
                     f"{f.get('nodes', '')} |")
    lines += [f"| **all kernels** | **{result['decomposed']['kernel_us_per_run']}** | "
              f"{result['decomposed']['nodes']} in the file | **{result['fused']['kernel_us_per_run']}** | "
              f"{result['fused']['nodes']} in the file |", "",
              "Attention nodes after onnxruntime.transformers' BERT optimizer: " + ", ".join(
                  f"{k}: {v}" for k, v in result["ort_optimizer_attention_nodes"].items()) + "."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

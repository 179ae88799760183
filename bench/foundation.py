"""Foundation benchmark (issue 2, step 7): is CompactBert's graph as fast as Hugging Face's own?

Real all-MiniLM-L6-v2, batch 1, real unpadded inputs of 16/64/128/256 tokens (joined SST-2 dev sentences), 1 and 2
threads, all variants timed side by side in one run (rounds interleave them):

  PyTorch fp32 (transformers' BertModel)     PyTorch fp32 (CompactBert)
  ORT fp32, HF's graph (dynamo exporter)     ORT fp32, HF's graph (TorchScript exporter, what Optimum used)
  ORT fp32, CompactBert model.onnx           ORT fp32, CompactBert model.ort

plus size on disk, load time and peak RAM (each from a fresh process). Writes bench/results/foundation.{json,md}.

    python bench/foundation.py [--glue-dir DIR] [--rounds 5] [--calls 20]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

import compact_nlp
from compact_nlp import AutoCompactModel
from compact_nlp.bench import (
    dir_size_mb,
    inputs_of_length,
    load_and_peak_ram,
    real_sentences,
    time_side_by_side,
)
from compact_nlp.export import export_model
from compact_nlp.io import write_json, write_text
from compact_nlp.pretrained import DEFAULT_MODEL, resolve_checkpoint

LENGTHS = (16, 64, 128, 256)
THREADS = (1, 2)
RESULTS = Path(__file__).parent / "results"


class LastHiddenState(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


def export_hf_graph(hf_model, path: Path, dynamo: bool) -> None:
    """Hugging Face's own BertModel exported as a user would, with the same axes as ours.

    The wrappers are put in eval mode: torch.onnx.export restores the wrapper's mode afterwards, and a new module
    is in train mode, which would switch the wrapped model's dropout on for everything measured after the export.
    """
    example = {k: torch.ones(2, 16, dtype=torch.long) for k in ("input_ids", "attention_mask", "token_type_ids")}
    names = list(example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("sequence", min=1, max=512)
            torch.onnx.export(LastHiddenState(hf_model).eval(), tuple(example.values()), str(path), dynamo=True,
                              external_data=False, opset_version=18, input_names=names,
                              output_names=["last_hidden_state"],
                              dynamic_shapes={n: {0: batch, 1: seq} for n in names})
        else:
            torch.onnx.export(LastHiddenState(hf_model).eval(), tuple(example.values()), str(path), dynamo=False,
                              opset_version=18, input_names=names, output_names=["last_hidden_state"],
                              dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    import onnxruntime as ort
    import transformers
    from transformers import AutoModel, AutoTokenizer

    source = resolve_checkpoint(DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(source)
    sentences, text_source = real_sentences(args.glue_dir)
    work = Path(tempfile.mkdtemp(prefix="compact-bench-"))

    hf_model = AutoModel.from_pretrained(source).eval()
    compact_model = AutoCompactModel.from_pretrained(DEFAULT_MODEL).eval()
    report = export_model(compact_model, work / "compact", tokenizer_source=tokenizer, mobile=True,
                          target_platform="amd64")
    export_hf_graph(hf_model, work / "hf_dynamo.onnx", dynamo=True)
    export_hf_graph(hf_model, work / "hf_torchscript.onnx", dynamo=False)
    onnx_files = {
        "ORT fp32, HF graph (dynamo)": work / "hf_dynamo.onnx",
        "ORT fp32, HF graph (TorchScript)": work / "hf_torchscript.onnx",
        "ORT fp32, CompactBert model.onnx": work / "compact" / "model.onnx",
        "ORT fp32, CompactBert model.ort": work / "compact" / "model.ort",
    }

    # Every graph must compute the same thing before its speed means anything.
    probe = inputs_of_length(tokenizer, sentences, 64)
    with torch.no_grad():
        reference = hf_model(**{k: torch.from_numpy(v) for k, v in probe.items()}).last_hidden_state.numpy()
    with torch.no_grad():
        ours = compact_model(**{k: torch.from_numpy(v) for k, v in probe.items()}).last_hidden_state.numpy()
    parity = {"PyTorch fp32 (transformers)": 0.0, "PyTorch fp32 (CompactBert)": float(np.abs(ours - reference).max())}
    for name, path in onnx_files.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {i.name: probe[i.name] for i in session.get_inputs()}
        parity[name] = float(np.abs(session.run(None, feed)[0] - reference).max())

    rows = []
    for threads in THREADS:
        torch.set_num_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        sessions = {name: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                    for name, p in onnx_files.items()}
        for length in LENGTHS:
            feed = inputs_of_length(tokenizer, sentences, length)
            assert feed["input_ids"].shape == (1, length) and feed["attention_mask"].all(), "inputs must be unpadded"
            tensors = {k: torch.from_numpy(v) for k, v in feed.items()}

            def torch_call(model):
                def call():
                    with torch.inference_mode():
                        model(**tensors)
                return call

            def ort_call(session):
                names = [i.name for i in session.get_inputs()]
                return lambda: session.run(None, {n: feed[n] for n in names})

            variants = {"PyTorch fp32 (transformers)": torch_call(hf_model),
                        "PyTorch fp32 (CompactBert)": torch_call(compact_model)}
            variants.update({name: ort_call(s) for name, s in sessions.items()})
            print(f"timing {length} tokens, {threads} thread(s)", file=sys.stderr)
            for name, stats in time_side_by_side(variants, rounds=args.rounds, calls=args.calls).items():
                rows.append({"variant": name, "threads": threads, "tokens": length, **stats})

    files = {
        "PyTorch fp32 (transformers)": [Path(source) / "model.safetensors"],
        "PyTorch fp32 (CompactBert)": [work / "compact" / "model.safetensors"],
        **{name: [p] for name, p in onnx_files.items()},
    }
    loads = {
        "PyTorch fp32 (transformers)": load_and_peak_ram("transformers", source, "AutoModel"),
        "PyTorch fp32 (CompactBert)": load_and_peak_ram("compact", work / "compact", "CompactBertModel"),
        **{name: load_and_peak_ram("onnxruntime", p) for name, p in onnx_files.items()},
    }
    variants = {name: {"size_mb": dir_size_mb(*paths), **loads[name], "max_abs_diff_vs_transformers": parity[name]}
                for name, paths in files.items()}

    results = {
        "model": DEFAULT_MODEL, "text": text_source, "batch": 1, "padding": "none",
        "machine": {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
                    "cores": __import__("os").cpu_count()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "onnxruntime": ort.__version__, "compact": compact_nlp.__version__},
        "rounds": args.rounds, "calls_per_round": args.calls,
        "variants": variants, "latency": rows,
        "compact_export_report": {k: report[k] for k in ("onnx_parity", "ort_parity", "size_mb", "mobile_usability")},
    }
    out = Path(args.out)
    write_json(out / "foundation.json", results)
    write_text(out / "foundation.md", markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = [
        "# Foundation benchmark: CompactBert vs. Hugging Face's own graph",
        "",
        f"all-MiniLM-L6-v2, batch 1, real unpadded inputs ({results['text']}), "
        f"{results['machine']['cpu']} ({results['machine']['cores']} cores), "
        f"torch {results['versions']['torch']}, onnxruntime {results['versions']['onnxruntime']}. "
        f"All variants timed side by side in one run ({results['rounds']} interleaved rounds x "
        f"{results['calls_per_round']} calls). Noise = spread of the per-round medians / median.",
        "",
        "## Latency (ms): median / p90 (noise)",
        "",
    ]
    variants = list(results["variants"])
    for threads in sorted({r["threads"] for r in results["latency"]}):
        lengths = sorted({r["tokens"] for r in results["latency"]})
        lines += [f"### {threads} thread(s)", "", "| variant | " + " | ".join(f"{n} tokens" for n in lengths) + " |",
                  "|---|" + "---|" * len(lengths)]
        for v in variants:
            cells = []
            for n in lengths:
                r = next(r for r in results["latency"] if r["variant"] == v and r["threads"] == threads and r["tokens"] == n)
                cells.append(f"{r['median_ms']:.2f} / {r['p90_ms']:.2f} ({r['noise_floor']:.0%})")
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### CompactBert model.onnx vs. HF's graph: median latency ratio (< 1 = CompactBert faster)", "",
              "| threads | tokens | vs. HF dynamo graph | vs. HF TorchScript graph |", "|---|---|---|---|"]
    for r in results["latency"]:
        if r["variant"] != "ORT fp32, CompactBert model.onnx":
            continue
        peer = {p["variant"]: p["median_ms"] for p in results["latency"]
                if p["threads"] == r["threads"] and p["tokens"] == r["tokens"]}
        lines.append(f"| {r['threads']} | {r['tokens']} | {r['median_ms'] / peer['ORT fp32, HF graph (dynamo)']:.2f} | "
                     f"{r['median_ms'] / peer['ORT fp32, HF graph (TorchScript)']:.2f} |")
    lines += ["", "## Size, load time, peak RAM (fresh process each), parity", "",
              "| variant | size MB | load s | peak RSS MB | RSS added by the model MB | max abs diff vs. transformers |",
              "|---|---|---|---|---|---|"]
    for name, v in results["variants"].items():
        diff = "reference" if name == "PyTorch fp32 (transformers)" else f"{v['max_abs_diff_vs_transformers']:.2e}"
        lines.append(f"| {name} | {v['size_mb']} | {v['load_s']:.2f} | {v['peak_rss_mb']:.0f} | {v['model_ram_mb']:.0f} | {diff} |")
    rep = results["compact_export_report"]
    lines += ["", f"CompactBert export parity (random + padded batches): ONNX {rep['onnx_parity']['max_abs_diff']:.2e}, "
              f".ort {rep['ort_parity']['max_abs_diff']:.2e}. Mobile usability: {rep['mobile_usability']['verdict']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

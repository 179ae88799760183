"""int8 benchmark (issue 4): every int8 form of one fine-tuned model, side by side in one run.

Variants (all from the same fp32 fine-tuned MiniLM):
  fp32 ORT                     our model.onnx / model.ort
  peer: dynamic int8           HF's stock graph (TorchScript export, as Optimum did) + quantize_dynamic
  peer: fusions + dynamic int8 the same graph through onnxruntime.transformers' BERT fusions first (Optimum's O2 +
                               avx512_vnni dynamic preset)
  ours: PTQ dynamic            per-channel / per-tensor weights, int8 word embeddings (quant.quantize_folder)
  ours: PTQ static QDQ         U8S8 and S8S8, min-max and percentile calibration on 256 real training sentences
  ours: QAT                    trained int8 weights + dynamic activations (model.ort), static QDQ with the trained
                               activation scales (qdq/model.ort)   [with --qat OUT/seed-N/model of an int8-qat run]
  ours: binary W1A8            1-bit packed weights, int8 activations, 1-bit embeddings: model.onnx (ORT unpacks the
                               weights once, at load) and model.ort (packed; unpacks every call)
                               [with --binary FOLDER, repeatable: a binary run's model, or its trimmed re-export]

Columns: dev metric (the task's, on the whole dev set), .onnx and .ort MB, latency at batch 1 on the dev set's real
unpadded inputs (median and p90) and on 128 real tokens (joined dev sentences), at 1 and 2 threads. Latencies are
measured interleaved: every input runs on every variant back to back, in alternating order.

    python bench/quant.py --fp32 RUN/seed-1/model [--qat QAT/seed-1/model] [--binary B/seed-1/model ...]
                          --task sst2 --glue-dir DIR
Writes bench/results/quant_<task>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from compact_nlp.bench import inputs_of_length, real_length_latency, time_side_by_side
from compact_nlp.compare import encode, peers
from compact_nlp.glue import get_task, load_glue
from compact_nlp.io import write_json, write_text
from compact_nlp.metrics import compute_glue_metrics
from compact_nlp.quant import Int8Config, quantize_folder
from compact_nlp.runtime import session_options
from compact_nlp.ship import machine, versions

RESULTS = Path(__file__).parent / "results"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def ours(fp32_folder: Path, scratch: Path, texts: list, max_length: int) -> dict[str, Path]:
    variants = {
        "ours: PTQ dynamic, per-channel": Int8Config(),
        "ours: PTQ dynamic, per-tensor": Int8Config(weights="per_tensor"),
        "ours: PTQ static QDQ U8S8, min-max": Int8Config(activations="static"),
        "ours: PTQ static QDQ U8S8, percentile": Int8Config(activations="static", calibration="percentile"),
        "ours: PTQ static QDQ S8S8, percentile": Int8Config(activations="static", activation_type="int8",
                                                            calibration="percentile"),
    }
    files = {}
    for i, (name, config) in enumerate(variants.items()):
        out = scratch / f"ptq{i}"
        quantize_folder(fp32_folder, out, config, texts=texts, max_length=max_length, mobile=True)
        files[name] = out / "model.ort"
    return files


def feed(sess: ort.InferenceSession, inputs: dict) -> dict:
    names = {i.name for i in sess.get_inputs()}
    return {k: v for k, v in inputs.items() if k in names}


def dev_scores(sess, tokenizer, task, dev, max_length: int) -> dict:
    logits = [sess.run(None, feed(sess, encode(tokenizer, task, dev[s:s + 64], max_length, True)))[0]
              for s in range(0, len(dev), 64)]
    return compute_glue_metrics(task.name, np.concatenate(logits), np.asarray(dev["label"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fp32", required=True, help="the fine-tuned fp32 folder (compact run OUT/seed-N/model)")
    parser.add_argument("--qat", default=None, help="an int8-qat run's OUT/seed-N/model")
    parser.add_argument("--binary", action="append", default=[], help="a binary model folder (repeatable)")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--examples", type=int, default=200, help="dev inputs timed at their real lengths")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    task = get_task(args.task)
    data = load_glue(task.name, args.glue_dir)
    dev = data[task.dev_splits[0]]
    train = data["train"].shuffle(seed=0).select(range(256))
    texts = list(zip(*[train[c] for c in task.text_columns])) if len(task.text_columns) > 1 else train[task.text_columns[0]]
    fp32 = Path(args.fp32)
    tokenizer = AutoTokenizer.from_pretrained(fp32)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        files = {"fp32 ORT (model.onnx)": fp32 / "model.onnx", "fp32 ORT (model.ort)": fp32 / "model.ort"}
        print("exporting and quantizing the peers and our variants ...", file=sys.stderr)
        files.update(peers(fp32, scratch))
        files.update(ours(fp32, scratch, texts, args.max_length))
        if args.qat:
            files["ours: QAT, int8 weights + dynamic activations (model.ort)"] = Path(args.qat) / "model.ort"
            files["ours: QAT, static QDQ with trained scales (qdq/model.ort)"] = Path(args.qat) / "qdq" / "model.ort"
        tokenizers = {name: tokenizer for name in files}
        for folder in map(Path, args.binary):
            trimmed = ", trimmed vocabulary" if json.loads((folder / "config.json").read_text())["quant"]["binary"][
                "trim_vocabulary"] else ""
            for file in ("model.onnx", "model.ort"):
                name = f"ours: binary W1A8{trimmed} ({file})"
                files[name], tokenizers[name] = folder / file, AutoTokenizer.from_pretrained(folder)
        rows = {name: {"onnx_mb": _mb(path.with_suffix(".onnx")), "ort_mb": _mb(path.with_suffix(".ort"))}
                for name, path in files.items()}
        print("dev scores ...", file=sys.stderr)
        for name, path in files.items():
            rows[name]["dev"] = dev_scores(ort.InferenceSession(str(path), session_options(2)), tokenizers[name], task,
                                           dev, args.max_length)
        real = {name: [encode(tok, task, dev[i:i + 1], args.max_length, False) for i in range(args.examples)]
                for name, tok in tokenizers.items()}
        dev_texts = [t for c in task.text_columns for t in dev[c]]
        long = {name: inputs_of_length(tok, dev_texts, 128) for name, tok in tokenizers.items()}
        for threads in (1, 2):
            print(f"latency, {threads} thread(s) ...", file=sys.stderr)
            sessions = {name: ort.InferenceSession(str(path), session_options(threads)) for name, path in files.items()}
            callers = {name: (lambda x, s=sess: s.run(None, feed(s, x))) for name, sess in sessions.items()}
            for name, stats in real_length_latency(callers, real).items():
                rows[name][f"real_{threads}t"] = stats
            timed = time_side_by_side({name: (lambda s=s, n=name: s.run(None, feed(s, long[n])))
                                       for name, s in sessions.items()}, rounds=args.rounds, calls=args.calls)
            for name, stats in timed.items():
                rows[name][f"long_{threads}t"] = stats
    results = {"task": task.name, "fp32": str(fp32), "qat": args.qat, "binary": args.binary,
               "dev_examples": len(dev), "real_length_examples": args.examples,
               "mean_real_tokens": round(float(np.mean([r["input_ids"].shape[1] for r in real[next(iter(real))]])), 1),
               "main_metric": task.metrics[0], "variants": rows, "machine": machine(), "versions": versions()}
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / f"quant_{task.name}.json", results)
    write_text(RESULTS / f"quant_{task.name}.md", markdown(results))
    print(markdown(results))


def _mb(path: Path) -> float | None:
    return round(path.stat().st_size / 2**20, 2) if path.exists() else None


def markdown(results: dict) -> str:
    metric = results["main_metric"]
    lines = [
        f"# int8 side by side: {results['task']} (one run)",
        "",
        f"fp32 model: `{results['fp32']}`; QAT: `{results['qat']}`; binary: "
        f"{', '.join(f'`{b}`' for b in results.get('binary', [])) or '-'}. Dev {metric} on all {results['dev_examples']} dev "
        f"examples through ONNX Runtime. Latency at batch 1: median (p90) ms on the first "
        f"{results['real_length_examples']} dev inputs at their real lengths ({results['mean_real_tokens']} tokens on "
        "average, unpadded) and on one input of 128 real tokens; all variants interleaved in one run. "
        f"Machine: {results['machine']['platform']}, {results['machine']['cores']} cores.",
        "",
        f"| variant | dev {metric} | .onnx MB | .ort MB | real, 1 thread | real, 2 threads | 128 tok, 1 thread | "
        "128 tok, 2 threads | 128 tok noise floor (1t/2t) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["variants"].items():
        lines.append(
            f"| {name} | {100 * r['dev'][metric]:.2f} | {r['onnx_mb']} | {r['ort_mb']} | "
            f"{r['real_1t']['median_ms']} ({r['real_1t']['p90_ms']}) | {r['real_2t']['median_ms']} "
            f"({r['real_2t']['p90_ms']}) | {r['long_1t']['median_ms']} | {r['long_2t']['median_ms']} | "
            f"{r['long_1t']['noise_floor']:.0%} / {r['long_2t']['noise_floor']:.0%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

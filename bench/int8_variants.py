"""compact's int8 variants on the original all-MiniLM-L6-v2 (offline, `compact-nlp[models]`): how faithful and how
fast each activation granularity is, against ORT dynamic int8 (quantize_dynamic defaults on transformers' own graph,
the peer) measured side by side in the same run.

Each variant is compact's own quantize_graph (quant/onnx_int8.py) on compact's fp32 export, with one Int8Config:
per_tensor activations (ORT DynamicQuantizeLinear) with and without SmoothQuant scale migration (quant/smooth.py,
`smoothing`, measured on the first 256 SST-2 *train* sentences), per_block (MatMulNBits 8-bit with
accuracy_level=4: activations quantized per token and block inside the kernel), ffn_out_per_block (only the
outlier-heavy FFN output projections per block) and ffn_out_per_row (those projections with one activation scale per
row, i.e. per token, built in the graph: quant/per_row.py; all six, or the last two layers'). Fidelity: cosine of mean-pooled embeddings to PyTorch fp32 over the
first 200 SST-2 dev sentences (mean / min). Latency: batch 1, 1 thread, compact.bench's loop (all variants
interleaved in rounds), at real lengths and on inputs of 128 real tokens; ratio = variant / ORT dynamic int8.

Classifier fidelity: argmax agreement with PyTorch fp32 over all 872 SST-2 dev sentences of a fine-tuned classifier,
either a compact model folder (--classifier DIR, e.g. the protocol's SST-2 baseline) or all-MiniLM-L6-v2 fine-tuned
here for --classifier-steps steps. Its latency is the embedding model's (same architecture; the 2-way head is one
small fp32 Gemm).

The smoothing strength alpha is chosen on held-out text, not on dev: cosine over SST-2 train sentences 256..455
(disjoint from the calibration ones) for each alpha in --alphas ("alpha selection" in the results).

    .venv/bin/python bench/int8_variants.py [--sentences 200] [--rounds 5] [--classifier DIR]
                                            [--out bench/results/int8_variants]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from compact_nlp import AutoCompactModel, export_model
from compact_nlp.bench import real_sentences, time_side_by_side
from compact_nlp.compare_peers import ort_dynamic_int8
from compact_nlp.io import write_json, write_text
from compact_nlp.peers import encode_texts, reference_outputs
from compact_nlp.peers.fidelity import fidelity
from compact_nlp.peers.measure import session_call
from compact_nlp.glue import TASKS, default_glue_dir, read_split
from compact_nlp.pretrained import DEFAULT_MODEL, MIRRORS, resolve_checkpoint
from compact_nlp.quant import Int8Config
from compact_nlp.quant.calibration import calibration_feeds
from compact_nlp.quant.onnx_int8 import quantize_graph

sys.path.insert(0, str(Path(__file__).parent))
from peers import cpu_name, long_texts  # noqa: E402

BASELINE = "peer: ORT dynamic int8, defaults (transformers graph)"
PER_TENSOR = Int8Config(activation_granularity="per_tensor")  # smoothing 0.8 (its default)
VARIANTS = {
    "compact int8, per_tensor activations, no smoothing": Int8Config(activation_granularity="per_tensor",
                                                                     smoothing=0.0),
    "compact int8, per_tensor activations, smoothing 0.8 (default before)": PER_TENSOR,
    "compact int8, ffn_out_per_row, smoothing 0.8 (default)": Int8Config(activation_granularity="ffn_out_per_row"),
    "compact int8, ffn_out_per_row last 2 layers, smoothing 0.8": Int8Config(activation_granularity="ffn_out_per_row",
                                                                           per_row_layers=2),
    "compact int8, ffn_out_per_block, block 32": Int8Config(activation_granularity="ffn_out_per_block"),
    "compact int8, ffn_out_per_block, block 128": Int8Config(activation_granularity="ffn_out_per_block",
                                                             block_size=128),
    "compact int8, per_block, block 32": Int8Config(activation_granularity="per_block"),
    "compact int8, per_block, block 128": Int8Config(activation_granularity="per_block", block_size=128),
}


def train_sentences(start: int, stop: int) -> list[str]:
    sst2 = TASKS["sst2"]
    return read_split(sst2, default_glue_dir(), sst2.local["train"])["sentence"][start:stop]


def calibration(fp32: Path) -> list[dict]:
    """What `compact quantize` calibrates on: real training text (here the first 256 SST-2 train sentences)."""
    import onnx
    from transformers import AutoTokenizer

    names = [i.name for i in onnx.load(str(fp32 / "model.onnx"), load_external_data=False).graph.input]
    return calibration_feeds(AutoTokenizer.from_pretrained(fp32), train_sentences(0, 256), 128, names)


def graphs(scratch: Path) -> dict[str, Path]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model_folder = MIRRORS[DEFAULT_MODEL].path()
    hf_graph, plain = ort_dynamic_int8(model_folder, scratch / "peer", "last_hidden_state")
    per_channel = scratch / "peer" / "per_channel.onnx"
    quantize_dynamic(str(hf_graph), str(per_channel), weight_type=QuantType.QInt8, per_channel=True)
    export_model(AutoCompactModel.from_pretrained(DEFAULT_MODEL), scratch / "fp32",
                 tokenizer_source=resolve_checkpoint(DEFAULT_MODEL))
    found = {BASELINE: plain, "peer: ORT dynamic int8, per_channel=True": per_channel,
             "compact fp32 (ORT)": scratch / "fp32" / "model.onnx"}
    feeds = calibration(scratch / "fp32")
    for i, (name, config) in enumerate(VARIANTS.items()):
        found[name] = scratch / f"variant{i}.onnx"
        quantize_graph(scratch / "fp32" / "model.onnx", found[name], config, feeds=feeds)
    return found


def select_alpha(scratch: Path, alphas: list[float]) -> dict[str, dict]:
    """Cosine to fp32 on held-out SST-2 train sentences (256..455) for each smoothing alpha (0: none)."""
    folder = MIRRORS[DEFAULT_MODEL].path()
    inputs = encode_texts(folder, train_sentences(256, 456), 512)
    reference = reference_outputs(folder, inputs, "last_hidden_state")
    feeds, rows = calibration(scratch / "fp32"), {}
    for alpha in alphas:
        path = scratch / f"alpha{alpha}.onnx"
        config = Int8Config(activation_granularity="per_tensor", smoothing=alpha)
        quantize_graph(scratch / "fp32" / "model.onnx", path, config, feeds=feeds)
        mean, minimum, _ = fidelity(reference, session_call(path, 1, inputs, "last_hidden_state")[1](),
                                    "last_hidden_state")
        rows[str(alpha)] = {"cosine_mean": mean, "cosine_min": minimum}
    return rows


def fine_tune(folder: Path, steps: int, batch: int = 32, seed: int = 0) -> None:
    """all-MiniLM-L6-v2 + a 2-way head fine-tuned `steps` steps on SST-2 train (lr 5e-5, dynamic padding), exported
    fp32 to `folder`: a real classifier to measure int8's argmax agreement on (not a tuned one: its accuracy is
    reported beside)."""
    import torch
    from transformers import AutoTokenizer

    from compact_nlp import AutoCompactModelForSequenceClassification

    sst2 = TASKS["sst2"]
    train = read_split(sst2, default_glue_dir(), sst2.local["train"])
    order = np.random.default_rng(seed).permutation(len(train["sentence"]))[:steps * batch]
    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(DEFAULT_MODEL))
    torch.manual_seed(seed)
    model = AutoCompactModelForSequenceClassification.from_pretrained(DEFAULT_MODEL, num_labels=2).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    for step in range(steps):
        rows = order[step * batch:(step + 1) * batch]
        x = tokenizer([train["sentence"][i] for i in rows], padding=True, truncation=True, max_length=64,
                      return_tensors="pt")
        loss = model(**x, labels=torch.tensor([train["label"][i] for i in rows])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    export_model(model.eval(), folder, tokenizer_source=resolve_checkpoint(DEFAULT_MODEL))


CLASSIFIER_VARIANTS = {
    "int8, per_tensor, no smoothing": Int8Config(activation_granularity="per_tensor", smoothing=0.0),
    "int8, per_tensor, smoothing 0.8 (default before)": PER_TENSOR,
    "int8, ffn_out_per_row, smoothing 0.8 (default)": Int8Config(activation_granularity="ffn_out_per_row"),
    "int8, ffn_out_per_row last 2 layers, smoothing 0.8": Int8Config(activation_granularity="ffn_out_per_row",
                                                                    per_row_layers=2),
    "int8, ffn_out_per_block, block 128": Int8Config(activation_granularity="ffn_out_per_block", block_size=128),
}


def classifier_agreement(scratch: Path, steps: int, source: str | None = None) -> dict:
    """Argmax agreement of each int8 classifier with PyTorch fp32 on all of SST-2 dev (and flips, the largest logit
    change, the fp32 margins of the flipped sentences), and each one's accuracy. `source`: a compact classifier
    folder to export; else all-MiniLM-L6-v2 fine-tuned `steps` steps here."""
    from transformers import AutoTokenizer

    from compact_nlp import AutoCompactModelForSequenceClassification

    folder = scratch / "classifier"
    if source:
        export_model(AutoCompactModelForSequenceClassification.from_pretrained(source).eval(), folder,
                     tokenizer_source=source)
    else:
        fine_tune(folder, steps)
    sst2 = TASKS["sst2"]
    dev = read_split(sst2, default_glue_dir(), sst2.local["validation"])
    inputs = encode_texts(folder, dev["sentence"], 512)
    reference = reference_outputs(folder, inputs, "logits")
    feeds = calibration_feeds(AutoTokenizer.from_pretrained(folder), train_sentences(0, 256), 128,
                              ["input_ids", "attention_mask", "token_type_ids"])
    labels, margin = np.asarray(dev["label"]), np.abs(reference[:, 0] - reference[:, 1])
    rows = {"source": source or f"all-MiniLM-L6-v2 fine-tuned {steps} steps of 32 on SST-2 train here",
            "fp32 (PyTorch)": {"accuracy": round(float((reference.argmax(1) == labels).mean()), 4)}}
    for i, (name, config) in enumerate(CLASSIFIER_VARIANTS.items()):
        path = folder / f"variant{i}.onnx"
        quantize_graph(folder / "model.onnx", path, config, feeds=feeds)
        got = session_call(path, 1, inputs, "logits")[1]()
        flips = got.argmax(1) != reference.argmax(1)
        rows[name] = {"agreement": fidelity(reference, got, "logits")[0], "flips": int(flips.sum()),
                      "accuracy": round(float((got.argmax(1) == labels).mean()), 4),
                      "max_logit_change": round(float(np.abs(got - reference).max()), 4),
                      "flipped_fp32_margins": sorted(round(float(m), 3) for m in margin[flips])}
    return rows


def measure(files: dict[str, Path], inputs: list[dict], reference: np.ndarray, rounds: int) -> dict[str, dict]:
    calls = {name: session_call(path, 1, inputs, "last_hidden_state") for name, path in files.items()}
    timed = time_side_by_side({name: c[0] for name, c in calls.items()}, rounds=rounds, calls=len(inputs),
                              warmup=min(10, len(inputs)))
    rows = {}
    for name, path in files.items():
        mean, minimum, _ = fidelity(reference, calls[name][1](), "last_hidden_state")
        rows[name] = {**timed[name], "cosine_mean": mean, "cosine_min": minimum,
                      "ratio": round(timed[name]["median_ms"] / timed[BASELINE]["median_ms"], 3),
                      "size_mb": round(path.stat().st_size / 2**20, 2)}
    return rows


def cpu_flags() -> list[str]:
    """The int8-relevant instruction sets this CPU reports (ORT's MLAS picks its int8 kernels by them)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return [f for f in ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags.split()]


def libraries() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("onnxruntime", "onnx", "torch", "transformers", "numpy")}


def markdown(results: dict) -> str:
    settings = list(results["settings"])
    flags = f" ({', '.join(results['cpu_flags'])})" if results.get("cpu_flags") else ""
    lines = [f"# compact int8 variants on {DEFAULT_MODEL} (bench/int8_variants.py)", "",
             f"{results['cpu']}{flags}, batch 1, 1 thread, "
             + ", ".join(f"{k} {v}" for k, v in results.get("libraries", {"onnxruntime": results["onnxruntime"]}).items())
             + f", Python {results['python']}; "
             f"2 cores shared with other jobs (load average {results['load'][0]:.1f} at the end): read the ratios. "
             f"Cosine: mean-pooled embeddings vs PyTorch fp32 over {results['sentences']} SST-2 dev sentences "
             "(mean / min). Latency: "
             f"median ms, all rows interleaved in {results['rounds']} rounds (compact.bench), and as a ratio of the "
             "peer ORT dynamic int8 (defaults) in the same run; the noise floor is the spread of round medians.", "",
             "| variant | cosine mean / min | MB | " + " | ".join(f"{s}: ms (ratio, noise)" for s in settings) + " |",
             "|---|---|---|" + "---|" * len(settings)]
    first = results["settings"][settings[0]]
    for name, row in first.items():
        cells = [f"{results['settings'][s][name]['median_ms']:.2f} ({results['settings'][s][name]['ratio']:.2f}, "
                 f"{results['settings'][s][name]['noise_floor']:.0%})" for s in settings]
        lines.append(f"| {name} | {row['cosine_mean']:.4f} / {row['cosine_min']:.4f} | {row['size_mb']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Alpha selection (held-out SST-2 train sentences 256..455, not dev; calibration on train 0..255): "
              "cosine mean / min per smoothing alpha (0: none).", "", "| alpha | cosine mean / min |", "|---|---|"]
    lines += [f"| {alpha} | {row['cosine_mean']:.4f} / {row['cosine_min']:.4f} |"
              for alpha, row in results["alpha_selection"].items()]
    if results.get("classifier"):
        rows = results["classifier"]
        lines += ["", f"SST-2 classifier ({rows['source']}): argmax agreement with PyTorch fp32 over all 872 SST-2 "
                  "dev sentences (flips: sentences whose predicted label changed; their fp32 logit margins), the "
                  "largest logit change, and accuracy.", "",
                  "| model | agreement with fp32 (flips) | max logit change | flipped fp32 margins | accuracy |",
                  "|---|---|---|---|---|"]
        for name, row in rows.items():
            if name == "source":
                continue
            if "agreement" not in row:
                lines.append(f"| {name} | reference | | | {row['accuracy']:.2%} |")
                continue
            lines.append(f"| {name} | {row['agreement']:.2%} ({row['flips']}) | {row['max_logit_change']:.3f} | "
                         f"{', '.join(map(str, row['flipped_fp32_margins']))} | {row['accuracy']:.2%} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import onnxruntime
    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--long", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9])
    parser.add_argument("--classifier-steps", type=int, default=300,
                        help="fine-tune a SST-2 classifier this many steps for the argmax agreement (0: skip)")
    parser.add_argument("--classifier", default=None,
                        help="a fine-tuned compact SST-2 classifier folder to measure instead of fine-tuning one")
    parser.add_argument("--out", default="bench/results/int8_variants")
    args = parser.parse_args(argv)
    folder = MIRRORS[DEFAULT_MODEL].path()
    sentences, source = real_sentences(limit=None)
    texts = {"real lengths": (sentences[:args.sentences], 512),
             "128 tokens": (long_texts(AutoTokenizer.from_pretrained(folder), sentences, 128, args.long), 128)}
    settings = {}
    with tempfile.TemporaryDirectory() as scratch:
        files = graphs(Path(scratch))
        alpha_selection = select_alpha(Path(scratch), args.alphas)
        classifier = classifier_agreement(Path(scratch), args.classifier_steps, args.classifier) \
            if args.classifier or args.classifier_steps else None
        for setting, (batch, max_length) in texts.items():
            print(f"[int8_variants] {setting}", file=sys.stderr, flush=True)
            inputs = encode_texts(folder, batch, max_length)
            settings[setting] = measure(files, inputs, reference_outputs(folder, inputs, "last_hidden_state"),
                                        args.rounds)
    results = {"model": DEFAULT_MODEL, "text": source, "sentences": args.sentences, "rounds": args.rounds,
               "cpu": cpu_name(), "cpu_flags": cpu_flags(), "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
               "load": os.getloadavg(), "libraries": libraries(),
               "configs": {name: config.to_dict() for name, config in {**VARIANTS, **CLASSIFIER_VARIANTS}.items()},
               "alpha_selection": alpha_selection, "classifier": classifier, "settings": settings}
    write_json(Path(args.out + ".json"), results)
    write_text(Path(args.out + ".md"), markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

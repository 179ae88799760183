"""compact's int8 variants on the original all-MiniLM-L6-v2 (offline, `compact-nlp[models]`): how faithful and how
fast each activation granularity is, against ORT dynamic int8 (quantize_dynamic defaults on transformers' own graph,
the peer) measured side by side in the same run.

Each variant is compact's own quantize_graph (quant/onnx_int8.py) on compact's fp32 export, with one Int8Config:
per_tensor activations (ORT DynamicQuantizeLinear, the current default), per_block (MatMulNBits 8-bit with
accuracy_level=4: activations quantized per token and block inside the kernel), and ffn_out_per_block (only the
outlier-heavy FFN output projections per block). Fidelity: cosine of mean-pooled embeddings to PyTorch fp32 over the
first 200 SST-2 dev sentences (mean / min). Latency: batch 1, 1 thread, compact.bench's loop (all variants
interleaved in rounds), at real lengths and on inputs of 128 real tokens; ratio = variant / ORT dynamic int8.

    .venv/bin/python bench/int8_variants.py [--sentences 200] [--rounds 5] [--out bench/results/int8_variants]
"""

from __future__ import annotations

import argparse
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
from compact_nlp.pretrained import DEFAULT_MODEL, MIRRORS, resolve_checkpoint
from compact_nlp.quant import Int8Config
from compact_nlp.quant.onnx_int8 import quantize_graph

sys.path.insert(0, str(Path(__file__).parent))
from peers import cpu_name, long_texts  # noqa: E402

BASELINE = "peer: ORT dynamic int8, defaults (transformers graph)"
VARIANTS = {
    "compact int8, per_tensor activations (current default)": Int8Config(),
    "compact int8, ffn_out_per_block, block 32": Int8Config(activation_granularity="ffn_out_per_block"),
    "compact int8, ffn_out_per_block, block 128": Int8Config(activation_granularity="ffn_out_per_block",
                                                             block_size=128),
    "compact int8, per_block, block 32": Int8Config(activation_granularity="per_block"),
    "compact int8, per_block, block 64": Int8Config(activation_granularity="per_block", block_size=64),
    "compact int8, per_block, block 128": Int8Config(activation_granularity="per_block", block_size=128),
}


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
    for i, (name, config) in enumerate(VARIANTS.items()):
        found[name] = scratch / f"variant{i}.onnx"
        quantize_graph(scratch / "fp32" / "model.onnx", found[name], config)
    return found


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


def markdown(results: dict) -> str:
    settings = list(results["settings"])
    lines = [f"# compact int8 variants on {DEFAULT_MODEL} (bench/int8_variants.py)", "",
             f"{results['cpu']}, batch 1, 1 thread, onnxruntime {results['onnxruntime']}. Cosine: mean-pooled "
             f"embeddings vs PyTorch fp32 over {results['sentences']} SST-2 dev sentences (mean / min). Latency: "
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
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import onnxruntime
    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--long", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="bench/results/int8_variants")
    args = parser.parse_args(argv)
    folder = MIRRORS[DEFAULT_MODEL].path()
    sentences, source = real_sentences(limit=None)
    texts = {"real lengths": (sentences[:args.sentences], 512),
             "128 tokens": (long_texts(AutoTokenizer.from_pretrained(folder), sentences, 128, args.long), 128)}
    settings = {}
    with tempfile.TemporaryDirectory() as scratch:
        files = graphs(Path(scratch))
        for setting, (batch, max_length) in texts.items():
            print(f"[int8_variants] {setting}", file=sys.stderr, flush=True)
            inputs = encode_texts(folder, batch, max_length)
            settings[setting] = measure(files, inputs, reference_outputs(folder, inputs, "last_hidden_state"),
                                        args.rounds)
    results = {"model": DEFAULT_MODEL, "text": source, "sentences": args.sentences, "rounds": args.rounds,
               "cpu": cpu_name(), "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
               "configs": {name: config.to_dict() for name, config in VARIANTS.items()}, "settings": settings}
    write_json(Path(args.out + ".json"), results)
    write_text(Path(args.out + ".md"), markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

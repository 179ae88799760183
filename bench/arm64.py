"""The .ort files compact ships, run through onnxruntime's ARM (aarch64) kernels in an emulated Cortex-A76
(bench/arm64_setup.sh: qemu-user with Debian's arm64 Python and onnxruntime's aarch64 wheel), beside the same files on
this x86 machine: do they give the same answers there, and how do their emulated latencies rank?

The outputs are the point: onnxruntime's ARM int8 kernels (dot-product instructions) are not its x86 ones, and a phone
runs those. The emulated times are not a phone's: qemu translates each NEON instruction into host code at its own
cost, so they rank the files only roughly, and say nothing of absolute speed.

    python bench/arm64.py NAME=folder/model.ort [NAME=...] --texts reviews_dev.csv --text-column review \
        [--examples 40] [--rounds 2] [--arm64 /work/arm64] [--out bench/results/arm64_sst2]

Needs root at run time: the worker sees an ARM /proc/cpuinfo through a private mount (unshare -m), as onnxruntime's
cpuinfo crashes on the host's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import AutoTokenizer

from compact_nlp.bench import real_length_latency
from compact_nlp.io import write_json, write_text
from compact_nlp.runtime import ORTModelForSequenceClassification
from compact_nlp.ship import machine, versions

WORKER = Path(__file__).with_name("arm64_worker.py")


def feeds_of(path: Path, texts: list, max_length: int = 128) -> tuple[object, list[dict]]:
    """The file's session (1 thread) and its feeds for `texts`, built by the runtime's own ORTModel.feed."""
    model = ORTModelForSequenceClassification.from_pretrained(path.parent, file_name=path.name, threads=1)
    tokenizer = AutoTokenizer.from_pretrained(path.parent)
    feeds = [model.feed(**tokenizer(*t, truncation=True, max_length=max_length, return_tensors="np")) for t in texts]
    return model.session, feeds


def emulated(files: dict[str, Path], feeds: dict[str, list[dict]], rounds: int, arm64: Path, scratch: Path) -> dict:
    """Run bench/arm64_worker.py in the emulated arm64 Python; its result.json, with each file's outputs."""
    inputs = {}
    for name, rows in feeds.items():
        inputs[name] = str(scratch / f"{name}.inputs.json")
        Path(inputs[name]).write_text(json.dumps([{k: v[0].tolist() for k, v in x.items()} for x in rows]))
    spec = scratch / "spec.json"
    spec.write_text(json.dumps({"files": {n: str(p.resolve()) for n, p in files.items()}, "inputs": inputs,
                                "rounds": rounds, "out": str(scratch)}))
    qemu = arm64 / "qemu" / "usr" / "bin" / "qemu-aarch64-static"
    run = (f"mount --bind {arm64 / 'cpuinfo'} /proc/cpuinfo && exec env PYTHONPATH={arm64 / 'site'} {qemu} "
           f"-cpu cortex-a76 -L {arm64 / 'root'} {arm64 / 'root' / 'usr' / 'bin' / 'python3.11'} {WORKER} {spec}")
    subprocess.run(["unshare", "-m", "sh", "-c", run], check=True, stdout=sys.stderr)
    result = json.loads((scratch / "result.json").read_text())
    result["outputs"] = {name: np.load(scratch / f"{name}.npy") for name in files}
    return result


def compare(files: dict[str, Path], host_outputs: dict, host_ms: dict, arm: dict) -> dict:
    reference = next(iter(files))
    rows = {}
    for name in files:
        x86, arm_out = host_outputs[name], arm["outputs"][name]
        rows[name] = {"max_abs_diff": float(np.abs(x86 - arm_out).max()),
                      "argmax_agreement": float((x86.argmax(1) == arm_out.argmax(1)).mean()),
                      "x86_ms": host_ms[name]["median_ms"], "arm64_emulated_ms": arm["rows"][name]["median_ms"],
                      "x86_of_reference": round(host_ms[name]["median_ms"] / host_ms[reference]["median_ms"], 3),
                      "arm64_of_reference": round(arm["rows"][name]["median_ms"] /
                                                  arm["rows"][reference]["median_ms"], 3)}
    return rows


def markdown(result: dict) -> str:
    lines = ["# compact's files on onnxruntime's arm64 kernels (emulated Cortex-A76) and on this x86 CPU",
             "", f"{result['examples']} inputs ({result['texts']}), batch 1, 1 thread; x86: {result['machine']['cpu']}, "
             f"{result['x86_runtime']}; arm64: {result['arm64_runtime']} under qemu-user (emulated: the times rank "
             "the files roughly and are not a phone's)", "",
             "| file | max abs diff arm64 vs x86 | argmax agreement | x86 ms | x reference | arm64 emulated ms | "
             "x reference |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['max_abs_diff']:.2e} | {100 * r['argmax_agreement']:.1f}% | {r['x86_ms']:.3f} | "
              f"{r['x86_of_reference']:.3f} | {r['arm64_emulated_ms']:.1f} | {r['arm64_of_reference']:.3f} |"
              for name, r in result["rows"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="NAME=folder/model.ort (the first is the reference)")
    parser.add_argument("--texts", required=True)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--text-pair-column", default=None)
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arm64", default="/work/arm64")
    parser.add_argument("--out", default="bench/results/arm64_sst2")
    args = parser.parse_args()
    files = {name: Path(path) for name, path in (item.split("=", 1) for item in args.files)}
    table = pd.read_csv(args.texts)[:args.examples]
    columns = [args.text_column] + ([args.text_pair_column] if args.text_pair_column else [])
    texts = list(zip(*(table[c] for c in columns)))
    sessions, feeds = {}, {}
    for name, path in files.items():
        sessions[name], feeds[name] = feeds_of(path, texts)
    host_outputs = {name: np.stack([np.asarray(sessions[name].run(None, x)[0], dtype=np.float32).reshape(-1)
                                    for x in feeds[name]]) for name in files}
    host_ms = real_length_latency({n: (lambda x, s=s: s.run(None, x)) for n, s in sessions.items()}, feeds, rounds=3)
    with tempfile.TemporaryDirectory() as scratch:
        arm = emulated(files, feeds, args.rounds, Path(args.arm64), Path(scratch))
    result = {"files": {n: str(p) for n, p in files.items()}, "texts": Path(args.texts).name,
              "examples": len(texts), "rows": compare(files, host_outputs, host_ms, arm), "machine": machine(),
              "x86_runtime": f"onnxruntime {versions()['onnxruntime']}", "arm64_runtime": arm["runtime"],
              "arm64_cpu": "Cortex-A76 (qemu-user -cpu cortex-a76)", "versions": versions()}
    write_json(Path(f"{args.out}.json"), result)
    write_text(Path(f"{args.out}.md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()

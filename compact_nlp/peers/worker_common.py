"""What every peer worker shares. A worker runs in the peer's own environment (bench/peers_setup.sh), not compact's,
so this file imports nothing from compact; a worker imports it as a sibling module (the script's folder is on
sys.path) and hands its three steps to main(): convert(spec) -> artifacts (a JSON-able dict naming the files made),
load(spec, artifacts, row name, threads) -> a call(input) -> raw output, and runtime(artifacts) -> "lib version".

The protocol: `PY worker_X.py SPEC.json`; SPEC names the transformers folder (hf_folder), the ONNX graph compact
exported (onnx), the token ids (inputs: a JSON file, a list of {input_ids, attention_mask, token_type_ids} lists,
batch 1, unpadded), threads (one count or a list; [] = outputs only, no timing), rounds, the output ("logits" or
"last_hidden_state") and the folder to write (out). Optional: long_inputs (a JSON file {length: one input}, each timed
in `rounds` rounds of `calls` calls), real_rounds (passes over the inputs, default rounds) and score_inputs (a JSON
file of more inputs whose outputs are saved, untimed, e.g. a whole dev set).
The worker writes out/artifacts.json and out/result.json: {"runtime": "lib version", "rows": [{"name", "median_ms",
"latency": {"real_{n}t" | "{length}_{n}t": {median_ms, p90_ms, noise_floor, calls}}, "size_mb", "outputs",
"score_outputs"} or {"name", "error"}]}, outputs (N, D) in .npy files: logits, or the embeddings mean-pooled over the
real tokens. The parent (compact_nlp.peers.workers) computes fidelity against PyTorch fp32.
`PY worker_X.py SPEC.json --probe ROW` (a fresh process after the run) loads ROW's artifacts, runs one input and
prints {"load_s", "peak_rss_mb", "rss_before_load_mb"}: peak RSS is VmHWM, as compact_nlp.bench's load probe reads it.
"""

from __future__ import annotations

import importlib
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def read_inputs(path: str) -> list[dict]:
    """The encoded inputs a request file holds, each as batch-1 int64 arrays by input name."""
    rows = json.loads(Path(path).read_text())
    return [{k: np.asarray(v, dtype=np.int64)[None, :] for k, v in x.items()} for x in rows]


def read_spec() -> dict:
    if len(sys.argv) not in (2, 4) or (len(sys.argv) == 4 and sys.argv[2] != "--probe"):
        sys.exit(f"usage: PYTHON {Path(sys.argv[0]).name} SPEC.json [--probe ROW]")
    spec = json.loads(Path(sys.argv[1]).read_text())
    spec["inputs"] = read_inputs(spec["inputs"])
    spec["score_inputs"] = read_inputs(spec["score_inputs"]) if spec.get("score_inputs") else []
    long_inputs = json.loads(Path(spec["long_inputs"]).read_text()) if spec.get("long_inputs") else {}
    spec["long_inputs"] = {int(n): {k: np.asarray(v, dtype=np.int64)[None, :] for k, v in x.items()}
                           for n, x in long_inputs.items()}
    threads = spec["threads"]
    spec["threads"] = [threads] if isinstance(threads, int) else list(threads)
    spec["out"] = Path(spec["out"])
    spec["out"].mkdir(parents=True, exist_ok=True)
    return spec


def every_input(spec: dict) -> list[dict]:
    """The timed, scored and long inputs: what a runtime with static shapes must cover."""
    return [*spec["inputs"], *spec["score_inputs"], *spec["long_inputs"].values()]


def time_inputs(call, inputs: list[dict], rounds: int, warmup: int = 10, calls: int = 1) -> dict:
    """Latency of `call(input)` over `rounds` passes over every input (each called `calls` times a pass), as
    compact.bench's Timing summarises one variant: the median over the calls of each call's fastest pass, the median
    and p90 ms over all calls, and the noise floor (spread of the per-pass medians / the median over all calls).
    The other variants are not interleaved: they run in other processes. (This file runs in the peers' own
    environments, without compact_nlp: hence a second copy of that summary.)"""
    for i in range(warmup):
        call(inputs[i % len(inputs)])
    times, round_medians = [], []
    for _ in range(rounds):
        this_round = []
        for x in inputs:
            for _ in range(calls):
                start = time.perf_counter()
                call(x)
                this_round.append((time.perf_counter() - start) * 1e3)
        times += this_round
        round_medians.append(statistics.median(this_round))
    median = statistics.median(times)
    fastest = np.asarray(times).reshape(rounds, -1).min(axis=0)
    spread = (max(round_medians) - min(round_medians)) / median if len(round_medians) > 1 else 0.0
    return {"median_ms": round(float(np.median(fastest)), 3), "median_all_ms": round(median, 3),
            "p90_ms": round(float(np.percentile(times, 90)), 3), "noise_floor": round(spread, 3), "calls": len(times)}


def pooled(hidden: np.ndarray, length: int) -> np.ndarray:
    """Mean of the first `length` token vectors of a (1, T, H) or (T, H) output (T >= length when padded)."""
    hidden = np.asarray(hidden, dtype=np.float32)
    return hidden.reshape(-1, hidden.shape[-1])[:length].mean(0)


def size_mb(*paths) -> float:
    total = 0
    for path in map(Path, paths):
        total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return round(total / 2**20, 2)


def finish_output(spec: dict):
    """Raw output -> logits as they are, or hidden states mean-pooled over the input's real tokens."""
    if spec["output"] == "logits":
        return lambda y, x: np.asarray(y, dtype=np.float32).reshape(-1)
    return lambda y, x: pooled(y, x["input_ids"].shape[1])


def _save(spec: dict, outputs: np.ndarray) -> str:
    file = spec["out"] / f"outputs-{len(list(spec['out'].glob('outputs-*.npy')))}.npy"
    np.save(file, outputs)
    return str(file)


def measure_row(spec: dict, name: str, load, files) -> dict:
    """One row: its outputs on the inputs (and score inputs), then its latency at real lengths and on each long input
    at each thread count, loading the runtime afresh for each count; an exception becomes the row's error."""
    finish = finish_output(spec)
    try:
        latency = {}
        for i, threads in enumerate(spec["threads"] or [1]):
            call = load(name, threads)
            if i == 0:
                outputs = np.stack([finish(call(x), x) for x in spec["inputs"]])
                scored = np.stack([finish(call(x), x) for x in spec["score_inputs"]]) if spec["score_inputs"] else None
            if not spec["threads"]:
                break
            latency[f"real_{threads}t"] = time_inputs(call, spec["inputs"], spec.get("real_rounds") or spec["rounds"])
            for length, x in spec["long_inputs"].items():
                latency[f"{length}_{threads}t"] = time_inputs(call, [x], spec["rounds"], 2, spec.get("calls", 5))
    except Exception as error:  # noqa: BLE001 - the row reports what failed, the other rows still run
        traceback.print_exc()
        return {"name": name, "error": f"{type(error).__name__}: {str(error)[:300]}"}
    first = latency.get(f"real_{spec['threads'][0]}t") if spec["threads"] else None
    return {"name": name, "median_ms": first["median_ms"] if first else None, "latency": latency,
            "size_mb": size_mb(*files), "files": [Path(f).name for f in files], "outputs": _save(spec, outputs),
            "score_outputs": _save(spec, scored) if scored is not None else None}


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def probe(spec: dict, load, name: str, modules: tuple[str, ...]) -> None:
    """Load time and peak RSS of one row in this fresh process (its runtime's modules imported before, as
    compact_nlp.bench's probe imports onnxruntime before it loads a session)."""
    for module in modules:
        importlib.import_module(module)
    before = _peak_mb()
    start = time.perf_counter()
    call = load(name, spec["threads"][0] if spec["threads"] else 1)
    load_s = time.perf_counter() - start
    call(spec["inputs"][0])
    print(json.dumps({"load_s": round(load_s, 3), "peak_rss_mb": round(_peak_mb(), 1),
                      "rss_before_load_mb": round(before, 1)}))


def main(rows: tuple[str, ...], convert, load, runtime, modules: tuple[str, ...] = ()) -> None:
    """Run a worker: convert, then measure every row (or, with --probe ROW, load ROW's converted files; `modules`:
    what the runtime imports, imported before the probe's clock starts)."""
    spec = read_spec()
    if len(sys.argv) == 4:
        artifacts = json.loads((spec["out"] / "artifacts.json").read_text())
        probe(spec, lambda name, threads: load(spec, artifacts, name, threads), sys.argv[3], modules)
        return
    artifacts = convert(spec)
    (spec["out"] / "artifacts.json").write_text(json.dumps(artifacts))
    measured = [measure_row(spec, name, lambda n, threads: load(spec, artifacts, n, threads), artifacts["files"])
                for name in rows]
    (spec["out"] / "result.json").write_text(json.dumps({"runtime": runtime(artifacts), "rows": measured}))

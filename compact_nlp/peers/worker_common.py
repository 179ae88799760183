"""What every peer worker shares. A worker runs in the peer's own environment (bench/peers_setup.sh), not compact's,
so this file imports nothing from compact; a worker imports it as a sibling module (the script's folder is on
sys.path). The protocol: `PY worker_X.py SPEC.json`; SPEC names the transformers folder (hf_folder), the ONNX graph
compact exported (onnx), the token ids (inputs: a JSON file, a list of {input_ids, attention_mask, token_type_ids} lists,
batch 1, unpadded), threads, rounds, the output ("logits" or "last_hidden_state") and the folder to write (out).
The worker writes out/result.json: {"runtime": "lib version", "rows": [{"name", "median_ms", "size_mb", "outputs"}
or {"name", "error"}]}, each row's outputs (N, D) in an .npy file: logits, or the embeddings mean-pooled over the real
tokens. The parent (compact_nlp.peers.measure) computes fidelity against PyTorch fp32.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def read_spec() -> dict:
    if len(sys.argv) != 2:
        sys.exit(f"usage: PYTHON {Path(sys.argv[0]).name} SPEC.json")
    spec = json.loads(Path(sys.argv[1]).read_text())
    inputs = json.loads(Path(spec["inputs"]).read_text())
    spec["inputs"] = [{k: np.asarray(v, dtype=np.int64)[None, :] for k, v in x.items()} for x in inputs]
    spec["out"] = Path(spec["out"])
    spec["out"].mkdir(parents=True, exist_ok=True)
    return spec


def time_inputs(call, inputs: list[dict], rounds: int, warmup: int = 10) -> float:
    """Median ms of `call(input)` over `rounds` passes over every input, as compact.bench times one variant (the
    other variants are not interleaved: they run in other processes)."""
    for x in inputs[:warmup]:
        call(x)
    times = []
    for _ in range(rounds):
        for x in inputs:
            start = time.perf_counter()
            call(x)
            times.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(times), 4)


def pooled(hidden: np.ndarray, length: int) -> np.ndarray:
    """Mean of the first `length` token vectors of a (1, T, H) or (T, H) output (T >= length when padded)."""
    hidden = np.asarray(hidden, dtype=np.float32)
    return hidden.reshape(-1, hidden.shape[-1])[:length].mean(0)


def size_mb(*paths) -> float:
    total = 0
    for path in map(Path, paths):
        total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return round(total / 2**20, 2)


def row(spec: dict, name: str, call, files, finish=lambda y, x: y) -> dict:
    """Time `call` over the inputs and save its outputs (finish(raw output, input) -> logits or pooled vector);
    an exception becomes the row's error instead of a number."""
    try:
        outputs = np.stack([np.asarray(finish(call(x), x), dtype=np.float32).reshape(-1) for x in spec["inputs"]])
        median = time_inputs(call, spec["inputs"], spec["rounds"])
    except Exception as error:  # noqa: BLE001 - the row reports what failed, the other rows still run
        traceback.print_exc()
        return {"name": name, "error": f"{type(error).__name__}: {str(error)[:300]}"}
    file = spec["out"] / f"{len(list(spec['out'].glob('outputs-*.npy')))}".join(("outputs-", ".npy"))
    np.save(file, outputs)
    return {"name": name, "median_ms": median, "size_mb": size_mb(*files), "outputs": str(file)}


def finish_output(spec: dict):
    """The finish() of row(): logits as they are, hidden states mean-pooled over the input's real tokens."""
    if spec["output"] == "logits":
        return lambda y, x: np.asarray(y, dtype=np.float32).reshape(-1)
    return lambda y, x: pooled(y, x["input_ids"].shape[1])


def write(spec: dict, runtime: str, rows: list[dict]) -> None:
    (spec["out"] / "result.json").write_text(json.dumps({"runtime": runtime, "rows": rows}))

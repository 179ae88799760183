"""The peers that run in their own environments (bench/peers_setup.sh): each worker script converts the model with
its runtime's own recommended recipe, times itself on compact's token ids and saves its outputs; this module runs it
and turns what it wrote into PeerResult rows. Their timings are NOT interleaved with compact's or each other's (they
run in separate processes one after another): compare them within one measure_int8_peers run, on an idle machine."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .envs import peer_python
from .fidelity import fidelity
from .result import PeerResult, skipped

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Worker:
    env: str                  # the environment under the peer root
    script: str               # the worker file in this folder
    rows: tuple[str, ...]     # the rows it reports (skipped together when the environment is missing)


LITERT = "LiteRT int8 (ai-edge-quantizer)"
CTRANSLATE2 = "CTranslate2 int8"
OPENVINO_DEFAULT = "OpenVINO int8 (NNCF, default hint)"
OPENVINO_F32 = "OpenVINO int8 (NNCF, f32 hint)"
WORKERS = (Worker("litert", "worker_litert.py", (LITERT,)),
           Worker("ctranslate2", "worker_ctranslate2.py", (CTRANSLATE2,)),
           Worker("openvino", "worker_openvino.py", (OPENVINO_DEFAULT, OPENVINO_F32)))


def write_inputs(inputs: list[dict], path: Path) -> Path:
    path.write_text(json.dumps([{k: v[0].tolist() for k, v in x.items()} for x in inputs]))
    return path


def run_worker(worker: Worker, spec: dict, reference: np.ndarray, output: str, timeout: float) -> list[PeerResult]:
    """Run one worker in its environment; every row it should report, measured or skipped with the reason."""
    python, reason = peer_python(worker.env)
    if python is None:
        return [skipped(name, reason) for name in worker.rows]
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "spec.json"
    spec_file.write_text(json.dumps(spec))
    try:
        done = subprocess.run([str(python), str(HERE / worker.script), str(spec_file)], capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return [skipped(name, f"{worker.script} ran past {timeout:.0f} s") for name in worker.rows]
    (out / "worker.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0 or not (out / "result.json").exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return [skipped(name, f"{worker.script} failed (exit {done.returncode}): {tail[0][:300]}")
                for name in worker.rows]
    return rows_of(json.loads((out / "result.json").read_text()), reference, output)


def rows_of(result: dict, reference: np.ndarray, output: str) -> list[PeerResult]:
    rows = []
    for row in result["rows"]:
        if "error" in row:
            rows.append(PeerResult(row["name"], result["runtime"], False, reason=row["error"]))
            continue
        value, minimum, metric = fidelity(reference, np.load(row["outputs"]), output)
        rows.append(PeerResult(row["name"], result["runtime"], True, median_ms=row["median_ms"],
                               size_mb=row["size_mb"], fidelity=value, fidelity_min=minimum, fidelity_metric=metric))
    return rows

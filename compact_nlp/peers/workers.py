"""The peers that run in their own environments (bench/peers_setup.sh): each worker script converts the model with
its runtime's own recommended recipe, times itself on compact's token ids and saves its outputs; this module runs it
and turns what it wrote into PeerResult rows. Their timings are NOT interleaved with compact's or each other's (they
run in separate processes one after another): compare them within one run, on an otherwise idle machine."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
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


@dataclass
class WorkerRequest:
    """What a worker is asked to measure (the SPEC of worker_common), with the arrays still in memory."""
    hf_folder: Path                   # the model as a transformers folder
    onnx: Path                        # transformers' own ONNX graph of it (OpenVINO converts it)
    inputs: list[dict]                # timed at their real lengths, batch 1, unpadded; fidelity is measured on them
    reference: np.ndarray             # PyTorch fp32's (N, D) outputs on `inputs`
    threads: tuple[int, ...] = (1,)   # () = outputs only, no timing
    rounds: int = 3                   # passes over each long input (and over `inputs` unless real_rounds)
    output: str = "logits"
    real_rounds: int | None = None
    calls: int = 5                    # calls per round on each long input
    long_inputs: dict[int, dict] = field(default_factory=dict)  # {length: one input of that many real tokens}
    score_inputs: list[dict] = field(default_factory=list)     # outputs saved, untimed (a dev set to score)
    probe: bool = False               # load time and peak RAM of each row in a fresh process
    timeout: float = 900


@dataclass
class PeerRun:
    result: PeerResult
    score_outputs: np.ndarray | None = None   # the row's outputs on the request's score_inputs


def _as_lists(x: dict) -> dict:
    return {k: np.asarray(v)[0].tolist() for k, v in x.items()}


def write_inputs(inputs: list[dict], path: Path) -> Path:
    path.write_text(json.dumps([_as_lists(x) for x in inputs]))
    return path


def _spec_file(request: WorkerRequest, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    spec = {"hf_folder": str(request.hf_folder), "onnx": str(request.onnx), "threads": list(request.threads),
            "rounds": request.rounds, "real_rounds": request.real_rounds, "calls": request.calls,
            "output": request.output, "out": str(out), "inputs": str(write_inputs(request.inputs, out / "inputs.json")),
            "score_inputs": (str(write_inputs(request.score_inputs, out / "score_inputs.json"))
                             if request.score_inputs else None), "long_inputs": None}
    if request.long_inputs:
        spec["long_inputs"] = str(out / "long_inputs.json")
        (out / "long_inputs.json").write_text(json.dumps({n: _as_lists(x) for n, x in request.long_inputs.items()}))
    (out / "spec.json").write_text(json.dumps(spec))
    return out / "spec.json"


def run_worker(worker: Worker, request: WorkerRequest, out: Path) -> list[PeerRun]:
    """Run one worker in its environment; every row it should report, measured or skipped with the reason."""
    python, reason = peer_python(worker.env)
    if python is None:
        return [PeerRun(skipped(name, reason)) for name in worker.rows]
    spec_file = _spec_file(request, Path(out))
    try:
        done = subprocess.run([str(python), str(HERE / worker.script), str(spec_file)], capture_output=True,
                              text=True, timeout=request.timeout, check=False)
    except subprocess.TimeoutExpired:
        return [PeerRun(skipped(name, f"{worker.script} ran past {request.timeout:.0f} s")) for name in worker.rows]
    (Path(out) / "worker.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0 or not (Path(out) / "result.json").exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return [PeerRun(skipped(name, f"{worker.script} failed (exit {done.returncode}): {tail[0][:300]}"))
                for name in worker.rows]
    runs = rows_of(json.loads((Path(out) / "result.json").read_text()), request.reference, request.output)
    for run in runs:
        if request.probe and run.result.available:
            _probe(python, worker, spec_file, run.result, request.timeout)
        elif run.result.available:
            run.result.load_note = "not probed"
    return runs


def _probe(python: Path, worker: Worker, spec_file: Path, result: PeerResult, timeout: float) -> None:
    """Fill in the row's load time and peak RAM from a fresh process of its worker (--probe), or say why not."""
    try:
        done = subprocess.run([str(python), str(HERE / worker.script), str(spec_file), "--probe", result.name],
                              capture_output=True, text=True, timeout=timeout, check=False)
        probed = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as error:
        probed, done = None, error
    if probed is None:
        tail = getattr(done, "stderr", "") or str(done)
        result.load_note = f"the load probe failed: {tail.strip().splitlines()[-1][:200] if tail.strip() else '?'}"
        return
    result.load_s, result.peak_rss_mb = probed["load_s"], probed["peak_rss_mb"]


def rows_of(result: dict, reference: np.ndarray, output: str) -> list[PeerRun]:
    runs = []
    for row in result["rows"]:
        if "error" in row:
            runs.append(PeerRun(PeerResult(row["name"], result["runtime"], False, reason=row["error"])))
            continue
        value, minimum, metric = fidelity(reference, np.load(row["outputs"]), output)
        peer = PeerResult(row["name"], result["runtime"], True, median_ms=row["median_ms"], size_mb=row["size_mb"],
                          fidelity=value, fidelity_min=minimum, fidelity_metric=metric,
                          latency=row.get("latency", {}), files=row.get("files", []))
        scored = np.load(row["score_outputs"]) if row.get("score_outputs") else None
        runs.append(PeerRun(peer, scored))
    return runs


def run_workers(request: WorkerRequest, out: Path, envs: tuple[str, ...] | None = None) -> list[PeerRun]:
    """Every worker whose environment is in `envs` (None: all), one after another, each writing into out/ENV."""
    return [run for worker in WORKERS if envs is None or worker.env in envs
            for run in run_worker(worker, request, Path(out) / worker.env)]

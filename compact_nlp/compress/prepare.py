"""Phase 3 of a compress (compact_nlp.compress.job): measure before training, once per OUT folder (OUT/plan/,
kept for a resumed run): the reference, the peers, every plan's predicted latency and size, the cost of training."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from transformers import AutoConfig, AutoTokenizer

from ..data import TaskData, task_texts
from ..export.machine import cpu_name
from ..io import replace_folder, write_json
from ..peers import ORT_DYNAMIC, fastest, measure_int8_peers
from .measure import (Baseline, ShapeRefused, basis, export_reference, factor_predictions, proxy_file, time_beside_reference,
                      train_seconds_per_example)
from .plans import Plan, all_plans

MEASURED_FILE, BASELINE_FILE = "measured.json", "baseline.json"
PEER_GRAPH = "peer_ort_dynamic_int8.onnx"  # ORT's int8 peer beside the reference, to time it in the same frame
PEER_EXAMPLES = 200


def selection_max_length(source: str, data: TaskData) -> int:
    """The longest input worth keeping: the 99th percentile of the training rows' token counts, rounded up to a
    multiple of 16, within the model's positions."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    rows = data.train.select(range(min(2000, len(data.train))))
    texts = [list(rows[c]) for c in data.spec.text_columns]
    lengths = [len(ids) for ids in tokenizer(*texts, truncation=False)["input_ids"]]
    limit = min(512, getattr(AutoConfig.from_pretrained(source), "max_position_embeddings", 512))
    return int(min(limit, max(32, 16 * math.ceil(float(np.percentile(lengths, 99)) / 16))))


class Predictor:
    """Latency and size of plans on this machine: proxies timed beside the reference, their timings kept in
    OUT/plan/ so that a resumed run measures nothing twice."""

    def __init__(self, source: str, selection: TaskData, max_length: int, folder: Path, reference: Path, log):
        self.source, self.selection, self.max_length, self.folder = source, selection, max_length, folder
        self.reference, self.log = reference, log
        saved = folder / MEASURED_FILE
        state = json.loads(saved.read_text()) if saved.is_file() else {}
        self.frame_ms: float | None = state.get("frame_ms")
        self.measured: dict = {k: tuple(v) if v else None for k, v in state.get("measured", {}).items()}
        self.refused: dict[str, str] = state.get("refused", {})

    def measure(self, plans: list[Plan]) -> None:
        """Export and time the proxies of the plans not measured yet, in one side-by-side run (a plan that searches
        its shape has no proxy: its budget predicts it)."""
        todo = {plan.shape_key: plan for plan in plans if plan.shape_key not in self.measured and not plan.searched}
        if not todo:
            return
        files = {}
        for i, (key, plan) in enumerate(todo.items()):
            self.log(f"measuring a proxy {i + 1}/{len(todo)}: {plan.label}")
            try:
                files[key] = proxy_file(plan, self.source, self.selection.spec, self.selection.train,
                                        self.max_length, self.folder / "proxies" / plan.slug)
            except ShapeRefused as refused:
                self.measured[key], self.refused[key] = None, str(refused)
                self.log(f"  left out: {refused}")
        if files:
            timed, self.frame_ms = time_beside_reference(files, self.reference, self.frame_ms,
                                                         self.selection.splits["validation"], self.selection.spec,
                                                         self.max_length)
            for key, path in files.items():
                self.measured[key] = (timed[key], round(path.stat().st_size / 2**20, 3))
        write_json(self.folder / MEASURED_FILE, {"frame_ms": self.frame_ms, "measured": self.measured,
                                                 "refused": self.refused})
        shutil.rmtree(self.folder / "proxies", ignore_errors=True)  # 100s of MB of graphs, timed now: never read again

    def predict(self, plans: list[Plan]) -> None:
        factor_predictions(plans, self.measured, self.frame_ms, round(self.reference.stat().st_size / 2**20, 3))

    def is_measured(self, plan: Plan) -> bool:
        return plan.shape_key in self.measured


def measurement_key(job, threads: int, max_length: int) -> str:
    """What the measurements depend on: the model, the data (their digests in the compress job), threads, length,
    the machine and runtime they were timed on (a cache folder copied to, or shared with, another machine is not
    read there), and how latency is timed (version 3: the session's own call, no longer compact's ORTModel
    wrapper; version 4: a pass over the inputs per file, no longer input by input; version 5: the median of each
    input's fastest pass, no longer the median over all calls; version 6: binary plans store the position embeddings
    at 8 bits, which changes their size)."""
    text = json.dumps({"inputs": job.inputs, "model": job.arguments.get("model"), "threads": threads,
                       "max_length": max_length, "cpu": cpu_name(), "cores": os.cpu_count(),
                       "onnxruntime": ort.__version__, "version": 6}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_folder(key: str) -> Path:
    """Where measurements of one (model, data, threads, max length) are kept between compress runs: changing only the
    goal reuses them. $COMPACT_CACHE, else ~/.cache/compact."""
    root = Path(os.environ.get("COMPACT_CACHE") or Path.home() / ".cache" / "compact")
    return root / "plans" / key


def restore_measurements(folder: Path, cache: Path) -> bool:
    """Seed OUT/plan from the cache (the baseline, the proxies' timings, the reference they were timed beside); True
    when it did. A folder that has its own measurements keeps them."""
    if (folder / BASELINE_FILE).is_file() or not (cache / BASELINE_FILE).is_file():
        return False
    replace_folder(cache, folder)
    return True


def keep_measurements(folder: Path, cache: Path) -> None:
    """Copy OUT/plan's measurements (not the proxies: they are re-made on demand) to the cache."""
    scratch = cache.with_name(cache.name + f".partial-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for name in (BASELINE_FILE, MEASURED_FILE):
        if (folder / name).is_file():
            shutil.copy2(folder / name, scratch / name)
    shutil.copytree(folder / "reference", scratch / "reference")
    shutil.rmtree(cache, ignore_errors=True)
    os.replace(scratch, cache)


def measure_phase(source: str, selection: TaskData, max_length: int, threads: int, out: Path,
                  log, device: str = "auto") -> tuple[Baseline, list[Plan], Predictor]:
    """The baseline, and every plan with its predicted latency and size (from the basis: compact_nlp.compress.measure);
    read back from OUT/plan/ when measured."""
    folder = out / "plan"
    original_layers = AutoConfig.from_pretrained(source).num_hidden_layers
    plans = all_plans(original_layers)
    spec, heldout = selection.spec, selection.splits["validation"]
    reference = export_reference(source, spec, folder / "reference")
    predictor = Predictor(source, selection, max_length, folder, reference, log)
    if (folder / BASELINE_FILE).is_file():
        baseline = Baseline(**json.loads((folder / BASELINE_FILE).read_text()))
    else:
        log(f"measuring the int8 peers on {min(PEER_EXAMPLES, len(heldout))} held-out inputs ({threads} thread(s))")
        peers = measure_int8_peers(folder / "reference", task_texts(heldout, spec, PEER_EXAMPLES), threads=threads,
                                   workdir=folder / "peers", max_length=max_length)
        peer = fastest(peers)
        predictor.measure(basis(original_layers, plans))
        peer_ms = _in_frame(peer, peers, predictor, folder)
        cost = train_seconds_per_example(source, spec, selection.train, max_length, device=device)
        baseline = Baseline(predictor.frame_ms, round(reference.stat().st_size / 2**20, 3), [asdict(p) for p in peers],
                            peer.name, peer_ms, cost, _mean_tokens(source, heldout, spec, max_length))
        write_json(folder / BASELINE_FILE, baseline.to_dict())
        shutil.rmtree(folder / "peers", ignore_errors=True)  # converted models, timed; ORT's graph is in reference/
    predictor.predict(plans)
    return baseline, plans, predictor


def _in_frame(peer, peers: list, predictor: Predictor, folder: Path) -> float:
    """The fastest peer's latency in the reference's timing frame. ORT's int8 peer graph is timed beside the
    reference here; another peer is placed by its ratio to that ORT row in the peers' own run (their processes time
    themselves, so that ratio is the one number not taken side by side with the reference)."""
    ort_row = next(p for p in peers if p.name == ORT_DYNAMIC and p.available)
    graph = folder / "reference" / PEER_GRAPH
    shutil.copy2(folder / "peers" / "ort" / "peer_dynamic.onnx", graph)
    timed, _ = time_beside_reference({ORT_DYNAMIC: graph}, predictor.reference, predictor.frame_ms,
                                     predictor.selection.splits["validation"], predictor.selection.spec,
                                     predictor.max_length)
    return round(timed[ORT_DYNAMIC] * peer.median_ms / ort_row.median_ms, 3)


@dataclass
class ValidationPeers:
    """The peers measured again at the end on the validation rows, whose lengths may differ from the held-out rows'
    (a shipped model's lead over a peer changes with the length), and ORT's int8 graph, to time beside the shipped
    model there; other peers are placed by their ratio to ORT's int8 in their own run, as at the start."""

    peers: list  # compact_nlp.peers.PeerResult, as dicts
    fastest: str
    ratio_to_ort: float  # the fastest peer's median over ORT dynamic int8's, in the peers' run
    ort_graph: str

    def to_dict(self) -> dict:
        return asdict(self)


def validation_peers(out: Path, texts: list, threads: int, max_length: int) -> ValidationPeers:
    """Phase 7's peers (kept in OUT/final/peers.json for a resumed run)."""
    saved = out / "final" / "peers.json"
    if saved.is_file():
        return ValidationPeers(**json.loads(saved.read_text()))
    peers = measure_int8_peers(out / "plan" / "reference", texts, threads=threads, workdir=out / "final" / "peers",
                               max_length=max_length)
    peer = fastest(peers)
    ort_row = next(p for p in peers if p.name == ORT_DYNAMIC and p.available)
    result = ValidationPeers([asdict(p) for p in peers], peer.name, peer.median_ms / ort_row.median_ms,
                             str(out / "plan" / "reference" / PEER_GRAPH))
    write_json(saved, result.to_dict())
    shutil.rmtree(out / "final" / "peers", ignore_errors=True)  # the peers' converted models, timed now
    return result


def _mean_tokens(source: str, heldout, spec, max_length: int) -> float:
    texts = [list(heldout[c][:PEER_EXAMPLES]) for c in spec.text_columns]
    encoded = AutoTokenizer.from_pretrained(source)(*texts, truncation=True, max_length=max_length)
    return round(float(np.mean([len(ids) for ids in encoded["input_ids"]])), 1)

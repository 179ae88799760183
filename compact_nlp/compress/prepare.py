"""Phase 3 of a compress (compact_nlp.compress.job): measure before training, once per OUT folder (OUT/plan/,
kept for a resumed run): the reference, the peers, every plan's predicted latency and size, the cost of training."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
from transformers import AutoConfig, AutoTokenizer

from ..data import TaskData, task_texts
from ..io import write_json
from ..peers import fastest, measure_int8_peers
from .measure import (Baseline, ShapeRefused, basis, export_reference, factor_predictions, proxy_file, time_beside_reference,
                      train_seconds_per_example)
from .plans import Plan, all_plans

MEASURED_FILE, BASELINE_FILE = "measured.json", "baseline.json"
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
    """Latency and size of plans on this machine: proxies measured beside the reference, kept in OUT/plan/ so that a
    resumed run measures nothing twice."""

    def __init__(self, source: str, selection: TaskData, max_length: int, folder: Path, reference: Path, log):
        self.source, self.selection, self.max_length, self.folder = source, selection, max_length, folder
        self.reference, self.log = reference, log
        saved = folder / MEASURED_FILE
        state = json.loads(saved.read_text()) if saved.is_file() else {}
        self.frame_ms: float | None = state.get("frame_ms")
        self.measured: dict = {k: tuple(v) if v else None for k, v in state.get("measured", {}).items()}
        self.refused: dict[str, str] = state.get("refused", {})

    def measure(self, plans: list[Plan]) -> None:
        """Export and time the proxies of the plans not measured yet, in one side-by-side run."""
        todo = {plan.shape_key: plan for plan in plans if plan.shape_key not in self.measured}
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

    def predict(self, plans: list[Plan]) -> None:
        factor_predictions(plans, self.measured, self.frame_ms, round(self.reference.stat().st_size / 2**20, 3))

    def is_measured(self, plan: Plan) -> bool:
        return plan.shape_key in self.measured


def measure_phase(source: str, selection: TaskData, max_length: int, threads: int, out: Path,
                  log) -> tuple[Baseline, list[Plan], Predictor]:
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
        cost = train_seconds_per_example(source, spec, selection.train, max_length)
        baseline = Baseline(predictor.frame_ms, round(reference.stat().st_size / 2**20, 3), [asdict(p) for p in peers],
                            peer.name, peer.median_ms, cost, _mean_tokens(source, heldout, spec, max_length))
        write_json(folder / BASELINE_FILE, baseline.to_dict())
    predictor.predict(plans)
    return baseline, plans, predictor


def _mean_tokens(source: str, heldout, spec, max_length: int) -> float:
    texts = [list(heldout[c][:PEER_EXAMPLES]) for c in spec.text_columns]
    encoded = AutoTokenizer.from_pretrained(source)(*texts, truncation=True, max_length=max_length)
    return round(float(np.mean([len(ids) for ids in encoded["input_ids"]])), 1)

"""What the planner measures before anything trains, on this machine and the user's held-out text:

- the reference: the user's model as an fp32 `.onnx`, the file every other latency is timed beside;
- the int8 peers (compact_nlp.peers): the fastest one sets the latency a `--speedup` is counted from;
- each plan's latency and size, predicted by exporting an untrained model of the plan's shape in the form that
  ships (fewer layers, each technique's prepare and export) and timing it beside the reference: weights change
  neither, so this predicts better than a regression over shapes would (HAT fits one because its search space has
  thousands of shapes; compress has a few dozen);
- what training costs per example, for the wall-time estimates.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer

from ..auto import AutoCompactModelForSequenceClassification
from ..data import SINGLE_LABEL, TaskSpec, task_texts
from ..distributed import uses_cuda
from ..protocol import tokenize
from ..registry import ExportContext, TrainContext, technique
from ..ship import export_for_shipping, latency_side_by_side, shipped_file
from ..shrink import shrink
from .plans import Plan, student_layers

REFERENCE = "reference"
PROXY_EXAMPLES = 80  # held-out inputs each proxy is timed on (the final numbers use 200 dev inputs)


class ShapeRefused(ValueError):
    """A technique refuses the plan's shape; the plan is left out and the report says why."""


@dataclass
class Baseline:
    """The reference's latency and size, the peers measured beside it, and what training costs."""

    reference_ms: float
    reference_size_mb: float
    peers: list  # compact_nlp.peers.PeerResult, as dicts
    fastest_peer: str
    fastest_peer_ms: float  # in the reference's timing frame (compact_nlp.compress.prepare)
    train_seconds_per_example: float
    mean_tokens: float

    def to_dict(self) -> dict:
        return asdict(self)


def load_start(model: str, spec: TaskSpec):
    return AutoCompactModelForSequenceClassification.from_pretrained(model, **spec.model_labels())


def export_reference(model: str, spec: TaskSpec, folder: Path) -> Path:
    """The user's model, with the task's labels, exported as fp32 `model.ort` (the form that ships) into `folder`."""
    if not (folder / "model.ort").is_file():
        start = load_start(model, spec)
        export_for_shipping(start, AutoTokenizer.from_pretrained(model), folder, mobile=True)
    return folder / "model.ort"


def proxy_file(plan: Plan, model: str, spec: TaskSpec, train, max_length: int, folder: Path) -> Path:
    """An untrained model of the plan's shape, exported in the form that ships: the file a trained model of this plan
    would ship (`model.ort`; a binary one's is packed and slower than its .onnx). Kept once written."""
    if folder.is_dir():
        return shipped_file(folder)
    tokenizer = AutoTokenizer.from_pretrained(model)
    proxy = load_start(model, spec)
    keep = student_layers(plan.original_layers, plan.layers)
    if keep is not None:
        proxy = shrink(proxy, layers=[i for i in range(plan.original_layers) if i not in keep])
    rows = train.select(range(min(128, len(train))))
    texts = task_texts(rows, spec)
    context = TrainContext(tokenizer, tokenize(rows, tokenizer, spec, max_length), texts)
    export = ExportContext(tokenizer, texts[:16], None, max_length, True, "arm", True)  # parity checks: a few do
    exporter = None
    for name, option in plan.options.items():
        try:
            config = technique(name).config(option.section)
            proxy = technique(name).prepare(proxy, config, context).model
        except ValueError as error:  # the technique refuses this shape (e.g. a keep ratio a shallow model cannot reach)
            raise ShapeRefused(f"{plan.label}: {error}") from None
        exporter = technique(name).exporter(config, export) or exporter
    _observe(proxy, tokenizer, context.train_features)
    scratch = folder.with_name(folder.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    export_for_shipping(proxy, tokenizer, scratch, mobile=True, exporter=exporter)
    shutil.rmtree(folder, ignore_errors=True)
    scratch.rename(folder)
    return shipped_file(folder)


def _observe(model, tokenizer, features, rows: int = 32) -> None:
    """A few forward passes in training mode, so that the quantizers of an untrained proxy see activation ranges
    (their export needs them; the values do not change the graph's latency or size)."""
    chunk = features[:rows]
    batch = tokenizer.pad({k: chunk[k] for k in ("input_ids", "attention_mask")}, return_tensors="pt")
    model.train()
    with torch.no_grad():
        model(**batch)
    model.eval()


def time_beside_reference(files: dict[str, Path], reference: Path, reference_ms: float | None, heldout,
                          spec: TaskSpec, max_length: int) -> tuple[dict[str, float], float]:
    """Median ms of each file timed beside the reference on the held-out rows, brought into the frame of an earlier
    reference timing (`reference_ms`; None: this one is the frame). Returns ({name: ms}, the frame's reference ms)."""
    timed = latency_side_by_side({REFERENCE: reference, **files}, heldout, spec, max_length, examples=PROXY_EXAMPLES)
    frame = reference_ms or timed[REFERENCE]["median"]
    scale = frame / timed[REFERENCE]["median"]
    return {name: round(timed[name]["median"] * scale, 3) for name in files}, frame


def basis(original_layers: int, plans: list[Plan]) -> list[Plan]:
    """The plans whose proxies are measured first: each depth alone, each technique option alone at full depth (a
    search aside: its shape exists only once it has run)."""
    singles = [p for p in plans if (p.layers < original_layers and not p.options) or
               (p.layers == original_layers and len(p.options) == 1 and not p.searched)]
    return singles


def factor_predictions(plans: list[Plan], measured: dict[str, tuple[float, float]], reference_ms: float,
                       reference_mb: float) -> None:
    """Each plan's latency and size from the basis (`measured`: shape key -> (ms, MB), or None where a technique
    refused the shape), as the product of its depth's and its options' ratios to the reference; a plan that was
    measured itself keeps its measurement (the planner measures the plans it will try:
    compact_nlp.compress.prepare). A refused plan, or one built on a refused part, predicts None. A search's part
    is its budget's share of the latency, and leaves the size unknown (None)."""
    for plan in plans:
        if plan.shape_key in measured:
            plan.predicted_ms, plan.predicted_size_mb = measured[plan.shape_key] or (None, None)
            continue
        ms, mb = reference_ms, reference_mb
        parts = [Plan(plan.original_layers, plan.layers)] if plan.layers < plan.original_layers else []
        parts += [Plan(plan.original_layers, plan.original_layers, {name: option})
                  for name, option in plan.options.items() if not option.searches]
        for option in plan.options.values():
            ms = ms * option.latency_share if option.searches else ms
        for part in parts:
            if measured.get(part.shape_key) is None:
                ms = mb = None
                break
            part_ms, part_mb = measured[part.shape_key]
            ms, mb = ms * part_ms / reference_ms, mb * part_mb / reference_mb
        if ms is None:
            plan.predicted_ms = plan.predicted_size_mb = None
            continue
        plan.predicted_ms, plan.predicted_size_mb = round(ms, 3), None if plan.searched else round(mb, 3)


def train_seconds_per_example(model: str, spec: TaskSpec, train, max_length: int, batch: int = 16,
                              batches: int = 8, device: str = "auto") -> float:
    """Seconds of one training step per example (forward, backward, optimizer) of the full model on real rows, on
    the training `device`: the fastest of `batches` steps, since other jobs on a shared machine only ever slow a step
    down (the teacher's training then measures the real speed, and the attempts are planned from that)."""
    tokenizer = AutoTokenizer.from_pretrained(model)
    where = torch.device("cuda" if uses_cuda(device) else "cpu")
    net = load_start(model, spec).to(where).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-5)
    rows = train.shuffle(seed=0).select(range(min(batches * batch, len(train))))
    features = tokenize(rows, tokenizer, spec, max_length)
    times = []
    for start in range(0, len(features), batch):
        chunk = features[start:start + batch]
        encoded = tokenizer.pad({k: chunk[k] for k in ("input_ids", "attention_mask")}, return_tensors="pt").to(where)
        labels = torch.tensor(chunk["labels"], dtype=torch.long if spec.problem_type == SINGLE_LABEL else torch.float)
        began = time.perf_counter()
        loss = net(**encoded, labels=labels.to(where)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if where.type == "cuda":
            torch.cuda.synchronize()  # the GPU's work is done when the clock stops
        times.append((time.perf_counter() - began) / len(chunk["labels"]))
    return min(times[1:] if len(times) > 1 else times)

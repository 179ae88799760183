"""Latency data measured on the target runtime, and HAT's MLP latency predictor trained on it.

    spec = LatencySpec(precision="int8-dynamic", threads=1, batch=1, sequence_length=32)
    data = collect_latency(supernet, measurer, "latency.jsonl", count=200)       # append-only, resumable
    predictor = LatencyPredictor.fit(data, space)       # HAT's MLP or a cost model, chosen on validation MAPE
    predictor.predict(sub)                                                      # ms, for the search

A latency budget only means something for one runtime, precision, thread count, batch and sequence length: the
`LatencySpec` is recorded with every measurement file and every predictor, and a predictor refuses a search that
asks for another one. The measurer is pluggable: any object with a `spec` and a `measure(model) -> list[float]`
(milliseconds of repeated calls) works, e.g. one that times the model on a phone. compact_nlp.search has the
ONNX Runtime CPU measurer that times the form that ships.

Before any SubTransformer, the same few models are measured several times over: the spread between those repeats is
the noise floor, the error no predictor can go below (HAT reports its predictor next to it too).
"""

from __future__ import annotations

import json
import os
import random
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from compact_nlp.io import atomic_path, write_json, write_text

from .extract import extract
from .space import SearchSpace, SubTransformer

LATENCY_FORMAT_VERSION = 1


class LatencySpecMismatch(ValueError):
    """Latency data or a predictor made for another runtime, precision, threads, batch, length or space."""


@dataclass(frozen=True)
class LatencySpec:
    """What a latency number means: where and how it was measured."""

    runtime: str = "onnxruntime-cpu"
    precision: str = "int8-dynamic"  # the form that ships: "fp32" or "int8-dynamic"
    threads: int = 1
    batch: int = 1
    sequence_length: int = 32
    hardware: str = ""  # the machine, in words (recorded, not compared: a user may rename it)
    # how the measured graph computes attention: "fused" (one MultiHeadAttention node per layer, what compact exports
    # since that fusion, compact_nlp/export/attention.py) or "decomposed" (latency data written before it)
    attention: str = "fused"

    def __post_init__(self):
        if self.precision not in ("fp32", "int8-dynamic"):
            raise ValueError(f"precision must be 'fp32' or 'int8-dynamic', got {self.precision!r}.")
        if self.attention not in ("fused", "decomposed"):
            raise ValueError(f"attention must be 'fused' or 'decomposed', got {self.attention!r}.")
        for name in ("threads", "batch", "sequence_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LatencySpec.{name} must be positive, got {getattr(self, name)}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LatencySpec:
        return cls(**{"attention": "decomposed", **data})  # data without the field predates the fused export

    def check_matches(self, wanted: LatencySpec, what: str) -> None:
        """Raise LatencySpecMismatch naming every field where `self` (what `what` was made for) differs."""
        fields = ("runtime", "precision", "threads", "batch", "sequence_length", "attention")
        diff = [f"{f}: {getattr(self, f)!r} vs {getattr(wanted, f)!r}" for f in fields
                if getattr(self, f) != getattr(wanted, f)]
        if diff:
            raise LatencySpecMismatch(
                f"{what} was made for another setting than the one asked for ({'; '.join(diff)}; made for vs asked "
                "for). Latency does not transfer between settings: collect latency data and fit a predictor for this "
                "one.")


class Measurer(Protocol):
    spec: LatencySpec

    def measure(self, model: nn.Module) -> list[float]:
        """Repeated timings (ms) of `model` in the spec's setting, after warm-up: single calls, or medians of rounds.
        The data keeps the smallest: interference from other processes only ever adds time (the advice of Python's
        timeit), and on a shared machine it comes in bursts."""


# --- the measurements (JSON lines: a header, then one line per measured model) -------------------------------------
@dataclass
class LatencyRecord:
    sub: SubTransformer
    ms: float  # the best (smallest) of the measurer's repeated timings
    repeat: int = 0  # > 0: one more measurement of a model already measured, for the noise floor


class LatencyData:
    """Measured SubTransformers, appended to a JSON-lines file one by one so an interrupted collection resumes."""

    def __init__(self, path: str | os.PathLike, spec: LatencySpec, space: SearchSpace):
        self.path, self.spec, self.space = Path(path), spec, space
        self.records: list[LatencyRecord] = []
        header = {"format": LATENCY_FORMAT_VERSION, "spec": spec.to_dict(), "space": space.to_dict(),
                  "space_fingerprint": space.fingerprint()}
        if self.path.exists() and self.path.stat().st_size:
            lines = self.path.read_text().splitlines()
            stored = json.loads(lines[0])
            LatencySpec.from_dict(stored["spec"]).check_matches(spec, f"the latency data in {self.path}")
            if stored["space_fingerprint"] != header["space_fingerprint"]:
                raise LatencySpecMismatch(
                    f"{self.path} was measured for another search space ({stored['space']}) than this one "
                    f"({space.to_dict()}); resume with the same space, or write to a new file.")
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by an interruption: measured again below
                    continue
                self.records.append(LatencyRecord(SubTransformer.from_dict(row["sub"]), row["ms"], row.get("repeat", 0)))
            if lines and not self.path.read_text().endswith("\n"):
                self._rewrite(header)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rewrite(header)

    def _rewrite(self, header: dict) -> None:
        rows = [json.dumps(header)] + [self._line(r) for r in self.records]
        write_text(self.path, "\n".join(rows) + "\n")

    @staticmethod
    def _line(record: LatencyRecord) -> str:
        return json.dumps({"sub": record.sub.to_dict(), "ms": record.ms, "repeat": record.repeat})

    def append(self, record: LatencyRecord) -> None:
        record.ms = round(record.ms, 4)  # what the file holds, so a resumed run computes the same budgets
        with open(self.path, "a") as f:
            f.write(self._line(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)

    def mean_latency(self) -> dict[SubTransformer, float]:
        """One number per distinct SubTransformer: the mean over its measurements."""
        by_sub: dict[SubTransformer, list[float]] = {}
        for r in self.records:
            by_sub.setdefault(r.sub, []).append(r.ms)
        return {sub: statistics.fmean(v) for sub, v in by_sub.items()}

    def noise_floor(self) -> dict:
        """The repeat-noise floor: for each model measured more than once, how far each measurement lies from the
        mean of its measurements (the error a perfect predictor would still show)."""
        by_sub: dict[SubTransformer, list[float]] = {}
        for r in self.records:
            by_sub.setdefault(r.sub, []).append(r.ms)
        repeated = {s: v for s, v in by_sub.items() if len(v) > 1}
        if not repeated:
            return {"models": 0}
        errors = [abs(ms - statistics.fmean(v)) for v in repeated.values() for ms in v]
        relative = [abs(ms - statistics.fmean(v)) / statistics.fmean(v) for v in repeated.values() for ms in v]
        return {"models": len(repeated), "measurements": sum(len(v) for v in repeated.values()),
                "rmse_ms": round(statistics.fmean(e * e for e in errors) ** 0.5, 4),
                "mape": round(100 * statistics.fmean(relative), 2)}


def collect_latency(supernet, measurer: Measurer, path: str | os.PathLike, count: int, seed: int = 0,
                    noise_models: int = 4, noise_repeats: int = 5, passes: int = 1, progress=None,
                    on_noise_floor=None) -> LatencyData:
    """Measure `count` SubTransformers (random draws) with `measurer`, after the noise floor (the largest, the
    smallest and random models, `noise_models` in all, measured `noise_repeats` times each). `passes` > 1 measures
    the `count` models again, pass after pass, and the predictor learns their mean: on a noisy machine the mean of k
    measurements is about sqrt(k) times closer to the truth. Appends to `path`; run again with the same arguments
    (or more passes or models) to resume where it stopped.

    on_noise_floor(floor): called once the noise models are measured, before the long part, with their noise floor
    (`LatencyData.noise_floor`): the moment to tell a user that the machine is too busy to measure on."""
    space = supernet.space
    data = LatencyData(path, measurer.spec, space)
    rng = random.Random(seed)
    noise = [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(max(0, noise_models - 2)))]
    plan = [(sub, r) for sub in noise[:noise_models] for r in range(1, noise_repeats + 1)]
    planned = {sub for sub, _ in plan}
    while len(plan) < noise_models * noise_repeats + count:  # distinct models, drawn in a fixed order from the seed
        sub = space.sample(rng)
        if sub not in planned:
            planned.add(sub)
            plan.append((sub, 0))
        if len(planned) >= space.size():
            break
    drawn = [sub for sub, repeat in plan if repeat == 0]
    plan += [(sub, p) for p in range(1, passes) for sub in drawn]  # repeat p: the (p+1)-th measurement of a model
    done = {(r.sub, r.repeat) for r in data.records}
    noise_plan, rest = plan[:noise_models * noise_repeats], plan[noise_models * noise_repeats:]
    with torch.no_grad():
        for block in (noise_plan, rest):
            for sub, repeat in block:
                if (sub, repeat) in done:
                    continue
                samples = measurer.measure(extract(supernet, sub).eval())
                data.append(LatencyRecord(sub, min(samples), repeat))
                if progress is not None:
                    progress(len(data.records), len(plan), sub, data.records[-1].ms)
            if block is noise_plan and on_noise_floor is not None:
                on_noise_floor(data.noise_floor())
    return data


# --- the predictor --------------------------------------------------------------------------------------------------
def features(sub: SubTransformer, space: SearchSpace) -> list[float]:
    """HAT's latency features for an encoder: hidden size, depth, average heads and average FFN width per layer,
    each divided by the space's largest choice."""
    return [sub.hidden / space.hidden[0], sub.depth / space.depth[0],
            statistics.fmean(sub.heads) / space.heads[0], statistics.fmean(sub.ffn) / space.ffn[0]]


def cost_terms(sub: SubTransformer) -> list[float]:
    """The encoder's work by kind, for the cost-model predictor: per-call overhead, per-layer ops, attention per head,
    the projections (hidden x heads: Q, K, V, O at a fixed head size), the FFN (hidden x FFN width), elementwise work on
    the FFN activations, LayerNorm/residual/quantize work per layer (depth x hidden), embeddings and pooler. Latency is
    close to linear in these, so a few hundred measurements pin down their weights (ms per unit) where an MLP on HAT's
    four features overfits. Scaled to order one."""
    hidden, heads, ffn = sub.hidden, sum(sub.heads), sum(sub.ffn)
    return [1.0, float(sub.depth), float(heads), hidden * heads / 1e4, hidden * ffn / 1e6, ffn / 1e3,
            sub.depth * hidden / 1e3, hidden / 1e2, hidden * hidden / 1e5]


PREDICTOR_KINDS = ("auto", "mlp", "cost")


class _MLP(nn.Module):
    def __init__(self, inputs: int, width: int, layers: int):
        super().__init__()
        blocks, size = [], inputs
        for _ in range(layers):
            blocks += [nn.Linear(size, width), nn.ReLU()]
            size = width
        self.net = nn.Sequential(*blocks, nn.Linear(size, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def _split(items: list, seed: int, fractions=(0.7, 0.15)) -> tuple[list, list, list]:
    items = list(items)
    random.Random(seed).shuffle(items)
    a = round(len(items) * fractions[0])
    b = a + round(len(items) * fractions[1])
    return items[:a], items[a:b], items[b:]


def _errors(predicted: list[float], measured: list[float]) -> dict:
    if not measured:
        return {"count": 0}
    pairs = list(zip(predicted, measured))
    return {"count": len(pairs),
            "rmse_ms": round(statistics.fmean((p - m) ** 2 for p, m in pairs) ** 0.5, 4),
            "mape": round(100 * statistics.fmean(abs(p - m) / m for p, m in pairs), 2)}


class LatencyPredictor:
    """Milliseconds from a SubTransformer's architecture, of one of two kinds:

    - "mlp": HAT's predictor, an MLP (3 hidden layers of 400) on HAT's features (`features`);
    - "cost": a linear model on the encoder's cost terms (`cost_terms`), fitted for relative error (least squares on
      rows divided by the measured latency, so it minimises what MAPE measures). Written here: it is one
      torch.linalg.lstsq call on terms no library defines.

    `fit(kind="auto")` fits both on the same training split and keeps the one with the lower validation MAPE."""

    def __init__(self, spec: LatencySpec, space: SearchSpace, width: int = 400, layers: int = 3, kind: str = "mlp"):
        if kind not in PREDICTOR_KINDS[1:]:
            raise ValueError(f"predictor kind must be one of {list(PREDICTOR_KINDS[1:])}, got {kind!r}.")
        self.spec, self.space, self.kind = spec, space, kind
        self.width, self.layers = width, layers
        self.net = _MLP(4, width, layers) if kind == "mlp" else None
        self.cost_weights = torch.zeros(len(cost_terms(space.largest()))) if kind == "cost" else None
        self.scale_ms = 1.0  # MLP targets are divided by this (the largest measured latency) for training
        self.metrics: dict = {}

    @classmethod
    def fit(cls, data: LatencyData, space: SearchSpace | None = None, seed: int = 0, epochs: int = 2000,
            lr: float = 1e-3, width: int = 400, layers: int = 3, kind: str = "auto") -> LatencyPredictor:
        """Train on 70% of the measured models; the MLP keeps the epoch with the lowest validation error (15%), and
        "auto" keeps the kind with the lowest validation MAPE. Reports RMSE and MAPE on the last 15% (never seen in
        training or selection) next to the noise floor, for every kind fitted."""
        if kind not in PREDICTOR_KINDS:
            raise ValueError(f"predictor kind must be one of {list(PREDICTOR_KINDS)}, got {kind!r}.")
        space = space or data.space
        latency = data.mean_latency()
        if len(latency) < 10:
            raise ValueError(f"only {len(latency)} measured SubTransformers in {data.path}: collect at least 10 "
                             "(HAT used ~2000; a few hundred fit a CPU session) before fitting a predictor.")
        train, val, test = _split(sorted(latency, key=str), seed)
        fitted = {}
        if kind in ("auto", "mlp"):
            fitted["mlp"] = cls._fit_mlp(data.spec, space, latency, train, val, seed, epochs, lr, width, layers)
        if kind in ("auto", "cost"):
            fitted["cost"] = cls._fit_cost(data.spec, space, latency, train)
        kinds = {name: {"validation_errors": _errors([p.predict(s) for s in val], [latency[s] for s in val]),
                        "test": _errors([p.predict(s) for s in test], [latency[s] for s in test])}
                 for name, p in fitted.items()}
        chosen = min(fitted, key=lambda name: kinds[name]["validation_errors"].get("mape", 0.0))
        predictor = fitted[chosen]
        predictor.metrics = {
            "kind": chosen, "measured_models": len(latency), "train": len(train), "validation": len(val),
            **kinds[chosen], "noise_floor": data.noise_floor(), "kinds": kinds,
        }
        return predictor

    @classmethod
    def _fit_mlp(cls, spec, space, latency, train, val, seed, epochs, lr, width, layers) -> LatencyPredictor:
        torch.manual_seed(seed)
        predictor = cls(spec, space, width, layers, kind="mlp")
        predictor.scale_ms = max(latency.values())

        def tensors(subs):
            x = torch.tensor([features(s, space) for s in subs], dtype=torch.float32)
            y = torch.tensor([latency[s] / predictor.scale_ms for s in subs], dtype=torch.float32)
            return x, y

        (xt, yt), (xv, yv) = tensors(train), tensors(val)
        optimizer = torch.optim.Adam(predictor.net.parameters(), lr=lr)
        best, best_state = float("inf"), None
        for _ in range(epochs):
            predictor.net.train()
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(predictor.net(xt), yt)
            loss.backward()
            optimizer.step()
            predictor.net.eval()
            with torch.no_grad():
                val_loss = float(nn.functional.mse_loss(predictor.net(xv), yv)) if len(val) else float(loss)
            if val_loss < best:
                best, best_state = val_loss, {k: v.clone() for k, v in predictor.net.state_dict().items()}
        predictor.net.load_state_dict(best_state)
        return predictor

    @classmethod
    def _fit_cost(cls, spec, space, latency, train) -> LatencyPredictor:
        predictor = cls(spec, space, kind="cost")
        terms = torch.tensor([cost_terms(s) for s in train], dtype=torch.float64)
        measured = torch.tensor([latency[s] for s in train], dtype=torch.float64)
        # rows divided by the measured ms: the residuals are relative errors
        solution = torch.linalg.lstsq(terms / measured[:, None], torch.ones(len(train), 1, dtype=torch.float64))
        predictor.cost_weights = solution.solution[:, 0].float()
        return predictor

    def predict(self, sub: SubTransformer) -> float:
        with torch.no_grad():
            if self.kind == "cost":
                return float(torch.tensor(cost_terms(sub)) @ self.cost_weights)
            x = torch.tensor([features(sub, self.space)], dtype=torch.float32)
            return float(self.net.eval()(x)[0]) * self.scale_ms

    def check(self, spec: LatencySpec, space: SearchSpace) -> None:
        """Refuse a search in another setting or space than the one this predictor was trained for."""
        self.spec.check_matches(spec, "the latency predictor")
        if space.fingerprint() != self.space.fingerprint():
            raise LatencySpecMismatch(f"the latency predictor was trained on another search space "
                                      f"({self.space.to_dict()}) than the search's ({space.to_dict()}).")

    def save(self, folder: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = self.net.state_dict() if self.kind == "mlp" else {"cost_weights": self.cost_weights}
        with atomic_path(folder / "latency_predictor.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        write_json(folder / "latency_predictor.json", {
            "format": LATENCY_FORMAT_VERSION, "kind": self.kind, "spec": self.spec.to_dict(),
            "space": self.space.to_dict(), "width": self.width, "layers": self.layers, "scale_ms": self.scale_ms,
            "metrics": self.metrics})

    @classmethod
    def load(cls, folder: str | os.PathLike) -> LatencyPredictor:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta_path = folder / "latency_predictor.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no latency predictor in {folder} (latency_predictor.json is missing); fit one "
                                    "with LatencyPredictor.fit(...) and save it there.")
        meta = json.loads(meta_path.read_text())
        predictor = cls(LatencySpec.from_dict(meta["spec"]), SearchSpace.from_dict(meta["space"]), meta["width"],
                        meta["layers"], kind=meta.get("kind", "mlp"))  # predictors saved before "kind" are MLPs
        tensors = load_file(folder / "latency_predictor.safetensors")
        if predictor.kind == "cost":
            predictor.cost_weights = tensors["cost_weights"]
        else:
            predictor.net.load_state_dict(tensors)
        predictor.scale_ms, predictor.metrics = meta["scale_ms"], meta["metrics"]
        return predictor

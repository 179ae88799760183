"""Measuring SubTransformers in the form that ships, for HAT's latency data: ONNX Runtime on this CPU (int8 when
the search is for int8), or a measurer of the user's own (hat.measurer), e.g. one that times on a phone."""

from __future__ import annotations

import importlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ..bench import inputs_of_length
from ..data import as_spec, task_texts
from ..export.onnx import export_onnx
from ..quant.config import Int8Config
from ..quant.onnx_int8 import quantize_graph
from ..runtime import session_options
from ..ship import machine
from .config import HatConfigError
from .latency import LatencySpec


class OnnxRuntimeMeasurer:
    """Time a CompactBert as it ships: exported to ONNX (the exporter `compact export` uses), dynamically quantized
    to int8 when the spec says so (compact_nlp.quant's PTQ, per-channel weights), run by ONNX Runtime on CPU with the
    spec's threads, on a real input of exactly the spec's sequence length (training sentences joined, no padding).

    Returns the median of each of `rounds` rounds of `calls` calls, after `warmup` calls; the latency data keeps the
    best round (see hat.latency). PyTorch is held to one thread while it times, so that no OpenMP worker left
    spinning by the export competes with ONNX Runtime for a core (on 2 cores that added up to 20% noise)."""

    def __init__(self, spec, tokenizer, texts: list[str], rounds: int = 7, calls: int = 15, warmup: int = 10):
        self.spec, self.rounds, self.calls, self.warmup = spec, rounds, calls, warmup
        rows = [inputs_of_length(tokenizer, texts, spec.sequence_length, start=17 * i) for i in range(spec.batch)]
        self.inputs = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}

    def session(self, model, folder: Path):
        path = folder / "model.onnx"
        export_onnx(model, path, check=False, fuse_attention=self.spec.attention == "fused")
        if self.spec.precision == "int8-dynamic":
            quantized = folder / "model_quantized.onnx"
            # no calibration text here, so no smoothing (Int8Config() would warn on every latency sample)
            quantize_graph(path, quantized, Int8Config(smoothing=0.0))
            path = quantized
        return ort.InferenceSession(str(path), session_options(self.spec.threads), providers=["CPUExecutionProvider"])

    def measure(self, model) -> list[float]:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with tempfile.TemporaryDirectory() as scratch:
                return self.time_session(self.session(model, Path(scratch)))
        finally:
            torch.set_num_threads(threads)

    def time_session(self, session) -> list[float]:
        """The timing loop alone, for an ONNX Runtime session made elsewhere (a shipped `.ort`, to check a
        measurement against the file users get)."""
        names = {i.name for i in session.get_inputs()}
        feed = {k: v for k, v in self.inputs.items() if k in names}
        for _ in range(self.warmup):
            session.run(None, feed)
        medians = []
        for _ in range(self.rounds):
            times = []
            for _ in range(self.calls):
                start = time.perf_counter()
                session.run(None, feed)
                times.append((time.perf_counter() - start) * 1e3)
            medians.append(statistics.median(times))
        return medians


def latency_spec(config, fuse_attention: bool = True, typical: int | None = None):
    """The latency setting a search's budgets mean (HatConfig's precision, threads, batch, length; `typical`, the
    task's mean length, where hat.sequence_length is null) on this machine, in the graph form the recipe ships
    (export.fuse_attention)."""
    return LatencySpec(precision=config.precision, threads=config.threads, batch=config.batch,
                       sequence_length=config.sequence_length or typical,
                       hardware=f"{machine()['processor']}, {machine()['cores']} cores",
                       attention="fused" if fuse_attention else "decomposed")


def measuring_texts(train, task) -> list[str]:
    """The real training text the measurer joins into inputs of the spec's length (sentence pairs joined); task: its
    TaskSpec or GLUE name."""
    return [t if isinstance(t, str) else " ".join(t) for t in task_texts(train, as_spec(task), 2000)]


def typical_length(tokenizer, texts: list[str], max_length: int) -> int:
    """The mean token count of `texts` (special tokens included, cut at max_length), at least 8: at short lengths a
    layer's fixed cost weighs more than its width, so a budget measured at 32 tokens does not hold at 13."""
    counts = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    return max(8, round(sum(counts) / max(1, len(counts))))


def make_measurer(config, spec, tokenizer, texts: list[str]):
    """OnnxRuntimeMeasurer on this machine, or the user's own measurer named by hat.measurer ("module:factory",
    called with the spec, the tokenizer and real task texts): the way to time SubTransformers on the phone itself."""
    if config.measurer is None:
        return OnnxRuntimeMeasurer(spec, tokenizer, texts)
    module_name, attribute = config.measurer.split(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise HatConfigError(f"hat.measurer {config.measurer!r} cannot be loaded ({error}): name a module on the "
                             "Python path and a callable in it, as 'my_package.phone:PhoneMeasurer'.") from error
    measurer = factory(spec, tokenizer, texts)
    if not isinstance(getattr(measurer, "spec", None), LatencySpec) or not callable(getattr(measurer, "measure", None)):
        raise HatConfigError(f"hat.measurer {config.measurer!r} returned {type(measurer).__name__}, which lacks a "
                             "`spec` (a LatencySpec) or a `measure(model) -> list[float]` method "
                             "(hat.latency.Measurer).")
    return measurer

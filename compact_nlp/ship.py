"""What ships, measured: export a trained model, score the exported file on dev, time it against the original.

`ship()` is the one place that turns a trained model into a deployable folder with honest numbers; both
`CompactTrainer.save_compact()` and `compact run` call it. Every number is taken on the file that ships
(`model.ort`, else `model.onnx`) through ONNX Runtime, never on the PyTorch model it came from. "The original" is the
model the user started from (the teacher of a distillation, the fp32 model of a quantization): it is scored on the same
dev data and timed on the same inputs, interleaved with the shipped file, so the ratio survives a noisy machine.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from .auto import AutoCompactModelForSequenceClassification
from .bench import real_length_latency
from .data import TaskSpec, as_spec
from .export import export_model
from .export.machine import cpu_name, machine  # noqa: F401 (re-exported: cards and benches name the CPU)
from .metrics import compute_metrics
from .pretrained import resolve_checkpoint
from .runtime import ORTModelForSequenceClassification

SHIPPED_FILES = ("model.ort", "model.onnx")


def shipped_file(folder: str | os.PathLike) -> Path:
    """The file a folder ships: model.ort if there is one, else model.onnx."""
    for name in SHIPPED_FILES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise FileNotFoundError(f"{folder} has neither model.ort nor model.onnx; export it first (`compact export`).")


def _ort_model(path: Path, threads: int | None = None):
    return ORTModelForSequenceClassification.from_pretrained(path.parent, file_name=path.name, threads=threads)


def _encode(tokenizer, rows: dict, task, max_length: int, padding: bool):
    return tokenizer(*[rows[c] for c in task.text_columns], truncation=True, max_length=max_length, padding=padding,
                     return_tensors="np")


def evaluate_artifact(path: Path, split, task: TaskSpec | str, max_length: int, batch_size: int = 64) -> dict:
    """The task metrics of an exported file on a labelled raw split (batched; padding does not change outputs).
    task: the task's spec (or a GLUE task name)."""
    spec = as_spec(task)
    model, tokenizer = _ort_model(path), AutoTokenizer.from_pretrained(path.parent)
    logits = [model(**_encode(tokenizer, split[start:start + batch_size], spec, max_length, padding=True)).logits
              for start in range(0, len(split), batch_size)]
    return compute_metrics(spec, np.concatenate(logits), np.asarray(split["label"]))


def latency_side_by_side(paths: dict[str, Path], split, task: TaskSpec | str, max_length: int,
                         examples: int = 200, rounds: int = 3) -> dict[str, dict]:
    """Median/p90 ms at batch 1, one thread, on the split's first `examples` real, unpadded inputs, by
    compact_nlp.bench's loop: `rounds` passes over the inputs for each file, the files interleaved by round, so that
    they see the same machine and each runs warm, as the peers time themselves (interleaving input by input made
    every call start from another model's cache: the small files, whose weights would stay in cache, lost most).

    What is timed is the runtime's own call (InferenceSession.run on prepared feeds), as `compact bench` times compact
    and the peers time themselves: compact's ORTModel wrapper adds about 0.1 ms of Python per call
    (bench/experiments/timing_paths.py), which would weigh on a small model's ratios and not on a peer's."""
    task = as_spec(task)
    models = {name: _ort_model(path, threads=1) for name, path in paths.items()}
    rows = split[:examples]
    inputs = {}  # each file with its own tokenizer: a compressed model may have a trimmed vocabulary
    for name, path in paths.items():
        tokenizer = AutoTokenizer.from_pretrained(path.parent)
        inputs[name] = [models[name].feed(**_encode(tokenizer, {c: [rows[c][i]] for c in task.text_columns}, task,
                                                    max_length, False)) for i in range(len(rows["label"]))]
    calls = {name: (lambda feed, session=model.session: session.run(None, feed)) for name, model in models.items()}
    timed = real_length_latency(calls, inputs, rounds=rounds)
    return {name: {"median": stats["median_ms"], "p90": stats["p90_ms"], "noise_floor": stats["noise_floor"],
                   "examples": len(inputs[name]), "rounds": rounds, "threads": 1,
                   "mean_tokens": round(float(np.mean([e["input_ids"].shape[1] for e in inputs[name]])), 1)}
            for name, stats in timed.items()}


def versions() -> dict:
    import onnxruntime
    import torch
    import transformers

    return {"compact": version("compact-nlp"), "torch": torch.__version__, "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__}


def _size_mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 3)


def ship(model, tokenizer, folder: str | os.PathLike, task: TaskSpec | str, dev: dict, max_length: int,
         mobile: bool = True, target_platform: str = "arm", original: str | os.PathLike | None = None,
         exporter=None, fuse_attention: bool = True) -> dict:
    """Export `model` (+ tokenizer) to `folder`, score the shipped file on each labelled raw split in `dev`, time it,
    and do the same for `original` (an exported folder) when given. Returns the measurements.

    exporter: `exporter(model, folder) -> report` for a technique with its own export (quant/); the report has
    size_mb, parameters, layers and `parity` (max abs diff of the shipped file against what it claims to compute).
    """
    report = export_for_shipping(model, tokenizer, folder, mobile, target_platform, exporter, fuse_attention)
    return measure_shipped(folder, report, task, dev, max_length, target_platform, original)


def export_for_shipping(model, tokenizer, folder: str | os.PathLike, mobile: bool = True,
                        target_platform: str = "arm", exporter=None, fuse_attention: bool = True) -> dict:
    """The export half of `ship`: write the folder, return the export report `measure_shipped` needs
    (`exporter`, when given, was built with its own fuse_attention)."""
    if exporter is not None:
        return exporter(model.eval(), Path(folder))
    report = export_model(model.eval(), folder, tokenizer_source=tokenizer, mobile=mobile,
                          target_platform=target_platform, fuse_attention=fuse_attention)
    report["parity"] = report.get("ort_parity", report["onnx_parity"])["max_abs_diff"]
    return report


def measure_shipped(folder: str | os.PathLike, report: dict, task: TaskSpec | str, dev: dict, max_length: int,
                    target_platform: str = "arm", original: str | os.PathLike | None = None,
                    beside: dict[str, Path] | None = None) -> dict:
    """The measuring half of `ship`, on a folder `export_for_shipping` wrote (with its report). `beside`: other
    model files (each with its tokenizer in its folder, e.g. a peer's int8 graph) timed side by side with it; their
    latency is under "beside"."""
    shipped = shipped_file(folder)
    with tempfile.TemporaryDirectory() as scratch:
        files = {"shipped": shipped}
        if original is not None:
            files["original"] = _original_file(Path(original), shipped.name, Path(scratch), target_platform)
        return _measure({**files, **(beside or {})}, report, as_spec(task), dev, max_length, original)


def _measure(files: dict[str, Path], report: dict, spec: TaskSpec, dev: dict, max_length: int, original) -> dict:
    shipped = files["shipped"]
    first_split = next(iter(dev))
    latency = latency_side_by_side(files, dev[first_split], spec, max_length)
    result = {
        "artifact": shipped.name,
        "dev": {split: evaluate_artifact(shipped, data, spec, max_length) for split, data in dev.items()},
        "dev_main_metric": spec.main_metric,
        "latency_ms_batch1": latency["shipped"], "size_mb": report["size_mb"],
        "export_parity": report["parity"],
        "parity_label": report.get("parity_label", "max abs difference, ONNX Runtime vs PyTorch"),
        **report.get("facts", {}),  # what a technique's own export records (e.g. its report), under its name
        "parameters": report["parameters"], "layers": report["layers"],
        "versions": versions(), "machine": machine(),
    }
    if others := {name: timed for name, timed in latency.items() if name not in ("shipped", "original")}:
        result["beside"] = others
    if original is not None:
        result["original"] = {
            "folder": str(original), "artifact": files["original"].name,
            "dev": {split: evaluate_artifact(files["original"], data, spec, max_length)
                    for split, data in dev.items()},
            "latency_ms_batch1": latency["original"], "size_mb": {files["original"].name: _size_mb(files["original"])},
        }
    return result


def _original_file(original: Path, prefer: str, scratch: Path, target_platform: str) -> Path:
    """The original's file of the same kind as the shipped one (.ort with .ort), exported to `scratch` if the
    original is a PyTorch checkpoint only."""
    if (original / prefer).is_file():
        return original / prefer
    source = resolve_checkpoint(str(original))
    model = AutoCompactModelForSequenceClassification.from_pretrained(source)
    export_model(model, scratch, tokenizer_source=source, mobile=prefer == "model.ort",
                 target_platform=target_platform)
    return scratch / prefer


def summarize(per_seed: list[dict]) -> dict:
    """Mean and sd over seeds of every dev metric, and the wall time."""
    summary: dict = {"seeds": [r["seed"] for r in per_seed]}
    for split in per_seed[0]["dev"]:
        for metric in per_seed[0]["dev"][split]:
            values = [100 * r["dev"][split][metric] for r in per_seed]
            summary[f"{split}/{metric}"] = {"mean": round(statistics.mean(values), 2),
                                             "sd": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
                                             "values": [round(v, 2) for v in values]}
    seconds = [r["train_seconds"] for r in per_seed if r.get("train_seconds") is not None]
    summary["train_minutes_per_seed"] = round(statistics.mean(seconds) / 60, 1) if seconds else None
    summary["latency_ms_batch1_median"] = round(statistics.mean(r["latency_ms_batch1"]["median"] for r in per_seed), 3)
    if "original" in per_seed[0]:  # the same original measured beside each seed's model
        originals = [r["original"] for r in per_seed]
        summary["original"] = {
            "folder": (originals[0]["folder"] if len({o["folder"] for o in originals}) == 1
                       else ", ".join(o["folder"] for o in originals)),  # e.g. each seed's own fp32 model
            "artifact": originals[0]["artifact"],
            "size_mb": originals[0]["size_mb"][originals[0]["artifact"]],
            "latency_ms_batch1_median": round(statistics.mean(o["latency_ms_batch1"]["median"] for o in originals), 3),
            **{f"{split}/{metric}": round(statistics.mean(100 * o["dev"][split][metric] for o in originals), 2)
               for split in originals[0]["dev"] for metric in originals[0]["dev"][split]},
        }
    return summary


def main_score_name(task: TaskSpec | str) -> str:
    """The task's one score for model selection: its metric, or the mean of its two (GLUE's combined_score)."""
    return as_spec(task).main_metric


def choose_export(candidates: dict, folder: str | os.PathLike, heldout, spec: TaskSpec, max_length: int) -> \
        tuple[dict, dict]:
    """Export each candidate (name -> (model, exporter)) beside `folder`, score each exported file on the held-out
    split, and leave the best one in `folder` (the first candidate on ties). Returns (the export report of the file
    that ships, the choice: which one shipped and every held-out score)."""
    folder = Path(folder)
    reports, scores = {}, {}
    for name, (model, exporter) in candidates.items():
        where = folder.with_name(f"{folder.name}.{name}")
        shutil.rmtree(where, ignore_errors=True)
        reports[name] = exporter(model.eval(), where)
        scores[name] = evaluate_artifact(shipped_file(where), heldout, spec, max_length)
    main = spec.main_metric
    chosen = max(scores, key=lambda name: (scores[name][main], -list(scores).index(name)))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(folder.with_name(f"{folder.name}.{chosen}"), folder)
    for name in scores:
        shutil.rmtree(folder.with_name(f"{folder.name}.{name}"), ignore_errors=True)
    return reports[chosen], {"shipped": chosen, "selected_on": "heldout", "metric": main,
                             "heldout": {name: {k: round(float(v), 4) for k, v in score.items()}
                                         for name, score in scores.items()}}

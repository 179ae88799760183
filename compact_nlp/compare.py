"""`compact bench --task TASK --fp32 DIR --variant NAME=DIR ...`: every way to ship one fine-tuned model, side by side.

What a user would run instead of compact, and what compact makes, measured in one run on one machine:

    PyTorch fp32                       the fine-tuned model in transformers' own BertForSequenceClassification
    ORT fp32                           its model.ort (compact export)
    peer: ORT dynamic int8             transformers' graph (TorchScript export, as Optimum exported it) through
                                       onnxruntime's quantize_dynamic: what Optimum's dynamic int8 presets did
    peer: ORT fusions + dynamic int8   the same graph through onnxruntime.transformers' BERT fusions first (Optimum's
                                       O2 + avx512_vnni preset)
    Optimum: dynamic int8 (avx512_vnni) with --optimum-python PY: Optimum itself (ONNX export + ORTQuantizer's
                                       avx512_vnni dynamic preset), run by PY, an environment where Optimum installs
                                       (it does not support transformers 5; compact_nlp/optimum_peer.py)
    Optimum: O3 fusions + dynamic int8 with --optimum-python: Optimum's O3 graph (attention fused, which transformers
                                       4's graph allows) through the same quantization
    each --variant NAME=PATH           a compact folder (its shipped model.ort, else model.onnx) or one file

`{seed}` in --fp32 and in a variant's path stands for each of --seeds: the dev metric is mean +- sd over the seeds
(the peers are rebuilt from each seed's fp32 model); latency, size, load time and RAM are measured on the first seed.
A variant path without `{seed}` is one model, scored once and reported as the one seed it is (never as an sd of 0).
Latency is batch 1 on real text, never padding (DESIGN.md section 7): the first `examples` dev inputs at their own
lengths, interleaved across all variants (each input runs on every variant back to back, in alternating order), and
one input each of 128 / 256 / 512 real tokens made by joining dev texts, timed in interleaved rounds with the
rounds' spread as the noise floor; 1 and 2 threads. Load time and peak RAM come from a fresh process per variant.

Writes OUT.json, OUT.md and three plots: OUT_pareto.png (dev metric vs latency), OUT_size.png, OUT_length.png
(latency vs sequence length).

The peers are made in compact_nlp.compare_peers, the files written by compact_nlp.compare_report.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .bench import dir_size_mb, inputs_of_length, load_and_peak_ram, time_side_by_side
from .compare_peers import (INPUTS, OPTIMUM, OPTIMUM_FUSED, ORT_FP32, PEER, PEER_FUSED, PEERS,  # noqa: F401
                            PYTORCH, OptimumEnvironmentError, export_hf_model, hf_model, optimum_peer, peers)
from .compare_report import faster_peer, markdown, plots, write_report  # noqa: F401
from .data import TaskData, glue_task_data
from .metrics import compute_metrics
from .runtime import session_options
from .ship import machine, shipped_file, versions


# --- one row: how a variant is called -------------------------------------------------------------------------------
class OrtRow:
    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        # spinning off: many sessions stay open side by side, and idle spinning workers would share the cores
        self.session = ort.InferenceSession(str(path), session_options(threads, spinning=False),
                                            providers=["CPUExecutionProvider"])
        self.names = {i.name for i in self.session.get_inputs()}

    def __call__(self, inputs: dict) -> np.ndarray:
        return self.session.run(None, {k: v for k, v in inputs.items() if k in self.names})[0]


class TorchRow:
    def __init__(self, model):
        self.model = model

    def __call__(self, inputs: dict) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()


def shipped(path: Path) -> Path:
    return path if path.is_file() else shipped_file(path)


# --- measuring --------------------------------------------------------------------------------------------------
def encode(tokenizer, task, rows: dict, max_length: int, padding: bool) -> dict[str, np.ndarray]:
    encoded = tokenizer(*[rows[c] for c in task.text_columns], truncation=True, max_length=max_length,
                        padding=padding, return_tensors="np")
    return {k: v.astype(np.int64) for k, v in encoded.items()}


def dev_score(row, tokenizer, task, dev, max_length: int) -> dict:
    logits = [row(encode(tokenizer, task, dev[s:s + 64], max_length, True)) for s in range(0, len(dev), 64)]
    return compute_metrics(task, np.concatenate(logits), np.asarray(dev["label"]))


def real_length_latency(rows: dict, inputs: dict[str, list[dict]]) -> dict:
    """Each input runs on every variant back to back, in alternating order (inputs: per variant, its tokenizer's)."""
    times = {name: [] for name in rows}
    order = list(rows)
    for name, row in rows.items():
        for encoded in inputs[name][:10]:
            row(encoded)
    for i in range(len(next(iter(inputs.values())))):
        for name in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            rows[name](inputs[name][i])
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: {"median_ms": round(statistics.median(t), 3), "p90_ms": round(float(np.percentile(t, 90)), 3)}
            for name, t in times.items()}


def _log(message: str) -> None:
    print(f"[compact bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _at(path: str, seed: int) -> Path:
    return Path(path.replace("{seed}", str(seed)))


def _graphs(fp32: str, variants: dict[str, str], seeds: list[int], scratch: Path, optimum_python: str | None):
    """{row: {seed: graph}} for ORT fp32, the peers (rebuilt from each seed's fp32 model) and the variants (each seed
    when its path has {seed}, else the first), and the versions Optimum's environment used (or None)."""
    files: dict[str, dict[int, Path]] = {ORT_FP32: {}, PEER: {}, PEER_FUSED: {}}
    files.update({OPTIMUM: {}, OPTIMUM_FUSED: {}} if optimum_python else {})
    optimum_versions = None
    for seed in seeds:
        _log(f"building the peers of seed {seed}")
        files[ORT_FP32][seed] = shipped(_at(fp32, seed))
        for name, path in peers(_at(fp32, seed), scratch / f"peers-{seed}").items():
            files[name][seed] = path
        if optimum_python:
            graphs, optimum_versions = optimum_peer(_at(fp32, seed), scratch / f"optimum-{seed}", optimum_python)
            files[OPTIMUM][seed], files[OPTIMUM_FUSED][seed] = graphs[OPTIMUM], graphs[OPTIMUM_FUSED]
    for name, path in variants.items():
        files[name] = {seed: shipped(_at(path, seed)) for seed in (seeds if "{seed}" in path else [seeds[0]])}
    return files, optimum_versions


def _tokenizers(files: dict, fp32: str, first: int) -> dict:
    """Each row's tokenizer: a variant's own folder's, the fp32 model's for the peers and PyTorch."""
    from transformers import AutoTokenizer

    tokenizers = {name: AutoTokenizer.from_pretrained(per_seed[first].parent if name not in PEERS
                                                      else _at(fp32, first)) for name, per_seed in files.items()}
    tokenizers[PYTORCH] = AutoTokenizer.from_pretrained(_at(fp32, first))
    return tokenizers


def _dev_scores(files: dict, tokenizers: dict, task, dev, fp32: str, seeds: list[int], max_length: int) -> dict:
    import torch

    _log("dev scores")
    torch.set_num_threads(2)
    scores = {PYTORCH: [dev_score(TorchRow(hf_model(_at(fp32, s))), tokenizers[PYTORCH], task, dev, max_length)
                        for s in seeds]}
    for name, per_seed in files.items():
        scores[name] = [dev_score(OrtRow(path, 2), tokenizers[name], task, dev, max_length)
                        for path in per_seed.values()]
    return scores


def _latencies(files: dict, tokenizers: dict, torch_model, real: dict, long: dict, first: int, settings: dict):
    """{row: {real_{n}t, {length}_{n}t: stats}}: real dev lengths and the long inputs, rows interleaved."""
    import torch

    latency = {name: {} for name in [PYTORCH, *files]}
    for n_threads in settings["threads"]:
        _log(f"latency, {n_threads} thread(s)")
        torch.set_num_threads(n_threads)
        rows = {PYTORCH: TorchRow(torch_model), **{name: OrtRow(per_seed[first], n_threads)
                                                    for name, per_seed in files.items()}}
        for name, stats in real_length_latency(rows, real).items():
            latency[name][f"real_{n_threads}t"] = stats
        for n in settings["lengths"]:
            timed = time_side_by_side({name: (lambda r=row, x=long[name][n]: r(x)) for name, row in rows.items()},
                                      rounds=settings["rounds"], calls=settings["calls"], warmup=2)
            for name, stats in timed.items():
                latency[name][f"{n}_{n_threads}t"] = stats
    return latency


def _resources(files: dict, torch_model, scratch: Path, first: int) -> dict:
    """Size, load time and peak RAM of each row's file, each loaded in a fresh process."""
    _log("size, load time and peak RAM (a fresh process each)")
    hf_folder = scratch / "hf"
    torch_model.save_pretrained(hf_folder)
    resources = {PYTORCH: {"file": "model.safetensors", "size_mb": dir_size_mb(hf_folder / "model.safetensors"),
                           **load_and_peak_ram("transformers", hf_folder, type(torch_model).__name__)}}
    for name, per_seed in files.items():
        path = per_seed[first]
        resources[name] = {"file": path.name, "size_mb": dir_size_mb(path), **load_and_peak_ram("onnxruntime", path)}
    return resources


def _table(names: list[str], files: dict, scores: dict, resources: dict, latency: dict, metric: str, fp32: str,
           variants: dict[str, str], seeds: list[int]) -> dict:
    table = {}
    for name in names:
        values = [100 * s[metric] for s in scores[name]]
        table[name] = {
            "path": str(fp32) if name in (PYTORCH, ORT_FP32, *PEERS) else variants[name],
            "dev": {"seeds": list(files[name]) if name in files else seeds,
                    "mean": round(statistics.mean(values), 2),
                    "sd": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
                    "values": [round(v, 2) for v in values]},
            "dev_all_metrics": scores[name], **resources[name], "latency": latency[name]}
    return table


def compare(task: TaskData | str, fp32: str, variants: dict[str, str], seeds: list[int], glue_dir: str | None = None,
            max_length: int = 128, examples: int = 200, lengths=(128, 256, 512), threads=(1, 2),
            rounds: int = 3, calls: int = 5, optimum_python: str | None = None) -> dict:
    """Measure every row (module docstring) on the task's first validation split (a GLUE task name, or your data as
    compact_nlp.data.TaskData); returns the results (see write_report for the files)."""
    data = task if isinstance(task, TaskData) else glue_task_data(task, glue_dir)
    task = data.spec
    dev = data.splits[task.dev_splits[0]]
    first = seeds[0]
    settings = {"lengths": lengths, "threads": threads, "rounds": rounds, "calls": calls}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        files, optimum_versions = _graphs(fp32, variants, seeds, scratch, optimum_python)
        tokenizers = _tokenizers(files, fp32, first)
        scores = _dev_scores(files, tokenizers, task, dev, fp32, seeds, max_length)
        names = [PYTORCH, *files]
        real = {name: [encode(tokenizers[name], task, dev[i:i + 1], max_length, False)
                       for i in range(min(examples, len(dev)))] for name in names}
        dev_texts = [t for c in task.text_columns for t in dev[c]]
        long = {name: {n: inputs_of_length(tokenizers[name], dev_texts, n) for n in lengths} for name in names}
        torch_model = hf_model(_at(fp32, first))
        latency = _latencies(files, tokenizers, torch_model, real, long, first, settings)
        resources = _resources(files, torch_model, scratch, first)
    metric = task.metrics[0]
    mean_tokens = float(np.mean([r["input_ids"].shape[1] for r in real[PYTORCH]]))
    table = _table(names, files, scores, resources, latency, metric, fp32, variants, seeds)
    return {"task": task.name, "metric": metric, "seeds": seeds, "fp32": fp32, "dev_examples": len(dev),
            "real_length_examples": len(real[PYTORCH]), "mean_real_tokens": round(mean_tokens, 1),
            "lengths": list(lengths), "threads": list(threads), "rounds": rounds, "calls_per_round": calls,
            "rows": table, "machine": machine(), "versions": versions(),
            **({"optimum_versions": optimum_versions} if optimum_versions else {})}

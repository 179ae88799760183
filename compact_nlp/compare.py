"""`compact bench --task TASK --fp32 DIR --variant NAME=DIR ...`: every way to ship one fine-tuned model, side by side.

What a user would run instead of compact, and what compact makes, measured in one run on one machine:

    PyTorch fp32                       the fine-tuned model in transformers' own BertForSequenceClassification
    ORT fp32                           its model.ort (compact export)
    peer: ORT dynamic int8             transformers' graph (TorchScript export, as Optimum exported it) through
                                       onnxruntime's quantize_dynamic: what Optimum's dynamic int8 presets did
    peer: ORT fusions + dynamic int8   the same graph through onnxruntime.transformers' BERT fusions first (Optimum's
                                       O2 + avx512_vnni preset)
    Optimum: dynamic int8 (avx512_vnni) Optimum itself (ONNX export + ORTQuantizer's avx512_vnni dynamic preset), run
                                       by --optimum-python PY or the optimum peer environment (bench/peers_setup.sh;
                                       it does not support transformers 5; compact_nlp/optimum_peer.py)
    Optimum: O3 fusions + dynamic int8 Optimum's O3 graph (attention fused, which transformers 4's graph allows)
                                       through the same quantization
    LiteRT int8 (ai-edge-quantizer)    the peers in their own environments (compact_nlp.peers.workers, installed by
    CTranslate2 int8                   bash bench/peers_setup.sh): each converts the same fp32 model by its runtime's
    OpenVINO int8 (NNCF, default hint) own recipe, times itself on the same token ids (not interleaved with the rows
    OpenVINO int8 (NNCF, f32 hint)     above: another process) and scores every dev input; not installed -> skipped
    each --variant NAME=PATH           a compact folder (its shipped model.ort, else model.onnx) or one file

`runtimes` (--peers / --no-peers) chooses the peer environments; default all of them, each skipped with the reason
when it is not installed. Every row has its fidelity: agreement of its predictions with PyTorch fp32's on the timed
inputs (compact_nlp.peers.fidelity). 'x faster than fastest peer' is against the fastest peer of the run, whichever.

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

from .bench import (REAL_LENGTH_ROUNDS, dir_size_mb, inputs_of_length, load_and_peak_ram, real_length_latency,
                    time_side_by_side)
from .compare_peers import (INPUTS, OPTIMUM, OPTIMUM_FUSED, ORT_FP32, PEER, PEER_FUSED, PEERS,  # noqa: F401
                            PYTORCH, OptimumEnvironmentError, export_hf_model, hf_model, optimum_peer, peers,
                            save_hf_folder)
from .compare_report import faster_peer, markdown, plots, write_report  # noqa: F401
from .data import TaskData, glue_task_data
from .metrics import compute_metrics
from .peers import ENVIRONMENTS, PeerRun, WorkerRequest, peer_python, run_workers
from .peers.fidelity import fidelity
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


def _log(message: str) -> None:
    print(f"[compact bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _at(path: str, seed: int) -> Path:
    return Path(path.replace("{seed}", str(seed)))


def _optimum_python(explicit: str | None, runtimes: tuple[str, ...]) -> tuple[str | None, str]:
    """The python that makes Optimum's rows (--optimum-python, else the optimum peer environment when it is among the
    runtimes) and, when there is none, why not ("" when Optimum was not asked for)."""
    if explicit or "optimum" not in runtimes:
        return explicit, ""
    python, reason = peer_python("optimum")
    return (str(python) if python else None), reason


def _graphs(fp32: str, variants: dict[str, str], seeds: list[int], scratch: Path, optimum_python: str | None,
            runtimes: tuple[str, ...]):
    """{row: {seed: graph}} for ORT fp32, the peers (rebuilt from each seed's fp32 model) and the variants (each seed
    when its path has {seed}, else the first), the versions Optimum's environment used (or None), and {row: why it
    was skipped} for an Optimum asked for through `runtimes` that is not installed or fails (an explicit
    --optimum-python that fails stops the run instead)."""
    files: dict[str, dict[int, Path]] = {ORT_FP32: {}, PEER: {}, PEER_FUSED: {}}
    python, reason = _optimum_python(optimum_python, runtimes)
    skipped = {OPTIMUM: reason} if reason else {}
    optimum_versions = None
    for seed in seeds:
        _log(f"building the peers of seed {seed}")
        files[ORT_FP32][seed] = shipped(_at(fp32, seed))
        for name, path in peers(_at(fp32, seed), scratch / f"peers-{seed}").items():
            files[name][seed] = path
        if python and OPTIMUM not in skipped:
            try:
                graphs, optimum_versions = optimum_peer(_at(fp32, seed), scratch / f"optimum-{seed}", python)
            except OptimumEnvironmentError as error:
                if optimum_python:
                    raise
                skipped[OPTIMUM] = str(error).splitlines()[0]
                files.pop(OPTIMUM, None), files.pop(OPTIMUM_FUSED, None)
                continue
            files.setdefault(OPTIMUM, {})[seed] = graphs[OPTIMUM]
            files.setdefault(OPTIMUM_FUSED, {})[seed] = graphs[OPTIMUM_FUSED]
    for name, path in variants.items():
        files[name] = {seed: shipped(_at(path, seed)) for seed in (seeds if "{seed}" in path else [seeds[0]])}
    return files, optimum_versions, skipped


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


def _fidelities(files: dict, torch_model, real: dict, first: int) -> tuple[np.ndarray, dict]:
    """PyTorch fp32's outputs on the timed inputs, and each row's agreement with them (compact_nlp.peers.fidelity)."""
    rows = {PYTORCH: TorchRow(torch_model), **{name: OrtRow(per_seed[first], 1) for name, per_seed in files.items()}}
    outputs = {name: np.concatenate([row(x) for x in real[name]]) for name, row in rows.items()}
    return outputs[PYTORCH], {name: fidelity(outputs[PYTORCH], got, "logits") for name, got in outputs.items()}


def _runtime_peers(fp32: str, seeds: list[int], scratch: Path, timed: dict, settings: dict) -> dict[int, list[PeerRun]]:
    """{seed: runs} of the peers in their own environments (compact_nlp.peers.workers), made from each seed's fp32
    model; timed (threads, long inputs, load probe) on the first seed only, every seed scoring the whole dev set.
    timed: the fp32 tokenizer's timed inputs, long inputs, every dev input, and PyTorch fp32's outputs."""
    runs = {}
    for seed in seeds:
        _log(f"the peers in their own environments ({', '.join(settings['runtimes'])}), seed {seed}")
        first = seed == seeds[0]
        request = WorkerRequest(save_hf_folder(_at(fp32, seed), scratch / f"hf-{seed}"),
                                scratch / f"peers-{seed}" / "hf.onnx", timed["real"], timed["reference"],
                                threads=tuple(settings["threads"]) if first else (), rounds=settings["rounds"],
                                real_rounds=REAL_LENGTH_ROUNDS, calls=settings["calls"],
                                long_inputs=timed["long"] if first else {}, score_inputs=timed["dev"], probe=first)
        runs[seed] = run_workers(request, scratch / f"workers-{seed}", settings["runtimes"])
    return runs


def _dev_summary(values: list[float], seeds: list[int]) -> dict:
    return {"seeds": seeds, "mean": round(statistics.mean(values), 2),
            "sd": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
            "values": [round(v, 2) for v in values]}


def _peer_rows(runs: dict[int, list[PeerRun]], task, labels: np.ndarray, fp32: str) -> dict:
    """The table's rows of the peers in their own environments: measured, or skipped with the reason."""
    first, rows = next(iter(runs)), {}
    for i, run in enumerate(runs[first]):
        peer = run.result
        if not peer.available:
            rows[peer.name] = {"kind": "peer", "skipped": peer.reason, "runtime": peer.runtime}
            continue
        scored = {seed: seed_runs[i].score_outputs for seed, seed_runs in runs.items()
                  if seed_runs[i].result.available}
        scores = [compute_metrics(task, outputs, labels) for outputs in scored.values()]
        rows[peer.name] = {
            "kind": "peer", "timed": "own process", "runtime": peer.runtime, "path": str(fp32),
            "dev": _dev_summary([100 * s[task.metrics[0]] for s in scores], list(scored)), "dev_all_metrics": scores,
            "dev_scored": "batch 1, unpadded, in its runtime", "fidelity": peer.fidelity,
            "fidelity_metric": peer.fidelity_metric, "file": ", ".join(peer.files), "size_mb": peer.size_mb,
            "load_s": peer.load_s, "peak_rss_mb": peer.peak_rss_mb, "load_note": peer.load_note,
            "latency": peer.latency}
    return rows


def _kind(name: str, variants: dict) -> str:
    return "compact" if name in variants else "peer" if name in PEERS else "reference"


def _table(names: list[str], files: dict, scores: dict, resources: dict, latency: dict, fidelities: dict,
           context: dict) -> dict:
    """The rows measured in this process (interleaved): PyTorch, ORT fp32, the ORT peers, Optimum and the variants."""
    table, variants, seeds = {}, context["variants"], context["seeds"]
    for name in names:
        value, _, metric = fidelities[name]
        table[name] = {
            "kind": _kind(name, variants), "timed": "interleaved",
            "path": variants[name] if name in variants else str(context["fp32"]),
            "dev": _dev_summary([100 * s[context["metric"]] for s in scores[name]],
                                list(files[name]) if name in files else seeds),
            "dev_all_metrics": scores[name], "fidelity": value, "fidelity_metric": metric, **resources[name],
            "latency": latency[name]}
    return table


def _inputs(tokenizers: dict, task, dev, names: list[str], examples: int, lengths, max_length: int):
    """Each row's timed inputs at real lengths (the first `examples` dev inputs, its own tokenizer's) and long inputs
    of real tokens, and every dev input alone (the fp32 tokenizer's: what the peers in their own environments score)."""
    real = {name: [_with_types(encode(tokenizers[name], task, dev[i:i + 1], max_length, False))
                   for i in range(min(examples, len(dev)))] for name in names}
    dev_texts = [t for c in task.text_columns for t in dev[c]]
    long = {name: {n: _with_types(inputs_of_length(tokenizers[name], dev_texts, n)) for n in lengths} for name in names}
    every = [_with_types(encode(tokenizers[PYTORCH], task, dev[i:i + 1], max_length, False)) for i in range(len(dev))]
    return real, long, every


def _with_types(encoded: dict) -> dict:
    """token_type_ids beside the ids (zeros where the tokenizer has none): the peers' workers pass them."""
    return encoded if "token_type_ids" in encoded else {**encoded,
                                                        "token_type_ids": np.zeros_like(encoded["input_ids"])}


def compare(task: TaskData | str, fp32: str, variants: dict[str, str], seeds: list[int], glue_dir: str | None = None,
            max_length: int = 128, examples: int = 200, lengths=(128, 256, 512), threads=(1, 2),
            rounds: int = 3, calls: int = 5, optimum_python: str | None = None,
            runtimes: tuple[str, ...] = ENVIRONMENTS) -> dict:
    """Measure every row (module docstring) on the task's first validation split (a GLUE task name, or your data as
    compact_nlp.data.TaskData); returns the results (see write_report for the files). runtimes: the peer environments
    to include (litert, ctranslate2, openvino, optimum; each skipped with the reason when it is not installed)."""
    data = task if isinstance(task, TaskData) else glue_task_data(task, glue_dir)
    task = data.spec
    dev = data.splits[task.dev_splits[0]]
    first = seeds[0]
    settings = {"lengths": lengths, "threads": threads, "rounds": rounds, "calls": calls,
                "runtimes": tuple(r for r in runtimes if r != "optimum")}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        files, optimum_versions, skipped = _graphs(fp32, variants, seeds, scratch, optimum_python, tuple(runtimes))
        tokenizers = _tokenizers(files, fp32, first)
        scores = _dev_scores(files, tokenizers, task, dev, fp32, seeds, max_length)
        names = [PYTORCH, *files]
        real, long, every = _inputs(tokenizers, task, dev, names, examples, lengths, max_length)
        torch_model = hf_model(_at(fp32, first))
        reference, fidelities = _fidelities(files, torch_model, real, first)
        latency = _latencies(files, tokenizers, torch_model, real, long, first, settings)
        resources = _resources(files, torch_model, scratch, first)
        runs = (_runtime_peers(fp32, seeds, scratch, {"real": real[PYTORCH], "long": long[PYTORCH], "dev": every,
                                                      "reference": reference}, settings)
                if settings["runtimes"] else {})
    metric = task.metrics[0]
    mean_tokens = float(np.mean([r["input_ids"].shape[1] for r in real[PYTORCH]]))
    context = {"variants": variants, "seeds": seeds, "fp32": fp32, "metric": metric}
    table = _table(names, files, scores, resources, latency, fidelities, context)
    outside = _peer_rows(runs, task, np.asarray(dev["label"]), fp32) if runs else {}
    not_made = {name: {"kind": "peer", "skipped": why, "runtime": ""} for name, why in skipped.items()}
    table = _ordered({**table, **not_made, **outside}, variants)
    return {"task": task.name, "metric": metric, "seeds": seeds, "fp32": fp32, "dev_examples": len(dev),
            "real_length_examples": len(real[PYTORCH]), "mean_real_tokens": round(mean_tokens, 1),
            "lengths": list(lengths), "threads": list(threads), "rounds": rounds, "calls_per_round": calls,
            "runtimes": list(runtimes), "rows": table, "machine": machine(), "versions": versions(),
            **({"optimum_versions": optimum_versions} if optimum_versions else {})}


def _ordered(table: dict, variants: dict) -> dict:
    """PyTorch, ORT fp32 and the peers first, compact's variants last."""
    return {**{n: r for n, r in table.items() if n not in variants}, **{n: table[n] for n in variants if n in table}}

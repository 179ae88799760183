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
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .bench import dir_size_mb, inputs_of_length, load_and_peak_ram, time_side_by_side
from .glue import get_task, load_glue

PYTORCH = "PyTorch fp32"
ORT_FP32 = "ORT fp32"
PEER = "peer: ORT dynamic int8"
PEER_FUSED = "peer: ORT fusions + dynamic int8"
OPTIMUM = "Optimum: dynamic int8 (avx512_vnni)"
OPTIMUM_FUSED = "Optimum: O3 fusions + dynamic int8"
# the rows made from the fp32 model that users would ship instead of compact's
PEERS = (PEER, PEER_FUSED, OPTIMUM, OPTIMUM_FUSED)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# --- the peers: what users ship without compact ------------------------------------------------------------------
def export_hf_model(fp32_folder: Path, path: Path, output: str = "logits") -> None:
    """The fine-tuned model in transformers' own BertForSequenceClassification (output "logits"), or the encoder in
    BertModel (output "last_hidden_state"), exported as Optimum exported it (TorchScript exporter, dynamic batch and
    sequence)."""
    import torch

    from .auto import AutoCompactModel, AutoCompactModelForSequenceClassification
    from .convert import to_hf_model

    auto = AutoCompactModelForSequenceClassification if output == "logits" else AutoCompactModel
    hf = to_hf_model(auto.from_pretrained(fp32_folder)).eval()

    class Output(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = hf

        def forward(self, input_ids, attention_mask, token_type_ids):
            return getattr(self.model(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids), output)

    example = tuple(torch.ones(1, 16, dtype=torch.long) for _ in INPUTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Output().eval(), example, str(path), dynamo=False, opset_version=17,
                          input_names=list(INPUTS), output_names=[output],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in INPUTS})


def peers(fp32_folder: Path, scratch: Path, output: str = "logits") -> dict[str, Path]:
    """The two peer int8 graphs of a fine-tuned folder (or of an encoder: output="last_hidden_state"), written into
    `scratch`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    from .modeling import CompactBertConfig

    config = CompactBertConfig.from_pretrained(fp32_folder)
    scratch.mkdir(parents=True, exist_ok=True)
    hf_graph = scratch / "hf.onnx"
    export_hf_model(fp32_folder, hf_graph, output)
    plain, fused_fp32, fused = scratch / "peer_dynamic.onnx", scratch / "hf_fused.onnx", scratch / "peer_fused.onnx"
    quantize_dynamic(str(hf_graph), str(plain), weight_type=QuantType.QInt8)
    optimized = optimize_model(str(hf_graph), model_type="bert", num_heads=config.num_heads_per_layer[0],
                               hidden_size=config.hidden_size)
    optimized.save_model_to_file(str(fused_fp32))
    # contrib ops (Attention, SkipLayerNormalization) defeat ONNX shape inference; tell the quantizer they are fp32
    quantize_dynamic(str(fused_fp32), str(fused), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return {PEER: plain, PEER_FUSED: fused}


class OptimumEnvironmentError(OSError):
    """--optimum-python names no python, or one whose environment cannot run Optimum (an OSError, so that the CLI
    reports it as a clear error like a missing file)."""


def optimum_peer(fp32_folder: Path, scratch: Path, python: str) -> tuple[dict[str, Path], dict]:
    """Optimum's own dynamic int8 graphs of a fine-tuned folder, plain and after its O3 fusions, made by `python` (an
    environment with Optimum) from the model saved as a transformers folder; returns {row name: graph} and the
    versions that environment used."""
    import json
    import subprocess

    from transformers import AutoTokenizer

    hf_folder = scratch / "hf"
    hf_model(fp32_folder).save_pretrained(hf_folder)
    AutoTokenizer.from_pretrained(fp32_folder).save_pretrained(hf_folder)
    script = Path(__file__).with_name("optimum_peer.py")
    try:
        done = subprocess.run([python, str(script), str(hf_folder), str(scratch / "optimum")], capture_output=True,
                              text=True, check=True)
    except FileNotFoundError:
        raise OptimumEnvironmentError(f"--optimum-python {python} does not exist; point it at the python of an "
                                      "environment with Optimum (docs/combined.md), or leave it out.") from None
    except subprocess.CalledProcessError as error:
        raise OptimumEnvironmentError(f"Optimum failed in {python} (is optimum-onnx[onnxruntime] installed there? "
                                      f"see docs/combined.md):\n{error.stderr[-2000:]}") from None
    from .optimum_peer import QUANTIZED, QUANTIZED_FUSED

    return ({OPTIMUM: scratch / "optimum" / QUANTIZED, OPTIMUM_FUSED: scratch / "optimum" / QUANTIZED_FUSED},
            json.loads(done.stdout.strip().splitlines()[-1]))


# --- one row: how a variant is called -------------------------------------------------------------------------------
class OrtRow:
    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        from .runtime import session_options

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


def hf_model(fp32_folder: Path):
    from .auto import AutoCompactModelForSequenceClassification
    from .convert import to_hf_model

    return to_hf_model(AutoCompactModelForSequenceClassification.from_pretrained(fp32_folder)).eval()


def shipped(path: Path) -> Path:
    from .ship import shipped_file

    return path if path.is_file() else shipped_file(path)


# --- measuring --------------------------------------------------------------------------------------------------
def encode(tokenizer, task, rows: dict, max_length: int, padding: bool) -> dict[str, np.ndarray]:
    encoded = tokenizer(*[rows[c] for c in task.text_columns], truncation=True, max_length=max_length,
                        padding=padding, return_tensors="np")
    return {k: v.astype(np.int64) for k, v in encoded.items()}


def dev_score(row, tokenizer, task, dev, max_length: int) -> dict:
    from .metrics import compute_glue_metrics

    logits = [row(encode(tokenizer, task, dev[s:s + 64], max_length, True)) for s in range(0, len(dev), 64)]
    return compute_glue_metrics(task.name, np.concatenate(logits), np.asarray(dev["label"]))


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


def compare(task_name: str, fp32: str, variants: dict[str, str], seeds: list[int], glue_dir: str | None = None,
            max_length: int = 128, examples: int = 200, lengths=(128, 256, 512), threads=(1, 2),
            rounds: int = 3, calls: int = 5, optimum_python: str | None = None) -> dict:
    """Measure every row (module docstring); returns the results (see write_report for the files)."""
    import torch
    from transformers import AutoTokenizer

    task = get_task(task_name)
    data = load_glue(task.name, glue_dir)
    dev = data[task.dev_splits[0]]
    first = seeds[0]

    def at(path: str, seed: int) -> Path:
        return Path(path.replace("{seed}", str(seed)))

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        files: dict[str, dict[int, Path]] = {ORT_FP32: {}, PEER: {}, PEER_FUSED: {}}
        files.update({OPTIMUM: {}, OPTIMUM_FUSED: {}} if optimum_python else {})
        tokenizers, optimum_versions = {}, None
        for seed in seeds:
            _log(f"building the peers of seed {seed}")
            files[ORT_FP32][seed] = shipped(at(fp32, seed))
            for name, path in peers(at(fp32, seed), scratch / f"peers-{seed}").items():
                files[name][seed] = path
            if optimum_python:
                graphs, optimum_versions = optimum_peer(at(fp32, seed), scratch / f"optimum-{seed}", optimum_python)
                files[OPTIMUM][seed], files[OPTIMUM_FUSED][seed] = graphs[OPTIMUM], graphs[OPTIMUM_FUSED]
        for name, path in variants.items():
            files[name] = {seed: shipped(at(path, seed)) for seed in (seeds if "{seed}" in path else [first])}
        for name, per_seed in files.items():
            tokenizers[name] = AutoTokenizer.from_pretrained(per_seed[first].parent if name not in PEERS
                                                             else at(fp32, first))
        tokenizers[PYTORCH] = AutoTokenizer.from_pretrained(at(fp32, first))

        _log("dev scores")
        torch.set_num_threads(2)
        scores = {PYTORCH: [dev_score(TorchRow(hf_model(at(fp32, s))), tokenizers[PYTORCH], task, dev, max_length)
                            for s in seeds]}
        for name, per_seed in files.items():
            scores[name] = [dev_score(OrtRow(path, 2), tokenizers[name], task, dev, max_length)
                            for path in per_seed.values()]

        names = [PYTORCH, *files]
        real = {name: [encode(tokenizers[name], task, dev[i:i + 1], max_length, False)
                       for i in range(min(examples, len(dev)))] for name in names}
        dev_texts = [t for c in task.text_columns for t in dev[c]]
        long = {name: {n: inputs_of_length(tokenizers[name], dev_texts, n) for n in lengths} for name in names}
        latency = {name: {} for name in names}
        torch_model = hf_model(at(fp32, first))
        for n_threads in threads:
            _log(f"latency, {n_threads} thread(s)")
            torch.set_num_threads(n_threads)
            rows = {PYTORCH: TorchRow(torch_model), **{name: OrtRow(per_seed[first], n_threads)
                                                        for name, per_seed in files.items()}}
            for name, stats in real_length_latency(rows, real).items():
                latency[name][f"real_{n_threads}t"] = stats
            for n in lengths:
                timed = time_side_by_side({name: (lambda r=row, x=long[name][n]: r(x)) for name, row in rows.items()},
                                          rounds=rounds, calls=calls, warmup=2)
                for name, stats in timed.items():
                    latency[name][f"{n}_{n_threads}t"] = stats

        _log("size, load time and peak RAM (a fresh process each)")
        hf_folder = scratch / "hf"
        torch_model.save_pretrained(hf_folder)
        resources = {PYTORCH: {"file": "model.safetensors", "size_mb": dir_size_mb(hf_folder / "model.safetensors"),
                               **load_and_peak_ram("transformers", hf_folder, type(torch_model).__name__)}}
        for name, per_seed in files.items():
            path = per_seed[first]
            resources[name] = {"file": path.name, "size_mb": dir_size_mb(path),
                               **load_and_peak_ram("onnxruntime", path)}

    from .ship import machine, versions

    metric = task.metrics[0]
    mean_tokens = float(np.mean([r["input_ids"].shape[1] for r in real[PYTORCH]]))
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
    return {"task": task.name, "metric": metric, "seeds": seeds, "fp32": fp32, "dev_examples": len(dev),
            "real_length_examples": len(real[PYTORCH]), "mean_real_tokens": round(mean_tokens, 1),
            "lengths": list(lengths), "threads": list(threads), "rounds": rounds, "calls_per_round": calls,
            "rows": table, "machine": machine(), "versions": versions(),
            **({"optimum_versions": optimum_versions} if optimum_versions else {})}


# --- the report ----------------------------------------------------------------------------------------------------
def faster_peer(results: dict, key: str | None = None) -> str:
    rows, key = results["rows"], key or f"real_{results['threads'][0]}t"
    return min((n for n in PEERS if n in rows), key=lambda n: rows[n]["latency"][key]["median_ms"])


def markdown(results: dict) -> str:
    rows, metric = results["rows"], results["metric"]
    peer = faster_peer(results)
    fp32_mb = rows[ORT_FP32]["size_mb"]
    fp32_dev = rows[PYTORCH]["dev"]["mean"]

    def ms(name, key):
        return rows[name]["latency"][key]["median_ms"]

    first, others = f"real_{results['threads'][0]}t", [f"real_{t}t" for t in results["threads"][1:]]
    lines = [
        f"# compact bench: {results['task']}, every way to ship the fine-tuned model, side by side (one run)",
        "",
        f"Dev {metric} on all {results['dev_examples']} dev examples, mean +- sd over seeds {results['seeds']}. "
        f"Latency: batch 1, median ms; 'real' = the first {results['real_length_examples']} dev inputs at their own "
        f"lengths ({results['mean_real_tokens']} tokens on average, unpadded), interleaved; "
        f"{'/'.join(map(str, results['lengths']))} = one input of that many real tokens (joined dev texts), "
        f"{results['rounds']} interleaved rounds x "
        f"{results['calls_per_round']} calls. The faster peer at real lengths, {first[5:-1]} thread(s), is '{peer}'. "
        f"Machine: {results['machine']['platform']}, {results['machine']['cores']} cores."
        + (f" Optimum row: {', '.join(f'{k} {v}' for k, v in results['optimum_versions'].items())}, in its own "
           "environment." if results.get("optimum_versions") else ""),
        "",
        f"| variant | dev {metric} | vs fp32 | file | MB | smaller than ORT fp32 | real, {first[5:-1]} thread(s) | "
        "x faster than faster peer | x faster than PyTorch | " + "".join(f"real, {k[5:-1]} threads | " for k in others)
        + "load s | peak RAM MB |",
        "|---|---|---|---|---|---|---|---|---|" + "---|" * len(others) + "---|---|",
    ]
    for name, r in rows.items():
        dev = r["dev"]
        spread = f"+- {dev['sd']:.2f}" if len(dev["values"]) > 1 else f"(seed {dev.get('seeds', results['seeds'])[0]})"
        lines.append(
            f"| {name} | {dev['mean']:.2f} {spread} | {dev['mean'] - fp32_dev:+.2f} | {r['file']} | "
            f"{r['size_mb']} | {fp32_mb / r['size_mb']:.1f}x | {ms(name, first)} | "
            f"{ms(peer, first) / ms(name, first):.2f}x | {ms(PYTORCH, first) / ms(name, first):.2f}x | "
            + "".join(f"{ms(name, k)} | " for k in others) + f"{r['load_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    settings = [(n, t) for n in results["lengths"] for t in results["threads"]]
    keys = [f"{n}_{t}t" for n, t in settings]
    lines += ["", "Long inputs (real tokens, no padding): median ms (x faster than the faster peer at that setting).",
              "", "| variant | " + " | ".join(f"{n} tok, {t} thr" for n, t in settings) + " |",
              "|---|" + "---|" * len(keys)]
    for name in rows:
        cells = []
        for key in keys:
            best_peer = ms(faster_peer(results, key), key)
            cells.append(f"{ms(name, key)} ({best_peer / ms(name, key):.2f}x)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    floors = [r["latency"][k]["noise_floor"] for r in rows.values() for k in keys]
    lines += ["", f"Repeat-noise floor of the long-input medians (spread of round medians / median): "
                  f"median {statistics.median(floors):.0%}, max {max(floors):.0%}.", ""]
    return "\n".join(lines)


def plots(results: dict, stem: Path) -> list[Path]:
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("the bench's plots need matplotlib: pip install matplotlib") from error

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows, metric = results["rows"], results["metric"]
    written = []

    # one color per row, the same in the Pareto and length plots (tab10 would repeat past 10 rows)
    colors = plt.cm.tab20(np.linspace(0, 1, 20))[:len(rows)] if len(rows) > 10 else plt.cm.tab10.colors[:len(rows)]
    legend_rows = (len(rows) + 2) // 2  # the legend below the axes, 2 columns, the Pareto front included
    figure, axis = plt.subplots(figsize=(9, 5 + 0.22 * legend_rows))  # accuracy vs latency: up and left is better
    first = results["threads"][0]
    points = [(r["latency"][f"real_{first}t"]["median_ms"], r["dev"]["mean"], name) for name, r in rows.items()]
    for number, ((x, y, name), color) in enumerate(zip(points, colors), 1):
        # points are numbered, names go in the legend: clustered rows' names would print over each other
        axis.errorbar(x, y, yerr=rows[name]["dev"]["sd"], fmt="o", capsize=3, color=color, label=f"{number}. {name}")
        axis.annotate(str(number), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
    front, best = [], -1e9
    for x, y, _ in sorted(points):
        if y > best:
            front.append((x, y))
            best = y
    axis.plot(*zip(*front), "--", color="grey", linewidth=1, label="Pareto front")
    axis.set_xscale("log")
    for ticks in (axis.xaxis.set_major_formatter, axis.xaxis.set_minor_formatter):  # 2, 3, 4 ms, not 2x10^0
        ticks(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_xlabel(f"latency, batch 1, real dev lengths, {first} thread(s) (ms, log scale)")
    axis.set_ylabel(f"dev {metric} (mean over seeds)")
    axis.set_title(f"{results['task']}: accuracy vs latency")
    figure.legend(*axis.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
    figure.tight_layout(rect=(0, 0.045 * legend_rows * 5 / (5 + 0.22 * legend_rows), 1, 1))
    written.append(_save(figure, stem, "pareto"))

    figure, axis = plt.subplots(figsize=(8, 4.5))
    names = list(rows)
    axis.barh(names, [rows[n]["size_mb"] for n in names])
    for i, n in enumerate(names):
        axis.text(rows[n]["size_mb"], i, f" {rows[n]['size_mb']} MB ({rows[n]['file']})", va="center", fontsize=7)
    axis.set_xlabel("size of the file that ships (MB)")
    axis.invert_yaxis()
    axis.set_title(f"{results['task']}: size")
    figure.tight_layout()
    written.append(_save(figure, stem, "size"))

    figure, axes = plt.subplots(1, len(results["threads"]), figsize=(11, 6), sharey=True)
    for axis, n_threads in zip(np.atleast_1d(axes), results["threads"]):
        axis.set_prop_cycle(color=colors)
        for name, r in rows.items():
            xs = [results["mean_real_tokens"], *results["lengths"]]
            ys = [r["latency"][f"real_{n_threads}t"]["median_ms"],
                  *[r["latency"][f"{n}_{n_threads}t"]["median_ms"] for n in results["lengths"]]]
            axis.plot(xs, ys, "o-", label=name, linewidth=2.5 if name.startswith("combined") else 1)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("real tokens in the input (first point: dev mean)")
        axis.set_title(f"{n_threads} thread{'s' if n_threads > 1 else ''}")
    np.atleast_1d(axes)[0].set_ylabel("latency, batch 1 (ms, log scale)")
    figure.legend(*np.atleast_1d(axes)[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)
    figure.suptitle(f"{results['task']}: how cost grows with the input length")
    figure.tight_layout(rect=(0, 0.14 + 0.02 * (len(rows) // 3), 1, 1))  # room below for the legend
    written.append(_save(figure, stem, "length"))
    plt.close("all")
    return written


def _save(figure, stem: Path, kind: str) -> Path:
    from .io import atomic_path

    path = stem.with_name(f"{stem.name}_{kind}.png")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    return path


def write_report(results: dict, out: str | os.PathLike) -> list[Path]:
    """OUT.json, OUT.md and the plots (OUT_pareto.png, OUT_size.png, OUT_length.png)."""
    from .io import write_json, write_text

    stem = Path(out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_json(stem.with_name(stem.name + ".json"), results)
    write_text(stem.with_name(stem.name + ".md"), markdown(results))
    return [stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md"), *plots(results, stem)]

"""Latency, size, load time and peak RAM, measured honestly (DESIGN.md section 7).

- Inputs are real text at batch 1, never padding: a length-N input is N real wordpieces of joined sentences.
- Variants are timed side by side: rounds interleave the variants, so drift on a shared machine hits all of them.
  Each round makes the same calls in the same order (each input once, or one input n times), and a variant's median
  is the median over those calls of each call's fastest round: another process taking the core slows some rounds of
  a call, rarely all, so this median is what the variant costs when it has the core, where the median over all
  calls moved with the load (bench/experiments/load_robust_timing.py). Each variant also reports that median over
  all calls, the p90 over all calls (tail latency, load included), and the repeat-noise floor (the spread of its
  per-round medians relative to the median over all calls).
- Load time and peak RAM (VmHWM) come from a fresh subprocess per variant, so variants cannot share caches.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .auto import AutoCompactModel, AutoCompactModelForSequenceClassification
from .glue import TASKS, default_glue_dir, read_split
from .io import write_json, write_text
from .modeling import CompactBertConfig
from .runtime import session_options

SAMPLE_TEXT = Path(__file__).parent / "data" / "sample_sentences.txt"


def real_sentences(glue_dir: str | os.PathLike | None = None, limit: int | None = None) -> tuple[list[str], str]:
    """Real sentences and where they came from: SST-2 dev when a GLUE dir is there, else compact's sample text."""
    glue_dir = Path(glue_dir) if glue_dir else default_glue_dir()
    sst2 = TASKS["sst2"]
    if glue_dir is not None and (glue_dir / sst2.local["validation"].path).exists():
        texts, source = read_split(sst2, glue_dir, sst2.local["validation"])["sentence"], "SST-2 dev"
    else:
        lines = SAMPLE_TEXT.read_text().splitlines()
        texts, source = [line for line in lines if line and not line.startswith("#")], "compact sample sentences"
    return texts[:limit], source


def inputs_of_length(tokenizer, sentences: list[str], length: int, start: int = 0) -> dict[str, np.ndarray]:
    """One batch-1 input of exactly `length` real tokens: consecutive sentences joined, then truncated."""
    text, i = "", start
    while len(tokenizer(text)["input_ids"]) < length:
        text += " " + sentences[i % len(sentences)]
        i += 1
        if i - start > 10 * length:
            raise ValueError("the sentences are too short to make a long input")
    encoded = tokenizer(text.strip(), truncation=True, max_length=length, return_tensors="np")
    return {k: v.astype(np.int64) for k, v in encoded.items()}


@dataclass
class Timing:
    name: str
    ms: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        """The median of each call's fastest round (module docstring), and the median, p90 and noise over all calls."""
        median = statistics.median(self.ms)
        fastest = np.asarray(self.ms).reshape(len(self.round_medians), -1).min(axis=0)
        spread = (max(self.round_medians) - min(self.round_medians)) / median if len(self.round_medians) > 1 else 0.0
        return {"median_ms": round(float(np.median(fastest)), 3), "median_all_ms": round(median, 3),
                "p90_ms": round(float(np.percentile(self.ms, 90)), 3), "noise_floor": round(spread, 3),
                "calls": len(self.ms)}


def time_side_by_side(variants: dict[str, Callable[[], object]], rounds: int = 5, calls: int = 20,
                      warmup: int = 3) -> dict[str, dict]:
    """Median/p90 latency (ms) of each zero-argument callable, rounds interleaving all variants."""
    timings = {name: Timing(name) for name in variants}
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for name, fn in variants.items():
            this_round = []
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                this_round.append((time.perf_counter() - start) * 1e3)
            timings[name].ms += this_round
            timings[name].round_medians.append(statistics.median(this_round))
    return {name: t.summary() for name, t in timings.items()}


REAL_LENGTH_ROUNDS = 3  # passes over the real-length inputs: each input's fastest of them is its time


def real_length_latency(rows: dict, inputs: dict[str, list[dict]], rounds: int = REAL_LENGTH_ROUNDS) -> dict:
    """Median/p90 ms of each row over its inputs at their real lengths (inputs: per row, its tokenizer's), by
    compact_nlp.bench's loop: per round, one pass over the inputs for each row in turn, the rows interleaved by round.
    Each row thus runs warm, as the peers timed in their own processes do; interleaving the rows input by input
    made every call start from another model's cache, which slowed the small models most (docs/results.md)."""
    def cycling(row, encoded: list[dict]):
        stream = itertools.cycle(encoded)
        return lambda: row(next(stream))

    count = len(next(iter(inputs.values())))
    timed = time_side_by_side({name: cycling(row, inputs[name]) for name, row in rows.items()}, rounds=rounds,
                              calls=count, warmup=count)
    return {name: {key: stats[key] for key in ("median_ms", "median_all_ms", "p90_ms", "noise_floor")}
            for name, stats in timed.items()}


# Run in a fresh interpreter: load one variant, time the load, run once, report peak RSS. Peak RSS is VmHWM from
# /proc (reset at exec), not ru_maxrss, which Linux carries over from the parent process across fork + exec.
_LOAD_PROBE = r"""
import json, sys, time
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
spec = json.loads(sys.argv[1])
import numpy as np
if spec["kind"] == "onnxruntime":
    import onnxruntime as ort
    before = peak_mb()
    t = time.perf_counter()
    s = ort.InferenceSession(spec["path"], providers=["CPUExecutionProvider"])
    load = time.perf_counter() - t
    feed = {i.name: np.ones((1, 16), dtype=np.int64) for i in s.get_inputs()}
    s.run(None, feed)
else:
    import torch, transformers, compact_nlp
    before = peak_mb()
    t = time.perf_counter()
    cls = getattr(transformers, spec["class"]) if spec["kind"] == "transformers" else getattr(compact_nlp, spec["class"])
    m = cls.from_pretrained(spec["path"]).eval()
    load = time.perf_counter() - t
    with torch.no_grad():
        m(input_ids=torch.ones(1, 16, dtype=torch.long), attention_mask=torch.ones(1, 16, dtype=torch.long))
print(json.dumps({"load_s": load, "peak_rss_mb": peak_mb(), "rss_before_load_mb": before}))
"""


def load_and_peak_ram(kind: str, path: str | os.PathLike, class_name: str | None = None) -> dict:
    """Load time (s) and peak RSS (MB) of one variant in a fresh process; kind: onnxruntime|transformers|compact."""
    spec = json.dumps({"kind": kind, "path": str(path), "class": class_name})
    out = subprocess.run([sys.executable, "-c", _LOAD_PROBE, spec], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"load probe for {path} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["model_ram_mb"] = result["peak_rss_mb"] - result["rss_before_load_mb"]
    return {k: round(v, 3) for k, v in result.items()}


def dir_size_mb(*paths: str | os.PathLike) -> float:
    return round(sum(Path(p).stat().st_size for p in paths) / 2**20, 2)



def bench_folder(folder: str | os.PathLike, glue_dir: str | os.PathLike | None = None, threads=(1, 2),
                 lengths=(16, 64, 128), rounds: int = 3, calls: int = 10) -> dict:
    """Latency, size, load time and peak RAM of an exported compact folder: PyTorch vs model.onnx vs model.ort.

    Writes FOLDER/bench.json and FOLDER/bench.md; returns the results with the markdown table under "markdown".
    """
    from transformers import AutoTokenizer

    folder = Path(folder)
    config = CompactBertConfig.from_pretrained(folder)
    classify = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    auto = AutoCompactModelForSequenceClassification if classify else AutoCompactModel
    model = auto.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    sentences, text_source = real_sentences(glue_dir)
    files = {"PyTorch fp32": folder / "model.safetensors", "ORT model.onnx": folder / "model.onnx",
             "ORT model.ort": folder / "model.ort"}
    files = {name: path for name, path in files.items() if path.exists()}
    lengths = [n for n in lengths if n <= config.max_sequence_length]
    feeds = {length: inputs_of_length(tokenizer, sentences, length) for length in lengths}
    rows = [row for n_threads in threads for row in _latency_rows(model, files, feeds, n_threads, rounds, calls)]
    loads = {name: (load_and_peak_ram("compact", folder, type(model).__name__) if name == "PyTorch fp32"
                    else load_and_peak_ram("onnxruntime", path)) for name, path in files.items()}
    variants = {name: {"size_mb": dir_size_mb(path), **loads[name]} for name, path in files.items()}
    results = {"folder": str(folder), "text": text_source, "batch": 1, "padding": "none",
               "rounds": rounds, "calls_per_round": calls, "variants": variants, "latency": rows}
    table = _bench_table(files, threads, lengths, rows, variants)
    markdown = (f"Batch 1, real unpadded inputs ({text_source}); variants timed side by side "
                f"({rounds} rounds x {calls} calls).\n\n" + table + "\n")
    write_json(folder / "bench.json", results)
    write_text(folder / "bench.md", markdown)
    return {**results, "markdown": markdown}


def _latency_rows(model, files: dict[str, Path], feeds: dict[int, dict], n_threads: int, rounds: int,
                  calls: int) -> list[dict]:
    """At `n_threads` threads, each input length timed on PyTorch and every ORT file side by side."""
    import onnxruntime as ort
    import torch

    torch.set_num_threads(n_threads)
    sessions = {name: ort.InferenceSession(str(path), session_options(n_threads), providers=["CPUExecutionProvider"])
                for name, path in files.items() if name != "PyTorch fp32"}
    rows = []
    for length, feed in feeds.items():
        tensors = {k: torch.from_numpy(v) for k, v in feed.items()}

        def torch_call():
            with torch.inference_mode():
                model(**tensors)

        variants = {"PyTorch fp32": torch_call}
        for name, session in sessions.items():
            names = [i.name for i in session.get_inputs()]
            variants[name] = lambda s=session, names=names: s.run(None, {k: feed[k] for k in names})
        for name, stats in time_side_by_side(variants, rounds=rounds, calls=calls).items():
            rows.append({"variant": name, "threads": n_threads, "tokens": length, **stats})
    return rows


def _bench_table(files: dict, threads, lengths: list[int], rows: list[dict], variants: dict) -> str:
    """bench.md's tables: latency per variant, threads and length; size, load time and peak RAM per variant."""
    table = ["| variant | threads | " + " | ".join(f"{n} tok ms (p90)" for n in lengths) + " |",
             "|---|---|" + "---|" * len(lengths)]
    for name in files:
        for n_threads in threads:
            cells = [next(f"{r['median_ms']:.2f} ({r['p90_ms']:.2f})" for r in rows
                          if r["variant"] == name and r["threads"] == n_threads and r["tokens"] == n) for n in lengths]
            table.append(f"| {name} | {n_threads} | " + " | ".join(cells) + " |")
    table += ["", "| variant | size MB | load s | peak RSS MB |", "|---|---|---|---|"]
    table += [f"| {name} | {v['size_mb']} | {v['load_s']:.2f} | {v['peak_rss_mb']:.0f} |" for name, v in variants.items()]
    return "\n".join(table)


def feature_agreement(expected: list, got: list) -> dict:
    """Compare two feature-extraction pipeline outputs (one (1, T, H) nested list per sentence): max abs difference
    of token embeddings, and cosine of the mean-pooled sentence embeddings."""
    max_abs, cosines = 0.0, []
    for a, b in zip(expected, got, strict=True):
        a, b = np.asarray(a[0]), np.asarray(b[0])  # (T, H)
        max_abs = max(max_abs, float(np.abs(a - b).max()))
        ea, eb = a.mean(0), b.mean(0)
        cosines.append(float(ea @ eb / (np.linalg.norm(ea) * np.linalg.norm(eb))))
    return {"sentences": len(expected), "max_abs_diff": max_abs, "min_cosine": min(cosines),
            "mean_cosine": float(np.mean(cosines))}


def pipeline_agreement(folder: str | os.PathLike, sentences: list[str], file_name: str = "model.onnx") -> dict:
    """`pipeline("feature-extraction")` with the PyTorch and the ONNX Runtime backend of one exported folder."""
    from transformers import AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch_model = AutoCompactModel.from_pretrained(folder)
    ort_model = AutoCompactModel.from_pretrained(folder, backend="onnxruntime", file_name=file_name)
    expected = pipeline("feature-extraction", model=torch_model, tokenizer=tokenizer)(sentences)
    got = pipeline("feature-extraction", model=ort_model, tokenizer=tokenizer)(sentences)
    return {"file": file_name, **feature_agreement(expected, got)}

"""How much of a batch-1 latency is the calling path, not the model: each file timed two ways on the same real inputs,
interleaved per input, one thread:

- "session": onnxruntime's InferenceSession.run on prepared numpy feeds (what `compact bench` and the peers time);
- "wrapper": compact's ORTModelForSequenceClassification call (input checks, chunk planning, output wrapping), what
  `compact compress` and `ship` timed with latency_side_by_side until 2026-12-07 (they now time the session's call).

A constant cost of the wrapper weighs more on a small model, so ratios between a small and a large model differ
between the two paths (docs/results.md "compact compress", search plans' prediction gap).

    python bench/experiments/timing_paths.py NAME=FILE.ort [NAME=FILE.ort ...] --texts reviews_dev.csv \
        --text-column review [--examples 200] [--out bench/results/timing_paths_sst2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
from transformers import AutoTokenizer

from compact_nlp.io import write_json, write_text
from compact_nlp.runtime import ORTModelForSequenceClassification
from compact_nlp.ship import machine, versions


def session_call(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return lambda feed: session.run(None, {k: v for k, v in feed.items() if k in names})


def wrapper_call(path: Path):
    model = ORTModelForSequenceClassification.from_pretrained(path.parent, file_name=path.name, threads=1)
    return lambda feed: model(**feed)


def input_by_input(calls: dict, feeds: dict) -> dict[str, float]:
    """Median ms of each call over its feeds, every input run on every call back to back (alternating who goes
    first): the loop compress and ship used until 2026-12-07."""
    times = {name: [] for name in calls}
    order = list(calls)
    count = len(next(iter(feeds.values())))
    for i in range(count):
        for name in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            calls[name](feeds[name][i])
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def files_and_texts(description: str, out: str) -> tuple[dict[str, str], list[str], str]:
    """The command line these timing experiments share: NAME=FILE arguments, the texts to time on, the output stem."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="NAME=path/to/model.ort")
    parser.add_argument("--texts", required=True)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--out", default=out)
    args = parser.parse_args()
    files = dict(item.split("=", 1) for item in args.files)
    return files, list(pd.read_csv(args.texts)[args.text_column][:args.examples]), args.out


def main() -> None:
    files, texts, out = files_and_texts(__doc__, "bench/results/timing_paths_sst2")
    calls, feeds = {}, {}
    for name, file in files.items():
        path = Path(file)
        tokenizer = AutoTokenizer.from_pretrained(path.parent)
        feeds[name] = [dict(tokenizer(t, truncation=True, max_length=128, return_tensors="np")) for t in texts]
        calls[(name, "session")], calls[(name, "wrapper")] = session_call(path), wrapper_call(path)
    for (name, _), call in calls.items():
        for feed in feeds[name][:10]:
            call(feed)
    medians = input_by_input(calls, {key: feeds[key[0]] for key in calls})
    rows = {name: {path: round(medians[(name, path)], 4) for path in ("session", "wrapper")} for name in files}
    for row in rows.values():
        row["wrapper_minus_session"] = round(row["wrapper"] - row["session"], 4)
    result = {"files": files, "examples": len(texts), "mean_tokens": round(float(np.mean(
        [f["input_ids"].shape[1] for f in next(iter(feeds.values()))])), 1), "median_ms": rows,
        "machine": machine(), "versions": versions()}
    write_json(Path(f"{out}.json"), result)
    lines = [f"# Batch-1 latency by calling path ({result['examples']} inputs, {result['mean_tokens']} tokens on "
             f"average; {result['machine']['cpu']}, onnxruntime {result['versions']['onnxruntime']})", "",
             "| file | session.run, ms | compact's ORTModel call, ms | difference, ms |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['session']:.3f} | {r['wrapper']:.3f} | {r['wrapper_minus_session']:.3f} |"
              for name, r in rows.items()]
    write_text(Path(f"{out}.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

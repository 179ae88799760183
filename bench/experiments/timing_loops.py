"""What the order of calls does to side-by-side latencies: the same files on the same real inputs, batch 1, one
thread, timed by the two loops compact has used:

- "input by input": each input runs on every file back to back (alternating who goes first), what `compact compress`
  and `ship` did until 2026-12-07: every call starts from another model's cache;
- "pass per file": compact_nlp.bench.real_length_latency, a pass over the inputs for each file in turn, the files
  interleaved by round, as `compact bench` and the peers' own processes time (and compress and ship now do).

Each loop's ratios to the first file are what compress's planner reads; a loop that slows the small files more than
the large ones changes the speedups it reports.

    python bench/experiments/timing_loops.py REF=reference/model.ort NAME=FILE [NAME=FILE ...] \
        --texts reviews_dev.csv --text-column review [--examples 200] [--out bench/results/timing_loops_sst2]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer

from compact_nlp.bench import real_length_latency
from compact_nlp.io import write_json, write_text
from compact_nlp.runtime import session_options
from compact_nlp.ship import machine, versions
from timing_paths import files_and_texts, input_by_input


def main() -> None:
    files, texts, out = files_and_texts(__doc__, "bench/results/timing_loops_sst2")
    calls, feeds = {}, {}
    for name, file in files.items():
        session = ort.InferenceSession(file, session_options(1), providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        tokenizer = AutoTokenizer.from_pretrained(Path(file).parent)
        feeds[name] = [{k: v.astype(np.int64) for k, v in tokenizer(t, truncation=True, max_length=128,
                                                                     return_tensors="np").items() if k in names}
                       for t in texts]
        calls[name] = lambda feed, s=session: s.run(None, feed)
    for name in calls:  # warm every file before either loop
        for feed in feeds[name][:10]:
            calls[name](feed)
    loops = {"input by input": input_by_input(calls, feeds),
             "pass per file": {n: s["median_ms"] for n, s in real_length_latency(calls, feeds, rounds=3).items()}}
    reference = next(iter(files))
    rows = {name: {loop: {"median_ms": round(ms[name], 4), "of_reference": round(ms[name] / ms[reference], 4)}
                   for loop, ms in loops.items()} for name in files}
    result = {"files": files, "examples": len(texts), "mean_tokens": round(float(np.mean(
        [f["input_ids"].shape[1] for f in feeds[reference]])), 1), "rows": rows, "machine": machine(),
        "versions": versions()}
    write_json(Path(f"{out}.json"), result)
    lines = [f"# Side-by-side latency by timing loop ({result['examples']} inputs, {result['mean_tokens']} tokens on "
             f"average; {result['machine']['cpu']}, onnxruntime {result['versions']['onnxruntime']}, 1 thread)", "",
             "| file | input by input, ms | x reference | pass per file, ms | x reference |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {r['input by input']['median_ms']:.3f} | {r['input by input']['of_reference']:.3f} | "
              f"{r['pass per file']['median_ms']:.3f} | {r['pass per file']['of_reference']:.3f} |"
              for name, r in rows.items()]
    write_text(Path(f"{out}.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

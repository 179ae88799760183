"""How steady a side-by-side ratio is on a shared machine, by the statistic read from the same calls: the median
over all calls (compact's latency until 2026-12-07) or the median over the inputs of each input's fastest pass
(compact_nlp.bench.Timing's median since). The same files on the same real inputs, batch 1, one thread, timed
`--repeats` times by compact_nlp.bench.real_length_latency; each repeat's ratio of every file to the first, by both
statistics. `compact compress` chooses its plans from such ratios, so a statistic whose ratio moves with the load
moves the plan.

    python bench/experiments/load_robust_timing.py REF=reference/model.ort NAME=FILE [NAME=FILE ...] \
        --texts reviews_dev.csv --text-column review [--examples 200] [--out bench/results/load_robust_timing]
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer

from compact_nlp.bench import real_length_latency
from compact_nlp.io import write_json, write_text
from compact_nlp.runtime import session_options
from compact_nlp.ship import machine, versions
from timing_paths import files_and_texts

REPEATS, ROUNDS = 8, 3  # ROUNDS: what compress and ship time with
STATISTICS = {"median over all calls": "median_all_ms", "median of each input's fastest pass": "median_ms"}


def main() -> None:
    files, texts, out = files_and_texts(__doc__, "bench/results/load_robust_timing")
    calls, feeds = {}, {}
    for name, file in files.items():
        session = ort.InferenceSession(file, session_options(1), providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        tokenizer = AutoTokenizer.from_pretrained(Path(file).parent)
        feeds[name] = [{k: v.astype(np.int64) for k, v in tokenizer(t, truncation=True, max_length=128,
                                                                     return_tensors="np").items() if k in names}
                       for t in texts]
        calls[name] = lambda feed, s=session: s.run(None, feed)
    reference, repeats = next(iter(files)), []
    for index in range(REPEATS):
        timed = real_length_latency(calls, feeds, rounds=ROUNDS)
        repeats.append({"load_1min": os.getloadavg()[0], "timed": timed})
        print(f"repeat {index + 1}/{REPEATS}: " + ", ".join(
            f"{name} {t['median_ms']:.3f} / {t['median_all_ms']:.3f} ms" for name, t in timed.items()), flush=True)
    spread = {label: {name: _spread([r["timed"][name][key] / r["timed"][reference][key] for r in repeats])
                      for name in files if name != reference} for label, key in STATISTICS.items()}
    result = {"files": files, "examples": len(texts), "rounds": ROUNDS, "repeats": repeats, "ratio_spread": spread,
              "mean_tokens": round(float(np.mean([f["input_ids"].shape[1] for f in feeds[reference]])), 1),
              "machine": machine(), "versions": versions()}
    write_json(Path(f"{out}.json"), result)
    write_text(Path(f"{out}.md"), _markdown(result, reference))
    print(_markdown(result, reference))


def _spread(ratios: list[float]) -> dict:
    return {"min": round(min(ratios), 4), "median": round(float(np.median(ratios)), 4), "max": round(max(ratios), 4),
            "max_over_min": round(max(ratios) / min(ratios), 3)}


def _markdown(result: dict, reference: str) -> str:
    lines = [f"# Side-by-side ratios over {len(result['repeats'])} repeats, by statistic ({result['examples']} inputs, "
             f"{result['mean_tokens']} tokens on average, {result['rounds']} passes a repeat; "
             f"{result['machine']['cpu']}, {os.cpu_count()} cores, onnxruntime {result['versions']['onnxruntime']}, "
             "1 thread)", "", f"Load average (1 min) during the repeats: "
             + ", ".join(f"{r['load_1min']:.2f}" for r in result["repeats"]), "",
             f"| file / {reference} | statistic | min | median | max | max / min |", "|---|---|---|---|---|---|"]
    for label, rows in result["ratio_spread"].items():
        lines += [f"| {name} | {label} | {s['min']:.3f} | {s['median']:.3f} | {s['max']:.3f} | {s['max_over_min']:.3f} |"
                  for name, s in rows.items()]
    lines += ["", f"| repeat | " + " | ".join(f"{n}: fastest-pass median / all-calls median, ms"
                                              for n in result["files"]) + " |",
              "|---|" + "---|" * len(result["files"])]
    lines += [f"| {i + 1} | " + " | ".join(f"{t['median_ms']:.3f} / {t['median_all_ms']:.3f}"
                                           for t in r["timed"].values()) + " |"
              for i, r in enumerate(result["repeats"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

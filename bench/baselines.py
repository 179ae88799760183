"""Collect the fp32 baselines (`compact run` under the protocol) into bench/results/baselines.{json,md}.

    for t in sst2 mrpc rte stsb cola; do compact run recipes/glue/$t.yaml --glue-dir DIR --out runs/$t; done
    python bench/baselines.py runs/

Each task's results.json is copied to bench/results/baselines/<task>.json; the table reports dev scores measured on
the exported model.ort (mean ± sd over seeds), wall time, and the .ort's latency and size.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compact_nlp.io import write_json, write_text

RESULTS = Path(__file__).parent / "results"
ORDER = ("sst2", "mrpc", "rte", "stsb", "cola", "qqp", "mnli", "qnli", "wnli")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", help="folder holding one `compact run` output folder per task")
    args = parser.parse_args()
    found = {path.parent.name: json.loads(path.read_text()) for path in Path(args.runs).glob("*/results.json")}
    if not found:
        raise SystemExit(f"no */results.json under {args.runs}")
    tasks = [t for t in ORDER if t in found]
    for task in tasks:
        write_json(RESULTS / "baselines" / f"{task}.json", found[task])
    rows = []
    for task in tasks:
        results = found[task]
        summary, first, protocol = results["summary"], results["per_seed"][0], results["recipe"]["protocol"]
        scores = "; ".join(f"{key.split('/')[-1]} {s['mean']:.2f} ± {s['sd']:.2f}" for key, s in summary.items()
                           if isinstance(s, dict) and "/" in key and "combined" not in key)
        subset = "all" if protocol["train_subset"] is None else str(protocol["train_subset"])
        wall = sum(r["wall_seconds"] for r in results["per_seed"]) / 60
        rows.append(f"| {task} | {scores} | {len(summary['seeds'])} | {subset} / {protocol['epochs']:g} ep | "
                    f"{summary['train_minutes_per_seed']} | {wall:.1f} | {summary['latency_ms_batch1_median']} | "
                    f"{first['size_mb'][first['artifact']]} |")
    machine = found[tasks[0]]["per_seed"][0]["machine"]
    text = "\n".join([
        "# fp32 baselines: all-MiniLM-L6-v2 fine-tuned under the protocol (docs/protocol.md)",
        "",
        f"Measured with `compact run` on {machine['platform']} ({machine['cores']} cores). Dev scores ×100 are computed "
        "on the exported `model.ort` (mean ± sd over seeds); the held-out split carved from train chose the epoch; "
        "latency is model.ort at batch 1, 1 thread, on 200 real dev inputs (median, ms), averaged over seeds.",
        "",
        "| task | dev (model.ort) | seeds | train subset / epochs | train min/seed | wall min (all seeds) | ms batch 1 | .ort MB |",
        "|---|---|---|---|---|---|---|---|",
        *rows, "",
    ])
    write_json(RESULTS / "baselines.json", {t: {"summary": found[t]["summary"], "recipe": found[t]["recipe"]}
                                            for t in tasks})
    write_text(RESULTS / "baselines.md", text)
    print(text)


if __name__ == "__main__":
    main()

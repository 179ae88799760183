"""int8 QAT or binary against fp32 under the protocol (issue 4): dev scores, latency and size of each task's run next
to the fp32 model of the same seed it started from (each seed's original is measured in the same run, side by side).

    compact run recipes/glue/mrpc.yaml --preset int8-qat --set model=RUNS/mrpc/seed-{seed}/model \\
        --set teacher=RUNS/mrpc/seed-{seed}/model --out RUNS/mrpc_qat
    python bench/qat.py RUNS/sst2_qat RUNS/mrpc_qat                     -> bench/results/quant_qat.{json,md}
    python bench/qat.py --kind binary RUNS/sst2_binary RUNS/mrpc_binary  -> bench/results/quant_binary.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from compact_nlp.io import write_json, write_text

RESULTS = Path(__file__).parent / "results"


def _stats(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 2),
            "sd": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0, "values": [round(v, 2) for v in values]}


def compare(run: dict) -> dict:
    per_seed = run["per_seed"]
    rows = {}
    for split, metrics in per_seed[0]["dev"].items():
        for metric in metrics:
            qat = _stats([100 * r["dev"][split][metric] for r in per_seed])
            fp32 = _stats([100 * r["original"]["dev"][split][metric] for r in per_seed])
            rows[f"{split}/{metric}"] = {"fp32": fp32, "qat": qat, "change": round(qat["mean"] - fp32["mean"], 2)}
    ms = {"qat": statistics.median(r["latency_ms_batch1"]["median"] for r in per_seed),
          "fp32": statistics.median(r["original"]["latency_ms_batch1"]["median"] for r in per_seed)}
    first = per_seed[0]
    return {"task": first["task"], "seeds": [r["seed"] for r in per_seed], "metrics": rows,
            "latency_ms_batch1": ms, "speedup": round(ms["fp32"] / ms["qat"], 2),
            "size_mb": {"qat": first["size_mb"][first["artifact"]],
                        "fp32": first["original"]["size_mb"][first["original"]["artifact"]]},
            "mean_tokens": first["latency_ms_batch1"]["mean_tokens"], "train_minutes_per_seed":
                run["summary"]["train_minutes_per_seed"], "recipe": run["recipe"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="compact run outputs of int8-qat (or binary) runs")
    parser.add_argument("--kind", choices=["qat", "binary"], default="qat")
    parser.add_argument("--note", default="", help="a line about how these runs differ, added to the table")
    args = parser.parse_args()
    tasks = [compare(json.loads((Path(p) / "results.json").read_text())) for p in args.runs]
    label, bar = ("int8 QAT", 0.5) if args.kind == "qat" else ("binary W1A8", 3.0)
    how = ("QAT: the int8-qat preset (1 epoch from the fine-tuned fp32 model, distilled from it: task + logits + hidden "
           "states; per-channel weights, int8 word embeddings, EMA activation ranges frozen halfway). Shipped file: "
           "trained int8 weights with dynamic activations (`model.ort`)." if args.kind == "qat" else
           "Binary: the binary preset (2 epochs from the fine-tuned fp32 model, lr 2e-4, no weight decay; distilled "
           "from it in two stages: hidden states + attention maps, then logits + labels; sign weights with per-row "
           "mean|W| scales, int8 activations, 1-bit word embeddings). Shipped file: `model.ort`, packed at 1 bit per "
           "weight, which unpacks its weights on every call (docs/quant.md).")
    lines = [
        f"# {label} vs fp32 (the model each seed started from), measured on the shipped model.ort",
        "",
        f"{how} Latency: batch 1, 1 thread, 200 real dev inputs, {label} and fp32 interleaved in the same run; median "
        "over seeds of each seed's median.",
        "",
        f"| task | dev metric | fp32 | {label} | change | within {bar} |",
        "|---|---|---|---|---|---|",
    ]
    for t in tasks:
        for key, row in t["metrics"].items():
            lines.append(f"| {t['task']} (seeds {t['seeds']}) | {key} | {row['fp32']['mean']:.2f} ± {row['fp32']['sd']:.2f} | "
                         f"{row['qat']['mean']:.2f} ± {row['qat']['sd']:.2f} | {row['change']:+.2f} | "
                         f"{'yes' if row['change'] >= -bar else 'no'} |")
    lines += ["", f"| task | fp32 ms | {label} ms | speedup | fp32 .ort MB | {label} .ort MB | smaller | mean tokens | "
              "min/seed |", "|---|---|---|---|---|---|---|---|---|"]
    for t in tasks:
        lines.append(f"| {t['task']} | {t['latency_ms_batch1']['fp32']} | {t['latency_ms_batch1']['qat']} | "
                     f"{t['speedup']}x | {t['size_mb']['fp32']} | {t['size_mb']['qat']} | "
                     f"{t['size_mb']['fp32'] / t['size_mb']['qat']:.2f}x | {t['mean_tokens']} | "
                     f"{t['train_minutes_per_seed']} |")
    if args.note:
        lines += ["", args.note]
    write_json(RESULTS / f"quant_{args.kind}.json", {"tasks": tasks, "note": args.note})
    write_text(RESULTS / f"quant_{args.kind}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

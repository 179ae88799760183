"""Token pruning benchmark (issue 5): unpruned vs pruned MiniLM, side by side in one run, per GLUE task.

Variants, for every seed of the task's fp32 baseline (compact run OUT/seed-N/model):
  unpruned                        the baseline's model.onnx
  training-free, keep K           the same fine-tuned weights with the cascade schedule switched on (no retraining)
  fine-tuned, keep K (or LTP)     a `compact run --preset token-pruning` run (--finetuned LABEL=OUT, repeatable)
Every pruned variant is exported here from its weights (into --work), so one table compares one version of the graph.

Columns: dev metric (mean +- sd over seeds, on the exported ONNX file); encoder FLOPs per dev example at its real
length, and the cut against unpruned; ONNX Runtime latency at batch 1 on the first --examples dev inputs at their real,
unpadded lengths (interleaved, alternating order), and on single inputs of 128 / 256 / 512 real tokens made by joining
dev texts (no padding anywhere), at 1 and 2 threads, with latency gain / FLOPs cut. Latency and FLOPs are measured on
seed 1's models (the graphs of every seed have the same shapes).

    python bench/token_pruning.py --task sst2 --baseline RUNS/baselines/sst2 --keep 0.6 0.45 \
        --finetuned 0.45=RUNS/prune/sst2_k45 --glue-dir DIR
Writes bench/results/token_pruning_<task>.{json,md} and token_survival_<task>_<variant>.png per fine-tuned variant
(which tokens of a few dev examples each layer runs on); exports go to --work (reused when the run is repeated).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from quant import dev_scores, encode, feed, real_length_latency
from transformers import AutoTokenizer

from compact_nlp.auto import AutoCompactModelForSequenceClassification
from compact_nlp.bench import inputs_of_length, time_side_by_side
from compact_nlp.export import export_model
from compact_nlp.glue import get_task, load_glue
from compact_nlp.io import write_json, write_text
from compact_nlp.runtime import session_options
from compact_nlp.ship import machine, versions
from compact_nlp.token_pruning import TokenPruningConfig, encoder_flops, plot_token_survival, prepare_token_pruning

RESULTS = Path(__file__).parent / "results"
LONG = (128, 256, 512)


def seeds_in(folder: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("seed-*") if (p / "model" / "model.onnx").exists())


def exported(source: Path, dest: Path, keep: float | None = None) -> Path:
    """`source` (a compact folder) exported by this version of compact to dest/model.onnx, once; with `keep`, the
    keep-`keep` schedule is switched on first (training-free). Fine-tuned runs are re-exported too, so every variant
    in one table is the same graph code."""
    path = dest / "model.onnx"
    if not path.exists():
        model = AutoCompactModelForSequenceClassification.from_pretrained(source).eval()
        tokenizer = AutoTokenizer.from_pretrained(source)
        if keep is not None:
            prepare_token_pruning(model, TokenPruningConfig(keep_ratio=keep), tokenizer)
        export_model(model, dest, tokenizer_source=tokenizer)  # weights, tokenizer, parity-checked model.onnx
    return dest


@torch.no_grad()
def flops_per_example(folder: Path, tokenizer, task, rows: dict, max_length: int) -> float:
    """Mean encoder FLOPs per example over `rows`, each counted at its real length."""
    model = AutoCompactModelForSequenceClassification.from_pretrained(folder).eval()
    total, count = 0, len(rows["label"])
    for start in range(0, count, 64):
        encoded = encode(tokenizer, task, {c: rows[c][start:start + 64] for c in task.text_columns}, max_length, True)
        total += encoder_flops(model, **{k: torch.from_numpy(v) for k, v in encoded.items()})["total"]
    return total / count


@torch.no_grad()
def flops_of(folder: Path, inputs: dict) -> float:
    model = AutoCompactModelForSequenceClassification.from_pretrained(folder).eval()
    return encoder_flops(model, **{k: torch.from_numpy(v) for k, v in inputs.items()})["total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--baseline", required=True, help="the fp32 run's OUT folder (with seed-N/model)")
    parser.add_argument("--keep", type=float, nargs="+", default=[0.6, 0.45], help="training-free keep ratios")
    parser.add_argument("--finetuned", action="append", default=[], metavar="LABEL=OUT",
                        help="a token-pruning run's OUT folder, labelled by its keep ratio or a name (repeatable)")
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--examples", type=int, default=200, help="dev inputs timed at their real lengths")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--work", default="/tmp/compact-token-pruning-bench")
    parser.add_argument("--survival", type=int, default=4, help="dev examples in the survival picture")
    args = parser.parse_args()

    task = get_task(args.task)
    dev = load_glue(task.name, args.glue_dir)[task.dev_splits[0]]
    baseline = Path(args.baseline)
    work = Path(args.work) / task.name
    seeds = seeds_in(baseline)
    variants: dict[str, dict[int, Path]] = {"unpruned": {s: baseline / f"seed-{s}" / "model" for s in seeds}}
    for keep in args.keep:
        print(f"training-free keep {keep}: exporting ...", file=sys.stderr)
        variants[f"training-free, keep {keep}"] = {
            s: exported(baseline / f"seed-{s}" / "model", work / f"seed-{s}" / f"keep-{keep}", keep) for s in seeds}
    for spec in args.finetuned:
        label, out = spec.split("=", 1)
        label = f"keep {label}" if label.replace(".", "", 1).isdigit() else label  # 0.45 or e.g. LTP
        run = Path(out)
        print(f"fine-tuned {label}: exporting ...", file=sys.stderr)
        variants[f"fine-tuned, {label}"] = {s: exported(run / f"seed-{s}" / "model", work / f"seed-{s}" / run.name)
                                            for s in seeds_in(run)}

    tokenizer = AutoTokenizer.from_pretrained(variants["unpruned"][seeds[0]])
    rows: dict[str, dict] = {}
    for name, folders in variants.items():
        print(f"{name}: dev scores ...", file=sys.stderr)
        per_seed = {s: dev_scores(ort.InferenceSession(str(f / "model.onnx"), session_options(2)), tokenizer, task,
                                  dev, args.max_length) for s, f in folders.items()}
        metrics = next(iter(per_seed.values()))
        rows[name] = {"seeds": sorted(per_seed), "dev": {
            m: {"mean": round(100 * statistics.mean(r[m] for r in per_seed.values()), 2),
                "sd": round(100 * statistics.stdev([r[m] for r in per_seed.values()]), 2) if len(per_seed) > 1 else 0.0,
                "values": [round(100 * per_seed[s][m], 2) for s in sorted(per_seed)]} for m in metrics}}
        first = folders[min(folders)]
        rows[name]["token_pruning"] = json.loads((first / "config.json").read_text()).get("token_pruning")
        rows[name]["flops_per_example"] = flops_per_example(first, tokenizer, task, dev[:], args.max_length)

    examples = dev[: args.survival]
    texts = [tuple(examples[c][i] for c in task.text_columns) if len(task.text_columns) > 1
             else examples[task.text_columns[0]][i] for i in range(len(examples["label"]))]
    RESULTS.mkdir(exist_ok=True)
    for name in [n for n in variants if n.startswith("fine-tuned")]:
        slug = re.sub(r"[^A-Za-z0-9-]+", "_", name.removeprefix("fine-tuned, ").replace("keep ", "keep").replace(".", ""))
        plot_token_survival(AutoCompactModelForSequenceClassification.from_pretrained(variants[name][min(variants[name])]),
                            tokenizer, texts, RESULTS / f"token_survival_{task.name}_{slug}.png",
                            max_length=args.max_length, title=f"{task.name} dev, {name}: which tokens each layer runs on")

    timed = {name: folders[min(folders)] / "model.onnx" for name, folders in variants.items()}
    real = [encode(tokenizer, task, dev[i:i + 1], args.max_length, False) for i in range(args.examples)]
    dev_texts = [t for c in task.text_columns for t in dev[c]]
    long = {n: inputs_of_length(tokenizer, dev_texts, n) for n in LONG}
    for name in timed:
        rows[name]["long_flops"] = {n: flops_of(timed[name].parent, long[n]) for n in LONG}
    for threads in (1, 2):
        print(f"latency, {threads} thread(s) ...", file=sys.stderr)
        sessions = {name: ort.InferenceSession(str(path), session_options(threads)) for name, path in timed.items()}
        callers = {name: (lambda inputs, s=s: s.run(None, feed(s, inputs))) for name, s in sessions.items()}
        for name, stats in real_length_latency(callers, {name: real for name in sessions}).items():
            rows[name][f"real_{threads}t"] = stats
        for n in LONG:
            stats = time_side_by_side({name: (lambda s=s: s.run(None, feed(s, long[n]))) for name, s in sessions.items()},
                                      rounds=args.rounds, calls=args.calls)
            for name, s in stats.items():
                rows[name][f"long{n}_{threads}t"] = s
    results = {"task": task.name, "baseline": str(baseline), "seeds": seeds, "dev_examples": len(dev),
               "real_length_examples": args.examples,
               "mean_real_tokens": round(float(np.mean([r["input_ids"].shape[1] for r in real])), 1),
               "main_metric": task.metrics[0], "variants": rows, "machine": machine(), "versions": versions()}
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / f"token_pruning_{task.name}.json", results)
    write_text(RESULTS / f"token_pruning_{task.name}.md", markdown(results))
    print(markdown(results))


def schedule_text(config: dict | None) -> str:
    if not config:
        return "all"
    if config["mode"] == "threshold":
        return "learned thresholds " + ", ".join(f"{t:.2f}" for t in config["thresholds"][config["unpruned_layers"]:])
    return ", ".join(f"{x:.2f}" for x in config["keep_ratios"])


def markdown(results: dict) -> str:
    task, rows = results["task"], results["variants"]
    metric = results["main_metric"]
    base = rows["unpruned"]
    lines = [
        f"# Token pruning on {task}: unpruned vs cascade token pruning, side by side",
        "",
        f"all-MiniLM-L6-v2 fine-tuned under the protocol (seeds {results['seeds']}); dev {metric} on the exported "
        f"model.onnx over {results['dev_examples']} examples (mean +- sd over seeds). FLOPs: encoder, per dev example "
        f"at its real length. Latency: ONNX Runtime, batch 1, median ms on the first {results['real_length_examples']} "
        f"dev inputs at their real, unpadded lengths ({results['mean_real_tokens']} tokens on average), all variants "
        "interleaved in one run; gain = unpruned / variant. Seed 1's models are timed.",
        "",
        f"| variant | schedule (share of real tokens per layer) | dev {metric} | FLOPs/example (M) | FLOPs cut | "
        "real, 1 thread | gain | gain / FLOPs cut | real, 2 threads | gain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        cut = base["flops_per_example"] / r["flops_per_example"]
        gain1 = base["real_1t"]["median_ms"] / r["real_1t"]["median_ms"]
        gain2 = base["real_2t"]["median_ms"] / r["real_2t"]["median_ms"]
        schedule = schedule_text(r["token_pruning"])
        d = r["dev"][metric]
        lines.append(f"| {name} | {schedule} | {d['mean']:.2f} +- {d['sd']:.2f} | "
                     f"{r['flops_per_example'] / 1e6:.1f} | {cut:.2f}x | {r['real_1t']['median_ms']:.2f} | "
                     f"{gain1:.2f}x | {gain1 / cut:.2f} | {r['real_2t']['median_ms']:.2f} | {gain2:.2f}x |")
    lines += ["", "Long inputs: one input of N real tokens (dev texts joined, no padding); median ms (gain, "
              "gain / FLOPs cut).", "",
              "| variant | " + " | ".join(f"{n} tok, {t} thread{'s' if t > 1 else ''}" for n in LONG for t in (1, 2))
              + " |", "|---|" + "---|" * (2 * len(LONG))]
    for name, r in rows.items():
        cells = []
        for n in LONG:
            cut = base["long_flops"][n] / r["long_flops"][n]
            for t in (1, 2):
                ms = r[f"long{n}_{t}t"]["median_ms"]
                gain = base[f"long{n}_{t}t"]["median_ms"] / ms
                cells.append(f"{ms:.1f} ({gain:.2f}x, {gain / cut:.2f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    floors = [r[f"long{n}_{t}t"]["noise_floor"] for r in rows.values() for n in LONG for t in (1, 2)]
    lines += ["", f"Repeat-noise floor of the long-input medians (spread of round medians): up to {max(floors):.0%}.",
              f"Machine: {results['machine']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

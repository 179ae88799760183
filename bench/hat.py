"""HAT benchmark (issue 6): the SubTransformers `compact search` found, side by side with the full model and with
hand-picked uniform models of the same predicted latency, in one run.

    python bench/hat.py --run RUNS/hat/sst2 --model RUNS/baselines/sst2/seed-1/model --glue-dir DIR

Reads RUN/search_results.json (predictor errors and noise floor, search wall time, the chosen SubTransformers and
their predicted and measured latency). Then, on this machine, in one run:
  - the full model in the form the budgets were set in (int8 dynamic, compact's PTQ, exported here into --work) and
    in fp32, and each budget's searched and uniform SubTransformer (RUN/sub-<budget>-<label>/model/model.ort);
  - dev metric of each shipped file; .ort size; ONNX Runtime latency at batch 1 on the first --examples dev inputs
    at their real, unpadded lengths (interleaved) and on one real input of the search's sequence length, at 1 and 2
    threads;
  - which layers a shallower SubTransformer should keep: held-out score of full-width SubTransformers of each depth
    under "spread" and "first", on the fine-tuned weights before any SuperTransformer training (inherited weights).
Writes bench/results/<name>.{json,md} (--name, default hat_<task>) and copies each budget's Pareto plot to
bench/results/hat_pareto_<name without hat_>_<budget>.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from quant import dev_scores, encode, feed, real_length_latency
from transformers import AutoTokenizer, DataCollatorWithPadding

from compact_nlp.auto import AutoCompactModelForSequenceClassification
from compact_nlp.bench import inputs_of_length, time_side_by_side
from compact_nlp.glue import get_task, load_glue, task_texts
from compact_nlp.hat import SearchSpace, SuperTransformer
from compact_nlp.hat.pipeline import collate_batches, heldout_fitness
from compact_nlp.io import write_json, write_text
from compact_nlp.quant.config import Int8Config
from compact_nlp.quant.recipes import exporter as quant_exporter
from compact_nlp.protocol import protocol_splits, tokenize
from compact_nlp.recipe import load_recipe
from compact_nlp.run import load_data
from compact_nlp.runtime import session_options
from compact_nlp.ship import machine, versions

RESULTS = Path(__file__).parent / "results"


def layer_selection(run: Path, recipe, glue_dir, examples: int) -> dict:
    """Held-out score of full-width SubTransformers of each depth, keeping "spread" or "first" layers, on the rewired
    fine-tuned weights (no SuperTransformer training, so neither rule is favoured by what it was trained with)."""
    model = AutoCompactModelForSequenceClassification.from_pretrained(run / "rewired").eval()
    tokenizer = AutoTokenizer.from_pretrained(recipe.model)
    data = load_data(recipe, glue_dir)
    heldout = protocol_splits(recipe.protocol, data, recipe.protocol.seeds[0]).heldout
    rows = tokenize(heldout, tokenizer, data.spec, recipe.protocol.max_length).select(range(min(examples, len(heldout))))
    batches = collate_batches(rows, DataCollatorWithPadding(tokenizer), 64, by_length=True)
    scores = {}
    for selection in ("spread", "first"):
        space = SearchSpace.from_model(model.config, selection)
        fitness = heldout_fitness(SuperTransformer(model, space), batches, data.spec)
        scores[selection] = {depth: {"layers": space.layers_for(depth), "heldout": round(fitness(space.uniform(depth)), 2)}
                             for depth in sorted(space.depth)}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="the `compact search` OUT folder")
    parser.add_argument("--model", required=True, help="the fine-tuned full model the search started from")
    parser.add_argument("--recipe", default="recipes/glue/sst2.yaml")
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--examples", type=int, default=200, help="dev inputs timed at their real lengths")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--work", default="/tmp/compact-hat-bench")
    parser.add_argument("--name", default=None, help="results file name without extension (default hat_<task>); "
                        "another name keeps an earlier run's results beside this one")
    args = parser.parse_args()

    run, full = Path(args.run), Path(args.model)
    search = json.loads((run / "search_results.json").read_text())
    recipe = load_recipe(args.recipe, [f"model={full}"])
    task = get_task(search["task"])
    dev = load_glue(task.name, args.glue_dir)[task.dev_splits[0]]
    tokenizer = AutoTokenizer.from_pretrained(full)
    max_length = recipe.protocol.max_length
    work = Path(args.work)

    print("exporting the full model in int8 ...", file=sys.stderr)
    int8_full = work / "full-int8"
    if not (int8_full / "model.ort").is_file():
        train = protocol_splits(recipe.protocol, load_data(recipe, args.glue_dir), recipe.protocol.seeds[0]).train
        export = quant_exporter(Int8Config(), tokenizer, task_texts(train, task.name, 256), max_length, True, "arm")
        export(AutoCompactModelForSequenceClassification.from_pretrained(full).eval(), int8_full)
    files = {"full model, fp32": full / "model.ort", "full model, int8": int8_full / "model.ort"}
    if "full_reference" in search:  # the full architecture with the same supernet training + distillation
        files["full model, int8, trained the same way"] = run / "sub-1-full" / "model" / "model.ort"
    for fraction, entry in search["budgets"].items():
        for label in ("searched", "uniform"):
            if label in entry:
                files[f"{float(fraction):.0%} budget, {'HAT' if label == 'searched' else 'uniform (hand-picked)'}"] = (
                    run / f"sub-{fraction}-{label}" / "model" / "model.ort")

    rows: dict[str, dict] = {}
    for name, path in files.items():
        print(f"{name}: dev ...", file=sys.stderr)
        config = json.loads((path.parent / "config.json").read_text())
        rows[name] = {"file": str(path), "size_mb": round(path.stat().st_size / 2**20, 2),
                      "dev": {k: round(100 * v, 2) for k, v in dev_scores(
                          ort.InferenceSession(str(path), session_options(2)), tokenizer, task, dev, max_length).items()},
                      "hidden": config["hidden_size"], "heads": config["num_heads_per_layer"],
                      "ffn": config["intermediate_size_per_layer"]}
    for fraction, entry in search["budgets"].items():
        for label in ("searched", "uniform"):
            if label in entry:
                name = f"{float(fraction):.0%} budget, {'HAT' if label == 'searched' else 'uniform (hand-picked)'}"
                rows[name].update(predicted_ms=entry[label]["predicted_ms"], measured_ms=entry[label]["measured_ms"],
                                  heldout=round(100 * entry[label]["heldout"][search_metric(entry[label])], 2),
                                  dev_per_seed=entry[label].get("dev_per_seed"))
    if "full_reference" in search:
        rows["full model, int8, trained the same way"]["dev_per_seed"] = search["full_reference"].get("dev_per_seed")

    real = [encode(tokenizer, task, dev[i:i + 1], max_length, False) for i in range(args.examples)]
    dev_texts = [t for c in task.text_columns for t in dev[c]]
    length = search["spec"]["sequence_length"]
    fixed = inputs_of_length(tokenizer, dev_texts, length)
    for threads in (1, 2):
        print(f"latency, {threads} thread(s) ...", file=sys.stderr)
        # every session stays open for interleaved timing: their idle workers must sleep, not spin on the 2 cores
        sessions = {name: ort.InferenceSession(str(path), session_options(threads, spinning=False))
                    for name, path in files.items()}
        callers = {name: (lambda inputs, s=s: s.run(None, feed(s, inputs))) for name, s in sessions.items()}
        for name, stats in real_length_latency(callers, {name: real for name in sessions}).items():
            rows[name][f"real_{threads}t"] = stats
        stats = time_side_by_side({name: (lambda s=s: s.run(None, feed(s, fixed))) for name, s in sessions.items()},
                                  rounds=args.rounds, calls=args.calls)
        for name, s in stats.items():
            rows[name][f"fixed_{threads}t"] = s

    print("layer selection ...", file=sys.stderr)
    torch.set_num_threads(2)
    selection = layer_selection(run, recipe, args.glue_dir, search["hat"]["fitness_examples"])
    RESULTS.mkdir(exist_ok=True)
    results_name = args.name or f"hat_{task.name}"
    plot_name = "hat_pareto_" + results_name.removeprefix("hat_")
    for fraction in search["budgets"]:
        plot = run / f"search-{fraction}" / "pareto.png"
        if plot.is_file():
            shutil.copyfile(plot, RESULTS / f"{plot_name}_{fraction.replace('.', '')}.png")
    results = {"task": task.name, "run": str(run), "model": str(full), "search": search, "variants": rows,
               "layer_selection": selection, "real_length_examples": args.examples,
               "mean_real_tokens": round(float(np.mean([r["input_ids"].shape[1] for r in real])), 1),
               "machine": machine(), "versions": versions()}
    write_json(RESULTS / f"{results_name}.json", results)
    write_text(RESULTS / f"{results_name}.md", markdown(results))
    print(markdown(results))


def search_metric(entry: dict) -> str:
    return next(k for k in entry["heldout"] if k in ("accuracy", "matthews_correlation", "combined_score", "f1"))


def markdown(results: dict) -> str:
    search, rows = results["search"], results["variants"]
    p, spec = search["predictor"], search["spec"]
    base = rows["full model, int8"]
    lines = [
        f"# HAT on {results['task']}: searched SubTransformers vs the full model and hand-picked uniform models",
        "",
        f"Fine-tuned model: `{results['model']}`. Latency setting of the search: ONNX Runtime CPU, {spec['precision']}, "
        f"{spec['threads']} thread, batch {spec['batch']}, {spec['sequence_length']} real tokens ({spec['hardware']}). "
        f"Budgets are fractions of the full int8 model's measured latency in that setting "
        f"({search['full_model_ms']} ms).",
        "",
        "## Latency predictor (HAT's MLP, 3 x 400) on held-out measured SubTransformers",
        "",
        "| measured models | train / validation / test | test RMSE | test MAPE | repeat-noise floor (RMSE / MAPE) |",
        "|---|---|---|---|---|",
        f"| {p['measured_models']} | {p['train']} / {p['validation']} / {p['test']['count']} | "
        f"{p['test']['rmse_ms']} ms | {p['test']['mape']}% | {p['noise_floor'].get('rmse_ms')} ms / "
        f"{p['noise_floor'].get('mape')}% ({p['noise_floor'].get('models')} models x "
        f"{p['noise_floor'].get('measurements', 0) // max(1, p['noise_floor'].get('models', 1))}) |",
        "",
        "## Search",
        "",
        f"Space: {search['space_size']:,} SubTransformers (hidden {search['space']['hidden']}, heads "
        f"{search['space']['heads']}, FFN {search['space']['ffn']}, depth {search['space']['depth']}, layers kept: "
        f"{search['space']['layer_selection']}). Fitness: held-out {search['hat']['fitness_examples']} examples carved "
        f"from train, inherited SuperTransformer weights. Full model on the same held-out rows, inherited weights: "
        f"{search['full_model_heldout']:.2f}.",
        "",
        "| budget | search wall time | candidates scored | population / parents / mutations / crossovers / generations |",
        "|---|---|---|---|---|",
    ]
    h = search["hat"]
    for fraction, entry in search["budgets"].items():
        lines.append(f"| {float(fraction):.0%} ({entry['search']['budget_ms']:.3f} ms) | {entry['search_minutes']} min | "
                     f"{entry['search']['evaluated']} | {h['population']} / {h['parents']} / {h['mutations']} / "
                     f"{h['crossovers']} / {h['iterations']} |")
    metric = next(iter(base["dev"]))
    lines += [
        "",
        f"## The models, side by side ({results['real_length_examples']} dev inputs at real lengths, "
        f"{results['mean_real_tokens']} tokens on average; dev {metric} on the shipped `.ort`)",
        "",
        "| model | hidden / layers / heads / FFN | dev (seed 1) | dev, distillation seeds | .ort MB | predicted ms | "
        f"measured ms (search setting) | ms, {spec['sequence_length']} tok 1t | ms, real lengths 1t | vs full int8 | "
        "ms, real 2t |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        arch = f"{r['hidden']} / {len(r['heads'])} / {r['heads']} / {r['ffn']}"
        speed = base["real_1t"]["median_ms"] / r["real_1t"]["median_ms"]
        seeds = ""
        if r.get("dev_per_seed"):
            values = next(iter(r["dev_per_seed"].values()))[metric]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            seeds = f"{statistics.mean(values):.2f} ± {sd:.2f} ({', '.join(f'{v:.2f}' for v in values)})"
        lines.append(
            f"| {name} | {arch} | {r['dev'][metric]:.2f} | {seeds} | {r['size_mb']} | {r.get('predicted_ms', '')} | "
            f"{r.get('measured_ms', '')} | {r['fixed_1t']['median_ms']} | {r['real_1t']['median_ms']} | {speed:.2f}x | "
            f"{r['real_2t']['median_ms']} |")
    lines += ["", "## Which layers a shallower SubTransformer keeps (held-out score, full width, inherited weights, "
              "before SuperTransformer training)", "", "| depth | spread: layers | spread | first: layers | first |",
              "|---|---|---|---|---|"]
    sel = results["layer_selection"]
    for depth in sel["spread"]:
        s, f = sel["spread"][depth], sel["first"][depth]
        lines.append(f"| {depth} | {s['layers']} | {s['heldout']:.2f} | {f['layers']} | {f['heldout']:.2f} |")
    lines += ["", f"Machine: {results['machine']}. Versions: {results['versions']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

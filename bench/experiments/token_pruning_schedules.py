"""Which cascade schedule to fine-tune (issue 5): schedules of about the same encoder FLOPs, scored training-free on
the held-out split.

The geometric schedule (`keep_ratio`) falls fastest in the last layers: at SST-2's 25 tokens, keep 0.45 leaves the
last layer 3 tokens. A flatter schedule, or one more unpruned layer, spends the same FLOPs differently. Which is best
is an empirical question per task, so this scores each candidate on the protocol's held-out split (carved from train,
never the reported dev set) with the fine-tuned model's own weights, no retraining; its FLOPs are counted per example
at the real length. Fine-tune the winner with `--set token_pruning.keep_ratios=[...]`.

    python bench/experiments/token_pruning_schedules.py --recipe recipes/glue/sst2.yaml --model RUNS/baselines/sst2/seed-1/model \
        --glue-dir DIR
Writes bench/results/token_pruning_schedules_<task>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from compact_nlp.auto import AutoCompactModelForSequenceClassification
from compact_nlp.compare import encode
from compact_nlp.io import write_json, write_text
from compact_nlp.metrics import compute_metrics
from compact_nlp.protocol import protocol_splits
from compact_nlp.recipe import load_recipe
from compact_nlp.run import load_data
from compact_nlp.ship import machine, versions
from compact_nlp.token_pruning import (TokenPruningConfig, encoder_flops, geometric_schedule, prepare_token_pruning,
                                       remove_token_pruning)

RESULTS = Path(__file__).parent.parent / "results"


def candidates(layers: int, keep: float) -> dict[str, list[float]]:
    """Schedules whose layers run on `keep` of the real tokens on average: the geometric fall after one or two
    unpruned layers, a linear fall, and a flat one (one cut after the first layer)."""
    budget = keep * layers - 1  # what the layers after the first may spend, in layer-equivalents
    pruned = layers - 1
    linear_top = 2 * budget / pruned - 1 / pruned  # a linear fall from linear_top to 1/pruned sums to `budget`
    linear = [1.0] + [round(linear_top + (1 / pruned - linear_top) * i / (pruned - 1), 4) for i in range(pruned)]
    return {
        f"geometric {keep}, 1 unpruned": geometric_schedule(keep, layers, 1),
        f"geometric {keep}, 2 unpruned": geometric_schedule(keep, layers, 2),
        f"linear fall, mean {keep}": linear,
        f"flat, mean {keep}": [1.0] + [round(budget / pruned, 4)] * pruned,
    }


@torch.no_grad()
def score(model, tokenizer, task, rows, max_length: int) -> tuple[dict, float]:
    """(task metrics, mean encoder FLOPs per example at its real length) on `rows`."""
    logits, flops = [], 0
    for start in range(0, len(rows), 64):
        batch = encode(tokenizer, task, rows[start:start + 64], max_length, True)
        tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
        logits.append(model(**tensors).logits.numpy())
        flops += encoder_flops(model, **tensors)["total"]
    return compute_metrics(task, np.concatenate(logits), np.asarray(rows["label"])), flops / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, help="the task's recipe (its protocol carves the held-out split)")
    parser.add_argument("--model", required=True, help="the fine-tuned fp32 folder (compact run OUT/seed-N/model)")
    parser.add_argument("--seed", type=int, default=1, help="the protocol seed whose held-out split scores")
    parser.add_argument("--keep", type=float, nargs="+", default=[0.45], help="mean keep ratios to compare at")
    parser.add_argument("--glue-dir", default=None)
    args = parser.parse_args()

    recipe = load_recipe(args.recipe)
    data = load_data(recipe, args.glue_dir)
    task, heldout = data.spec, protocol_splits(recipe.protocol, data, args.seed).heldout
    model = AutoCompactModelForSequenceClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    layers, max_length = model.config.num_hidden_layers, recipe.protocol.max_length

    unpruned, unpruned_flops = score(model, tokenizer, task, heldout, max_length)
    rows = [{"schedule": "unpruned", "keep_ratios": [1.0] * layers, "heldout": unpruned, "flops": unpruned_flops}]
    print(f"unpruned: {unpruned}", file=sys.stderr)
    for keep in args.keep:
        for name, ratios in candidates(layers, keep).items():
            prepare_token_pruning(model, TokenPruningConfig(keep_ratios=ratios), tokenizer)
            scores, flops = score(model, tokenizer, task, heldout, max_length)
            remove_token_pruning(model)
            rows.append({"schedule": name, "keep_ratios": ratios, "heldout": scores, "flops": flops})
            print(f"{name} {ratios}: {scores}, FLOPs cut {unpruned_flops / flops:.2f}x", file=sys.stderr)

    results = {"task": task.name, "model": args.model, "seed": args.seed, "heldout_examples": len(heldout),
               "schedules": rows, "machine": machine(), "versions": versions()}
    stem = RESULTS / f"token_pruning_schedules_{task.name}"
    write_json(stem.with_suffix(".json"), results)
    metrics = list(unpruned)
    lines = [f"# Cascade schedules on {task.name}, training-free, scored on the held-out split",
             "",
             f"Model: `{args.model}` (fine-tuned fp32, no retraining). {len(heldout)} held-out examples carved from "
             f"train by the protocol (seed {args.seed}); dev is not read. FLOPs: encoder, per example at its real "
             "length.",
             "",
             "| schedule | keep ratios per layer | " + " | ".join(f"held-out {m}" for m in metrics)
             + " | FLOPs/example (M) | FLOPs cut |",
             "|---|---|" + "---|" * len(metrics) + "---|---|"]
    for row in rows:
        lines.append(f"| {row['schedule']} | {', '.join(f'{r:.2f}' for r in row['keep_ratios'])} | "
                     + " | ".join(f"{100 * row['heldout'][m]:.2f}" for m in metrics) + f" | {row['flops'] / 1e6:.1f} | "
                     f"{unpruned_flops / row['flops']:.2f}x |")
    lines += ["", f"Machine: {machine()}. Versions: {versions()}."]
    write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Accuracy by input length, on the held-out split and on dev, for models of one task: why a token-pruning step that
the held-out split passes can still cost points on dev. SST-2's held-out split is carved from its training rows,
mostly short phrases; dev holds whole sentences, where a keep ratio removes many more tokens. A diagnostic only: it
chooses nothing. The held-out rows are also split by whether their text occurs inside one of the task's other training
rows (the protocol's subset and the rest of train: what `transfer: [rest_of_train]` teaches).
Results: bench/results/accuracy_by_length_<task>.{json,md} (docs/combined.md, docs/protocol.md).

    python bench/experiments/accuracy_by_length.py --task sst2 --glue-dir DIR --out bench/results/accuracy_by_length_sst2 \
        "HAT alone=RUN/hat/sub-0.25-searched/model" "token pruned=RUN/token_pruning/seed-1/model" ...
"""
import argparse
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from compact_nlp.compare import OrtRow, encode, shipped
from compact_nlp.glue import inside_rows
from compact_nlp.io import write_json, write_text
from compact_nlp.protocol import protocol_splits
from compact_nlp.recipe import load_recipe
from compact_nlp.run import load_data

BUCKETS = ((1, 9), (10, 19), (20, 10_000))  # words; SST-2's training rows: median 7, dev: median 19


def bucket_name(low: int, high: int) -> str:
    return f"{low}-{high} words" if high < 10_000 else f"{low}+ words"


def correct(row, tokenizer, task, split) -> np.ndarray:
    logits = [row(encode(tokenizer, task, split[s:s + 64], 128, True)) for s in range(0, len(split), 64)]
    return np.concatenate(logits).argmax(-1) == np.asarray(split["label"])


def groups(words: np.ndarray, seen: np.ndarray | None) -> dict[str, np.ndarray]:
    """Row masks: all rows, each length bucket, and (held-out only) rows inside / outside other training rows."""
    masks = {"all": np.ones(len(words), dtype=bool)}
    masks.update({bucket_name(low, high): (words >= low) & (words <= high) for low, high in BUCKETS})
    if seen is not None:
        masks.update({"inside a training row": seen, "in no training row": ~seen})
    return masks


def scores(right: np.ndarray, masks: dict[str, np.ndarray]) -> dict:
    return {name: {"examples": int(mask.sum()),
                   "accuracy": round(100 * float(right[mask].mean()), 2) if mask.any() else None}
            for name, mask in masks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="NAME=FOLDER (its shipped .ort) or NAME=FILE.onnx/.ort")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--seed", type=int, default=1, help="the protocol seed whose held-out split is read")
    parser.add_argument("--out", required=True, help="output stem: writes OUT.json and OUT.md")
    args = parser.parse_args()

    recipe = load_recipe(Path(__file__).parent.parent.parent / "recipes" / "glue" / f"{args.task}.yaml")
    data = load_data(recipe, args.glue_dir)
    task = data.spec
    protocol = protocol_splits(recipe.protocol, data, args.seed)
    train, rest_of_train, heldout = protocol.train, protocol.rest_of_train, protocol.heldout
    splits = {"held-out": heldout, "dev": data.splits[task.dev_splits[0]]}
    column = task.text_columns[0]
    other_rows = list(train[column]) + (list(rest_of_train[column]) if rest_of_train is not None else [])
    seen = np.array(inside_rows(heldout[column], other_rows))
    words = {name: np.array([len(text.split()) for text in split[column]]) for name, split in splits.items()}
    masks = {"held-out": groups(words["held-out"], seen), "dev": groups(words["dev"], None)}
    results = {"task": args.task, "seed": args.seed, "groups": {name: list(m) for name, m in masks.items()},
               "median_words": {name: float(np.median(w)) for name, w in words.items()}, "models": {}}
    for spec in args.models:
        name, path = spec.split("=", 1)
        path = shipped(Path(path))
        tokenizer = AutoTokenizer.from_pretrained(path.parent)
        row = OrtRow(path, threads=1)
        results["models"][name] = {"path": str(path), **{split_name: scores(
            correct(row, tokenizer, task, split), masks[split_name]) for split_name, split in splits.items()}}

    stem = Path(args.out)
    write_json(stem.with_suffix(".json"), results)
    header = ["model"] + [f"{s}: {g}" for s in splits for g in results["groups"][s]]
    lines = [f"# Accuracy by input length on {args.task} (held-out: seed {args.seed}'s split of the training rows)",
             "", f"Median words: held-out {results['median_words']['held-out']:g}, dev "
             f"{results['median_words']['dev']:g}. Each cell: accuracy (examples).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, model in results["models"].items():
        cells = [f"{model[s][g]['accuracy']} ({model[s][g]['examples']})" for s in splits
                 for g in results["groups"][s]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

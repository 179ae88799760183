"""How many held-out rows are text the model learns from anyway (`compact_nlp.glue.heldout_overlap` on every row, not
the first 500 that `compact run` checks): for each task's protocol split of seed 1, against its training rows, and
for SST-2 also against the rest of train (the `rest_of_train` transfer set); dev rows against the training rows for
comparison. Results: bench/results/heldout_overlap.json (docs/protocol.md).

    python bench/experiments/heldout_overlap.py --glue-dir DIR
"""
import argparse
from pathlib import Path

from compact_nlp.glue import heldout_overlap
from compact_nlp.io import write_json
from compact_nlp.protocol import protocol_splits
from compact_nlp.recipe import load_recipe
from compact_nlp.run import load_data

EVERY_ROW = 10**9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "mrpc", "rte"])
    parser.add_argument("--out", default="bench/results/heldout_overlap.json")
    args = parser.parse_args()

    results = {}
    for name in args.tasks:
        recipe = load_recipe(Path(__file__).parent.parent.parent / "recipes" / "glue" / f"{name}.yaml")
        data = load_data(recipe, args.glue_dir)
        task, splits = data.spec, protocol_splits(recipe.protocol, data, 1)
        train, rest_of_train, heldout = splits.train, splits.rest_of_train, splits.heldout
        column = task.text_columns[0]
        training = list(train[column])
        results[name] = {
            "heldout_vs_training_rows": heldout_overlap(heldout, training, column, EVERY_ROW),
            "dev_vs_training_rows": heldout_overlap(data.splits[task.dev_splits[0]], training, column, EVERY_ROW),
        }
        if rest_of_train is not None:
            results[name]["heldout_vs_training_and_rest_of_train"] = heldout_overlap(
                heldout, training + list(rest_of_train[column]), column, EVERY_ROW)
    write_json(args.out, results)
    print(results)


if __name__ == "__main__":
    main()

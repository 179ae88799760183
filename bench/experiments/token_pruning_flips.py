"""What token pruning changed on dev for a combined run's SubTransformer: the searched model before token pruning
against the same model after it (both PyTorch fp32), sentence by sentence. Counts the predictions that flipped, the
share of tokens the last layer still sees, and how often negations survive; lists a few sentences that turned wrong
with the tokens the last layer no longer sees in brackets. A diagnostic after the fact: it chooses nothing.
Results: bench/results/token_pruning_flips_<name>.json (docs/combined.md).

    python bench/experiments/token_pruning_flips.py --run RUNS/combined/sst2_025_rest --budget 0.25 --glue-dir DIR \
        --out bench/results/token_pruning_flips_sst2_025.json
"""
import argparse
import collections

import numpy as np
import torch
from transformers import AutoTokenizer

from compact_nlp.auto import AutoCompactModelForSequenceClassification
from compact_nlp.glue import load_glue
from compact_nlp.io import write_json
from compact_nlp.token_pruning.analysis import token_survival

NEGATIONS = {"not", "n't", "no", "never", "nothing", "neither", "nor", "without", "but"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a combined run's folder (hat/ and token_pruning/ inside)")
    parser.add_argument("--budget", required=True, help="the HAT budget of that run, e.g. 0.25")
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--examples", type=int, default=8, help="sentences that turned wrong to list")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    torch.set_num_threads(1)
    before_path = f"{args.run}/hat/sub-{args.budget}-searched/pytorch"
    after_path = f"{args.run}/token_pruning/seed-1/model"
    tokenizer = AutoTokenizer.from_pretrained(after_path)
    before = AutoCompactModelForSequenceClassification.from_pretrained(before_path).eval()
    after = AutoCompactModelForSequenceClassification.from_pretrained(after_path).eval()
    dev = load_glue("sst2", args.glue_dir)["validation"]

    def predict(model, sentence: str) -> int:
        with torch.inference_mode():
            return int(model(**tokenizer(sentence, return_tensors="pt")).logits.argmax(-1))

    counts, alive_share, turned_wrong = collections.Counter(), [], []
    for sentence, label in zip(dev["sentence"], dev["label"]):
        right_before, right_after = predict(before, sentence) == label, predict(after, sentence) == label
        counts[f"right before, {'right' if right_after else 'wrong'} after" if right_before
               else f"wrong before, {'right' if right_after else 'wrong'} after"] += 1
        tokens, alive = token_survival(after, tokenizer, sentence)
        alive_share.append(alive.mean(axis=1))
        for token, kept in zip(tokens, alive[-1]):
            if token in NEGATIONS:
                counts["negations"] += 1
                counts["negations the last layer sees"] += int(kept)
        if right_before and not right_after and len(turned_wrong) < args.examples:
            turned_wrong.append(" ".join(t if kept else f"[{t}]" for t, kept in zip(tokens, alive[-1])))
    shares = np.array([share for share in alive_share if len(share) == len(alive_share[0])])
    results = {"before": before_path, "after": after_path, "dev_examples": len(dev), "counts": dict(counts),
               "net_change_points": round(100 * (counts["wrong before, right after"]
                                                 - counts["right before, wrong after"]) / len(dev), 2),
               "mean_share_of_tokens_per_layer": [round(float(x), 3) for x in shares.mean(axis=0)],
               "turned_wrong_examples": turned_wrong}
    write_json(args.out, results)
    print(results)


if __name__ == "__main__":
    main()

"""Embedding compression's accuracy and size effect (issue 4): dynamic int8 of one fine-tuned model with its word
embeddings at 8, 4 and 2 bits (one scale per row), each with and without trimming the vocabulary to the wordpieces of
the task's training text; the dev metric is measured on each model.ort. Post-training: no retraining at any width.

    python bench/embeddings.py --fp32 RUN/seed-1/model --task sst2 --glue-dir DIR
Writes bench/results/embeddings_<task>.{json,md}.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from compact_nlp.glue import get_task, load_glue, task_texts
from compact_nlp.io import write_json, write_text
from compact_nlp.quant import Int8Config, quantize_folder
from compact_nlp.ship import evaluate_artifact

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fp32", required=True)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    args.fp32_ort_mb = round((Path(args.fp32) / "model.ort").stat().st_size / 2**20, 2)
    task = get_task(args.task)
    data = load_glue(task.name, args.glue_dir)
    train = data["train"]
    calibration = task_texts(train.shuffle(seed=0), task.name, 256)
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        variants = {f"{bits}-bit embeddings{' + trimmed vocabulary' if trim else ''}":
                    Int8Config(embedding_bits=bits, trim_vocabulary=trim) for trim in (False, True) for bits in (8, 4, 2)}
        for name, config in variants.items():
            print(name, flush=True)
            folder = Path(scratch) / name.replace(" ", "_")
            report = quantize_folder(args.fp32, folder, config, texts=calibration, max_length=args.max_length,
                                     vocabulary_texts=task_texts(train, task.name))
            scores = {split: evaluate_artifact(folder / "model.ort", data[split], task.name, args.max_length)
                      for split in task.dev_splits}
            rows[name] = {"dev": scores, "ort_mb": report["size_mb"]["model.ort"],
                          "vocabulary": report.get("vocabulary"), "agreement_with_fp32": report["agreement"]}
    metric = task.metrics[0]
    lines = [f"# Embedding compression (post-training, dynamic int8 elsewhere): {task.name}", "",
             f"fp32 model `{args.fp32}`; trimmed vocabulary: the pieces {task.name}'s training split produces. Dev "
             f"{metric} measured on each `model.ort`; the fp32 `.ort` is {args.fp32_ort_mb} MB.", "",
             f"| variant | vocabulary | .ort MB | dev {metric} |", "|---|---|---|---|"]
    for name, r in rows.items():
        split = task.dev_splits[0]
        lines.append(f"| {name} | {r['vocabulary'] or 'all'} | {r['ort_mb']} | {100 * r['dev'][split][metric]:.2f} |")
    write_json(RESULTS / f"embeddings_{task.name}.json", {"fp32": args.fp32, "variants": rows})
    write_text(RESULTS / f"embeddings_{task.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

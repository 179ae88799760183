"""Export a trained binary model again with other export settings (issue 4: the same trained W1A8 model with its
vocabulary trimmed to the wordpieces the task's training text uses, for the >= 20x smaller .ort; or, with
--keep-vocabulary, as trained, e.g. after a change to the export).

    python bench/experiments/binary_reexport.py --run OUT/seed-1 --base FP32/seed-1/model --task sst2 --glue-dir DIR \\
        --out OUT/seed-1/model-trimmed [--max-length 64]

Loads the run's best checkpoint (trainer_state.json's best_model_checkpoint: chosen on the held-out split), sets
trim_vocabulary, and exports with compact_nlp.quant.export_binary. The vocabulary is what the task's whole training
split uses (training text only; never dev).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoTokenizer

from compact_nlp.glue import load_glue, task_texts
from compact_nlp.quant.binary import export_binary, load_binary_checkpoint
from compact_nlp.quant.config import BinaryConfig


def best_checkpoint(run: Path) -> Path:
    states = sorted((run / "checkpoints").glob("checkpoint-*/trainer_state.json"),
                    key=lambda p: int(p.parent.name.split("-")[1]))
    if not states:
        raise FileNotFoundError(f"{run}/checkpoints has no checkpoint-N folder.")
    best = json.loads(states[-1].read_text()).get("best_model_checkpoint")
    return run / "checkpoints" / Path(best).name if best else states[-1].parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a binary compact run's seed folder (OUT/seed-N)")
    parser.add_argument("--base", required=True, help="the fp32 model folder it was trained from")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--keep-vocabulary", action="store_true", help="export the full vocabulary (no trimming)")
    args = parser.parse_args()

    run = Path(args.run)
    trained = json.loads((run / "model" / "config.json").read_text())["quant"]["binary"]
    config = BinaryConfig.from_dict(trained)
    checkpoint = best_checkpoint(run)
    model = load_binary_checkpoint(checkpoint, args.base, config)
    model.config.quant = {"binary": {**trained, "trim_vocabulary": not args.keep_vocabulary}}
    train = load_glue(args.task, args.glue_dir)["train"]
    report = export_binary(model, args.out, AutoTokenizer.from_pretrained(run / "model"),
                           texts=task_texts(train, args.task, 256), max_length=args.max_length,
                           vocabulary_texts=task_texts(train, args.task))
    print(json.dumps({"checkpoint": str(checkpoint), "size_mb": report["size_mb"],
                      "parity_vs_pytorch": report.get("parity_vs_pytorch"),
                      "vocabulary": len(AutoTokenizer.from_pretrained(args.out))}, indent=1))


if __name__ == "__main__":
    main()

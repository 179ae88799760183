"""How closely the binary export follows the PyTorch binary model, next to how closely that model follows itself in
float64 (issue 4; docs/quant.md). The int8 activations of W1A8 make the network discontinuous, so float rounding
differences move values across quantization boundaries; the float64 run shows how large that effect is on its own.

    python bench/experiments/binary_parity.py --run RUNS/sst2_binary --seed 1 --task sst2 --glue-dir DIR
Rebuilds the binary model from the seed's best checkpoint and compares logits on the first 300 dev inputs (batch 1,
unpadded) with model.onnx and model.ort. Writes bench/results/binary_parity_<task>.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
from binary_reexport import best_checkpoint
from qat_parity import compare, ort_logits, torch_logits
from transformers import AutoTokenizer

from compact_nlp.glue import get_task, load_glue, task_texts
from compact_nlp.io import write_json, write_text
from compact_nlp.quant import BinaryConfig, load_binary_checkpoint

RESULTS = Path(__file__).parent.parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--examples", type=int, default=300)
    args = parser.parse_args()
    seed_run = json.loads((Path(args.run) / f"seed-{args.seed}" / "results.json").read_text())
    folder = Path(args.run) / f"seed-{args.seed}"
    config = BinaryConfig.from_dict(seed_run["quant"]["config"])
    model = load_binary_checkpoint(best_checkpoint(folder), seed_run["model"], config)
    model64 = copy.deepcopy(model).double()
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    task = get_task(args.task)
    texts = task_texts(load_glue(task.name, args.glue_dir)[task.dev_splits[0]], task.name, args.examples)
    inputs = [{k: v.astype(np.int64) for k, v in tokenizer(*(t if isinstance(t, tuple) else (t,)),
                                                           return_tensors="np").items()} for t in texts]

    rows = {
        "PyTorch binary model, float32 vs float64": compare(torch_logits(model64), torch_logits(model), inputs),
        "model.onnx vs PyTorch (float32)": compare(torch_logits(model), ort_logits(folder / "model" / "model.onnx"),
                                                   inputs),
        "model.ort vs PyTorch (float32)": compare(torch_logits(model), ort_logits(folder / "model" / "model.ort"),
                                                  inputs),
    }
    pytorch, shipped = torch_logits(model), ort_logits(folder / "model" / "model.ort")
    exact = sum(float(np.abs(pytorch(f) - shipped(f)).max()) <= 1e-4 for f in inputs[:100])
    lines = [f"# Binary export parity: {task.name}, seed {args.seed}", "",
             f"Logit differences on the first {len(inputs)} dev inputs (batch 1, unpadded); weights W1, activations "
             f"A{config.activation_bits}. {exact} of the first 100 inputs are within 1e-4 on model.ort.", "",
             "| comparison | median abs | p90 abs | max abs | same argmax |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {r['median_abs']} | {r['p90_abs']} | {r['max_abs']} | {r['same_argmax']:.1%} |"
              for name, r in rows.items()]
    write_json(RESULTS / f"binary_parity_{task.name}.json", {"run": args.run, "seed": args.seed, "rows": rows,
                                                             "within_1e-4_of_first_100": exact})
    write_text(RESULTS / f"binary_parity_{task.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""How closely QAT's exports follow the PyTorch QAT model, next to how closely that model follows itself in float64
(issue 4; docs/quant.md "Parity, honestly"). Quantized activations make the network discontinuous, so tiny numeric
differences move values across rounding boundaries; the float64 run shows how large that effect is on its own.

    python bench/experiments/qat_parity.py --qat-run RUNS/sst2_qat --seed 1 --task sst2 --glue-dir DIR
Rebuilds the QAT model from the run's last checkpoint and compares logits on the first 300 dev inputs (batch 1,
unpadded). Writes bench/results/qat_parity_<task>.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer
from transformers.trainer_utils import get_last_checkpoint

from compact_nlp import AutoCompactModelForSequenceClassification
from compact_nlp.glue import get_task, load_glue, task_texts
from compact_nlp.io import write_json, write_text
from compact_nlp.quant import Int8Config, prepare_qat

RESULTS = Path(__file__).parent.parent / "results"


def compare(reference, candidate, inputs) -> dict:
    diffs, same = [], []
    for feed in inputs:
        a, b = reference(feed), candidate(feed)
        diffs.append(float(np.abs(a - b).max()))
        same.append(bool(a.argmax() == b.argmax()))
    def significant(x):  # 3 significant digits: differences range from 1e-7 to 1
        return float(f"{x:.3g}")

    return {"median_abs": significant(np.median(diffs)), "p90_abs": significant(np.percentile(diffs, 90)),
            "max_abs": significant(max(diffs)), "same_argmax": round(sum(same) / len(same), 4)}


def torch_logits(model):
    def run_one(feed):
        with torch.no_grad():
            return model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.double().numpy()
    return run_one


def ort_logits(path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feed: session.run(None, feed)[0].astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qat-run", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--examples", type=int, default=300)
    args = parser.parse_args()
    run = json.loads((Path(args.qat_run) / "results.json").read_text())
    seed_run = next(r for r in run["per_seed"] if r["seed"] == args.seed)
    folder = Path(args.qat_run) / f"seed-{args.seed}"
    model = AutoCompactModelForSequenceClassification.from_pretrained(seed_run["model"])
    prepare_qat(model, Int8Config.from_dict(run["per_seed"][0]["quant"]["config"]))
    model.load_state_dict(load_file(str(Path(get_last_checkpoint(str(folder / "checkpoints"))) / "model.safetensors")))
    model.eval()
    model64 = copy.deepcopy(model).double()
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    task = get_task(args.task)
    texts = task_texts(load_glue(task.name, args.glue_dir)[task.dev_splits[0]], task.name, args.examples)
    inputs = [{k: v.astype(np.int64) for k, v in tokenizer(*(t if isinstance(t, tuple) else (t,)),
                                                           return_tensors="np").items()} for t in texts]

    rows = {
        "PyTorch QAT model, float32 vs float64": compare(torch_logits(model64), torch_logits(model), inputs),
        "static QDQ qdq/model.ort vs PyTorch (float64)": compare(torch_logits(model64),
                                                                 ort_logits(folder / "model" / "qdq" / "model.ort"),
                                                                 inputs),
        "int8 weights + dynamic activations model.ort vs PyTorch (float64)": compare(
            torch_logits(model64), ort_logits(folder / "model" / "model.ort"), inputs),
    }
    lines = [f"# QAT export parity: {task.name}, seed {args.seed}", "",
             f"Logit differences on the first {len(inputs)} dev inputs (batch 1, unpadded). The dynamic export "
             "measures activation ranges per call instead of using the trained ones, so it is expected to differ "
             "more.", "",
             "| comparison | median abs | p90 abs | max abs | same argmax |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {r['median_abs']} | {r['p90_abs']} | {r['max_abs']} | {r['same_argmax']:.1%} |"
              for name, r in rows.items()]
    write_json(RESULTS / f"qat_parity_{task.name}.json", {"run": args.qat_run, "seed": args.seed, "rows": rows})
    write_text(RESULTS / f"qat_parity_{task.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

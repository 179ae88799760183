"""Ship a distilled SubTransformer again with today's export, as `compact search` ships it (int8 PTQ, .ort), e.g.
after the export learnt to write attention as one MultiHeadAttention node per layer (compact_nlp/export/attention.py).

    python bench/experiments/hat_reship.py --run HAT_OUT/sub-0.5-searched --task sst2 --glue-dir DIR --out HAT_OUT/sub-0.5-fused

Loads the run's distilled fp32 weights (`pytorch/`, written by compact search before it shipped), and ships them
with compact_nlp.hat.pipeline.ship_int8, the step compact search ships with; the new folder's reship.json has the shipped
file's dev score and latency, measured the same way as the run's own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoTokenizer

from compact_nlp.auto import AutoCompactModelForSequenceClassification
from compact_nlp.glue import get_task, load_glue
from compact_nlp.hat.pipeline import ship_int8
from compact_nlp.io import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a compact search SubTransformer folder (with pytorch/)")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-length", type=int, default=64, help="the recipe's protocol.max_length (sst2.yaml: 64)")
    args = parser.parse_args()

    run, out = Path(args.run), Path(args.out)
    weights = run / "pytorch"
    if not (weights / "model.safetensors").is_file():
        raise FileNotFoundError(f"{weights} has no model.safetensors: --run takes a SubTransformer folder that "
                                "compact search wrote (it saves the distilled fp32 weights in pytorch/).")
    model = AutoCompactModelForSequenceClassification.from_pretrained(weights).eval()
    tokenizer = AutoTokenizer.from_pretrained(weights)
    task = get_task(args.task)
    data = load_glue(args.task, args.glue_dir)
    shipped = ship_int8(model, tokenizer, out, task.name, data["train"],
                        {split: data[split] for split in task.dev_splits}, args.max_length)
    result = {"source": str(run), "before": json.loads((run / "results.json").read_text()).get("dev"), **shipped}
    write_json(out / "reship.json", result)
    print(json.dumps({"dev": result["dev"], "before": result["before"], "latency_ms_batch1": result[
        "latency_ms_batch1"], "size_mb": result["size_mb"]}, indent=1))


if __name__ == "__main__":
    main()

"""Why MRPC loses 3.9 points in the combined pipeline's QAT step (docs/combined.md): dev accuracy of the same
token-pruned models shipped by dynamic int8 PTQ, vs the QAT model's dynamic export (what ships) and its static QDQ
export. A diagnosis after the fact, on dev: nothing is selected on it.

    R=runs-folder [GLUE=glue_data] python bench/experiments/diag_mrpc_qat.py   ->  bench/results/diag_mrpc_qat.json
"""
import json
import os
from pathlib import Path

from compact_nlp.glue import load_glue, task_texts
from compact_nlp.quant import Int8Config, quantize_folder
from compact_nlp.ship import evaluate_artifact

R = Path(os.environ["R"]) / "combined" / "mrpc"
data = load_glue("mrpc", os.environ.get("GLUE", "../shared/data/glue_data"))
dev = data["validation"]
calib = task_texts(data["train"].shuffle(seed=0), "mrpc", 256)
out = {}
for seed in (1, 2, 3):
    tp = R / f"token_pruning/seed-{seed}/model"
    q = R / f"quant/seed-{seed}/model"
    ptq = R.parent / "diag" / f"mrpc_tp_ptq/seed-{seed}"
    if not (ptq / "model.onnx").is_file():
        quantize_folder(tp, ptq, Int8Config(), texts=calib, max_length=128, mobile=False)
    row = {"token pruning fp32 (model.onnx)": evaluate_artifact(tp / "model.onnx", dev, "mrpc", 128),
           "token pruning + int8 PTQ dynamic": evaluate_artifact(ptq / "model.onnx", dev, "mrpc", 128),
           "QAT, dynamic export (ships)": evaluate_artifact(q / "model.onnx", dev, "mrpc", 128)}
    qdq = sorted((q / "qdq").glob("*.onnx"))
    if qdq:
        row["QAT, static QDQ export"] = evaluate_artifact(qdq[0], dev, "mrpc", 128)
    out[seed] = {k: round(100 * v["accuracy"], 2) for k, v in row.items()}
    print(seed, out[seed], flush=True)
Path("bench/results/diag_mrpc_qat.json").write_text(json.dumps(out, indent=1))

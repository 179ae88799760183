"""What the fp32 tables left in a binary model's file cost, and what int8 would save: a shipped binary (W1A8)
folder's `model.onnx` re-exported with its position embeddings at 8 bits (one scale per row, compact's
quant.onnx_passes.quantize_embeddings) and/or its pooler MatMul as dynamic int8 (onnxruntime's quantize_dynamic on
that node only), each converted to `.ort` as the binary export does (no constant folding). Every variant is scored on
SST-2 dev (all rows, batch 1, ORT) and compared with the shipped file's predictions and size.

    python bench/experiments/binary_fp32_tables.py FOLDER [--glue-dir DIR] [--out bench/results/binary_fp32_tables]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoTokenizer

from compact_nlp.export.mobile import convert_to_ort
from compact_nlp.glue import load_glue
from compact_nlp.io import write_json, write_text
from compact_nlp.quant.onnx_passes import quantize_embeddings
from compact_nlp.runtime import session_options
from compact_nlp.ship import machine, versions

# everything a binary export keeps fp32 but the position embeddings (module kinds of quant.config.KEEPABLE)
ALL_BUT_POSITIONS = ["classifier", "pooler", "word_embeddings", "token_type_embeddings"]


def with_int8_positions(src: Path, dst: Path) -> None:
    model = onnx.load(str(src))
    quantize_embeddings(model, ALL_BUT_POSITIONS, bits=8)
    onnx.save(model, str(dst))


def with_int8_pooler(src: Path, dst: Path) -> None:
    pooler = [n.name for n in onnx.load(str(src)).graph.node
              if n.op_type == "MatMul" and any("pooler" in i for i in n.input)]
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, nodes_to_quantize=pooler)


def predictions(path: Path, tokenizer, texts: list[str]) -> np.ndarray:
    session = ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    out = []
    for text in texts:
        feed = {k: v.astype(np.int64) for k, v in tokenizer(text, truncation=True, max_length=128,
                                                             return_tensors="np").items() if k in names}
        out.append(int(np.argmax(session.run(None, feed)[0][0])))
    return np.asarray(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--glue-dir")
    parser.add_argument("--out", default="bench/results/binary_fp32_tables")
    args = parser.parse_args()
    folder = Path(args.folder)
    dev = load_glue("sst2", args.glue_dir)["validation"]
    texts, labels = list(dev["sentence"]), np.asarray(dev["label"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows, shipped = {}, None
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        variants = {"shipped": None, "position embeddings int8": [with_int8_positions],
                    "pooler int8": [with_int8_pooler], "both": [with_int8_positions, with_int8_pooler]}
        for name, steps in variants.items():
            work = scratch / name.replace(" ", "_")
            work.mkdir()
            shutil.copy(folder / "model.onnx", work / "model.onnx")
            for i, step in enumerate(steps or []):
                step(work / "model.onnx", work / f"step{i}.onnx")
                shutil.move(work / f"step{i}.onnx", work / "model.onnx")
            if steps:
                convert_to_ort(work / "model.onnx", fold_constants=False)
            ort_file = folder / "model.ort" if steps is None else work / "model.ort"
            predicted = predictions(ort_file, tokenizer, texts)
            shipped = predicted if shipped is None else shipped
            rows[name] = {"ort_mb": round(ort_file.stat().st_size / 2**20, 3),
                          "onnx_mb": round((work / "model.onnx").stat().st_size / 2**20, 3),
                          "accuracy": round(100 * float(np.mean(predicted == labels)), 2),
                          "agrees_with_shipped": round(float(np.mean(predicted == shipped)), 4)}
            print(name, rows[name])
    result = {"folder": str(folder), "dev_rows": len(texts), "rows": rows, "machine": machine(), "versions": versions()}
    write_json(f"{args.out}.json", result)
    lines = [f"Binary model {folder}: SST-2 dev, {len(texts)} rows, batch 1, ORT. Machine: {machine()}; "
             f"versions: {versions()}.", "", "| variant | .ort MB | .onnx MB | dev accuracy | agrees with shipped |",
             "|---|---|---|---|---|"]
    lines += [f"| {n} | {r['ort_mb']} | {r['onnx_mb']} | {r['accuracy']} | {r['agrees_with_shipped']:.2%} |"
              for n, r in rows.items()]
    write_text(f"{args.out}.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

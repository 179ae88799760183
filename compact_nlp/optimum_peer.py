"""Optimum itself as a peer in `compact bench --optimum-python PY`: run by PY, an environment where Optimum installs.

Optimum does not support transformers 5 (DESIGN.md), so it cannot share compact's environment; it still installs
beside it (docs/combined.md: `python -m venv OPT && OPT/bin/pip install torch "optimum-onnx[onnxruntime]"
"transformers<4.58"`). compact bench saves each seed's fine-tuned model as a transformers folder and runs

    PY optimum_peer.py HF_FOLDER OUT

which writes what Optimum's documented CPU recipe makes of it: the ONNX export (ORTModelForSequenceClassification,
export=True), then ORTQuantizer with the avx512_vnni dynamic preset (OUT/dynamic/model_quantized.onnx), and prints
the versions used as JSON. Optimum's O2 fusions followed by this quantizer stop with onnxruntime 1.31 (its shape
inference cannot type the fused ops' outputs), so the fused peer is compact bench's own
(onnxruntime.transformers fusions + quantize_dynamic).
This file imports nothing from compact: that environment does not have it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

QUANTIZED = "dynamic/model_quantized.onnx"


def main(hf_folder: str, out: str) -> dict:
    from importlib.metadata import version

    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    out = Path(out)
    exported = ORTModelForSequenceClassification.from_pretrained(hf_folder, export=True)
    exported.save_pretrained(out / "fp32")
    # Optimum's avx512_vnni preset as its docs use it for dynamic int8 on CPU: per-tensor, QOperator format
    preset = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    ORTQuantizer.from_pretrained(out / "fp32").quantize(preset, out / "dynamic")
    if not (out / QUANTIZED).exists():
        raise FileNotFoundError(f"Optimum's quantizer wrote no {out / QUANTIZED}.")
    return {package: version(package) for package in ("optimum", "optimum-onnx", "transformers", "onnxruntime")}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: PYTHON optimum_peer.py HF_FOLDER OUT")
    print(json.dumps(main(sys.argv[1], sys.argv[2])))

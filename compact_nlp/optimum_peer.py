"""Optimum itself as a peer in `compact bench --optimum-python PY` and compact_nlp.peers: run by PY, an environment
where Optimum installs.

Optimum does not support transformers 5 (DESIGN.md), so it cannot share compact's environment; it still installs
beside it (bench/peers_setup.sh, or docs/combined.md: `python -m venv OPT && OPT/bin/pip install torch
"optimum-onnx[onnxruntime]" "transformers<4.58"`). compact saves the model as a transformers folder and runs

    PY optimum_peer.py HF_FOLDER OUT [--feature-extraction] [--no-o3]

which writes what Optimum's documented CPU recipe makes of it: the ONNX export (ORTModelForSequenceClassification,
or ORTModelForFeatureExtraction with --feature-extraction, export=True), then ORTQuantizer with the avx512_vnni
dynamic preset at its defaults (per-channel weights; OUT/dynamic/model_quantized.onnx), and prints the versions used
as JSON. Unless --no-o3, it also writes the fused peer a user of Optimum can make (OUT/o3/model_quantized.onnx):
ORTOptimizer's O3 preset, which with transformers 4's graph fuses each layer's attention (ORT cannot fuse transformers
5's), then onnxruntime's quantize_dynamic with the same settings. ORTQuantizer itself stops on the fused graph with
onnxruntime >= 1.31 (its shape inference cannot type the contrib ops' outputs); quantize_dynamic takes the
DefaultTensorType option that tells it they are fp32.
This file imports nothing from compact: that environment does not have it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

QUANTIZED = "dynamic/model_quantized.onnx"
QUANTIZED_FUSED = "o3/model_quantized.onnx"


def main(hf_folder: str, out: str, feature_extraction: bool = False, o3: bool = True) -> dict:
    from importlib.metadata import version

    from optimum.onnxruntime import (ORTModelForFeatureExtraction, ORTModelForSequenceClassification,
                                     ORTQuantizer)
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    out = Path(out)
    model_class = ORTModelForFeatureExtraction if feature_extraction else ORTModelForSequenceClassification
    model_class.from_pretrained(hf_folder, export=True).save_pretrained(out / "fp32")
    # Optimum's avx512_vnni preset as its docs use it for dynamic int8 on CPU, at its defaults (per-channel weights)
    preset = AutoQuantizationConfig.avx512_vnni(is_static=False)
    ORTQuantizer.from_pretrained(out / "fp32").quantize(preset, out / "dynamic")
    if not (out / QUANTIZED).exists():
        raise FileNotFoundError(f"Optimum's quantizer wrote no {out / QUANTIZED}.")
    if o3:
        fused_peer(out, preset)
    return {package: version(package) for package in ("optimum", "optimum-onnx", "transformers", "onnxruntime")}


def fused_peer(out: Path, preset) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    ORTOptimizer.from_pretrained(out / "fp32").optimize(AutoOptimizationConfig.O3(), out / "o3-fp32")
    fused = next((out / "o3-fp32").glob("*.onnx"))
    (out / QUANTIZED_FUSED).parent.mkdir(parents=True, exist_ok=True)
    # the preset's settings: int8 weights, its per-channel choice, its operator list (Attention among them)
    quantize_dynamic(str(fused), str(out / QUANTIZED_FUSED), per_channel=preset.per_channel,
                     weight_type=QuantType.QInt8, op_types_to_quantize=list(preset.operators_to_quantize),
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(usage="PYTHON optimum_peer.py HF_FOLDER OUT [--feature-extraction] [--no-o3]")
    parser.add_argument("hf_folder")
    parser.add_argument("out")
    parser.add_argument("--feature-extraction", action="store_true")
    parser.add_argument("--no-o3", action="store_true")
    args = parser.parse_args()
    print(json.dumps(main(args.hf_folder, args.out, args.feature_extraction, not args.no_o3)))

"""Export a CompactBert to a deployable folder: HF weights + tokenizer + model.onnx (+ model.ort for phones).

    out/
      config.json, model.safetensors, tokenizer files   the PyTorch model (AutoCompactModel... loads it)
      model.onnx                                        one file, dynamic batch/sequence, parity-checked
      model.ort, required_operators.config              ORT Mobile (with mobile=True)
      export_report.json                                sizes, parity (max abs diff), mobile-usability verdict
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from ..io import save_pretrained_atomic, write_json
from .mobile import TARGET_PLATFORMS, convert_to_ort, mobile_usability
from .onnx import DEFAULT_ATOL, DEFAULT_OPSET, ExportParityError, check_parity, export_onnx

__all__ = [
    "export_model", "export_onnx", "convert_to_ort", "mobile_usability", "check_parity", "ExportParityError",
    "TARGET_PLATFORMS",
]

REPORT_FILE = "export_report.json"


def _mb(path: Path) -> float | None:
    return round(path.stat().st_size / 2**20, 3) if path.exists() else None


def export_model(model, out_dir: str | os.PathLike, tokenizer_source=None, mobile: bool = False,
                 target_platform: str = "arm", opset: int = DEFAULT_OPSET, atol: float = DEFAULT_ATOL,
                 fuse_attention: bool = True) -> dict:
    """Write the whole deployable folder and return (and save) its report.

    tokenizer_source: a tokenizer object, or a name/path AutoTokenizer loads; None to skip the tokenizer.
    fuse_attention: attention as one MultiHeadAttention node per layer (export/attention.py); False for NNAPI/CoreML.
    """
    import onnxruntime as ort

    out = Path(out_dir)
    model = model.eval()
    save_pretrained_atomic(model, out)
    if tokenizer_source is not None:
        if isinstance(tokenizer_source, (str, os.PathLike)):
            from transformers import AutoTokenizer

            tokenizer_source = AutoTokenizer.from_pretrained(tokenizer_source)
        save_pretrained_atomic(tokenizer_source, out)

    config = model.config
    report = {
        "model_class": type(model).__name__,
        "source_model_type": config.source_model_type,
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "num_heads_per_layer": list(config.num_heads_per_layer),
        "intermediate_size_per_layer": list(config.intermediate_size_per_layer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "exporter": {"name": "torch.onnx.export(dynamo=True)", "opset": opset, "fuse_attention": fuse_attention,
                     "torch": torch.__version__,
                     "onnxruntime": ort.__version__},
        "machine": {"platform": platform.platform(), "processor": platform.machine()},
    }
    report["onnx_parity"] = export_onnx(model, out / "model.onnx", opset=opset, atol=atol,
                                        fuse_attention=fuse_attention).to_dict()
    if mobile:
        report["ort_mobile"] = convert_to_ort(out / "model.onnx", target_platform=target_platform)
        session = ort.InferenceSession(str(out / "model.ort"), providers=["CPUExecutionProvider"])
        report["ort_parity"] = check_parity(model, session, atol=atol).to_dict()
        report["mobile_usability"] = mobile_usability(out / "model.onnx")
    report["size_mb"] = {name: _mb(out / name) for name in ("model.safetensors", "model.onnx", "model.ort")}
    write_json(out / REPORT_FILE, report)
    return report

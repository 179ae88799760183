"""Export a CompactBert to a deployable folder: HF weights + tokenizer + model.onnx (+ model.ort for phones).

    out/
      config.json, model.safetensors, tokenizer files   the PyTorch model (AutoCompactModel... loads it)
      model.onnx                                        one file, dynamic batch/sequence, parity-checked
      model.ort, required_operators.config              ORT Mobile (with mobile=True)
      export_report.json                                sizes, parity (max abs diff), mobile-usability verdict
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..io import remove_scratch, save_pretrained_atomic, write_json
from .machine import machine
from .mobile import TARGET_PLATFORMS, convert_to_ort, mobile_usability
from .onnx import (DEFAULT_ATOL, DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, ExportParityError, check_opset, check_parity,
                   export_onnx)

__all__ = [
    "export_model", "export_onnx", "convert_to_ort", "mobile_usability", "check_parity", "ExportParityError",
    "TARGET_PLATFORMS", "MIN_OPSET", "MAX_OPSET", "DEFAULT_OPSET", "remove_previous_export",
]

REPORT_FILE = "export_report.json"
# what an export derives from the model; removed before a new export writes its own (the report last: its presence
# says the export finished)
DERIVED = (REPORT_FILE, "model.ort", "required_operators.config", "model.onnx")


def _mb(path: Path) -> float | None:
    return round(path.stat().st_size / 2**20, 3) if path.exists() else None


def export_model(model, out_dir: str | os.PathLike, tokenizer_source=None, mobile: bool = False,
                 target_platform: str = "arm", opset: int = DEFAULT_OPSET, atol: float = DEFAULT_ATOL,
                 fuse_attention: bool = True) -> dict:
    """Write the whole deployable folder and return (and save) its report.

    tokenizer_source: a tokenizer object, or a name/path AutoTokenizer loads; None to skip the tokenizer.
    fuse_attention: attention as one MultiHeadAttention node per layer (export/attention.py); False for NNAPI/CoreML.
    """
    check_opset(opset)
    if target_platform not in TARGET_PLATFORMS:
        raise ValueError(f"target_platform {target_platform!r} is not one of {TARGET_PLATFORMS} (arm = phones).")
    out = Path(out_dir)
    existed = out.exists()
    before = {p.name for p in out.iterdir()} if existed else set()
    fresh = all(name.startswith(".") for name in before)  # nothing of the user's there
    remove_previous_export(out)
    try:
        return _export(model, out, tokenizer_source, mobile, target_platform, opset, atol, fuse_attention)
    except BaseException:
        if fresh:  # a failed export into a new folder leaves no half folder (weights without model.onnx)
            _remove_new(out, existed, before)
        raise


def remove_previous_export(out: str | os.PathLike) -> None:
    """Before new weights or a new graph are written to `out`: remove the files an earlier export derived from the
    earlier model (a stale model.ort would serve another model than model.onnx) and the scratch of killed writes."""
    out = Path(out)
    remove_scratch(out)
    for name in DERIVED:
        (out / name).unlink(missing_ok=True)


def _remove_new(out: Path, existed: bool, before: set[str]) -> None:
    if not existed:
        shutil.rmtree(out, ignore_errors=True)
        return
    for path in out.iterdir():  # e.g. a TemporaryDirectory of the caller: keep the folder, remove what we wrote
        if path.name not in before:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _export(model, out: Path, tokenizer_source, mobile: bool, target_platform: str, opset: int, atol: float,
            fuse_attention: bool) -> dict:
    import onnxruntime as ort

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
        "machine": machine(),
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

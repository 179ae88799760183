"""The quant section of a recipe (`quant: {int8: {...}}` or `quant: {binary: {...}}`), for `compact run`: what to
do to the model before training, which hooks to train with, and how to export what ships."""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

from ..data import as_spec
from ..export import export_model
from ..ship import choose_export
from .binary import binary_hooks, export_binary, prepare_binary
from .config import BinaryConfig, Int8Config, QuantConfigError
from .onnx_int8 import quantize_folder
from .qat import QuantizationHook, export_qat, prepare_qat

CONFIGS = {"int8": Int8Config, "binary": BinaryConfig}


def quant_config(section: dict | None) -> Int8Config | BinaryConfig | None:
    """The config of a recipe's quant section (or of a model's `config.quant`), validated; None when empty."""
    if not section:
        return None
    unknown = sorted(set(section) - set(CONFIGS))
    if unknown:
        raise QuantConfigError(f"quant section has unknown keys {unknown}; it takes one of {list(CONFIGS)}.")
    if len(section) > 1:
        raise QuantConfigError(f"quant section names {sorted(section)}; a model is either int8 or binary, pick one.")
    (name, body), = section.items()
    return CONFIGS[name].from_dict(body or {})


def check_distillation(config, teacher: str | None, distillation: dict) -> None:
    """Binary training distils in two stages; stage one needs a teacher and an intermediate-layer term."""
    if not isinstance(config, BinaryConfig) or config.intermediate_fraction == 0:
        return
    if not teacher or not (distillation.get("hidden_weight") or distillation.get("attention_weight")):
        raise QuantConfigError(
            "binary training distils intermediate layers first (intermediate_fraction="
            f"{config.intermediate_fraction}), so it needs `teacher:` (the fine-tuned fp32 model) and a distillation "
            "hidden_weight or attention_weight > 0 (the binary preset sets them). Or set "
            "quant.binary.intermediate_fraction=0 for one stage.")


def prepare(model, config: Int8Config | BinaryConfig) -> list:
    """Make `model` ready to train under `config`; returns the CompactTrainer hooks it needs."""
    if isinstance(config, BinaryConfig):
        prepare_binary(model, config)
        return binary_hooks(config)
    if config.mode != "qat":
        return []
    prepare_qat(model, config)
    return [QuantizationHook()]


def exporter(config: Int8Config | BinaryConfig, tokenizer, texts: list, max_length: int, mobile: bool, target_platform: str,
             vocabulary_texts: list | None = None, fuse_attention: bool = True):
    """`exporter(model, folder) -> report` for compact_nlp.ship: the binary export, QAT's two exports, or PTQ of the
    fp32 export.
    texts: a few hundred training examples (calibration, parity); vocabulary_texts: all of them (trimming)."""

    def export(model, folder: Path) -> dict:
        if isinstance(config, BinaryConfig):
            report = export_binary(model, folder, tokenizer, texts=texts, max_length=max_length, mobile=mobile,
                                   target_platform=target_platform, vocabulary_texts=vocabulary_texts,
                                   fuse_attention=fuse_attention)
            parity = report["parity_vs_pytorch"]["model.ort" if mobile else "model.onnx"]
        elif config.mode == "qat":
            report = export_qat(model, folder, tokenizer, texts=texts, max_length=max_length, mobile=mobile,
                                target_platform=target_platform, vocabulary_texts=vocabulary_texts,
                                fuse_attention=fuse_attention)
            shipped = "model.ort" if mobile else "model.onnx"
            parity = report["parity_vs_pytorch"][shipped]
        else:
            with tempfile.TemporaryDirectory() as scratch:
                export_model(model, scratch, tokenizer_source=tokenizer, mobile=False, fuse_attention=fuse_attention)
                report = quantize_folder(scratch, folder, config, texts=texts, max_length=max_length, mobile=mobile,
                                         target_platform=target_platform, vocabulary_texts=vocabulary_texts)
            parity = report["agreement"]["max_abs_diff"]  # no PyTorch int8 model exists: against the fp32 graph
        return {"size_mb": {k: v for k, v in report["size_mb"].items() if "/" not in k}, "parity": parity,
                "parameters": sum(p.numel() for p in model.parameters()),
                "layers": model.config.num_hidden_layers, "facts": {"quant": report},
                "parity_label": parity_label(config)}

    return export


def parity_label(config: Int8Config | BinaryConfig) -> str:
    """What the shipped file's parity number compares, for the card."""
    if isinstance(config, BinaryConfig) or config.mode == "qat":
        return ("max abs logit difference vs the PyTorch quantized model (quantized activations round differently; "
                "see docs/quant.md)")
    return "max abs logit difference vs the fp32 graph"


def export_qat_or_ptq(qat_model, start_model, config: Int8Config, exporter_for, folder: str | os.PathLike, heldout,
                      task, max_length: int) -> tuple[dict, dict]:
    """`fallback_to_ptq`: export the QAT model and, beside it, PTQ of the model QAT started from (same settings);
    score both exported files on the held-out split; leave the better one in `folder` (QAT on ties).

    exporter_for(config) -> exporter (as `exporter` above); task: its TaskSpec or GLUE name. Returns (the export
    report of the file that ships, the choice: which one shipped and both held-out scores)."""
    candidates = {"qat": (qat_model, exporter_for(config)),
                  "ptq": (start_model, exporter_for(replace(config, mode="ptq", fallback_to_ptq=False)))}
    return choose_export(candidates, folder, heldout, as_spec(task), max_length)

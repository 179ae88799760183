"""The quant section of a recipe (`quant: {int8: {...}}`), for `compact run`: what to do to the model before
training, which hooks to train with, and how to export what ships."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .config import Int8Config, QuantConfigError

SECTIONS = ("int8",)


def int8_config(section: dict | None) -> Int8Config | None:
    """The Int8Config of a recipe's quant section, validated (None when the section is empty)."""
    if not section:
        return None
    unknown = sorted(set(section) - set(SECTIONS))
    if unknown:
        raise QuantConfigError(f"quant section has unknown keys {unknown}; it takes {list(SECTIONS)} "
                               "(binary weights are not implemented yet).")
    return Int8Config.from_dict(section["int8"] or {})


def prepare(model, config: Int8Config) -> list:
    """Make `model` ready to train under `config`; returns the CompactTrainer hooks it needs."""
    if config.mode != "qat":
        return []
    from .qat import QuantizationHook, prepare_qat

    prepare_qat(model, config)
    return [QuantizationHook()]


def exporter(config: Int8Config, tokenizer, texts: list, max_length: int, mobile: bool, target_platform: str,
             vocabulary_texts: list | None = None):
    """`exporter(model, folder) -> report` for compact_nlp.ship: QAT's two exports, or PTQ of the fp32 export.
    texts: a few hundred training examples (calibration, parity); vocabulary_texts: all of them (trimming)."""

    def export(model, folder: Path) -> dict:
        from compact_nlp.export import export_model

        if config.mode == "qat":
            from .qat import export_qat

            report = export_qat(model, folder, tokenizer, texts=texts, max_length=max_length, mobile=mobile,
                                target_platform=target_platform, vocabulary_texts=vocabulary_texts)
            shipped = "model.ort" if mobile else "model.onnx"
            parity = report["parity_vs_pytorch"][shipped]
        else:
            from .onnx_int8 import quantize_folder

            with tempfile.TemporaryDirectory() as scratch:
                export_model(model, scratch, tokenizer_source=tokenizer, mobile=False)
                report = quantize_folder(scratch, folder, config, texts=texts, max_length=max_length, mobile=mobile,
                                         target_platform=target_platform, vocabulary_texts=vocabulary_texts)
            parity = report["agreement"]["max_abs_diff"]  # no PyTorch int8 model exists: against the fp32 graph
        return {"size_mb": {k: v for k, v in report["size_mb"].items() if "/" not in k}, "parity": parity,
                "parameters": sum(p.numel() for p in model.parameters()),
                "layers": model.config.num_hidden_layers, "quant": report}

    return export

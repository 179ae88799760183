"""The quant section of a recipe (`quant: {int8: {...}}` or `quant: {binary: {...}}`), for `compact run`: what to
do to the model before training, which hooks to train with, and how to export what ships."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from .config import BinaryConfig, Int8Config, QuantConfigError

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
        from .binary import binary_hooks, prepare_binary

        prepare_binary(model, config)
        return binary_hooks(config)
    if config.mode != "qat":
        return []
    from .qat import QuantizationHook, prepare_qat

    prepare_qat(model, config)
    return [QuantizationHook()]


def exporter(config: Int8Config | BinaryConfig, tokenizer, texts: list, max_length: int, mobile: bool, target_platform: str,
             vocabulary_texts: list | None = None, fuse_attention: bool = True):
    """`exporter(model, folder) -> report` for compact_nlp.ship: the binary export, QAT's two exports, or PTQ of the
    fp32 export.
    texts: a few hundred training examples (calibration, parity); vocabulary_texts: all of them (trimming)."""

    def export(model, folder: Path) -> dict:
        from compact_nlp.export import export_model

        if isinstance(config, BinaryConfig):
            from .binary import export_binary

            report = export_binary(model, folder, tokenizer, texts=texts, max_length=max_length, mobile=mobile,
                                   target_platform=target_platform, vocabulary_texts=vocabulary_texts,
                                   fuse_attention=fuse_attention)
            parity = report["parity_vs_pytorch"]["model.ort" if mobile else "model.onnx"]
        elif config.mode == "qat":
            from .qat import export_qat

            report = export_qat(model, folder, tokenizer, texts=texts, max_length=max_length, mobile=mobile,
                                target_platform=target_platform, vocabulary_texts=vocabulary_texts,
                                fuse_attention=fuse_attention)
            shipped = "model.ort" if mobile else "model.onnx"
            parity = report["parity_vs_pytorch"][shipped]
        else:
            from .onnx_int8 import quantize_folder

            with tempfile.TemporaryDirectory() as scratch:
                export_model(model, scratch, tokenizer_source=tokenizer, mobile=False, fuse_attention=fuse_attention)
                report = quantize_folder(scratch, folder, config, texts=texts, max_length=max_length, mobile=mobile,
                                         target_platform=target_platform, vocabulary_texts=vocabulary_texts)
            parity = report["agreement"]["max_abs_diff"]  # no PyTorch int8 model exists: against the fp32 graph
        return {"size_mb": {k: v for k, v in report["size_mb"].items() if "/" not in k}, "parity": parity,
                "parameters": sum(p.numel() for p in model.parameters()),
                "layers": model.config.num_hidden_layers, "quant": report}

    return export


def export_qat_or_ptq(qat_model, start_model, config: Int8Config, exporter_for, folder: str | os.PathLike, heldout,
                      task_name: str, max_length: int) -> tuple[dict, dict]:
    """`fallback_to_ptq`: export the QAT model and, beside it, PTQ of the model QAT started from (same settings);
    score both exported files on the held-out split; leave the better one in `folder` (QAT on ties).

    exporter_for(config) -> exporter (as `exporter` above). Returns (the export report of the file that ships, the
    choice: which one shipped and both held-out scores)."""
    from compact_nlp.ship import evaluate_artifact, main_score_name, shipped_file

    folder = Path(folder)
    candidates = {"qat": (qat_model, config), "ptq": (start_model, replace(config, mode="ptq", fallback_to_ptq=False))}
    reports, scores = {}, {}
    for name, (model, candidate_config) in candidates.items():
        where = folder.with_name(f"{folder.name}.{name}")
        shutil.rmtree(where, ignore_errors=True)
        reports[name] = exporter_for(candidate_config)(model.eval(), where)
        scores[name] = evaluate_artifact(shipped_file(where), heldout, task_name, max_length)
    main = main_score_name(task_name)
    chosen = "ptq" if scores["ptq"][main] > scores["qat"][main] else "qat"
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(folder.with_name(f"{folder.name}.{chosen}"), folder)
    shutil.rmtree(folder.with_name(f"{folder.name}.{'qat' if chosen == 'ptq' else 'ptq'}"))
    return reports[chosen], {"shipped": chosen, "selected_on": "heldout", "metric": main,
                             "heldout": {name: {k: round(float(v), 4) for k, v in score.items()}
                                         for name, score in scores.items()}}

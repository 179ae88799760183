"""int8 ONNX graphs through onnxruntime.quantization: dynamic (the fast x86 path) and static QDQ (what NNAPI and
CoreML accept), from a CompactBert export folder.

onnxruntime.quantization does the quantizing. What we add is what it does not know about our graph:
  - the exporter writes every nn.Linear as Gemm(transB=1), which ORT's dynamic quantizer skips (it quantizes MatMul),
    so `gemm_to_matmul` rewrites them as MatMul + Add first, keeping the weight's name so a weight can still be
    traced to its module (QAT scales, keep_fp32) (graph passes: quant/onnx_passes.py);
  - which nodes stay fp32 (`keep_fp32`: classifier, pooler, position/token-type embeddings);
  - calibration data: real task text, one unpadded example per batch, checked against the graph's inputs
    (quant/calibration.py);
  - QAT: trained activation scales passed to the QDQ quantizer as TensorQuantOverrides, never re-calibrated.
The folder's other files (tokenizer, config.json, PyTorch weights) and the fp32 agreement: quant/folder.py. Every name
these modules define is importable from here too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from compact_nlp.export import convert_to_ort
from compact_nlp.io import atomic_path, write_json

from .calibration import (
    CalibrationError,
    TextCalibrationReader,
    _ScaleOnlyReader,
    calibration_feeds,
    fixed_length_feeds,
)
from .config import Int8Config, QuantConfigError
from .folder import _input_names, agreement, trim_plan, write_folder_files, write_pytorch_weights
from .onnx_passes import (
    QUANTIZED_OPS,
    AlreadyQuantizedError,
    check_not_quantized,
    float_consumers_read_float,
    gemm_to_matmul,
    is_quantized_product,
    module_kind,
    nodes_to_quantize,
    per_block_node,
    quantize_embeddings,
    symmetric_codes,
)
from .per_row import per_row_node, rewrite_per_row
from .smooth import smooth_graph
from .vocab import trim_embedding_rows


def quantize_graph(src: Path, dst: Path, config: Int8Config, feeds: list[dict] | None = None,
                   activation_scales: dict[str, float] | None = None, keep_ids: list[int] | None = None) -> dict:
    """Write the int8 graph of `src` (an fp32 model.onnx) to `dst`. Static activations need `feeds` (PTQ) or
    `activation_scales` (QAT: tensor name -> trained scale, zero point as trained); dynamic ones with smoothing
    measure their per-channel ranges on `feeds` (without feeds smoothing is skipped, with a warning)."""
    import onnx

    model = onnx.load(str(src))
    check_not_quantized(model)
    input_names = [i.name for i in model.graph.input]
    converted = gemm_to_matmul(model)
    if keep_ids is not None:  # vocabulary trimming: before the table is quantized, so scales are per kept row
        trim_embedding_rows(model, keep_ids)
    embeddings = quantize_embeddings(model, config.keep_fp32, config.embedding_bits)
    chosen = nodes_to_quantize(model, config)
    per_row = [n for n in chosen if per_row_node(model, n, config)] if config.activations == "dynamic" else []
    per_block = [n for n in chosen if per_block_node(model, n, config.activation_granularity)] \
        if config.activations == "dynamic" else []
    smoothed = _smooth(model, chosen, config, feeds)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        onnx.save(model, str(prepared))
        with atomic_path(dst) as tmp:
            if config.activations == "dynamic":
                if per_block:
                    _matmul_nbits(prepared, per_block, config.block_size)
                _dynamic(prepared, tmp, config, [n for n in chosen if n not in per_block + per_row], per_row)
            else:
                _quantize_static(prepared, Path(scratch) / "preprocessed.onnx", tmp, config, chosen, input_names,
                                 feeds, activation_scales)
    return {**_summary(converted, chosen, per_block, embeddings, keep_ids, smoothed), "matmuls_per_row": len(per_row)}


def _dynamic(prepared: Path, out: Path, config: Int8Config, chosen: list[str], per_row: list[str]) -> None:
    """quantize_dynamic on `chosen` (per-tensor activations), then the per-row MatMuls rewritten in its output."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if chosen:  # quantize_dynamic reads an empty nodes_to_quantize as "every node"
        quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, per_channel=config.per_channel,
                         nodes_to_quantize=chosen, op_types_to_quantize=["MatMul"],
                         extra_options={"WeightSymmetric": True, "MatMulConstBOnly": True,
                                        # ONNX shape inference stops at contrib ops (MultiHeadAttention)
                                        "DefaultTensorType": onnx.TensorProto.FLOAT})
    model = onnx.load(str(out if chosen else prepared))
    rewrite_per_row(model, per_row, config.per_channel)
    onnx.save(model, str(out))


def _smooth(model, chosen: list[str], config: Int8Config, feeds: list[dict] | None) -> int | str:
    """SmoothQuant migration before dynamic quantization (quant/smooth.py): how many activations were smoothed, or
    why none were."""
    if config.activations != "dynamic" or not config.smoothing:
        return 0
    if not feeds:
        warnings.warn(f"Int8Config(smoothing={config.smoothing}) measures activation ranges on calibration text, and "
                      "none was given (feeds); quantizing without smoothing, which is less faithful (mean embedding "
                      "cosine 0.993 instead of 0.998 on all-MiniLM-L6-v2).", stacklevel=3)
        return "skipped: no calibration feeds"
    return smooth_graph(model, chosen, feeds, config.smoothing)


def _summary(converted: list, quantized: list, per_block: list, embeddings: list, keep_ids, smoothed=0) -> dict:
    return {"gemms_rewritten": len(converted), "matmuls_quantized": len(quantized),
            "matmuls_per_block": len(per_block), "int8_embeddings": embeddings, "activations_smoothed": smoothed,
            **({"vocabulary": len(keep_ids)} if keep_ids is not None else {})}


def _matmul_nbits(path: Path, nodes: list[str], block_size: int) -> None:
    """Rewrite `nodes` (MatMuls with a constant weight) of the graph at `path` in place as MatMulNBits: 8-bit
    symmetric block-wise weights, accuracy_level=4 (activations quantized to int8 per token and block in the kernel)."""
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    model = onnx.load(str(path))
    # its nodes_to_include adds to op_types_to_quantize instead of limiting it: exclude every other node
    others = [n.name for n in model.graph.node if n.name not in set(nodes)]
    quantizer = MatMulNBitsQuantizer(model, bits=8, block_size=block_size, is_symmetric=True, accuracy_level=4,
                                     nodes_to_exclude=others, op_types_to_quantize=("MatMul",))
    quantizer.process()
    onnx.save(quantizer.model.model, str(path))


def _quantize_static(prepared: Path, preprocessed: Path, out: Path, config: Int8Config, chosen: list[str],
                     input_names: list[str], feeds: list[dict] | None,
                     activation_scales: dict[str, float] | None) -> None:
    """Static QDQ: activation ranges calibrated on `feeds` (PTQ) or the trained ones (QAT), written to `out`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    # skip_optimization: its ORT pass would fuse our MatMul + Add back into Gemm, which the quantizer skips
    try:
        quant_pre_process(str(prepared), str(preprocessed), auto_merge=True, skip_optimization=True)
    except TypeError:  # symbolic shape inference cannot follow token pruning's data-dependent TopK
        # shapes (it fails on a tensor of unknown rank); onnx's own shape inference is enough for QDQ
        quant_pre_process(str(prepared), str(preprocessed), skip_symbolic_shape=True, skip_optimization=True)
    if activation_scales is not None:  # QAT: the trained scale and zero point of each MatMul input
        zero_dtype = np.uint8 if config.activation_type == "uint8" else np.int8
        overrides = {name: [{"scale": np.asarray(scale, dtype=np.float32),
                             "zero_point": np.asarray(zero, dtype=zero_dtype)}]
                     for name, (scale, zero) in activation_scales.items()}
        reader = _ScaleOnlyReader(feeds or [], input_names)
    else:
        overrides = {}
        feeds = TextCalibrationReader.check(feeds or [], input_names)
        if config.calibration != "minmax":
            feeds = fixed_length_feeds(feeds, min(64, max(len(f["input_ids"][0]) for f in feeds)))
        reader = TextCalibrationReader(feeds)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibration or "minmax"]
    quantize_static(
        str(preprocessed), str(out), reader, quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8 if config.activation_type == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QInt8, per_channel=config.per_channel, nodes_to_quantize=chosen,
        op_types_to_quantize=["MatMul"], calibrate_method=method,
        # MatMul outputs are quantized too: only a complete Q -> DQ -> MatMul -> Q unit becomes an integer
        # QLinearMatMul (on CPU and in NNAPI/CoreML); without it ORT dequantizes the weights every call
        # and the graph is slower than fp32 (measured: 25 ms vs 3 ms on SST-2). QAT trains those ranges.
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "MatMulConstBOnly": True,
                       "TensorQuantOverrides": overrides})
    quantized = onnx.load(str(out))
    float_consumers_read_float(quantized)
    onnx.save(quantized, str(out))


def quantize_folder(src: str | os.PathLike, out: str | os.PathLike, config: Int8Config | None = None,
                    texts: Iterable | None = None, max_length: int = 128, mobile: bool = True,
                    target_platform: str = "arm", vocabulary_texts: Iterable | None = None) -> dict:
    """int8 post-training quantization of an export folder (model.onnx + config + tokenizer) into `out`:
    model.onnx (int8), model.ort (with mobile), the tokenizer, and config.json with the Int8Config under `quant`.

    texts: real task examples (strings, or (a, b) pairs) for static calibration and for the fp32-vs-int8 agreement
    that the report records. vocabulary_texts: all of the task's training text, for trim_vocabulary.
    """
    from transformers import AutoTokenizer

    config = config or Int8Config()
    if config.mode != "ptq":
        raise QuantConfigError("quantize_folder is post-training quantization; a QAT config is exported from the "
                               "trained model with quant.export_qat (after training with quant.QuantizationHook).")
    src, out = Path(src), Path(out)
    source = src / "model.onnx"
    if not source.is_file():
        raise FileNotFoundError(f"{src} has no model.onnx; export the fp32 model first (`compact export SRC {src}`).")
    model_config = json.loads((src / "config.json").read_text())
    if model_config.get("quant"):
        raise AlreadyQuantizedError(f"{src} is already quantized ({model_config['quant']}); quantize its fp32 export.")
    texts = list(texts or [])
    if config.activations == "static" and not texts:
        raise CalibrationError("static activations need calibration text: pass texts= (real task examples).")
    if config.smoothing and not texts:  # config.json must say what was done
        warnings.warn("smoothing needs calibration text (texts=); quantizing without it, which is less faithful.",
                      stacklevel=2)
        config = dataclasses.replace(config, smoothing=0.0)
    tokenizer = AutoTokenizer.from_pretrained(src)
    keep_ids, out_tokenizer = trim_plan(config, tokenizer, vocabulary_texts)
    out.mkdir(parents=True, exist_ok=True)
    input_names = _input_names(source)
    feeds = calibration_feeds(out_tokenizer, texts[:config.calibration_examples], max_length, input_names)
    report = {"config": config.to_dict(), "source": src.name}  # the folder's name: the report ships (no local path)
    report.update(quantize_graph(source, out / "model.onnx", config,
                                 feeds if config.activations == "static" or config.smoothing else None,
                                 keep_ids=keep_ids))
    write_folder_files(src, out, config, out_tokenizer)
    if mobile:
        report["ort_mobile"] = convert_to_ort(out / "model.onnx", target_platform=target_platform)
    report["agreement"] = agreement(source, out / ("model.ort" if mobile else "model.onnx"),
                                    calibration_feeds(tokenizer, texts[:200], max_length, input_names),
                                    calibration_feeds(out_tokenizer, texts[:200], max_length, input_names))
    report["size_mb"] = {name: round((out / name).stat().st_size / 2**20, 3)
                         for name in ("model.onnx", "model.ort") if (out / name).exists()}
    report["source_size_mb"] = round(source.stat().st_size / 2**20, 3)
    write_json(out / "quant_report.json", report)
    return report




__all__ = [
    "QUANTIZED_OPS", "AlreadyQuantizedError", "CalibrationError", "TextCalibrationReader", "agreement",
    "calibration_feeds", "check_not_quantized", "fixed_length_feeds", "float_consumers_read_float", "gemm_to_matmul",
    "is_quantized_product", "module_kind", "nodes_to_quantize", "quantize_embeddings", "quantize_folder",
    "quantize_graph", "symmetric_codes", "trim_plan", "write_folder_files", "write_pytorch_weights",
]

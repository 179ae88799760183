"""Binary weights (BinaryBERT, Bai et al. 2021; BiT, Liu et al. 2022): train, then ship packed at 1 bit per weight.

    model = prepare_binary(fp32_model_copy, BinaryConfig())                  # swaps Linear/Embedding in place
    trainer = CompactTrainer(model=model, teacher_model=fp32_model, hooks=binary_hooks(config), ...)
    trainer.train()                      # stage 1: hidden states + attention maps; stage 2: logits (+ labels)
    export_binary(model, folder, tokenizer, texts=train_sentences)           # model.onnx + model.ort, 1-bit packed

What is binarized is exactly what the export stores at 1 bit: every Linear not in `keep_fp32` computes with
sign(W) * alpha (alpha per output row, mean|W| or trained), its latent fp32 weight trained through a straight-through
estimator. Its input is int8 (W1A8: an EMA-tracked range, exported as QuantizeLinear/DequantizeLinear with that
range) or binary (W1A1: BiT's elastic binarization alpha * sign(x - beta), exported as Sub, Sign, Mul). The word
embeddings are stored at `embedding_bits` (1: sign times the row's mean |w|).

The export (written here because no ONNX tool packs sub-byte weights into standard ops): each binary weight is a
uint8 initializer holding 8 signs per byte, unpacked in the graph by a 256-entry lookup table (Gather) into int8 codes
{-1, +1}. W1A8: MatMulInteger(uint8 input, codes) times one scale per output column; W1A1: the codes times the row
scales, then a float MatMul. ONNX Runtime folds the unpacking into an int8 weight when it loads the .onnx, so the
MatMul runs as an integer kernel; the .ort file is written with constant folding switched off (onnxruntime's
converter would fold the weights back to full size), so it stays small and unpacks on every call (docs/quant.md
has the measured cost).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import numpy as np
from torch import nn

from compact_nlp.export import convert_to_ort, export_model
from compact_nlp.io import atomic_path, write_json

from .binary_layers import (
    BinaryEmbedding,
    BinaryLinear,
    ElasticBinarizer,
    TwoStageDistillationHook,
    binarize_weight,
    binary_hooks,
    binary_scale,
    calibrate_ranges,
    load_binary_checkpoint,
    prepare_binary,
    signs,
)
from .calibration import calibration_feeds
from .config import BinaryConfig
from .folder import _input_names, trim_plan, write_folder_files, write_pytorch_weights
from .onnx_passes import gemm_to_matmul, quantize_embeddings, table_bits
from .qat import _parity, plain_module, swap_modules
from .vocab import trim_embedding_rows


# --- export --------------------------------------------------------------------------------------------------------

def pack_signs(codes: np.ndarray) -> np.ndarray:
    """Codes in {-1, +1}, any shape -> uint8 bytes, 8 per byte, the code at flat index i in bit i % 8 of byte i // 8
    (+1 is a set bit); the last byte is padded with -1 codes."""
    bits = (codes.reshape(-1) > 0).astype(np.uint8)
    return np.packbits(bits, bitorder="little")


def unpack_signs(packed: np.ndarray, count: int) -> np.ndarray:
    bits = np.unpackbits(packed, count=count, bitorder="little")
    return bits.astype(np.int8) * 2 - 1


SIGN_TABLE = "binary_sign_table"  # 256 x 8 int8: byte value -> its 8 codes


def _sign_table() -> np.ndarray:
    return (((np.arange(256)[:, None] >> np.arange(8)) & 1) * 2 - 1).astype(np.int8)


def binarize_graph(model, weights: dict[str, tuple[np.ndarray, np.ndarray]],
                   inputs: dict[str, tuple]) -> int:
    """Rewrite the MatMuls of the named weights to 1-bit packed form, in place; returns how many.

    weights: initializer name -> (signs (in, out) in {-1, +1}, scales (out,) or ()) for MatMul(x, W); the MatMul keeps
    its name and output, so the bias Add after it is untouched.
    inputs: initializer name -> ("int8", scale, zero point, dtype) or ("binary", alpha, beta): how that MatMul's
    input is quantized (one quantizer per MatMul, even where q, k and v read the same tensor, as in training)."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    if SIGN_TABLE not in initializers:
        graph.initializer.append(numpy_helper.from_array(_sign_table(), SIGN_TABLE))
    nodes, done = [], 0
    for node in graph.node:
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) > 1 else None
        if weight not in weights:
            nodes.append(node)
            continue
        codes, scale = weights[weight]
        stem = weight.replace(".", "_")
        initializers[weight].CopyFrom(numpy_helper.from_array(pack_signs(codes), weight))
        nodes += _unpack_nodes(graph, weight, stem, codes.shape)
        kind, *params = inputs[weight]
        product = _int8_product if kind == "int8" else _binary_product
        nodes += product(graph, node, stem, scale, *params)
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return done


def _add_constants(graph, consts: dict[str, np.ndarray]) -> None:
    from onnx import numpy_helper

    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())


def _unpack_nodes(graph, weight: str, stem: str, shape: tuple[int, int]) -> list:
    """The packed weight -> `{stem}_codes`, its (rows, cols) int8 codes in {-1, +1}, by the 256-entry lookup table."""
    from onnx import TensorProto, helper

    rows, cols = shape
    _add_constants(graph, {f"{stem}_shape": np.array([-1], np.int64),
                           f"{stem}_matrix": np.array([rows, cols], np.int64),
                           f"{stem}_start": np.array([0], np.int64),
                           f"{stem}_count": np.array([rows * cols], np.int64)})
    return [
        helper.make_node("Cast", [weight], [f"{stem}_index"], to=TensorProto.INT32, name=f"{stem}_index"),
        helper.make_node("Gather", [SIGN_TABLE, f"{stem}_index"], [f"{stem}_bytes"], axis=0, name=f"{stem}_lut"),
        helper.make_node("Reshape", [f"{stem}_bytes", f"{stem}_shape"], [f"{stem}_flat"], name=f"{stem}_flat"),
        helper.make_node("Slice", [f"{stem}_flat", f"{stem}_start", f"{stem}_count"], [f"{stem}_cut"],
                         name=f"{stem}_cut"),  # drops the padding codes of the last byte
        helper.make_node("Reshape", [f"{stem}_cut", f"{stem}_matrix"], [f"{stem}_codes"], name=f"{stem}_codes"),
    ]


def _int8_product(graph, node, stem: str, scale, scale_a: float, zero_a: int, dtype: str) -> list:
    """W1A8: the integer product itself: MatMulInteger(uint8 input, int8 codes) -> int32, times one float scale per
    output column (input scale x row scale). Written out rather than as DequantizeLinear -> MatMul because ONNX Runtime
    fuses MatMul + bias Add into an fp32 Gemm first, which leaves a weight DequantizeLinear that runs on every call
    (measured on SST-2: 25 ms vs 6.7 ms for fp32)."""
    from onnx import TensorProto, helper

    out_scale = (np.asarray(scale, np.float32) * np.float32(scale_a)).astype(np.float32)
    _add_constants(graph, {f"{stem}_in_scale": np.asarray(scale_a, np.float32),
                           f"{stem}_in_zero": np.asarray(zero_a, np.uint8 if dtype == "uint8" else np.int8),
                           f"{stem}_out_scale": out_scale})
    return [helper.make_node("QuantizeLinear", [node.input[0], f"{stem}_in_scale", f"{stem}_in_zero"], [f"{stem}_xq"],
                             name=f"{stem}_quant_in"),
            helper.make_node("MatMulInteger", [f"{stem}_xq", f"{stem}_codes", f"{stem}_in_zero"], [f"{stem}_acc"],
                             name=node.name),
            helper.make_node("Cast", [f"{stem}_acc"], [f"{stem}_acc_f"], to=TensorProto.FLOAT, name=f"{stem}_acc_cast"),
            helper.make_node("Mul", [f"{stem}_acc_f", f"{stem}_out_scale"], list(node.output), name=f"{stem}_rescale")]


def _binary_product(graph, node, stem: str, scale, alpha: float, beta: float) -> list:
    """W1A1: the codes times the row scales, and the input binarized as alpha * sign(x - beta), then a float MatMul."""
    from onnx import TensorProto, helper

    _add_constants(graph, {f"{stem}_alpha": np.asarray(alpha, np.float32), f"{stem}_beta": np.asarray(beta, np.float32),
                           f"{stem}_scale": np.asarray(scale, np.float32)})
    return [helper.make_node("Cast", [f"{stem}_codes"], [f"{stem}_signs"], to=TensorProto.FLOAT, name=f"{stem}_signs"),
            helper.make_node("Mul", [f"{stem}_signs", f"{stem}_scale"], [f"{stem}_binary"], name=f"{stem}_weight"),
            helper.make_node("Sub", [node.input[0], f"{stem}_beta"], [f"{stem}_centered"], name=f"{stem}_center"),
            helper.make_node("Sign", [f"{stem}_centered"], [f"{stem}_sign"], name=f"{stem}_sign"),
            helper.make_node("Mul", [f"{stem}_sign", f"{stem}_alpha"], [f"{stem}_x"], name=f"{stem}_scale"),
            helper.make_node("MatMul", [f"{stem}_x", f"{stem}_binary"], list(node.output), name=node.name)]


def _plain_copy(model: nn.Module) -> nn.Module:
    """An fp32 copy whose binarized weights are exactly alpha * sign(W) and embeddings on their grid (what the export
    traces); the quantizers are applied as graph passes afterwards."""
    plain = copy.deepcopy(model).cpu().eval()
    swap_modules(plain, plain_module, weights=lambda m: (
        m.binary_weight() if isinstance(m, BinaryLinear) else m.table()).detach().clone())
    plain.config.quant = None
    return plain


def export_binary(model: nn.Module, folder: str | os.PathLike, tokenizer, texts=None, max_length: int = 128,
                  mobile: bool = True, target_platform: str = "arm", vocabulary_texts=None,
                  fuse_attention: bool = True) -> dict:
    """Export a trained binary model into `folder`: model.onnx (1-bit packed weights, unpacked and folded to int8 when
    ONNX Runtime loads it) and model.ort (packed; written without constant folding), tokenizer, config.json with the
    BinaryConfig under `quant`, quant_report.json. texts: real examples for the parity check (and calibration='minmax');
    vocabulary_texts: all of the task's training text, when the config trims the vocabulary.
    fuse_attention: attention as one MultiHeadAttention node per layer (compact_nlp.export); False for NNAPI/CoreML."""
    import onnx

    config = BinaryConfig.from_dict(model.config.quant[BinaryConfig.section])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report = {"config": config.to_dict()}
    keep_ids, out_tokenizer = trim_plan(config, tokenizer, vocabulary_texts)
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch)
        if config.calibration == "minmax":
            names = ["input_ids", "attention_mask", "token_type_ids"]
            calibrate_ranges(model, [{k: v for k, v in f.items() if k in names} for f in calibration_feeds(
                tokenizer, list(texts or [])[:config.calibration_examples], max_length, names)])
        plain = _plain_copy(model)
        export_model(plain, fp32, tokenizer_source=tokenizer, mobile=False, fuse_attention=fuse_attention)
        graph = onnx.load(str(fp32 / "model.onnx"))
        gemm_to_matmul(graph)
        names = {i.name for i in graph.graph.initializer}
        weights, inputs = _graph_weights(model, names, config)
        if keep_ids is not None:
            trim_embedding_rows(graph, keep_ids)
        report["binary_matmuls"] = binarize_graph(graph, weights, inputs)
        report["embeddings"] = {table: table_bits(table, config.embedding_bits)  # bits per value of each table
                                for table in quantize_embeddings(graph, config.keep_fp32, config.embedding_bits)}
        onnx.checker.check_model(graph)
        with atomic_path(folder / "model.onnx") as tmp:
            onnx.save(graph, str(tmp))
        write_folder_files(fp32, folder, config, out_tokenizer)
        write_pytorch_weights(fp32, folder, trimmed=keep_ids is not None)
        if mobile:
            report["ort_mobile"] = convert_to_ort(folder / "model.onnx", target_platform=target_platform,
                                                  fold_constants=False)
        report["weights_match_training"] = _packed_signs_match(model, folder / "model.onnx")
        if texts:
            report["parity_vs_pytorch"] = _parity_vs_pytorch(model, folder, tokenizer, out_tokenizer, texts, max_length)
    report["size_mb"] = {p.name: round(p.stat().st_size / 2**20, 3) for p in sorted(folder.glob("model.*"))
                         if p.suffix in (".onnx", ".ort")}
    write_json(folder / "quant_report.json", report)
    return report


def _graph_weights(model: nn.Module, names: set[str], config: BinaryConfig) -> tuple[dict, dict]:
    """For binarize_graph: each BinaryLinear's signs and scales, and how its input is quantized, by the name of its
    weight in the exported graph (`names`: the graph's initializers)."""
    weights, inputs = {}, {}
    for name, module in model.named_modules():
        if not isinstance(module, BinaryLinear):
            continue
        key = next((k for k in (f"model.{name}.weight", f"{name}.weight") if k in names), None)
        if key is None:
            raise RuntimeError(f"no MatMul in the exported graph takes {name}.weight; the exporter's naming "
                               "changed, so the binary weights cannot be placed.")
        latent = module.weight.detach().cpu()
        scale = (module.weight_scale.detach().abs().clamp_min(1e-8) if module.weight_scale is not None
                 else binary_scale(latent, module.per_channel)).cpu().numpy().astype(np.float32)
        weights[key] = (signs(latent).numpy().astype(np.int8).T, scale.reshape(-1) if module.per_channel
                        else scale.reshape(()))
        quantizer = module.input_quantizer
        if isinstance(quantizer, ElasticBinarizer):
            inputs[key] = ("binary", float(quantizer.alpha.detach().abs().clamp_min(1e-8)),
                           float(quantizer.beta.detach()))
        else:
            if not bool(quantizer.seen):
                raise RuntimeError(f"{name} has no activation range: train the model (or calibrate) before "
                                   "exporting.")
            scale_a, zero_a = quantizer.scale_and_zero_point()
            inputs[key] = ("int8", float(scale_a), int(zero_a), config.activation_type)
    return weights, inputs


def _parity_vs_pytorch(model: nn.Module, folder: Path, tokenizer, out_tokenizer, texts, max_length: int) -> dict:
    """Max |exported file - PyTorch binary model| on the first 64 texts, for model.onnx and model.ort."""
    input_names = _input_names(folder / "model.onnx")
    reference = calibration_feeds(tokenizer, list(texts)[:64], max_length, input_names)
    exported = calibration_feeds(out_tokenizer, list(texts)[:64], max_length, input_names)
    return {p.name: _parity(model, p, reference, exported)
            for p in (folder / "model.onnx", folder / "model.ort") if p.exists()}


def _packed_signs_match(model: nn.Module, graph_path: Path) -> bool:
    """Whether every packed weight in the exported graph unpacks to the signs of the trained latent weights."""
    import onnx
    from onnx import numpy_helper

    stored = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(graph_path)).graph.initializer}
    checked = 0
    for name, module in model.named_modules():
        key = next((k for k in (f"model.{name}.weight", f"{name}.weight") if k in stored), None)
        if not isinstance(module, BinaryLinear) or key is None:
            continue
        expected = signs(module.weight.detach().cpu()).numpy().astype(np.int8).T
        if not np.array_equal(unpack_signs(stored[key], expected.size).reshape(expected.shape), expected):
            return False
        checked += 1
    return checked > 0


__all__ = [
    "BinaryEmbedding", "BinaryLinear", "ElasticBinarizer", "SIGN_TABLE", "TwoStageDistillationHook", "binarize_graph",
    "binarize_weight", "binary_hooks", "binary_scale", "calibrate_ranges", "export_binary", "load_binary_checkpoint",
    "pack_signs", "prepare_binary", "signs", "unpack_signs",
]

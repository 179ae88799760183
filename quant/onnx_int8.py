"""int8 ONNX graphs through onnxruntime.quantization: dynamic (the fast x86 path) and static QDQ (what NNAPI and
CoreML accept), from a CompactBert export folder.

onnxruntime.quantization does the quantizing. What we add is what it does not know about our graph:
  - the exporter writes every nn.Linear as Gemm(transB=1), which ORT's dynamic quantizer skips (it quantizes MatMul),
    so `gemm_to_matmul` rewrites them as MatMul + Add first, keeping the weight's name so a weight can still be
    traced to its module (QAT scales, keep_fp32);
  - which nodes stay fp32 (`keep_fp32`: classifier, pooler, position/token-type embeddings);
  - calibration data: real task text, one unpadded example per batch, checked against the graph's inputs;
  - QAT: trained activation scales passed to the QDQ quantizer as TensorQuantOverrides, never re-calibrated.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from compact_nlp.io import atomic_path, write_json

from .config import KEEPABLE, Int8Config, QuantConfigError
from .vocab import VocabularyTrimError, trim_embedding_rows, trimmed_tokenizer, used_token_ids

QUANTIZED_OPS = {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "MatMulInteger", "QLinearMatMul",
                 "DynamicQuantizeMatMul", "MatMulNBits", "QGemm", "GatherBlockQuantized"}


class AlreadyQuantizedError(ValueError):
    pass


class CalibrationError(ValueError):
    pass


def module_kind(name: str) -> str | None:
    """The keep_fp32 kind of a module or weight, from its name (exported initializers keep parameter names)."""
    for kind in KEEPABLE:
        if kind in name:
            return kind
    return None


def check_not_quantized(model_or_path) -> None:
    import onnx

    model = onnx.load(str(model_or_path), load_external_data=False) if isinstance(model_or_path, (str, Path)) \
        else model_or_path
    found = sorted({n.op_type for n in model.graph.node} & QUANTIZED_OPS)
    if any(i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for i in model.graph.initializer):
        found.append("int8 weights")
    if found:
        raise AlreadyQuantizedError(
            f"this graph is already quantized (it has {', '.join(found)}); quantizing twice compounds the error. "
            "Quantize the fp32 export (the folder `compact export` or `compact run` wrote) instead.")


def gemm_to_matmul(model) -> list[str]:
    """Rewrite Gemm(A, W, b, transB=1) with a constant W as MatMul(A, W^T) + b, in place. Returns the MatMul names.

    The transposed weight keeps W's name, so later passes still see which module it came from."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    nodes, names = [], []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in initializers:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        initializers[node.input[1]].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(weight), node.input[1]))
        has_bias = len(node.input) > 2 and node.input[2]
        product = node.output[0] + "_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], node.input[1]], [product], name=node.name))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=node.name + "_bias"))
        names.append(node.name)
    del graph.node[:]
    graph.node.extend(nodes)
    # the exporter recorded shapes of the old (untransposed) weights; let shape inference redo them
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return names


def nodes_to_quantize(model, config: Int8Config) -> list[str]:
    """MatMuls with a weight whose module is not kept fp32. Attention's activation-by-activation MatMuls stay fp32,
    as in Q8BERT (only weight-bearing layers are quantized)."""
    initializers = {i.name for i in model.graph.initializer}
    keep = set(config.keep_fp32)
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and node.input[1] in initializers and module_kind(node.input[1]) not in keep]


def quantize_embeddings(model, keep_fp32: Iterable[str], bits: int = 8) -> list[str]:
    """Store each embedding table that is not kept fp32 at `bits` (8, 4, 2 or 1) with one symmetric scale per row, in
    place. Returns the tables' names.

        8 bits:      Gather(int8 table) -> Cast -> Mul(Gather(row scales))
        4/2/1 bits:  Gather(uint8 table, 2 or 4 codes per byte) -> BitShift/BitwiseAnd per code -> Concat -> Reshape
                   -> Cast -> Sub(offset) -> Mul(Gather(row scales))

    Written here because ORT's quantizers do not do it: the QDQ quantizer leaves a Gather fp32 unless its consumer is
    quantized (ours is an Add), and the dynamic one uses one scale for the whole table and 8 bits only. Standard ops
    only, so it loads from .ort (the unpacking follows the Gather of run-time ids, so the .ort converter cannot fold
    it back to fp32) and only the gathered rows are unpacked."""
    from onnx import helper, numpy_helper

    if bits not in (8, 4, 2, 1):
        raise QuantConfigError(f"embedding bits must be 8, 4, 2 or 1, got {bits}.")
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    keep, done, nodes = set(keep_fp32), [], []
    for node in graph.node:
        table = node.input[0] if node.op_type == "Gather" else None
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        kind = module_kind(table) if table in initializers else None
        if kind is None or kind in keep or axis != 0:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[table]).astype(np.float32)
        codes, scale = symmetric_codes(weight, bits)
        ids, out, name = node.input[1], node.output[0], node.name
        scale_name = table + "_row_scale"
        graph.initializer.append(numpy_helper.from_array(scale, scale_name))
        if bits == 8:
            initializers[table].CopyFrom(numpy_helper.from_array(codes, table))
            nodes += [helper.make_node("Gather", [table, ids], [out + "_q"], name=name, axis=0),
                      helper.make_node("Cast", [out + "_q"], [out + "_codes"], name=name + "_cast", to=1)]
        else:
            nodes += _packed_gather(graph, initializers[table], codes, bits, ids, out, name)
        nodes += [
            helper.make_node("Gather", [scale_name, ids], [out + "_scale"], name=name + "_scale", axis=0),
            helper.make_node("Mul", [out + "_codes", out + "_scale"], [out], name=name + "_dequant"),
        ]
        done.append(table)
    del graph.node[:]
    graph.node.extend(nodes)
    return done


def symmetric_codes(weight: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric codes in [-(2^(b-1)-1), 2^(b-1)-1] (int8) and the (rows, 1) float32 scales. 1 bit: codes
    sign(w) in {-1, +1} (0 -> +1) and scale mean|w| (XNOR-Net's optimum, as BinaryBERT binarizes embeddings)."""
    if bits == 1:
        scale = np.maximum(np.abs(weight).mean(axis=1, keepdims=True), 1e-8).astype(np.float32)
        return np.where(weight >= 0, 1, -1).astype(np.int8), scale
    qmax = 2 ** (bits - 1) - 1
    scale = (np.maximum(np.abs(weight).max(axis=1, keepdims=True), 1e-12) / qmax).astype(np.float32)
    return np.clip(np.round(weight / scale), -qmax, qmax).astype(np.int8), scale


def _packed_gather(graph, table, codes: np.ndarray, bits: int, ids: str, out: str, name: str) -> list:
    from onnx import TensorProto, helper, numpy_helper

    per_byte = 8 // bits
    # stored unsigned: code + offset (1 bit: (code + 1) / 2, so -1 -> 0 and +1 -> 1); decoded as stored * step - offset
    step, offset = (2, 1) if bits == 1 else (1, 2 ** (bits - 1))
    rows, width = codes.shape
    if width % per_byte:
        raise QuantConfigError(f"{bits}-bit embeddings pack {per_byte} codes per byte; the width {width} is not a "
                               f"multiple of {per_byte}. Use 8-bit embeddings for this model.")
    unsigned = ((codes.astype(np.int16) + offset) // step).astype(np.uint8).reshape(rows, width // per_byte, per_byte)
    packed = np.zeros((rows, width // per_byte), dtype=np.uint8)
    for k in range(per_byte):  # code j of a row sits in byte j // per_byte at bit (j % per_byte) * bits
        packed |= unsigned[:, :, k] << np.uint8(k * bits)
    table.CopyFrom(numpy_helper.from_array(packed, table.name))
    consts = {f"{name}_mask": np.array(2 ** bits - 1, dtype=np.uint8), f"{name}_offset": np.array(offset, np.float32),
              **({f"{name}_step": np.array(step, np.float32)} if step != 1 else {}),
              f"{name}_last": np.array([-1], dtype=np.int64), f"{name}_axis": np.array([-1], dtype=np.int64)}
    consts.update({f"{name}_shift{k}": np.array(k * bits, dtype=np.uint8) for k in range(per_byte)})
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    nodes = [helper.make_node("Gather", [table.name, ids], [out + "_packed"], name=name, axis=0)]
    parts = []
    for k in range(per_byte):
        shifted, part = f"{out}_shift{k}", f"{out}_part{k}"
        nodes += [helper.make_node("BitShift", [out + "_packed", f"{name}_shift{k}"], [shifted], direction="RIGHT",
                                   name=f"{name}_shift{k}"),
                  helper.make_node("BitwiseAnd", [shifted, f"{name}_mask"], [part + "_m"], name=f"{name}_mask{k}"),
                  helper.make_node("Unsqueeze", [part + "_m", f"{name}_axis"], [part], name=f"{name}_unsq{k}")]
        parts.append(part)
    nodes += [
        helper.make_node("Concat", parts, [out + "_interleaved"], axis=-1, name=name + "_concat"),
        helper.make_node("Shape", [ids], [out + "_ids_shape"], name=name + "_ids_shape"),
        helper.make_node("Concat", [out + "_ids_shape", f"{name}_last"], [out + "_shape"], axis=0,
                         name=name + "_shape"),
        helper.make_node("Reshape", [out + "_interleaved", out + "_shape"], [out + "_unpacked"], name=name + "_rows"),
        helper.make_node("Cast", [out + "_unpacked"], [out + "_unsigned"], to=TensorProto.FLOAT, name=name + "_cast"),
    ]
    if step != 1:
        nodes.append(helper.make_node("Mul", [out + "_unsigned", f"{name}_step"], [out + "_stepped"],
                                      name=name + "_step"))
    nodes.append(helper.make_node("Sub", [out + "_stepped" if step != 1 else out + "_unsigned", f"{name}_offset"],
                                  [out + "_codes"], name=name + "_center"))
    return nodes


class TextCalibrationReader:
    """onnxruntime CalibrationDataReader over tokenized real text: one unpadded example per call."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._iter = iter(feeds)

    def get_next(self):
        return next(self._iter, None)

    @staticmethod
    def check(feeds: list[dict], input_names: list[str]) -> list[dict[str, np.ndarray]]:
        if not feeds:
            raise CalibrationError("no calibration examples: pass real task text (a few hundred examples).")
        checked = []
        for i, feed in enumerate(feeds):
            missing = sorted(set(input_names) - set(feed))
            extra = sorted(set(feed) - set(input_names))
            if missing or extra:
                raise CalibrationError(f"calibration example {i} has inputs {sorted(feed)}; the graph takes "
                                       f"{input_names} (missing {missing}, unexpected {extra}).")
            arrays = {k: np.asarray(v) for k, v in feed.items()}
            shapes = {k: a.shape for k, a in arrays.items()}
            if any(a.ndim != 2 for a in arrays.values()) or len(set(shapes.values())) != 1:
                raise CalibrationError(f"calibration example {i} has shapes {shapes}; each input must be "
                                       "(batch, sequence) and all the same shape, as the tokenizer returns them with "
                                       "return_tensors='np'.")
            checked.append({k: a.astype(np.int64) for k, a in arrays.items()})
        return checked


def calibration_feeds(tokenizer, texts: Iterable, max_length: int, input_names: list[str]) -> list[dict]:
    """Tokenize real examples (strings, or tuples for sentence pairs) one per feed, unpadded."""
    feeds = []
    for text in texts:
        pair = text if isinstance(text, (tuple, list)) else (text,)
        encoded = tokenizer(*pair, truncation=True, max_length=max_length, return_tensors="np")
        feeds.append({k: v for k, v in encoded.items() if k in input_names})
    return feeds


def fixed_length_feeds(feeds: list[dict], length: int) -> list[dict]:
    """Real examples joined back to back and cut into feeds of exactly `length` tokens. ORT's histogram calibrators
    (entropy, percentile) stack every batch into one array, so all feeds need one shape; padding would calibrate on
    pad tokens, so the text is joined instead (as the latency benchmarks make long inputs)."""
    joined = {k: np.concatenate([f[k][0] for f in feeds]) for k in feeds[0]}
    total = len(next(iter(joined.values())))
    if total < length:
        raise CalibrationError(f"the calibration text has {total} tokens in all, fewer than one input of {length}; "
                               "pass more examples.")
    return [{k: v[None, start:start + length] for k, v in joined.items()}
            for start in range(0, total - length + 1, length)]


def quantize_graph(src: Path, dst: Path, config: Int8Config, feeds: list[dict] | None = None,
                   activation_scales: dict[str, float] | None = None, keep_ids: list[int] | None = None) -> dict:
    """Write the int8 graph of `src` (an fp32 model.onnx) to `dst`. Static activations need `feeds` (PTQ) or
    `activation_scales` (QAT: tensor name -> trained scale, zero point as trained)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    model = onnx.load(str(src))
    check_not_quantized(model)
    input_names = [i.name for i in model.graph.input]
    converted = gemm_to_matmul(model)
    if keep_ids is not None:  # vocabulary trimming: before the table is quantized, so scales are per kept row
        trim_embedding_rows(model, keep_ids)
    embeddings = quantize_embeddings(model, config.keep_fp32, config.embedding_bits)
    chosen = nodes_to_quantize(model, config)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        onnx.save(model, str(prepared))
        with atomic_path(dst) as tmp:
            if config.activations == "dynamic":
                quantize_dynamic(str(prepared), str(tmp), weight_type=QuantType.QInt8, per_channel=config.per_channel,
                                 nodes_to_quantize=chosen, op_types_to_quantize=["MatMul"],
                                 extra_options={"WeightSymmetric": True, "MatMulConstBOnly": True,
                                                # ONNX shape inference stops at contrib ops (MultiHeadAttention)
                                                "DefaultTensorType": onnx.TensorProto.FLOAT})
            else:
                preprocessed = Path(scratch) / "preprocessed.onnx"
                # skip_optimization: its ORT pass would fuse our MatMul + Add back into Gemm, which the quantizer skips
                try:
                    quant_pre_process(str(prepared), str(preprocessed), auto_merge=True, skip_optimization=True)
                except TypeError:  # symbolic shape inference cannot follow token pruning's data-dependent TopK
                    # shapes (it fails on a tensor of unknown rank); onnx's own shape inference is enough for QDQ
                    quant_pre_process(str(prepared), str(preprocessed), skip_symbolic_shape=True,
                                      skip_optimization=True)
                if activation_scales is not None:  # QAT: the trained scale and zero point of each MatMul input
                    zero_dtype = np.uint8 if config.activation_type == "uint8" else np.int8
                    overrides = {name: [{"scale": np.asarray(scale, dtype=np.float32),
                                         "zero_point": np.asarray(zero, dtype=zero_dtype)}]
                                 for name, (scale, zero) in activation_scales.items()}
                    feeds = feeds or []
                else:
                    overrides = {}
                    feeds = TextCalibrationReader.check(feeds or [], input_names)
                    if config.calibration != "minmax":
                        feeds = fixed_length_feeds(feeds, min(64, max(len(f["input_ids"][0]) for f in feeds)))
                method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                          "percentile": CalibrationMethod.Percentile}[config.calibration or "minmax"]
                quantize_static(
                    str(preprocessed), str(tmp), _ScaleOnlyReader(feeds, input_names) if activation_scales is not None
                    else TextCalibrationReader(feeds), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8 if config.activation_type == "uint8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=config.per_channel, nodes_to_quantize=chosen,
                    op_types_to_quantize=["MatMul"], calibrate_method=method,
                    # MatMul outputs are quantized too: only a complete Q -> DQ -> MatMul -> Q unit becomes an integer
                    # QLinearMatMul (on CPU and in NNAPI/CoreML); without it ORT dequantizes the weights every call
                    # and the graph is slower than fp32 (measured: 25 ms vs 3 ms on SST-2). QAT trains those ranges.
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "MatMulConstBOnly": True,
                                   "TensorQuantOverrides": overrides})
                quantized = onnx.load(str(tmp))
                float_consumers_read_float(quantized)
                onnx.save(quantized, str(tmp))
    return {"gemms_rewritten": len(converted), "matmuls_quantized": len(chosen), "int8_embeddings": embeddings,
            **({"vocabulary": len(keep_ids)} if keep_ids is not None else {})}


def float_consumers_read_float(model) -> int:
    """Give fp32 consumers of a quantized activation the float tensor back, in place; returns how many inputs moved.

    ORT's QDQ quantizer routes every consumer of a quantized tensor through its DequantizeLinear, so a LayerNorm
    output that feeds both the next MatMul and the residual Add would quantize the residual stream too, which neither
    the fp32 model nor QAT does (measured: the QDQ graph then drifted 8x further from the PyTorch QAT model than
    float32 from float64). The MatMul, the op being quantized, keeps reading the dequantized value, and so does the
    bias Add after a quantized MatMul product."""
    produced_by = {out: node for node in model.graph.node for out in node.output}
    moved = 0
    for node in model.graph.node:
        if node.op_type in ("MatMul", "QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            dq = produced_by.get(name)
            q = produced_by.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear":
                continue
            # a quantized MatMul's product is what its bias Add must read (that is what QAT trains); only quantized
            # MatMul *inputs* (LayerNorm outputs, attention outputs, ...) go back to other consumers as floats
            if not is_quantized_product(q.input[0], produced_by):
                node.input[i] = q.input[0]
                moved += 1
    return moved


def is_quantized_product(tensor: str, produced_by: dict) -> bool:
    """Whether `tensor` is the output of a MatMul with a quantized weight (not attention's activation MatMuls)."""
    matmul = produced_by.get(tensor)
    if matmul is None or matmul.op_type != "MatMul":
        return False
    weight = produced_by.get(matmul.input[1])
    return weight is not None and weight.op_type == "DequantizeLinear" and weight.input[0] not in produced_by


class _ScaleOnlyReader(TextCalibrationReader):
    """QAT: every activation has a trained scale, so calibration needs no statistics; ORT still runs the reader
    once, so give it one real example (or none when all scales are overridden)."""

    def __init__(self, feeds, input_names):
        super().__init__(TextCalibrationReader.check(feeds[:1], input_names) if feeds else [])


def quantize_folder(src: str | os.PathLike, out: str | os.PathLike, config: Int8Config | None = None,
                    texts: Iterable | None = None, max_length: int = 128, mobile: bool = True,
                    target_platform: str = "arm", vocabulary_texts: Iterable | None = None) -> dict:
    """int8 post-training quantization of an export folder (model.onnx + config + tokenizer) into `out`:
    model.onnx (int8), model.ort (with mobile), the tokenizer, and config.json with the Int8Config under `quant`.

    texts: real task examples (strings, or (a, b) pairs) for static calibration and for the fp32-vs-int8 agreement
    that the report records. vocabulary_texts: all of the task's training text, for trim_vocabulary.
    """
    from transformers import AutoTokenizer

    from compact_nlp.export import convert_to_ort

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
    tokenizer = AutoTokenizer.from_pretrained(src)
    keep_ids, out_tokenizer = trim_plan(config, tokenizer, vocabulary_texts)
    out.mkdir(parents=True, exist_ok=True)
    input_names = _input_names(source)
    feeds = calibration_feeds(out_tokenizer, texts[:config.calibration_examples], max_length, input_names)
    report = {"config": config.to_dict(), "source": str(src)}
    report.update(quantize_graph(source, out / "model.onnx", config, feeds if config.activations == "static" else None,
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


def _input_names(path: Path) -> list[str]:
    import onnx

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def trim_plan(config: Int8Config, tokenizer, vocabulary_texts: Iterable | None):
    """(kept token ids, the tokenizer the quantized folder ships): all ids and the same tokenizer unless trimming."""
    if not config.trim_vocabulary:
        return None, tokenizer
    texts = list(vocabulary_texts or [])
    if not texts:
        raise VocabularyTrimError("trim_vocabulary needs the task's training text (vocabulary_texts=): the kept "
                                  "pieces are the ones it uses.")
    keep_ids = used_token_ids(tokenizer, texts)
    return keep_ids, trimmed_tokenizer(tokenizer, keep_ids)


def write_folder_files(src: Path, out: Path, config: Int8Config, tokenizer) -> None:
    """The shipped tokenizer and config.json (with the Int8Config under `quant`, and the trimmed vocabulary)."""
    from compact_nlp.io import save_pretrained_atomic

    save_pretrained_atomic(tokenizer, out)
    model_config = json.loads((src / "config.json").read_text())
    model_config["quant"] = {config.section: config.to_dict()}
    model_config["vocab_size"] = len(tokenizer)
    model_config["pad_token_id"] = tokenizer.pad_token_id
    write_json(out / "config.json", model_config)


def write_pytorch_weights(src: Path, out: Path, trimmed: bool) -> None:
    """model.safetensors beside a QAT or binary graph: the fp32 copy the graph was exported from, whose weights sit
    exactly on their trained grids (int8 codes x scale, or +-alpha), so AutoCompactModel loads the model that ships.
    Skipped with a trimmed vocabulary: the shipped config.json counts the kept rows, the table has them all."""
    if trimmed:
        return
    import shutil

    from compact_nlp.io import atomic_path

    with atomic_path(out / "model.safetensors") as tmp:
        shutil.copyfile(src / "model.safetensors", tmp)


def agreement(reference: Path, candidate: Path, feeds: list[dict], candidate_feeds: list[dict] | None = None) -> dict:
    """How closely the quantized file follows the fp32 one on real inputs: max |diff| of the outputs and, for
    classifiers, how often the argmax agrees. candidate_feeds: the same examples through the candidate's own
    tokenizer (a trimmed vocabulary)."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (reference, candidate)]
    diffs, same = [], []
    for feed, candidate_feed in zip(feeds, candidate_feeds or feeds):
        a, b = sessions[0].run(None, feed)[0], sessions[1].run(None, candidate_feed)[0]
        diffs.append(float(np.abs(a - b).max()))
        if a.ndim == 2 and a.shape[-1] > 1:
            same.append(bool((a.argmax(-1) == b.argmax(-1)).all()))
    result = {"examples": len(feeds), "max_abs_diff": max(diffs) if diffs else None,
              "median_abs_diff": float(np.median(diffs)) if diffs else None}
    if same:
        result["argmax_agreement"] = round(sum(same) / len(same), 4)
    return result

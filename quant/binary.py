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
import torch
import torch.nn.functional as F
from torch import nn

from compact_nlp.trainer import CompactHook

from .config import BinaryConfig, QuantConfigError
from .onnx_int8 import module_kind
from .qat import ActivationObserver, QuantizationHook, fake_quant_weight, plain_module, swap_modules


def binary_scale(weight: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """mean|W| per output row (or per tensor): the scale that minimises ||W - alpha sign(W)||^2 (XNOR-Net)."""
    return (weight.abs().mean(dim=1, keepdim=True) if per_channel else weight.abs().mean()).clamp_min(1e-8)


def signs(weight: torch.Tensor) -> torch.Tensor:
    """sign with 0 -> +1, so every weight has one of exactly two codes."""
    return torch.where(weight >= 0, 1.0, -1.0).to(weight.dtype)


def binarize_weight(weight: torch.Tensor, per_channel: bool, learned_scale: torch.Tensor | None = None):
    """alpha * sign(W). Analytic alpha: straight-through (identity) gradient to W, as BinaryBERT. Learned alpha:
    BiT's elastic estimator, gradient to W inside [-alpha, alpha] only and to alpha through the product."""
    # written as value + (x - x.detach()): the forward value is exactly the binary one (x - x is 0 exactly), which
    # `x + (value - x).detach()` is not, so the export reproduces it bit for bit
    if learned_scale is None:
        binary = signs(weight.detach()) * binary_scale(weight.detach(), per_channel)
        return binary + (weight - weight.detach())
    alpha = learned_scale.abs().clamp_min(1e-8)
    clipped = torch.clamp(weight / alpha.detach(), -1, 1)
    return alpha * (signs(weight.detach()) + (clipped - clipped.detach()))


class ElasticBinarizer(nn.Module):
    """BiT's elastic binarization of an activation: alpha * sign(x - beta), alpha and beta trained (initialised on the
    first training batch to mean|x - mean x| and mean x), gradient passed where |x - beta| <= alpha."""

    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.seen):
            with torch.no_grad():
                self.beta.copy_(x.mean())
                self.alpha.copy_((x - x.mean()).abs().mean().clamp_min(1e-4))
                self.seen.fill_(True)
        alpha = self.alpha.abs().clamp_min(1e-8)
        centered = (x - self.beta) / alpha
        clipped = torch.clamp(centered, -1, 1)
        return alpha * (torch.sign(centered).detach() + (clipped - clipped.detach()))


class BinaryLinear(nn.Linear):
    """nn.Linear computing with alpha * sign(W) on an int8 (W1A8) or binary (W1A1) input; the same parameter names,
    so checkpoints stay compatible (plus `weight_scale` when the scale is learned)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, config: BinaryConfig):
        super().__init__(in_features, out_features, bias=bias)
        self.per_channel = config.per_channel
        self.weight_scale = None
        if config.activation_bits == 1:
            self.input_quantizer = ElasticBinarizer()
        else:
            self.input_quantizer = ActivationObserver(config.activation_type, config.ema_decay)

    def init_learned_scale(self) -> None:
        self.weight_scale = nn.Parameter(binary_scale(self.weight.detach(), self.per_channel).clone())

    def binary_weight(self) -> torch.Tensor:
        return binarize_weight(self.weight, self.per_channel, self.weight_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quantizer(x), self.binary_weight(), self.bias)


class BinaryEmbedding(nn.Embedding):
    """nn.Embedding whose rows are stored at `bits`: 1 (sign x mean|row|) or 2 / 4 / 8 (symmetric, max|row|)."""

    bits = 1

    def table(self) -> torch.Tensor:
        if self.bits == 1:
            return binarize_weight(self.weight, per_channel=True)
        return fake_quant_weight(self.weight, per_channel=True, bits=self.bits)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.table(), self.padding_idx)


def prepare_binary(model: nn.Module, config: BinaryConfig) -> nn.Module:
    """Swap the model's Linear and word-embedding modules for binary ones, in place (parameters shared, not copied);
    records the config in `model.config.quant`."""
    if any(isinstance(m, (BinaryLinear, BinaryEmbedding)) for m in model.modules()):
        raise QuantConfigError("this model is already binarized; binarizing twice compounds the error.")
    if getattr(model.config, "quant", None):
        raise QuantConfigError(f"this model is already quantized ({model.config.quant}); start from the fp32 model.")
    def binarized(name, module):
        if type(module) is nn.Linear:
            return BinaryLinear(module.in_features, module.out_features, module.bias is not None, config)
        if type(module) is nn.Embedding and module_kind(name) == "word_embeddings":
            swapped = BinaryEmbedding(module.num_embeddings, module.embedding_dim, module.padding_idx)
            swapped.bits = config.embedding_bits
            return swapped
        return None

    swap_modules(model, binarized, keep_fp32=config.keep_fp32)
    if config.weight_scale == "learned":  # initialised from the (now shared) latent weights
        for module in model.modules():
            if isinstance(module, BinaryLinear):
                module.init_learned_scale()
    model.config.quant = {config.section: config.to_dict()}
    return model


class TwoStageDistillationHook(CompactHook):
    """BinaryBERT's and BiT's two-stage distillation: for the first `intermediate_fraction` of the steps only the
    intermediate terms (hidden states, attention) train the student; after that only the prediction terms (logits,
    and the task loss on the labels). Needs a teacher with hidden_weight or attention_weight > 0 in the
    distillation config (otherwise stage one has nothing to learn from)."""

    INTERMEDIATE, PREDICTION = ("hidden", "attention"), ("logits", "task")

    def __init__(self, intermediate_fraction: float = 0.5):
        if not 0 <= intermediate_fraction < 1:
            raise ValueError(f"intermediate_fraction must be in [0, 1), got {intermediate_fraction}.")
        self.intermediate_fraction = intermediate_fraction

    def stage(self, state) -> int:
        return 1 if state.max_steps and state.global_step < self.intermediate_fraction * state.max_steps else 2

    def term_weights(self, state) -> dict[str, float]:
        off = self.PREDICTION if self.stage(state) == 1 else self.INTERMEDIATE
        return {name: 0.0 for name in off}


def binary_hooks(config: BinaryConfig) -> list[CompactHook]:
    """The CompactTrainer hooks a binary model trains with: int8 activation ranges frozen for the last half of the
    steps (W1A8), and two-stage distillation when intermediate_fraction > 0."""
    hooks: list[CompactHook] = []
    if config.activation_bits == 8:
        # freeze the ranges in stage two, so the prediction stage trains against the ranges that ship
        hooks.append(QuantizationHook(freeze_after=max(0.5, config.intermediate_fraction)))
    if config.intermediate_fraction > 0:
        hooks.append(TwoStageDistillationHook(config.intermediate_fraction))
    return hooks


def calibrate_ranges(model: nn.Module, feeds: list[dict]) -> None:
    """Re-measure every int8 input range as the min/max over real examples (BinaryConfig(calibration='minmax')),
    replacing the trained EMA ranges before export."""
    observers = [m.input_quantizer for m in model.modules()
                 if isinstance(m, BinaryLinear) and isinstance(m.input_quantizer, ActivationObserver)]
    low = {id(o): None for o in observers}
    high = dict(low)

    def track(observer):
        def hook(module, args):
            x = args[0].detach()
            low[id(module)] = x.min() if low[id(module)] is None else torch.minimum(low[id(module)], x.min())
            high[id(module)] = x.max() if high[id(module)] is None else torch.maximum(high[id(module)], x.max())
        return observer.register_forward_pre_hook(hook)

    handles = [track(o) for o in observers]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.eval()
            for feed in feeds:
                model(**{k: torch.from_numpy(v).to(device) for k, v in feed.items()})
    finally:
        for handle in handles:
            handle.remove()
    for observer in observers:
        if low[id(observer)] is not None:
            observer.low.copy_(low[id(observer)]), observer.high.copy_(high[id(observer)])
            observer.seen.fill_(True)


def load_binary_checkpoint(checkpoint: str | os.PathLike, base_model: str | os.PathLike,
                           config: BinaryConfig) -> nn.Module:
    """A trained binary model back from a training checkpoint (its model.safetensors), e.g. to export it again with
    other export settings (trim_vocabulary, embedding_bits is not one: it changes what was trained). base_model: the
    fp32 folder it was trained from (the architecture); config: the BinaryConfig it was trained with."""
    from safetensors.torch import load_file

    from compact_nlp.auto import AutoCompactModelForSequenceClassification

    model = prepare_binary(AutoCompactModelForSequenceClassification.from_pretrained(base_model), config)
    weights = Path(checkpoint) / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{checkpoint} has no model.safetensors; pass a checkpoint-N folder of the run.")
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights} does not match a binary model of {base_model} with this config (missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}); pass the config it was trained with.")
    return model.eval()


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
    from onnx import TensorProto, helper, numpy_helper

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
        rows, cols = codes.shape
        stem = weight.replace(".", "_")
        initializers[weight].CopyFrom(numpy_helper.from_array(pack_signs(codes), weight))
        consts = {f"{stem}_shape": np.array([-1], np.int64), f"{stem}_matrix": np.array([rows, cols], np.int64),
                  f"{stem}_start": np.array([0], np.int64), f"{stem}_count": np.array([rows * cols], np.int64)}
        graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
        x = node.input[0]
        nodes += [
            helper.make_node("Cast", [weight], [f"{stem}_index"], to=TensorProto.INT32, name=f"{stem}_index"),
            helper.make_node("Gather", [SIGN_TABLE, f"{stem}_index"], [f"{stem}_bytes"], axis=0, name=f"{stem}_lut"),
            helper.make_node("Reshape", [f"{stem}_bytes", f"{stem}_shape"], [f"{stem}_flat"], name=f"{stem}_flat"),
            helper.make_node("Slice", [f"{stem}_flat", f"{stem}_start", f"{stem}_count"], [f"{stem}_cut"],
                             name=f"{stem}_cut"),  # drops the padding codes of the last byte
            helper.make_node("Reshape", [f"{stem}_cut", f"{stem}_matrix"], [f"{stem}_codes"], name=f"{stem}_codes"),
        ]
        kind, *params = inputs[weight]
        if kind == "int8":
            # the integer product itself: MatMulInteger(uint8 input, int8 codes) -> int32, times one float scale per
            # output column (input scale x row scale). Written out rather than as DequantizeLinear -> MatMul because
            # ONNX Runtime fuses MatMul + bias Add into an fp32 Gemm first, which leaves a weight DequantizeLinear
            # that runs on every call (measured on SST-2: 25 ms vs 6.7 ms for fp32)
            scale_a, zero_a, dtype = params
            consts = {f"{stem}_in_scale": np.asarray(scale_a, np.float32),
                      f"{stem}_in_zero": np.asarray(zero_a, np.uint8 if dtype == "uint8" else np.int8),
                      f"{stem}_out_scale": (np.asarray(scale, np.float32) * np.float32(scale_a)).astype(np.float32)}
            graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
            nodes += [helper.make_node("QuantizeLinear", [x, f"{stem}_in_scale", f"{stem}_in_zero"], [f"{stem}_xq"],
                                       name=f"{stem}_quant_in"),
                      helper.make_node("MatMulInteger", [f"{stem}_xq", f"{stem}_codes", f"{stem}_in_zero"],
                                       [f"{stem}_acc"], name=node.name),
                      helper.make_node("Cast", [f"{stem}_acc"], [f"{stem}_acc_f"], to=TensorProto.FLOAT,
                                       name=f"{stem}_acc_cast"),
                      helper.make_node("Mul", [f"{stem}_acc_f", f"{stem}_out_scale"], list(node.output),
                                       name=f"{stem}_rescale")]
        else:
            alpha, beta = params
            consts = {f"{stem}_alpha": np.asarray(alpha, np.float32), f"{stem}_beta": np.asarray(beta, np.float32),
                      f"{stem}_scale": np.asarray(scale, np.float32)}
            graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
            nodes += [helper.make_node("Cast", [f"{stem}_codes"], [f"{stem}_signs"], to=TensorProto.FLOAT,
                                       name=f"{stem}_signs"),
                      helper.make_node("Mul", [f"{stem}_signs", f"{stem}_scale"], [f"{stem}_binary"],
                                       name=f"{stem}_weight"),
                      helper.make_node("Sub", [x, f"{stem}_beta"], [f"{stem}_centered"], name=f"{stem}_center"),
                      helper.make_node("Sign", [f"{stem}_centered"], [f"{stem}_sign"], name=f"{stem}_sign"),
                      helper.make_node("Mul", [f"{stem}_sign", f"{stem}_alpha"], [f"{stem}_x"], name=f"{stem}_scale"),
                      helper.make_node("MatMul", [f"{stem}_x", f"{stem}_binary"], list(node.output), name=node.name)]
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return done


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

    from compact_nlp.export import convert_to_ort, export_model
    from compact_nlp.io import atomic_path, write_json

    from .onnx_int8 import (
        _input_names,
        calibration_feeds,
        gemm_to_matmul,
        quantize_embeddings,
        trim_plan,
        write_folder_files,
        write_pytorch_weights,
    )
    from .qat import _parity
    from .vocab import trim_embedding_rows

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
        if keep_ids is not None:
            trim_embedding_rows(graph, keep_ids)
        report["binary_matmuls"] = binarize_graph(graph, weights, inputs)
        report["embeddings"] = {"bits": config.embedding_bits,
                                "tables": quantize_embeddings(graph, config.keep_fp32, config.embedding_bits)}
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
            input_names = _input_names(folder / "model.onnx")
            reference = calibration_feeds(tokenizer, list(texts)[:64], max_length, input_names)
            exported = calibration_feeds(out_tokenizer, list(texts)[:64], max_length, input_names)
            report["parity_vs_pytorch"] = {p.name: _parity(model, p, reference, exported)
                                           for p in (folder / "model.onnx", folder / "model.ort") if p.exists()}
    report["size_mb"] = {p.name: round(p.stat().st_size / 2**20, 3) for p in sorted(folder.glob("model.*"))
                         if p.suffix in (".onnx", ".ort")}
    write_json(folder / "quant_report.json", report)
    return report


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

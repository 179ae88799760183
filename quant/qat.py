"""int8 quantization-aware training (Q8BERT): fake-quantized weights and activations with a straight-through
estimator, trained inside CompactTrainer (usually distilled from the fp32 model), then exported twice with the
trained scales.

    model = prepare_qat(fp32_model, Int8Config(mode="qat"))            # swaps Linear/Embedding in place
    trainer = CompactTrainer(model=model, teacher_model=fp32_model, hooks=[QuantizationHook()], ...)
    trainer.train()
    export_qat(model, folder, tokenizer)      # model.onnx: trained int8 weights, dynamic activations (fast on x86)
                                              # model.qdq.onnx (+ .ort): static QDQ with the trained activation
                                              # scales (the form NNAPI / CoreML run)

What is fake-quantized is exactly what the exports quantize: every Linear not in `keep_fp32` (its weight symmetric
int8, one scale per output row or per tensor; its input uint8/int8 with a range tracked as an EMA of batch min/max),
and the word embeddings (int8, one scale per row). Weight scales are max|w|/127 of the current weights, as Q8BERT
does, so the exports reproduce them exactly; the exporters' int8 codes are checked against ours.
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

from compact_nlp.export import convert_to_ort, export_model
from compact_nlp.hooks import CompactHook
from compact_nlp.io import write_json

from .calibration import calibration_feeds
from .config import Int8Config, QuantConfigError
from .folder import _input_names, trim_plan, write_folder_files, write_pytorch_weights
from .onnx_int8 import quantize_graph
from .onnx_passes import module_kind, table_bits

INT8_MAX = 127


def fake_quant_weight(weight: torch.Tensor, per_channel: bool, bits: int = 8) -> torch.Tensor:
    """Symmetric `bits`-bit with scale max|w|/(2^(b-1)-1) (per output row or per tensor); straight-through
    gradient."""
    # value + (w - w.detach()): forward is exactly the grid value (w + (value - w).detach() can be 1 ulp off)
    return snap_weight(weight.detach(), per_channel, bits) + (weight - weight.detach())


def weight_scale(weight: torch.Tensor, per_channel: bool, bits: int = 8) -> torch.Tensor:
    amax = weight.abs().amax(dim=1, keepdim=True) if per_channel else weight.abs().max()
    return amax.clamp_min(1e-12) / (2 ** (bits - 1) - 1)


def snap_weight(weight: torch.Tensor, per_channel: bool, bits: int = 8) -> torch.Tensor:
    """The weight on its grid: scale * round(w / scale)."""
    qmax = 2 ** (bits - 1) - 1
    scale = weight_scale(weight, per_channel, bits)
    return torch.clamp(torch.round(weight / scale), -qmax, qmax) * scale


class ActivationObserver(nn.Module):
    """Tracks an activation's range (EMA of batch min/max) and fake-quantizes with it.

    uint8: asymmetric, zero point in [0, 255]; int8: symmetric, zero point 0. The range always contains 0, as ONNX
    QuantizeLinear requires."""

    def __init__(self, dtype: str, decay: float):
        super().__init__()
        self.dtype, self.decay = dtype, decay
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))
        self.observing = True

    def scale_and_zero_point(self) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.low.clamp(max=0), self.high.clamp(min=0)
        if self.dtype == "uint8":
            scale = ((high - low) / 255).clamp_min(1e-12)
            return scale, torch.clamp(torch.round(-low / scale), 0, 255)
        scale = (torch.maximum(-low, high) / INT8_MAX).clamp_min(1e-12)
        return scale, torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.observing:
            with torch.no_grad():
                low, high = x.min(), x.max()
                if not bool(self.seen):
                    self.low.copy_(low), self.high.copy_(high), self.seen.fill_(True)
                else:
                    self.low.mul_(self.decay).add_((1 - self.decay) * low)
                    self.high.mul_(self.decay).add_((1 - self.decay) * high)
        if not bool(self.seen):  # never observed (e.g. evaluated before training): pass through
            return x
        scale, zero = self.scale_and_zero_point()
        qmin, qmax = (0, 255) if self.dtype == "uint8" else (-INT8_MAX, INT8_MAX)
        quantized = (torch.clamp(torch.round(x / scale) + zero, qmin, qmax) - zero) * scale
        return quantized.detach() + (x - x.detach())  # exactly the quantized value forward, identity backward


class QATLinear(nn.Linear):
    """nn.Linear with fake-quantized input, weight and product (before the bias), which is what a static QDQ graph
    runs as one integer QLinearMatMul; the same parameter names, so checkpoints stay compatible."""

    def __init__(self, in_features: int, out_features: int, bias: bool, config: Int8Config):
        super().__init__(in_features, out_features, bias=bias)
        self.per_channel = config.per_channel
        self.input_observer = ActivationObserver(config.activation_type or "uint8", config.ema_decay)
        self.output_observer = ActivationObserver(config.activation_type or "uint8", config.ema_decay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        product = self.output_observer(F.linear(self.input_observer(x), fake_quant_weight(self.weight,
                                                                                         self.per_channel)))
        return product + self.bias if self.bias is not None else product


class QATEmbedding(nn.Embedding):
    """nn.Embedding whose table is fake-quantized (8, 4 or 2 bits) with one scale per row, as the export stores it."""

    bits = 8

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, fake_quant_weight(self.weight, per_channel=True, bits=self.bits), self.padding_idx)


def prepare_qat(model: nn.Module, config: Int8Config) -> nn.Module:
    """Swap the model's Linear and word-embedding modules for fake-quantized ones, in place; records the config in
    `model.config.quant`. Parameters are shared, not copied."""
    if config.mode != "qat":
        raise QuantConfigError("prepare_qat needs Int8Config(mode='qat').")
    if any(isinstance(m, (QATLinear, QATEmbedding)) for m in model.modules()):
        raise QuantConfigError("this model is already prepared for QAT; quantizing twice compounds the error.")
    swap_linear_and_embeddings(model, QATLinear, QATEmbedding, config)
    model.config.quant = {"int8": config.to_dict()}
    return model


def swap_linear_and_embeddings(model: nn.Module, linear, embedding, config) -> None:
    """Replace every Linear with `linear` and every embedding table with `embedding` (at quant.onnx_passes.table_bits:
    the word embeddings at the config's embedding bits, the others at 8), in place, keeping config.keep_fp32 as they
    are; refuses a model quantized already."""
    if getattr(model.config, "quant", None):
        raise QuantConfigError(f"this model is already quantized ({model.config.quant}); start from the fp32 model.")

    def build(name, module):
        if type(module) is nn.Linear:
            return linear(module.in_features, module.out_features, module.bias is not None, config)
        if type(module) is nn.Embedding and module_kind(name) is not None:  # on the grid the export stores it on
            swapped = embedding(module.num_embeddings, module.embedding_dim, module.padding_idx)
            swapped.bits = table_bits(name, config.embedding_bits)
            return swapped
        return None

    swap_modules(model, build, keep_fp32=config.keep_fp32)


def swap_modules(model: nn.Module, build, keep_fp32=(), weights=None) -> None:
    """Replace modules in place: `build(name, module)` returns the new module (or None to keep the old one), which
    takes over the old module's weight and bias (shared), or `weights(module)`'s tensors when given (copies)."""
    keep = set(keep_fp32)
    for name, module in list(model.named_modules()):
        if module_kind(name) in keep:
            continue
        swapped = build(name, module)
        if swapped is None:
            continue
        if weights is None:
            swapped.weight = module.weight
            if getattr(module, "bias", None) is not None:
                swapped.bias = module.bias
        else:
            swapped.weight = nn.Parameter(weights(module))
            if getattr(module, "bias", None) is not None:
                swapped.bias = nn.Parameter(module.bias.detach().clone())
        swapped.to(module.weight.device)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, swapped)


class QuantizationHook(CompactHook):
    """Freezes the activation ranges once `freeze_after` of the training steps are done, so the last steps train
    the weights against the ranges that will ship (the 'freeze observers' event of the hook interface)."""

    def __init__(self, freeze_after: float = 0.5):
        if not 0 <= freeze_after <= 1:
            raise ValueError(f"freeze_after is a fraction of the steps, got {freeze_after}.")
        self.freeze_after = freeze_after

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and state.max_steps and state.global_step >= self.freeze_after * state.max_steps:
            for module in model.modules():
                if isinstance(module, ActivationObserver):
                    module.observing = False


def activation_scales(model: nn.Module) -> dict[str, dict[str, tuple[float, int]]]:
    """Trained (scale, zero point) of each fake-quantized Linear's input and output (its product before the bias),
    by module name."""
    scales = {}
    for name, module in model.named_modules():
        if isinstance(module, QATLinear) and bool(module.input_observer.seen):
            scales[name] = {}
            for where, observer in (("input", module.input_observer), ("output", module.output_observer)):
                scale, zero = observer.scale_and_zero_point()
                scales[name][where] = (float(scale), int(zero))
    return scales


def plain_module(name: str, module: nn.Module) -> nn.Module | None:
    """The nn.Linear / nn.Embedding a quantized module (QAT or binary) becomes in an fp32 copy for export."""
    if isinstance(module, nn.Linear) and type(module) is not nn.Linear:
        return nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    if isinstance(module, nn.Embedding) and type(module) is not nn.Embedding:
        return nn.Embedding(module.num_embeddings, module.embedding_dim, module.padding_idx)
    return None


def strip_qat(model: nn.Module) -> nn.Module:
    """A plain fp32 copy whose weights sit exactly on their trained int8 grids (for export)."""
    plain = copy.deepcopy(model).cpu().eval()
    swap_modules(plain, plain_module, weights=lambda m: snap_weight(
        m.weight.detach(), m.per_channel if isinstance(m, QATLinear) else True, m.bits if isinstance(m, QATEmbedding)
        else 8))
    plain.config.quant = None  # the copy is fp32 (on the grid); the int8 config goes into the exported folders
    return plain


def export_qat(model: nn.Module, folder: str | os.PathLike, tokenizer, texts=None, max_length: int = 128,
               mobile: bool = True, target_platform: str = "arm", vocabulary_texts=None,
               fuse_attention: bool = True) -> dict:
    """Both exports of a QAT model into `folder`, with the trained scales:
        model.onnx (+ model.ort): trained int8 weights, dynamic activations (the fast x86 path);
        qdq/model.onnx (+ qdq/model.ort): static QDQ with the trained activation scales (mobile EPs).
    texts: a few real examples, used only to check that the exports follow the PyTorch QAT model.
    vocabulary_texts: all of the task's training text, when the config trims the vocabulary.
    fuse_attention: attention as one MultiHeadAttention node per layer (compact_nlp.export); False for NNAPI/CoreML."""
    import onnx

    config = Int8Config.from_dict(model.config.quant["int8"])
    folder = Path(folder)
    plain = strip_qat(model)
    scales = activation_scales(model)
    report = {"config": config.to_dict()}
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch)
        export_model(plain, fp32, tokenizer_source=tokenizer, mobile=False, fuse_attention=fuse_attention)
        tensor_scales = _tensor_scales(onnx.load(str(fp32 / "model.onnx")), scales)
        input_names = _input_names(fp32 / "model.onnx")
        keep_ids, out_tokenizer = trim_plan(config, tokenizer, vocabulary_texts)
        feeds = calibration_feeds(out_tokenizer, list(texts or [])[:64], max_length, input_names)
        reference_feeds = calibration_feeds(tokenizer, list(texts or [])[:64], max_length, input_names)
        dynamic = Int8Config.from_dict({**config.to_dict(), "mode": "ptq", "activations": "dynamic",
                                        "activation_type": None, "calibration": None, "fallback_to_ptq": False})
        static = Int8Config.from_dict({**config.to_dict(), "mode": "qat", "activations": "static",
                                       "calibration": None})
        (folder / "qdq").mkdir(parents=True, exist_ok=True)
        report["dynamic"] = quantize_graph(fp32 / "model.onnx", folder / "model.onnx", dynamic, keep_ids=keep_ids)
        report["static_qdq"] = quantize_graph(fp32 / "model.onnx", folder / "qdq" / "model.onnx", static,
                                              feeds=feeds, activation_scales=tensor_scales, keep_ids=keep_ids)
        report["weights_match_training"] = _codes_match(plain, folder / "model.onnx")
        for out in (folder, folder / "qdq"):
            write_folder_files(fp32, out, config, out_tokenizer)
            if mobile:
                report.setdefault("ort_mobile", {})[str(out.relative_to(folder)) or "."] = convert_to_ort(
                    out / "model.onnx", target_platform=target_platform)
        write_pytorch_weights(fp32, folder, trimmed=keep_ids is not None)
        if feeds:
            report["parity_vs_pytorch"] = {  # PyTorch sees the full vocabulary, the export its trimmed one
                str(p.relative_to(folder)): _parity(model, p, reference_feeds, feeds)
                for p in (folder / "model.onnx", folder / "qdq" / "model.onnx", folder / "model.ort",
                          folder / "qdq" / "model.ort") if p.exists()}
    report["size_mb"] = {str(p.relative_to(folder)): round(p.stat().st_size / 2**20, 3)
                         for p in sorted(folder.rglob("model.*")) if p.suffix in (".onnx", ".ort")}
    write_json(folder / "quant_report.json", report)
    return report


def _tensor_scales(graph, scales: dict[str, dict[str, tuple[float, int]]]) -> dict[str, tuple[float, int]]:
    """The trained (scale, zero point) of each module's input and output, by the tensor names the quantized graph
    has for them (`graph`: the fp32 export)."""
    gemms = {n.input[1]: n for n in graph.graph.node if n.op_type == "Gemm"}
    tensor_scales = {}
    for module, trained in scales.items():
        gemm = gemms.get(f"model.{module}.weight") or gemms.get(f"{module}.weight")
        if gemm is None:
            raise RuntimeError(f"no Gemm in the exported graph takes {module}.weight; the exporter's naming "
                               "changed, so the trained scales cannot be placed.")
        # names as gemm_to_matmul leaves them: the Gemm's input, and its MatMul's output before the bias Add
        product = gemm.output[0] + "_matmul" if len(gemm.input) > 2 and gemm.input[2] else gemm.output[0]
        tensor_scales.setdefault(gemm.input[0], trained["input"])  # q, k and v share one input and its range
        tensor_scales[product] = trained["output"]
    return tensor_scales


def _parity(model: nn.Module, path: Path, feeds: list[dict], export_feeds: list[dict]) -> float:
    """Max |ORT - PyTorch QAT model| over the feeds (the QAT model in eval mode: fake quantization with the trained,
    frozen activation ranges)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    device = next(model.parameters()).device
    worst = 0.0
    with torch.no_grad():
        for feed, export_feed in zip(feeds, export_feeds):
            expected = model.eval()(**{k: torch.from_numpy(v).to(device) for k, v in feed.items()})[0].cpu().numpy()
            worst = max(worst, float(np.abs(sess.run(None, export_feed)[0] - expected).max()))
    return worst


def _codes_match(plain: nn.Module, int8_graph: Path) -> bool:
    """Whether the exported int8 weight codes equal round(w / trained scale) for every quantized Linear."""
    import onnx
    from onnx import numpy_helper

    stored = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(int8_graph)).graph.initializer}
    checked = 0
    for name, module in plain.named_modules():
        key = next((k for k in (f"model.{name}.weight_quantized", f"{name}.weight_quantized") if k in stored), None)
        if not isinstance(module, nn.Linear) or key is None:
            continue
        weight = module.weight.detach()
        per_channel = stored[key.replace("_quantized", "_scale")].size > 1
        codes = torch.round(weight / weight_scale(weight, per_channel)).numpy().astype(np.int8)
        if not np.array_equal(codes.T, stored[key]):
            return False
        checked += 1
    return checked > 0

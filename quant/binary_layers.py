"""Binary weights in training (BinaryBERT, Bai et al. 2021; BiT, Liu et al. 2022): the binarized modules, the swap
that puts them in a model, the hooks it trains with, and loading a trained one back. The export: quant/binary.py.

Every Linear not in `keep_fp32` computes with sign(W) * alpha (alpha per output row, mean|W| or trained), its latent
fp32 weight trained through a straight-through estimator. Its input is int8 (W1A8: an EMA-tracked range) or binary
(W1A1: BiT's elastic binarization alpha * sign(x - beta)). The word embeddings are stored at `embedding_bits`, the
position embeddings (unless kept fp32) at 8 bits.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from compact_nlp.auto import AutoCompactModelForSequenceClassification
from compact_nlp.hooks import CompactHook

from .config import BinaryConfig, QuantConfigError
from .qat import ActivationObserver, QuantizationHook, fake_quant_weight, swap_linear_and_embeddings


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
    """Swap the model's Linear and embedding modules for binary ones, in place (parameters shared, not copied);
    records the config in `model.config.quant`."""
    if any(isinstance(m, (BinaryLinear, BinaryEmbedding)) for m in model.modules()):
        raise QuantConfigError("this model is already binarized; binarizing twice compounds the error.")
    swap_linear_and_embeddings(model, BinaryLinear, BinaryEmbedding, config)
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
    model = prepare_binary(AutoCompactModelForSequenceClassification.from_pretrained(base_model), config)
    weights = Path(checkpoint) / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{checkpoint} has no model.safetensors; pass a checkpoint-N folder of the run.")
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights} does not match a binary model of {base_model} with this config (missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}); pass the config it was trained with.")
    return model.eval()

"""LTP's learned thresholds (Kim et al., KDD 2022), trained through CompactTrainer.

Stage 1 (the first `soft_fraction` of the steps): every pruned layer multiplies each token's attention weight, as a
key, by a soft mask sigmoid((score - threshold) / temperature), cumulative over layers, and the loss adds
sparsity_weight * the average soft mask over real tokens, so the thresholds rise until accuracy pushes back.
Fading a token out of attention (rather than scaling its hidden state, which a key with a zero vector still
receives weight for) is what hard pruning does to it, so the two stages agree. Stage 2: thresholds frozen, tokens
really removed (the model's hard top-by-threshold path), the weights adapt to what ships.
"""

from __future__ import annotations

import torch

from compact_nlp.hooks import CompactHook

from .config import TokenPruningConfig
from .encoder import base_model


class ThresholdHook(CompactHook):
    def __init__(self, config: TokenPruningConfig):
        self.config = config

    def _soft(self, state) -> bool:
        return bool(state.max_steps) and state.global_step < self.config.soft_fraction * state.max_steps

    def _set_stage(self, model, state) -> None:
        pruner = base_model(_unwrap(model)).token_pruner
        pruner.soft = self._soft(state)
        pruner.thresholds.requires_grad_(pruner.soft)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._set_stage(model, state)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._set_stage(model, state)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # config.json shows the learned thresholds (the weights carry them too), so checkpoints say what they prune
        base = base_model(_unwrap(model))
        base.config.token_pruning["thresholds"] = [round(float(t), 6) for t in base.token_pruner.thresholds]

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.on_step_end(args, state, control, model=model)
        base_model(_unwrap(model)).token_pruner.soft = False

    def param_groups(self, model) -> list[dict]:
        """The thresholds learn at their own rate (LTP), without weight decay."""
        return [{"params": [base_model(_unwrap(model)).token_pruner.thresholds], "lr": self.config.threshold_lr,
                 "weight_decay": 0.0}]

    def loss_terms(self, model, inputs: dict, outputs) -> dict[str, torch.Tensor]:
        masks = getattr(outputs, "soft_token_masks", None)
        if not masks or self.config.sparsity_weight == 0:
            return {}
        real = inputs.get("attention_mask")
        real = torch.ones_like(inputs["input_ids"]) if real is None else real
        real = real.to(masks[0].dtype)
        kept = torch.stack([(m * real).sum() / real.sum().clamp(min=1) for m in masks]).mean()
        return {"sparsity": self.config.sparsity_weight * kept}


def _unwrap(model):
    return getattr(model, "module", model)  # DDP under accelerate launch

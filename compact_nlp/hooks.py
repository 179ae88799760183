"""`CompactHook`: the interface through which a technique takes part in training.

It lives in the base layer so that techniques (hat/, token_pruning/, quant/) implement it without importing the
trainer, and the trainer (compact_nlp.trainer, which re-exports it) calls it without knowing any technique.

A hook is a `TrainerCallback` with three more methods:
    - the usual callback events change the model per step: `on_step_begin` samples a SubTransformer (hat/) or
      updates a pruning schedule (token_pruning/); `on_epoch_begin` freezes observers (quant/). The model comes in
      `kwargs["model"]`, as for every TrainerCallback.
    - `loss_terms(model, inputs, outputs)` returns named, already weighted loss terms that are added to the training
      loss and logged as `loss_<name>`.
    - `term_weights(state)` returns multipliers for the trainer's own terms ("task", "logits", "hidden", "attention")
      at this step, e.g. two-stage distillation (quant/: intermediate layers first, then logits). A term whose
      multiplier is 0 is not computed.
    - `param_groups(model)` returns optimizer parameter groups with their own settings (e.g. LTP's thresholds learn
      at their own rate, token_pruning/); those parameters leave the default groups.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback


class CompactHook(TrainerCallback):
    """A technique's part in training: TrainerCallback events, plus loss terms (see the module docstring)."""

    def loss_terms(self, model, inputs: dict, outputs) -> dict[str, torch.Tensor]:
        return {}

    def term_weights(self, state) -> dict[str, float]:
        return {}

    def param_groups(self, model) -> list[dict]:
        return []


__all__ = ["CompactHook"]

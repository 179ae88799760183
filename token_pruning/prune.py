"""prepare (token pruning on) and convert (heads out) for a CompactBert.

    model = prune_heads(model, config, batches)              # optional: fewer heads, for real (compact_nlp.shrink)
    hooks = prepare_token_pruning(model, config, tokenizer)  # tokens leave the sequence between layers from now on
    CompactTrainer(model=model, teacher_model=unpruned, hooks=hooks, ...).train()   # or use it as is (training-free)

The token selection itself lives in the model (compact_nlp.modeling.TokenPruner), so a pruned model loads, runs and
exports with the ordinary calls; this module writes its config section and ranks heads.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from compact_nlp.modeling import TokenPruner
from compact_nlp.shrink import shrink

from .config import TokenPruningConfig, TokenPruningConfigError
from .encoder import base_model
from .thresholds import ThresholdHook


def protected_token_ids(config: TokenPruningConfig, tokenizer) -> list[int]:
    """The token ids never pruned besides position 0 ([CLS]), from the tokenizer."""
    if config.protect == "cls":
        return []
    if tokenizer is None:
        raise TokenPruningConfigError(f"protect={config.protect!r} needs the tokenizer (to find [SEP]); pass "
                                      "tokenizer=, or set protect='cls'.")
    if config.protect == "cls_sep":
        ids = [tokenizer.sep_token_id]
    else:
        ids = list(tokenizer.all_special_ids)
    return sorted({int(i) for i in ids if i is not None and i != tokenizer.pad_token_id})


def prepare_token_pruning(model: nn.Module, config: TokenPruningConfig, tokenizer=None) -> list:
    """Switch cascade token pruning on in `model` (in place) and return the CompactTrainer hooks it trains with.

    The config is resolved for the model's depth and stored in `model.config.token_pruning`, so save_pretrained,
    from_pretrained and the ONNX export all carry it.
    """
    base = base_model(model)
    if base.config.token_pruning:
        raise TokenPruningConfigError(
            "this model already prunes tokens (config.token_pruning is set); pruning twice would stack two schedules. "
            "Start from the unpruned model, or change its schedule with remove_token_pruning(model) first.")
    resolved = config.resolved(base.config.num_hidden_layers)
    resolved.protected_token_ids = protected_token_ids(config, tokenizer)
    base.config.token_pruning = resolved.to_dict()
    base.config.validate()
    device = next(base.parameters()).device
    base.token_pruner = TokenPruner(base.config).to(device)
    if resolved.mode == "threshold":
        return [ThresholdHook(resolved)]
    return []


def remove_token_pruning(model: nn.Module) -> None:
    """Switch token pruning off again (in place): the model runs on every token."""
    base = base_model(model)
    base.config.token_pruning = None
    base.token_pruner = None


# --- heads -----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def head_importance(model: nn.Module, batches) -> list[torch.Tensor]:
    """SpAtten's head importance: the magnitude (L1) of each head's output, accumulated over the real tokens of
    `batches` (dicts with input_ids and attention_mask; task data, never dev). Returns one (heads,) tensor per layer."""
    base = base_model(model)
    if base.token_pruner is not None:
        raise TokenPruningConfigError("rank heads before switching token pruning on (prune_heads, then "
                                      "prepare_token_pruning): head magnitudes are summed over every real token.")
    totals = [torch.zeros(layer.attention.num_heads) for layer in base.layers]
    current_mask: list[torch.Tensor] = []

    def accumulate(index: int):
        def hook(module, args):
            context = args[0]  # (B*T, nh*hs): the heads' outputs before the output projection
            attention = base.layers[index].attention
            per_head = context.view(context.shape[0], attention.num_heads, attention.head_dim).abs().sum(-1)
            totals[index] += (per_head * current_mask[0].reshape(-1, 1)).sum(0).cpu()
        return hook

    handles = [layer.attention.out_proj.register_forward_pre_hook(accumulate(i)) for i, layer in enumerate(base.layers)]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            mask = batch.get("attention_mask")
            mask = torch.ones_like(batch["input_ids"]) if mask is None else mask
            current_mask[:] = [mask.to(torch.float32)]
            model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return totals


def prune_heads(model: nn.Module, config: TokenPruningConfig, batches) -> nn.Module:
    """A copy of `model` with the least important heads of each layer removed (compact_nlp.shrink): each layer keeps
    ceil(head_keep_ratio * heads), at least one. Returns `model` itself when the config keeps every head."""
    if not config.prunes_heads:
        return model
    importance = head_importance(model, batches)
    ratios = config.head_ratios(len(importance))
    if len(ratios) != len(importance):
        raise TokenPruningConfigError(f"head_keep_ratios has {len(ratios)} entries but the model has "
                                      f"{len(importance)} layers: give exactly one per layer.")
    removed = {}
    for layer, (scores, ratio) in enumerate(zip(importance, ratios)):
        keep = max(1, math.ceil(ratio * len(scores) - 1e-9))
        order = torch.argsort(scores, descending=True, stable=True)
        removed[layer] = order[keep:].tolist()
    return shrink(model, heads=removed)

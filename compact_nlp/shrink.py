"""`shrink`: physically remove attention heads, FFN neurons, layers and hidden channels from a CompactBert.

The one place where structure leaves a model: head pruning (SpAtten, Michel et al. 2019), HAT's SubTransformer
extraction and DynaBERT-style width reduction all call it. It slices weights into a new, smaller CompactBert whose
config records the new per-layer widths; nothing is masked.

What "removing" means, exactly (the tests check each against a masked copy of the original):
- a head / FFN neuron: its output no longer reaches the residual stream (as if its output-projection columns were 0);
- a layer: it becomes the identity;
- a hidden channel: it is dropped from the residual stream everywhere, and every LayerNorm normalises over the
  channels that remain (HAT's and DynaBERT's elastic hidden size), so it is exact only after re-training.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch

from .modeling import CompactBertConfig, CompactBertForSequenceClassification, CompactBertModel

CompactModel = CompactBertModel | CompactBertForSequenceClassification


def _kept(total: int, removed: Iterable[int], what: str) -> list[int]:
    removed = set(int(i) for i in removed)
    bad = sorted(i for i in removed if not 0 <= i < total)
    if bad:
        raise IndexError(f"cannot remove {what} {bad}: valid indices are 0..{total - 1}.")
    return [i for i in range(total) if i not in removed]


def _per_layer(spec: Mapping[int, Iterable[int]] | None, widths: list[int], what: str) -> list[list[int]]:
    spec = dict(spec or {})
    bad_layers = sorted(i for i in spec if not 0 <= int(i) < len(widths))
    if bad_layers:
        raise IndexError(f"{what}: no layer {bad_layers}; the model has layers 0..{len(widths) - 1}.")
    return [_kept(width, spec.get(i, ()), f"{what} of layer {i}") for i, width in enumerate(widths)]


def shrink(
    model: CompactModel,
    heads: Mapping[int, Iterable[int]] | None = None,
    ffn: Mapping[int, Iterable[int]] | None = None,
    layers: Iterable[int] | None = None,
    hidden: Iterable[int] | None = None,
) -> CompactModel:
    """Return a new, physically smaller copy of `model` (the original is left untouched).

    Args:
        heads: {layer: head indices to remove}, e.g. {0: [3, 7], 5: [0]}.
        ffn: {layer: FFN neuron indices to remove}.
        layers: indices of whole layers to remove.
        hidden: hidden channels to remove from the whole model.
    All indices refer to the model as it is passed in.
    """
    config: CompactBertConfig = model.config
    return take(
        model,
        heads=_per_layer(heads, config.num_heads_per_layer, "heads"),
        ffn=_per_layer(ffn, config.intermediate_size_per_layer, "FFN neurons"),
        layers=_kept(config.num_hidden_layers, layers or (), "layers"),
        hidden=_kept(config.hidden_size, hidden or (), "hidden channels"),
    )


def _check_order(order: list[int], total: int, what: str) -> list[int]:
    order = [int(i) for i in order]
    if len(set(order)) != len(order) or not all(0 <= i < total for i in order):
        raise IndexError(f"{what}: {order} must be distinct indices in 0..{total - 1}.")
    return order


def take(
    model: CompactModel,
    heads: list[list[int]] | None = None,
    ffn: list[list[int]] | None = None,
    layers: list[int] | None = None,
    hidden: list[int] | None = None,
) -> CompactModel:
    """Return a new copy of `model` that keeps exactly the given heads, FFN neurons, layers and hidden channels, in
    the given order. `shrink` is `take` with the complement of what it removes; HAT's rewiring (compact_nlp.hat) is
    `take` with every index in order of importance, which computes the same function with reordered weights.

    Args (None keeps everything in place):
        heads / ffn: one list per layer of the model as it is passed in (also for layers that `layers` drops).
        layers: the layers to keep, in order.
        hidden: the hidden channels to keep, in order.
    """
    config: CompactBertConfig = model.config
    keep_heads, keep_ffn, keep_layers, keep_hidden = _checked_keep(config, heads, ffn, layers, hidden)
    new_config = _kept_config(config, keep_heads, keep_ffn, keep_layers, keep_hidden)
    with_head = isinstance(model, CompactBertForSequenceClassification)
    base = model.compact_bert if with_head else model
    hid = torch.tensor(keep_hidden, dtype=torch.long)
    new = _sliced_encoder(base.state_dict(), config, keep_heads, keep_ffn, keep_layers, hid)
    if with_head:
        new = {f"compact_bert.{k}": v for k, v in new.items()}
        new.update({f"classifier.{k}": v for k, v in _sliced_head(model.classifier.state_dict(), hid).items()})
    smaller = type(model)(new_config)
    smaller.load_state_dict({k: v.clone() for k, v in new.items()}, strict=True)
    return smaller.train(model.training)


def _checked_keep(config: CompactBertConfig, heads, ffn, layers, hidden) -> tuple[list, list, list[int], list[int]]:
    """`take`'s arguments with None filled in as "keep everything in place", each index list checked."""
    layer_count = config.num_hidden_layers
    keep_heads = heads if heads is not None else [list(range(n)) for n in config.num_heads_per_layer]
    keep_ffn = ffn if ffn is not None else [list(range(n)) for n in config.intermediate_size_per_layer]
    if len(keep_heads) != layer_count or len(keep_ffn) != layer_count:
        raise IndexError(f"give one list of heads and of FFN neurons per layer ({layer_count} layers).")
    keep_heads = [_check_order(h, n, f"heads of layer {i}")
                  for i, (h, n) in enumerate(zip(keep_heads, config.num_heads_per_layer))]
    keep_ffn = [_check_order(f, n, f"FFN neurons of layer {i}")
                for i, (f, n) in enumerate(zip(keep_ffn, config.intermediate_size_per_layer))]
    keep_layers = _check_order(range(layer_count) if layers is None else layers, layer_count, "layers")
    keep_hidden = _check_order(range(config.hidden_size) if hidden is None else hidden, config.hidden_size,
                               "hidden channels")
    if not keep_hidden:
        raise ValueError("cannot remove every hidden channel.")
    return keep_heads, keep_ffn, keep_layers, keep_hidden


def _kept_config(config: CompactBertConfig, keep_heads: list, keep_ffn: list, keep_layers: list[int],
                 keep_hidden: list[int]) -> CompactBertConfig:
    """The config of the smaller model: the kept widths per kept layer, and their token-pruning schedule entries."""
    new_config = copy.deepcopy(config)
    new_config.num_heads_per_layer = [len(keep_heads[i]) for i in keep_layers]
    new_config.intermediate_size_per_layer = [len(keep_ffn[i]) for i in keep_layers]
    new_config.hidden_size = len(keep_hidden)
    if config.token_pruning:  # a token-pruning schedule has one entry per layer: keep those of the kept layers
        plan = dict(config.token_pruning)
        for key in ("keep_ratios", "thresholds"):
            if plan.get(key) is not None:
                plan[key] = [plan[key][i] for i in keep_layers]
        new_config.token_pruning = plan
    new_config.validate()
    return new_config


def _rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # output features
    return t.index_select(0, index)


def _cols(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # input features
    return t.index_select(1, index)


def _sliced_encoder(old: dict, config: CompactBertConfig, keep_heads: list, keep_ffn: list, keep_layers: list[int],
                    hid: torch.Tensor) -> dict[str, torch.Tensor]:
    """The encoder's state dict with only the kept heads, neurons, layers and hidden channels, in their order."""
    rows, cols = _rows, _cols
    new = {}
    projected = config.embedding_size is not None  # with a projection, the tables are not hidden-wide
    for name, tensor in old.items():
        if name.startswith("embeddings.projection."):
            new[name] = rows(tensor, hid)
        elif name.startswith("embeddings."):
            new[name] = tensor if projected else (cols(tensor, hid) if tensor.dim() == 2 else rows(tensor, hid))
        elif name.startswith("pooler."):
            new[name] = cols(rows(tensor, hid), hid) if tensor.dim() == 2 else rows(tensor, hid)
        elif name == "token_pruner.thresholds":
            new[name] = rows(tensor, torch.tensor(keep_layers, dtype=torch.long))
    hd = config.head_dim
    for new_i, i in enumerate(keep_layers):
        head_rows = torch.tensor([h * hd + d for h in keep_heads[i] for d in range(hd)], dtype=torch.long)
        neurons = torch.tensor(keep_ffn[i], dtype=torch.long)
        src, dst = f"layers.{i}.", f"layers.{new_i}."
        for proj in ("query", "key", "value"):
            new[f"{dst}attention.{proj}.weight"] = cols(rows(old[f"{src}attention.{proj}.weight"], head_rows), hid)
            new[f"{dst}attention.{proj}.bias"] = rows(old[f"{src}attention.{proj}.bias"], head_rows)
        new[f"{dst}attention.out_proj.weight"] = cols(rows(old[f"{src}attention.out_proj.weight"], hid), head_rows)
        new[f"{dst}attention.out_proj.bias"] = rows(old[f"{src}attention.out_proj.bias"], hid)
        new[f"{dst}ffn_in.weight"] = cols(rows(old[f"{src}ffn_in.weight"], neurons), hid)
        new[f"{dst}ffn_in.bias"] = rows(old[f"{src}ffn_in.bias"], neurons)
        new[f"{dst}ffn_out.weight"] = cols(rows(old[f"{src}ffn_out.weight"], hid), neurons)
        new[f"{dst}ffn_out.bias"] = rows(old[f"{src}ffn_out.bias"], hid)
        for norm in ("attention_norm", "ffn_norm"):
            for p in ("weight", "bias"):
                new[f"{dst}{norm}.{p}"] = rows(old[f"{src}{norm}.{p}"], hid)
    return new


def _sliced_head(head: dict, hid: torch.Tensor) -> dict[str, torch.Tensor]:
    """The classification head's state dict, reading only the kept hidden channels."""
    new = {}
    for name, tensor in head.items():
        if name.startswith("dense."):
            tensor = _cols(_rows(tensor, hid), hid) if tensor.dim() == 2 else _rows(tensor, hid)
        elif name == "out_proj.weight":
            tensor = _cols(tensor, hid)
        new[name] = tensor
    return new

"""What token pruning saves, measured on real inputs: encoder FLOPs per layer, and which tokens survive which layer
(as numbers, and as a picture a person can read)."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from compact_nlp.io import atomic_path

from .encoder import base_model


def layer_flops(tokens: int, hidden: int, heads: int, head_dim: int, ffn: int) -> dict[str, int]:
    """Multiply-adds x 2 of one encoder layer on `tokens` tokens (no padding): the projections and the FFN grow with
    the tokens, the attention scores and their weighted sum with their square."""
    inner = heads * head_dim
    linear = 2 * tokens * hidden * inner * 4 + 2 * tokens * hidden * ffn * 2  # Q, K, V, output; FFN in and out
    attention = 2 * 2 * heads * tokens * tokens * head_dim  # Q K^T and probs @ V
    return {"linear": linear, "attention": attention, "total": linear + attention}


def _layer_masks(out, attention_mask: torch.Tensor, layers: int) -> list[torch.Tensor]:
    """The (B, T_i) real-token mask each layer ran on."""
    if out.kept_masks is None:
        return [attention_mask] * layers
    return [attention_mask if m is None else m for m in out.kept_masks[1:]]


@torch.no_grad()
def encoder_flops(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  token_type_ids: torch.Tensor | None = None) -> dict:
    """Encoder FLOPs for these inputs, counting each example's real tokens only (as if run one by one, unpadded).

    Returns {"per_layer": [...], "tokens_per_layer": [...], "total": N}: FLOPs and real tokens summed over the batch.
    """
    base = base_model(model)
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    was_training = base.training
    base.eval()
    try:
        out = base(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True)
    finally:
        base.train(was_training)
    config = base.config
    per_layer, tokens_per_layer = [], []
    for layer, mask in zip(base.layers, _layer_masks(out, attention_mask, len(base.layers))):
        counts = mask.to(torch.int64).sum(dim=-1).tolist()
        flops = sum(layer_flops(t, config.hidden_size, layer.attention.num_heads, config.head_dim,
                                layer.ffn_in.out_features)["total"] for t in counts)
        per_layer.append(flops)
        tokens_per_layer.append(sum(counts))
    return {"per_layer": per_layer, "tokens_per_layer": tokens_per_layer, "total": sum(per_layer)}


@torch.no_grad()
def token_survival(model: nn.Module, tokenizer, text: str | tuple[str, str],
                   max_length: int = 128) -> tuple[list[str], np.ndarray]:
    """(tokens, alive) for one text or pair: alive[i, j] says whether input token j ran through layer i."""
    base = base_model(model)
    pair = (text,) if isinstance(text, str) else tuple(text)
    encoded = tokenizer(*pair, truncation=True, max_length=max_length, return_tensors="pt")
    inputs = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    was_training = base.training
    base.eval()
    try:
        out = base(**inputs, return_dict=True)
    finally:
        base.train(was_training)
    length, layers = encoded["input_ids"].shape[1], base.config.num_hidden_layers
    alive = np.ones((layers, length), dtype=bool)
    if out.kept_indices is not None:
        for i, (kept, mask) in enumerate(zip(out.kept_indices[1:], out.kept_masks[1:])):
            if kept is not None:
                alive[i] = False
                alive[i, kept[0][mask[0]].numpy()] = True
    return tokenizer.convert_ids_to_tokens(encoded["input_ids"][0]), alive


def plot_token_survival(model: nn.Module, tokenizer, texts: list, path: str | os.PathLike,
                        max_length: int = 128, title: str | None = None) -> str:
    """A PNG with one panel per text: a row per layer, a column per token, dark where the token ran through it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [token_survival(model, tokenizer, text, max_length) for text in texts]
    widest = max(len(tokens) for tokens, _ in rows)
    layers = rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(6.0, 0.32 * widest + 1.5), (0.28 * layers + 1.3) * len(rows)),
                             squeeze=False)
    for ax, (tokens, alive) in zip(axes[:, 0], rows):
        ax.imshow(alive, cmap="Blues", vmin=-0.3, vmax=1.0, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(tokens)), tokens, rotation=70, fontsize=8, ha="right")
        ax.set_yticks(range(layers), [f"layer {i}" for i in range(layers)], fontsize=8)
        ax.set_xlim(-0.5, widest - 0.5)
        kept = alive.sum(axis=1)
        ax.set_title(f"{len(tokens)} tokens; per layer: {' / '.join(str(int(k)) for k in kept)}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return str(path)

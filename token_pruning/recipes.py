"""The token_pruning section of a recipe (`token_pruning: {keep_ratio: 0.45}`), for `compact run`: heads out first
(ranked on training examples), then token pruning switched on; returns the hooks to train with."""

from __future__ import annotations

from .config import TokenPruningConfig
from .prune import prepare_token_pruning, prune_heads


def token_pruning_config(section: dict | None) -> TokenPruningConfig | None:
    """The config of a recipe's token_pruning section, validated; None when empty."""
    return TokenPruningConfig.from_dict(section) if section else None


def prepare(model, config: TokenPruningConfig, tokenizer, train_features, batch_size: int = 32):
    """(model, hooks): `model` with its least important heads removed (when the config says so) and token pruning on.
    train_features: tokenized training rows (input_ids, attention_mask, ...); the heads are ranked on the first
    `config.head_importance_examples` of them (never on dev)."""
    if config.prunes_heads:
        from transformers import DataCollatorWithPadding

        collate = DataCollatorWithPadding(tokenizer)
        rows = train_features.select(range(min(config.head_importance_examples, len(train_features))))
        columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in rows.column_names]
        rows = [{c: row[c] for c in columns} for row in rows]
        batches = [collate(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
        model = prune_heads(model, config, batches)
    return model, prepare_token_pruning(model, config, tokenizer)

"""The encoder token pruning configures: the CompactBertModel inside a model, with or without a task head."""

from __future__ import annotations

from torch import nn

from compact_nlp.modeling import CompactBertForSequenceClassification, CompactBertModel


def base_model(model: nn.Module) -> CompactBertModel:
    if isinstance(model, CompactBertForSequenceClassification):
        return model.compact_bert
    if isinstance(model, CompactBertModel):
        return model
    raise TypeError(f"token pruning works on CompactBert models, got {type(model).__name__}; load the model with "
                    "AutoCompactModelForSequenceClassification.from_pretrained first.")

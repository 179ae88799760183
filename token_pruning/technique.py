"""Cascade token and head pruning as a registered technique (compact_nlp.registry): the recipe's `token_pruning:`
section. Heads leave first (ranked on training rows, removed through shrink), then tokens leave between layers from
the first training step on."""

from __future__ import annotations

from ..registry import Prepared, Technique, TrainContext, register
from .recipes import prepare, token_pruning_config


class TokenPruning(Technique):
    name = "token_pruning"
    order = 10  # heads leave (and token pruning is set) before quantization wraps the layers
    description = "cascade token pruning (SpAtten top-k, LTP learned thresholds) and head pruning"

    def config(self, section: dict | None):
        return token_pruning_config(section)

    def prepare(self, model, config, context: TrainContext) -> Prepared:
        model, hooks = prepare(model, config, context.tokenizer, context.train_features)
        return Prepared(model, hooks)

    def facts(self, model, config) -> dict:
        facts = {"token_pruning": model.config.token_pruning}
        if config.prunes_heads:
            facts["heads_per_layer"] = model.config.num_heads_per_layer
        return facts

    def card_line(self, result: dict) -> str:
        config = result.get("token_pruning")
        if not config:
            return ""
        heads = f"; heads kept per layer: {result['heads_per_layer']}" if result.get("heads_per_layer") else ""
        if config["mode"] == "threshold":
            return (f"learned-threshold token pruning (LTP; tokens leave the sequence from layer "
                    f"{config['unpruned_layers']} on{heads})")
        shares = "/".join(f"{100 * r:.0f}" for r in config["keep_ratios"])
        return f"cascade token pruning (SpAtten top-k; the layers run on {shares}% of the real tokens{heads})"


TECHNIQUE = register(TokenPruning())

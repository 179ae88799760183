"""Cascade token and head pruning as a registered technique (compact_nlp.registry): the recipe's `token_pruning:`
section. Heads leave first (ranked on training rows, removed through shrink), then tokens leave between layers from
the first training step on."""

from __future__ import annotations

import math

from ..registry import PlanOption, Prepared, Technique, TrainContext, register
from .config import TokenPruningConfig
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

    def plan_options(self) -> list[PlanOption]:
        """Two schedules for `compact compress`, fine-tuned as the token-pruning preset does (distilled at temperature
        2); the priors are SST-2's measured drops (docs/token_pruning.md: keep 0.45 cost 0.9-2.5 points, depending on
        the transfer set)."""
        stage = {"protocol": {"learning_rate": 3.0e-5},
                 "distillation": {"temperature": 2.0, "task_weight": 1.0, "logits_weight": 1.0, "hidden_weight": 1.0}}
        # a keep ratio needs layers enough that the unpruned first ones leave it in reach (geometric_schedule)
        unpruned = TokenPruningConfig().unpruned_layers
        return [PlanOption(f"tokens kept {keep}", {"keep_ratio": keep}, stage, drop,
                           min_layers=math.floor(unpruned / keep) + 1)
                for keep, drop in ((0.7, 0.5), (0.5, 1.5))]

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

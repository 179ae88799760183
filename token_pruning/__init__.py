"""compact_nlp.token_pruning: cascade token and head pruning (SpAtten, Wang et al., HPCA 2021; LTP, Kim et al., KDD 2022).

    from compact_nlp.token_pruning import TokenPruningConfig, prepare_token_pruning, prune_heads
    model = prune_heads(model, config, batches)              # optional: heads out, for real (compact_nlp.shrink)
    hooks = prepare_token_pruning(model, config, tokenizer)  # tokens leave the sequence between layers

Tokens really leave: each pruned layer gathers the top-k tokens by accumulated attention (or those above a learned
threshold), in their original order, so attention, FFN and every later layer run on fewer tokens, in PyTorch and in
the exported ONNX graph alike. The selection code is part of the model (compact_nlp.modeling.TokenPruner), so a
pruned model saves, loads and exports with the ordinary calls. docs/token_pruning.md has the measured results.
"""

from .analysis import encoder_flops, plot_token_survival, token_survival
from .config import TokenPruningConfig, TokenPruningConfigError, geometric_schedule
from .prune import head_importance, prepare_token_pruning, prune_heads, remove_token_pruning
from .thresholds import ThresholdHook

__all__ = [
    "TokenPruningConfig", "TokenPruningConfigError", "ThresholdHook", "encoder_flops", "geometric_schedule",
    "head_importance", "plot_token_survival", "prepare_token_pruning", "prune_heads", "remove_token_pruning",
    "token_survival",
]

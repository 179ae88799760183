"""CompactBertConfig: the configuration of a CompactBert encoder (compact_nlp.modeling re-exports it).

Every layer has its own number of attention heads and its own FFN width, the head dimension is a field of its own, and
the BERT family's differences (RoBERTa's position offset, token types, ELECTRA's embedding projection, the four
classification heads) are explicit fields. Technique sections (token_pruning, quant, search) are saved with it.
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# The activations the BERT family uses, written out so the exported graph holds exactly these ops.
ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


# How each family turns the encoder output into logits (see CompactBertClassificationHead).
CLASSIFIER_HEADS = ("pooler", "roberta", "electra", "distilbert")


class CompactConfigError(ValueError):
    """A CompactBert config that cannot describe a real model, or that does not match its weights."""


@strict
class CompactBertConfig(PreTrainedConfig):
    r"""Configuration of a CompactBert encoder.

    Widths are per layer: `num_heads_per_layer[i]` heads of `head_dim` each and an FFN of
    `intermediate_size_per_layer[i]` neurons in layer i, so layer 0 may keep 7 heads while layer 1 keeps 12,
    or hidden 256 may carry 8 heads of 64. The number of layers is the length of these lists.

    Family fields (set by the converter from the source checkpoint):
        position_offset: 0 for absolute positions 0..T-1 (BERT, DistilBERT, ELECTRA). RoBERTa/XLM-R count only
            real tokens and start at `pad_token_id + 1`; set it to that number (padding gets `position_offset - 1`).
        type_vocab_size: 0 when the family has no token-type embeddings (DistilBERT).
        embedding_size: width of the embedding tables when they are followed by a linear projection to the hidden
            size (ELECTRA); null when the embeddings are hidden_size wide and feed the encoder directly.
        add_pooler: the BERT pooler (dense + tanh on the first token).
        classifier_head: "pooler" (BERT: dropout, linear on the pooler output), "roberta" (dense, tanh, linear on
            the first token), "electra" (dense, gelu, linear), "distilbert" (dense, relu, linear).
        source_model_type: the transformers model_type this model was converted from, used to write it back.

    Technique sections, filled by later steps and saved in config.json with the model:
        token_pruning, quant, search: `None` until a technique is applied.
    """

    model_type = "compact-bert"
    # Trainer's evaluation gathers every output; what token pruning kept (tuples with None entries) is not a prediction
    keys_to_ignore_at_inference = ["kept_indices", "kept_masks", "soft_token_masks"]

    vocab_size: int = 30522
    hidden_size: int = 768
    head_dim: int = 64
    num_heads_per_layer: list[int] = field(default_factory=lambda: [12] * 12)
    intermediate_size_per_layer: list[int] = field(default_factory=lambda: [3072] * 12)
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    position_offset: int = 0
    type_vocab_size: int = 2
    embedding_size: int | None = None
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    add_pooler: bool = True
    classifier_head: Literal["pooler", "roberta", "electra", "distilbert"] = "pooler"
    source_model_type: str | None = None
    token_pruning: dict | None = None
    quant: dict | None = None
    search: dict | None = None

    @property
    def num_hidden_layers(self) -> int:
        return len(self.num_heads_per_layer)

    @property
    def num_attention_heads(self) -> int:
        """The widest layer's head count (for tools that expect one number)."""
        return max(self.num_heads_per_layer, default=0)

    @property
    def intermediate_size(self) -> int:
        """The widest layer's FFN size (for tools that expect one number)."""
        return max(self.intermediate_size_per_layer, default=0)

    @property
    def max_sequence_length(self) -> int:
        """The longest input (in tokens) the position embeddings cover."""
        return self.max_position_embeddings - self.position_offset

    @property
    def has_uniform_widths(self) -> bool:
        return len(set(self.num_heads_per_layer)) <= 1 and len(set(self.intermediate_size_per_layer)) <= 1

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """transformers' from_dict, after refusing a config.json that is not a compact one (a stock transformers or
        Optimum folder) and checking the derived fields a hand-edited config.json may carry."""
        return super().from_dict(_checked_dict(config_dict), **kwargs)

    def validate_compact_widths(self):
        heads, ffn = self.num_heads_per_layer, self.intermediate_size_per_layer
        if not heads:
            raise CompactConfigError("num_heads_per_layer is empty: a CompactBert needs at least one layer.")
        if len(heads) != len(ffn):
            raise CompactConfigError(
                f"num_heads_per_layer has {len(heads)} entries but intermediate_size_per_layer has {len(ffn)}: "
                "give exactly one entry per layer in both lists."
            )
        if any(h < 0 for h in heads) or any(f < 0 for f in ffn):
            raise CompactConfigError(
                f"per-layer widths must be >= 0, got num_heads_per_layer={heads}, intermediate_size_per_layer={ffn}."
            )
        for name in ("hidden_size", "head_dim", "vocab_size", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise CompactConfigError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.embedding_size is not None and self.embedding_size <= 0:
            raise CompactConfigError(f"embedding_size must be positive or null, got {self.embedding_size}.")
        if self.hidden_act not in ACTIVATIONS:
            raise CompactConfigError(f"hidden_act {self.hidden_act!r} is not supported; use one of {sorted(ACTIVATIONS)}.")
        if not 0 <= self.position_offset < self.max_position_embeddings:
            raise CompactConfigError(
                f"position_offset {self.position_offset} must lie in [0, max_position_embeddings="
                f"{self.max_position_embeddings})."
            )
        if self.position_offset > 0 and self.pad_token_id is None:
            raise CompactConfigError("position_offset > 0 (RoBERTa-style positions) needs pad_token_id to find padding.")
        if self.type_vocab_size < 0:
            raise CompactConfigError(f"type_vocab_size must be >= 0 (0 = no token types), got {self.type_vocab_size}.")
        if self.classifier_head == "pooler" and not self.add_pooler:
            raise CompactConfigError('classifier_head="pooler" needs add_pooler=True (the BERT head reads the pooler).')

    def validate_token_pruning(self):
        plan = self.token_pruning
        if not plan:
            return
        missing = sorted({"mode", "keep_ratios", "unpruned_layers", "protected_token_ids"} - set(plan))
        if missing:
            raise CompactConfigError(f"config.token_pruning lacks {missing}; write it with "
                                     "compact_nlp.token_pruning.prepare_token_pruning, not by hand.")
        layers = self.num_hidden_layers
        if len(plan["keep_ratios"]) != layers:
            raise CompactConfigError(f"config.token_pruning has {len(plan['keep_ratios'])} keep ratios but the model "
                                     f"has {layers} layers: give one per layer.")
        if plan["mode"] == "threshold" and len(plan.get("thresholds") or []) != layers:
            raise CompactConfigError(f"threshold token pruning needs one threshold per layer ({layers}).")


# what the stock configs call the numbers that a CompactBertConfig derives from its per-layer lists
_DERIVED = {"num_hidden_layers": lambda d: len(d.get("num_heads_per_layer") or []),
            "num_attention_heads": lambda d: max(d.get("num_heads_per_layer") or [0]),
            "intermediate_size": lambda d: max(d.get("intermediate_size_per_layer") or [0])}


def _checked_dict(config_dict: dict) -> dict:
    """A copy of a compact config.json without the derived fields (which must agree with the per-layer lists)."""
    model_type = config_dict.get("model_type")
    if model_type not in (None, CompactBertConfig.model_type):
        raise CompactConfigError(
            f"config.json describes a {model_type!r} model, not a compact folder (e.g. a folder exported by Optimum or "
            "a stock transformers checkpoint); make a compact folder first: compact export SRC OUT "
            "(or load it with AutoCompactModel..., which converts stock checkpoints).")
    config_dict = dict(config_dict)
    for name, derive in _DERIVED.items():
        if name in config_dict:
            given, actual = config_dict.pop(name), derive(config_dict)
            if given != actual:
                raise CompactConfigError(
                    f"config.json says {name}={given} but its per-layer lists give {actual}; a CompactBert takes its "
                    "layers from num_heads_per_layer and intermediate_size_per_layer: remove "
                    f"{name} or edit those lists (one entry per layer).")
    return config_dict

"""CompactBert: the one encoder family every compact technique works on.

One readable file for the BERT family -- BERT (Devlin et al., 2019), RoBERTa and XLM-R (Liu et al., 2019;
Conneau et al., 2020), DistilBERT (Sanh et al., 2019), ELECTRA (Clark et al., 2020) and MiniLM (Wang et al.,
2020) -- with what the stock transformers classes cannot express: every layer has its own number of attention
heads and its own FFN width (what head pruning, Michel et al. 2019, DynaBERT and HAT leave behind), and the head
dimension is a field of its own instead of hidden_size / num_heads. The family differences (RoBERTa's position
offset, token types, ELECTRA's embedding projection, the four classification heads) are explicit config fields.

Attention has two paths: `F.scaled_dot_product_attention` (fast, the default) and an explicit softmax that also
returns the attention probabilities in the same pass (token pruning and attention distillation need them).
Everything here is plain tensor code that `torch.export` and the ONNX exporter follow.
"""

from __future__ import annotations

import math
import os
from dataclasses import field
from typing import Literal

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

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

    def validate_compact_widths(self):
        heads, ffn = self.num_heads_per_layer, self.intermediate_size_per_layer
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


class CompactBertEmbeddings(nn.Module):
    def __init__(self, config: CompactBertConfig):
        super().__init__()
        width = config.embedding_size or config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size else None
        self.layer_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.projection = nn.Linear(width, config.hidden_size) if config.embedding_size is not None else None
        self.position_offset = config.position_offset
        self.pad_token_id = config.pad_token_id

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.position_offset:
            # RoBERTa/XLM-R: real tokens are numbered from position_offset on, padding sits at position_offset - 1.
            is_token = (input_ids != self.pad_token_id).long()
            return torch.cumsum(is_token, dim=1) * is_token + (self.position_offset - 1)  # (B, T)
        return torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)  # (1, T)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.word_embeddings(input_ids)  # (B, T, E)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(self.position_ids(input_ids))
        x = self.dropout(self.layer_norm(x))
        if self.projection is not None:
            x = self.projection(x)  # (B, T, H)
        return x


class CompactBertAttention(nn.Module):
    """Multi-head self-attention with `num_heads` heads of `head_dim`; the head count may differ per layer."""

    def __init__(self, config: CompactBertConfig, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, config.head_dim
        inner = num_heads * config.head_dim
        self.query = nn.Linear(config.hidden_size, inner)
        self.key = nn.Linear(config.hidden_size, inner)
        self.value = nn.Linear(config.hidden_size, inner)
        self.out_proj = nn.Linear(inner, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(
        self, x: torch.Tensor, batch: int, length: int, attention_bias: torch.Tensor | None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, nh, hs = batch, length, self.num_heads, self.head_dim  # x: (B*T, H), token-major
        q = self.query(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        dropout_p = self.dropout_p if self.training else 0.0
        if output_attentions:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, T, T)
            if attention_bias is not None:
                scores = scores + attention_bias
            probs = scores.softmax(dim=-1)  # (B, nh, T, T)
            context = F.dropout(probs, p=dropout_p, training=self.training) @ v  # (B, nh, T, hs)
        else:
            probs = None
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_bias, dropout_p=dropout_p)
        context = context.transpose(1, 2).reshape(B * T, nh * hs)  # (B*T, nh*hs)
        return self.out_proj(context), probs


class CompactBertLayer(nn.Module):
    """A post-LayerNorm transformer layer, the BERT family's block."""

    def __init__(self, config: CompactBertConfig, num_heads: int, intermediate_size: int):
        super().__init__()
        self.attention = CompactBertAttention(config, num_heads)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(config.hidden_size, intermediate_size)
        self.ffn_out = nn.Linear(intermediate_size, config.hidden_size)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.activation = ACTIVATIONS[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, x: torch.Tensor, batch: int, length: int, attention_bias: torch.Tensor | None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, probs = self.attention(x, batch, length, attention_bias, output_attentions)
        x = self.attention_norm(x + self.dropout(attended))  # (B*T, H)
        x = self.ffn_norm(x + self.dropout(self.ffn_out(self.activation(self.ffn_in(x)))))  # (B*T, H)
        return x, probs


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Average the token states of real (unpadded) tokens: sentence-transformers' mean pooling."""
    if attention_mask is None:
        return last_hidden_state.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)  # (B, T, 1)
    return (last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, H)


def check_inputs(input_ids, config: CompactBertConfig) -> None:
    """Turn the inputs the model cannot run into errors that say what to do (torch or numpy input_ids)."""
    if input_ids is None:
        raise ValueError("input_ids is required (CompactBert does not take inputs_embeds).")
    if len(input_ids.shape) != 2:
        raise ValueError(f"input_ids must have shape (batch, sequence), got {tuple(input_ids.shape)}.")
    batch, length = input_ids.shape
    if batch == 0 or length == 0:
        raise ValueError(
            f"empty batch: input_ids has shape {tuple(input_ids.shape)}; pass at least one text with at least one token."
        )
    if length > config.max_sequence_length:
        raise ValueError(
            f"input has {length} tokens but this model's position embeddings cover {config.max_sequence_length}; "
            f"truncate when tokenizing (tokenizer(..., truncation=True, max_length={config.max_sequence_length}))."
        )


def saved_weight_shapes(folder: str) -> dict[str, tuple[int, ...]]:
    """Tensor shapes in a folder's safetensors files, read from their headers (no weights are loaded)."""
    from safetensors import safe_open

    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    shapes = {}
    for name in files:
        with safe_open(os.path.join(folder, name), framework="pt") as f:
            shapes.update({key: tuple(f.get_slice(key).get_shape()) for key in f.keys()})
    return shapes


def check_weights_match_config(model: nn.Module, folder: str) -> None:
    """Fail with the config fields to fix when config.json describes other widths than the saved weights."""
    def unprefixed(name: str) -> str:  # base and task models share weights under "compact_bert."
        return name.removeprefix("compact_bert.")

    saved = {unprefixed(k): v for k, v in saved_weight_shapes(folder).items()}
    wrong = [
        f"{name}: saved {saved[name]}, config.json implies {tuple(p.shape)}"
        for name, p in ((unprefixed(k), v) for k, v in model.state_dict().items())
        if name in saved and saved[name] != tuple(p.shape)
    ]
    if wrong:
        raise CompactConfigError(
            f"config.json in {folder} does not describe the weights in its safetensors file ({len(wrong)} tensors "
            f"differ; first: {'; '.join(wrong[:3])}). The widths in config.json (hidden_size, head_dim, "
            "num_heads_per_layer, intermediate_size_per_layer, embedding_size, vocab_size) must match the saved "
            "weights: restore the config.json saved with them, or re-save the model with save_pretrained."
        )


class CompactBertPreTrainedModel(PreTrainedModel):
    config_class = CompactBertConfig
    base_model_prefix = "compact_bert"
    supports_gradient_checkpointing = False
    _supports_sdpa = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' from_pretrained, safetensors only, with a config/weights width check for local folders."""
        kwargs.setdefault("use_safetensors", True)
        folder = str(pretrained_model_name_or_path)
        if os.path.isdir(folder) and not kwargs.get("ignore_mismatched_sizes"):
            config = kwargs.get("config")
            if not isinstance(config, CompactBertConfig):
                config = CompactBertConfig.from_pretrained(folder)
            with torch.device("meta"):
                expected = cls(config)
            check_weights_match_config(expected, folder)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


class CompactBertModel(CompactBertPreTrainedModel):
    """The encoder: token states for feature extraction, and mean-pooled sentence embeddings."""

    def __init__(self, config: CompactBertConfig):
        super().__init__(config)
        self.embeddings = CompactBertEmbeddings(config)
        self.layers = nn.ModuleList(
            CompactBertLayer(config, heads, ffn)
            for heads, ffn in zip(config.num_heads_per_layer, config.intermediate_size_per_layer)
        )
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if config.add_pooler else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        check_inputs(input_ids, self.config)
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict

        B, T = input_ids.shape
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        attention_bias = None
        if attention_mask is not None:
            # 0 where a key may be attended, the dtype's minimum where it is padding; broadcast over heads and queries.
            attention_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min

        all_hidden = (x,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        # The layers run on a token-major (B*T, H) matrix: every Linear is then one 2-D GEMM with its bias fused, and
        # ONNX Runtime keeps Add + LayerNormalization instead of rewriting them into its SkipLayerNormalization
        # kernel, which measured 5-7% slower end to end on x86 (bench/results/foundation.md).
        x = x.reshape(B * T, -1)  # (B*T, H)
        for layer in self.layers:
            x, probs = layer(x, B, T, attention_bias, output_attentions)
            if output_hidden_states:
                all_hidden += (x.view(B, T, -1),)
            if output_attentions:
                all_attentions += (probs,)
        x = x.view(B, T, -1)  # (B, T, H)

        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None  # (B, H)
        if not return_dict:
            return tuple(v for v in (x, pooled, all_hidden, all_attentions) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=x, pooler_output=pooled, hidden_states=all_hidden, attentions=all_attentions
        )

    def sentence_embedding(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None, normalize: bool = False,
    ) -> torch.Tensor:
        """Mean-pooled sentence embeddings (B, H), as sentence-transformers computes them; L2-normalised on request."""
        states = self(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        embedding = mean_pool(states, attention_mask)
        return F.normalize(embedding, dim=-1) if normalize else embedding


class CompactBertClassificationHead(nn.Module):
    """The four classification heads of the BERT family, each as its authors wrote it."""

    def __init__(self, config: CompactBertConfig):
        super().__init__()
        self.style = config.classifier_head
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.dense = None if self.style == "pooler" else nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, last_hidden_state: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
        if self.style == "pooler":  # BERT: the pooler already applied dense + tanh to [CLS]
            return self.out_proj(self.dropout(pooled))
        x = last_hidden_state[:, 0]  # (B, H): [CLS] / <s>
        if self.style == "distilbert":  # DistilBERT: no dropout before its pre_classifier
            x = F.relu(self.dense(x))
        else:
            x = self.dense(self.dropout(x))
            x = torch.tanh(x) if self.style == "roberta" else F.gelu(x)
        return self.out_proj(self.dropout(x))  # (B, num_labels)


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: CompactBertConfig) -> torch.Tensor:
    """The loss transformers' *ForSequenceClassification uses, chosen by problem_type (inferred as HF does)."""
    num_labels = logits.shape[-1]
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype)) if num_labels == 1 else \
            F.mse_loss(logits, labels.to(logits.dtype))
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class CompactBertForSequenceClassification(CompactBertPreTrainedModel):
    """Single-label, multi-label or regression head on CompactBert, as transformers' *ForSequenceClassification."""

    def __init__(self, config: CompactBertConfig):
        super().__init__(config)
        self.compact_bert = CompactBertModel(config)
        self.classifier = CompactBertClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.compact_bert(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.classifier(outputs.last_hidden_state, outputs.pooler_output)
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        if not return_dict:
            rest = tuple(v for v in (outputs.hidden_states, outputs.attentions) if v is not None)
            return ((loss, logits) if loss is not None else (logits,)) + rest
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

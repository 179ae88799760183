"""CompactBert: the one encoder family every compact technique works on.

One readable file for the BERT family -- BERT (Devlin et al., 2019), RoBERTa and XLM-R (Liu et al., 2019;
Conneau et al., 2020), DistilBERT (Sanh et al., 2019), ELECTRA (Clark et al., 2020) and MiniLM (Wang et al.,
2020) -- with what the stock transformers classes cannot express: every layer has its own number of attention
heads and its own FFN width (what head pruning, Michel et al. 2019, DynaBERT and HAT leave behind), and the head
dimension is a field of its own instead of hidden_size / num_heads. The family differences (RoBERTa's position
offset, token types, ELECTRA's embedding projection, the four classification heads) are explicit config fields.

Attention has two paths: `F.scaled_dot_product_attention` (fast, the default) and an explicit softmax that also
returns the attention probabilities in the same pass (token pruning and attention distillation need them).

Token pruning (`TokenPruner`, configured by compact_nlp.token_pruning) runs between layers: cascade top-k by
accumulated attention (SpAtten, Wang et al. 2021) or learned per-layer thresholds (LTP, Kim et al. 2022). Pruned
tokens leave the (B, T, H) tensor, so later layers really run on fewer tokens.
Everything here is plain tensor code that `torch.export` and the ONNX exporter follow.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
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


class TokenPruner(nn.Module):
    """Cascade token pruning between layers: tokens leave the sequence, and a pruned token never comes back.

    Reads `config.token_pruning` (written by compact_nlp.token_pruning.prepare_token_pruning):
        mode: "top_k" (SpAtten) or "threshold" (LTP);
        keep_ratios: per layer, the fraction of each example's real tokens that layer runs on (top_k); layer i keeps
            k = ceil(keep_ratios[i] * real length) tokens, computed with tensor ops so the ONNX graph does the same;
        unpruned_layers: the first layers run on every token;
        thresholds, temperature (threshold mode): a token enters layer i >= unpruned_layers only if the attention it
            received in layer i-1 reaches thresholds[i]; in training with `soft` set, a sigmoid((score - threshold) /
            temperature) mask fades it out of attention instead (LTP's soft mask);
        protected_token_ids: tokens never pruned (besides position 0, [CLS], which the classifier reads).
    A token's score in a layer is the attention it receives from real queries, summed over heads and queries and
    divided by the head count (so it averages 1 over real tokens: a threshold means the same at every length); top_k
    accumulates it over layers, as SpAtten does. Padding never counts and is never kept over a real token.
    """

    def __init__(self, config: CompactBertConfig):
        super().__init__()
        plan = config.token_pruning
        self.mode = plan["mode"]
        self.keep_ratios = [float(r) for r in plan["keep_ratios"]]
        self.unpruned_layers = int(plan["unpruned_layers"])
        # a plain list, not a buffer: from_pretrained builds models on the meta device and would leave a
        # non-persistent buffer uninitialised
        self.protected_ids = [int(i) for i in plan["protected_token_ids"] or [-1]]
        self.thresholds = (nn.Parameter(torch.tensor(plan["thresholds"], dtype=torch.float32))
                           if self.mode == "threshold" else None)
        self.temperature = float(plan.get("temperature") or 1.0)
        self.soft = False  # LTP's first training stage; set by compact_nlp.token_pruning's hook

    def prunes_before(self, layer: int) -> bool:
        if layer == 0 or layer < self.unpruned_layers:
            return False  # a score needs one layer's attention
        if self.mode == "threshold":
            return True
        return self.keep_ratios[layer] < self.keep_ratios[layer - 1]

    def needs_attention(self, layer: int) -> bool:
        """Whether layer `layer`'s attention probabilities feed a later pruning decision."""
        later = [i for i in range(layer + 1, len(self.keep_ratios)) if self.prunes_before(i)]
        return bool(later) and (self.mode == "top_k" or later[0] == layer + 1)

    @staticmethod
    def received(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, nh, T, T) probabilities -> (B, T) attention each token receives from real queries, per head."""
        # a mask-weighted sum over query rows as one batched product: padded rows do not vote, and the (B, nh, T, T)
        # probabilities are read once instead of being copied into a masked tensor first
        queries = mask[:, None, None, :].to(probs.dtype)  # (B, 1, 1, T)
        return (queries @ probs).sum(dim=1).squeeze(1) / probs.shape[1]  # (B, nh, 1, T) -> (B, T)

    def soft_mask(self, layer: int, score: torch.Tensor, mask: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
        """LTP's differentiable keep mask (B, T) in (0, 1)."""
        soft = torch.sigmoid((score - self.thresholds[layer]) / self.temperature)
        return torch.where(protected | ~mask, torch.ones_like(soft), soft)

    def select(self, layer: int, score: torch.Tensor, mask: torch.Tensor, protected: torch.Tensor,
               real_length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Which slots of the current (B, T) sequence go on to layer `layer`.

        Returns `index` (B, T'): slots to gather, each row's kept tokens first and in their original order, then
        fillers for rows that keep fewer than the batch's longest; and `kept` (B, T'): which of them are real kept
        tokens (the new attention mask).
        """
        T = score.shape[1]
        # Priorities without ties, so ONNX TopK and torch.topk (which leave tie order to the kernel) keep the same
        # tokens: protected tokens above every real score, padding below, each group ordered by position (these
        # integers are exact in float32; a real token's score, attention summed over layers, stays far below 1e6).
        position = torch.arange(T, device=score.device, dtype=score.dtype)[None, :]  # (1, T)
        top, bottom = 1e6 - position, -1e6 - position
        if self.mode == "top_k":
            # k from the example's real length at the input, by tensor ops (a Python ceil would freeze into the
            # graph); the small epsilon keeps float error in ratio * length from adding a token
            k = torch.ceil(real_length.to(torch.float32) * self.keep_ratios[layer] - 1e-4).to(torch.int64)
            priority = torch.where(protected & mask, top, torch.where(mask, score, bottom))
        else:
            keep = mask & (protected | (score >= self.thresholds[layer]))
            k = keep.sum(dim=-1)
            priority = torch.where(keep, top, bottom)
        k = k.clamp(min=1)  # every row keeps at least one slot (an all-padding row stays all padding)
        ranked = torch.topk(priority, k.max(), dim=-1).indices  # (B, T')
        kept = torch.arange(ranked.shape[1], device=score.device)[None, :] < k[:, None]  # (B, T')
        # original order: kept slots first by position, fillers after them
        index = torch.sort(torch.where(kept, ranked, ranked + T), dim=-1).values  # (B, T')
        index = torch.where(index >= T, index - T, index)
        return index, kept & torch.gather(mask, 1, index)


@dataclass
class CompactBertOutput(BaseModelOutputWithPooling):
    """BaseModelOutputWithPooling, plus what token pruning kept.

    kept_indices[i] / kept_masks[i]: for hidden state i (0: embeddings), the (B, T_i) input positions of its tokens
    and which of them are real (None where nothing was pruned yet). soft_token_masks: LTP's soft masks in training.
    """

    kept_indices: tuple | None = None
    kept_masks: tuple | None = None
    soft_token_masks: tuple | None = None


@dataclass
class CompactSequenceClassifierOutput(SequenceClassifierOutput):
    kept_indices: tuple | None = None
    kept_masks: tuple | None = None
    soft_token_masks: tuple | None = None


def attention_bias_from(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """0 where a key may be attended, the dtype's minimum where it is padding; (B, 1, 1, T) over heads and queries."""
    if mask is None:
        return None
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


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
        self.token_pruner = TokenPruner(config) if config.token_pruning else None
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
    ) -> CompactBertOutput | tuple:
        check_inputs(input_ids, self.config)
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict

        B, T = input_ids.shape
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        pruner = self.token_pruner
        mask = attention_mask.bool() if attention_mask is not None else None
        if pruner is not None:
            mask = mask if mask is not None else torch.ones(B, T, dtype=torch.bool, device=x.device)
            positions = torch.arange(T, device=x.device).expand(B, T)  # (B, T) each slot's input position
            specials = torch.tensor(pruner.protected_ids, device=x.device)
            protected = (positions == 0) | (input_ids[..., None] == specials).any(-1)  # (B, T) [CLS] and specials
            real_length = mask.sum(dim=-1)  # (B,) keep ratios count real tokens, never padding
            score = torch.zeros(B, T, dtype=x.dtype, device=x.device)  # SpAtten's cumulative importance
            layer_score, soft = score, None
        attention_bias = attention_bias_from(mask, x.dtype)

        all_hidden = (x,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        kept_indices, kept_masks, soft_masks, gathered = [None], [None], [], False
        # The layers run on a token-major (B*T, H) matrix: every Linear is then one 2-D GEMM with its bias fused, and
        # ONNX Runtime keeps Add + LayerNormalization instead of rewriting them into its SkipLayerNormalization
        # kernel, which measured 5-7% slower end to end on x86 (bench/results/foundation.md).
        x = x.reshape(B * T, -1)  # (B*T, H)
        for i, layer in enumerate(self.layers):
            if pruner is not None and pruner.prunes_before(i):
                if pruner.soft and self.training:  # LTP stage 1: fade tokens out of attention, differentiably
                    # a faded key receives attention in proportion to its mask: divide that out, so the score says
                    # what the token would receive if present, as in the hard path (else fading feeds on itself)
                    present = layer_score if soft is None else layer_score / soft.detach().clamp(min=1e-3)
                    m = pruner.soft_mask(i, present, mask, protected)  # (B, T)
                    soft = m if soft is None else soft * m  # a faded token stays faded
                    soft_masks.append(soft)
                    attention_bias = attention_bias_from(mask, x.dtype) + torch.log(soft.clamp(min=1e-6))[:, None, None, :]
                else:
                    selection_score = score if pruner.mode == "top_k" else layer_score
                    index, mask = pruner.select(i, selection_score, mask, protected, real_length)  # (B, T')
                    x = torch.gather(x.view(B, T, -1), 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
                    positions, protected = torch.gather(positions, 1, index), torch.gather(protected, 1, index)
                    score = torch.gather(score, 1, index)
                    T = index.shape[1]
                    torch._check(T >= 1)  # k >= 1 by construction; tells torch.export the data-dependent length
                    x = x.reshape(B * T, -1)  # (B*T', H): the pruned tokens are gone
                    # (B, 1, T', T'), not (B, 1, 1, T'): the exporter cannot tell whether a data-dependent T' is 1,
                    # so the mask's shape must not rely on broadcasting over the query axis
                    attention_bias = attention_bias_from(mask, x.dtype).expand(-1, -1, T, -1)
                    gathered = True
            need_probs = bool(output_attentions) or (pruner is not None and pruner.needs_attention(i))
            x, probs = layer(x, B, T, attention_bias, need_probs)
            if need_probs and pruner is not None:
                layer_score = pruner.received(probs, mask)  # (B, T)
                score = score + layer_score
            if pruner is not None:
                kept_indices.append(positions if gathered else None)
                kept_masks.append(mask if gathered else None)
            if output_hidden_states:
                all_hidden += (x.view(B, T, -1),)
            if output_attentions:
                all_attentions += (probs,)
        x = x.view(B, T, -1)  # (B, T, H)

        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None  # (B, H)
        if not return_dict:
            return tuple(v for v in (x, pooled, all_hidden, all_attentions) if v is not None)
        return CompactBertOutput(
            last_hidden_state=x, pooler_output=pooled, hidden_states=all_hidden, attentions=all_attentions,
            kept_indices=tuple(kept_indices) if gathered else None, kept_masks=tuple(kept_masks) if gathered else None,
            soft_token_masks=tuple(soft_masks) if soft_masks else None,
        )

    def sentence_embedding(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None, normalize: bool = False,
    ) -> torch.Tensor:
        """Mean-pooled sentence embeddings (B, H), as sentence-transformers computes them; L2-normalised on request."""
        out = self(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True)
        if out.kept_masks is not None:  # token pruning: average what survived the last layer
            attention_mask = out.kept_masks[-1]
        embedding = mean_pool(out.last_hidden_state, attention_mask)
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
    ) -> CompactSequenceClassifierOutput | tuple:
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
        return CompactSequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions,
            kept_indices=outputs.kept_indices, kept_masks=outputs.kept_masks,
            soft_token_masks=outputs.soft_token_masks,
        )

"""The layers of CompactBert (compact_nlp.modeling re-exports them): embeddings, multi-head attention with a head
count of its own per layer, the post-LayerNorm transformer layer, the token pruner that runs between layers, and the
BERT family's four classification heads.

Attention has two paths: `F.scaled_dot_product_attention` (fast, the default) and an explicit softmax that also
returns the attention probabilities in the same pass (token pruning and attention distillation need them).
Everything here is plain tensor code that `torch.export` and the ONNX exporter follow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import ACTIVATIONS, CompactBertConfig


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


def attention_bias_from(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """0 where a key may be attended, the dtype's minimum where it is padding; (B, 1, 1, T) over heads and queries."""
    if mask is None:
        return None
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


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

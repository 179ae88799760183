"""CompactBert: the one encoder family every compact technique works on.

The BERT family -- BERT (Devlin et al., 2019), RoBERTa and XLM-R (Liu et al., 2019; Conneau et al., 2020),
DistilBERT (Sanh et al., 2019), ELECTRA (Clark et al., 2020) and MiniLM (Wang et al., 2020) -- with what the stock
transformers classes cannot express: every layer has its own number of attention heads and its own FFN width (what
head pruning, Michel et al. 2019, DynaBERT and HAT leave behind), and the head dimension is a field of its own
instead of hidden_size / num_heads. Three modules, every name importable from here:
    compact_nlp.configuration   CompactBertConfig (the family differences are explicit fields)
    compact_nlp.layers          embeddings, attention, the transformer layer, TokenPruner, the classification heads
    compact_nlp.modeling        the models (encoder, sequence classification), their outputs, input/weight checks

Token pruning (`TokenPruner`, configured by compact_nlp.token_pruning) runs between layers: cascade top-k by
accumulated attention (SpAtten, Wang et al. 2021) or learned per-layer thresholds (LTP, Kim et al. 2022). Pruned
tokens leave the (B, T, H) tensor, so later layers really run on fewer tokens.
Everything here is plain tensor code that `torch.export` and the ONNX exporter follow.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from .configuration import ACTIVATIONS, CLASSIFIER_HEADS, CompactBertConfig, CompactConfigError
from .pretrained import CorruptWeightsError
from .layers import (
    CompactBertAttention,
    CompactBertClassificationHead,
    CompactBertEmbeddings,
    CompactBertLayer,
    TokenPruner,
    attention_bias_from,
)


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
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    shapes = {}
    for name in files:
        path = os.path.join(folder, name)
        try:
            with safe_open(path, framework="pt") as f:
                shapes.update({key: tuple(f.get_slice(key).get_shape()) for key in f.keys()})
        except (SafetensorError, OSError) as error:
            raise CorruptWeightsError(
                f"{path} is not a readable safetensors file ({error}); it is truncated or corrupted: copy it again "
                "from where it came from, or re-save the model (save_pretrained / compact export).") from error
    return shapes


_LAYER_KEY = re.compile(r"(?:^|\.)layers?\.(\d+)\.")  # compact: layers.N.; BERT, RoBERTa, DistilBERT: layer.N.


def saved_layer_count(folder: str) -> int | None:
    """How many encoder layers a folder's safetensors hold (None without safetensors files)."""
    shapes = saved_weight_shapes(folder)
    if not shapes:
        return None
    indices = [int(m.group(1)) for key in shapes if (m := _LAYER_KEY.search(key))]
    return max(indices) + 1 if indices else 0


def check_layer_count(folder: str, config_layers: int) -> None:
    """Fail when config.json names another number of layers than the saved weights hold (transformers would fill
    missing layers with random weights, or drop extra ones, and load without an error)."""
    saved = saved_layer_count(folder)
    if saved is not None and saved != config_layers:
        raise CompactConfigError(
            f"config.json in {folder} describes {config_layers} layers but its weights hold {saved}: a model loaded "
            f"from it would have {'random' if config_layers > saved else 'dropped'} layers. Restore the config.json "
            f"saved with these weights (for a compact folder: {saved} entries in num_heads_per_layer and "
            "intermediate_size_per_layer; for a transformers one: num_hidden_layers).")


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
            check_layer_count(folder, config.num_hidden_layers)
            check_weights_match_config(expected, folder)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


@dataclass
class _Pruning:
    """Token pruning's state through the layers of one forward pass (CompactBertModel._encode)."""

    pruner: TokenPruner
    mask: torch.Tensor  # (B, T) which slots hold real tokens
    positions: torch.Tensor  # (B, T) each slot's input position
    protected: torch.Tensor  # (B, T) [CLS] and the protected special tokens
    real_length: torch.Tensor  # (B,) keep ratios count real tokens, never padding
    score: torch.Tensor  # (B, T) SpAtten's cumulative importance
    layer_score: torch.Tensor  # (B, T) the attention each token received in the last layer that computed it
    soft: torch.Tensor | None = None  # LTP's cumulative soft mask in training
    soft_masks: list = field(default_factory=list)
    kept_indices: list = field(default_factory=lambda: [None])
    kept_masks: list = field(default_factory=lambda: [None])
    gathered: bool = False

    @classmethod
    def start(cls, pruner: TokenPruner, input_ids: torch.Tensor, mask: torch.Tensor | None, x: torch.Tensor):
        B, T = input_ids.shape
        mask = mask if mask is not None else torch.ones(B, T, dtype=torch.bool, device=x.device)
        positions = torch.arange(T, device=x.device).expand(B, T)
        specials = torch.tensor(pruner.protected_ids, device=x.device)
        protected = (positions == 0) | (input_ids[..., None] == specials).any(-1)
        score = torch.zeros(B, T, dtype=x.dtype, device=x.device)
        return cls(pruner, mask, positions, protected, mask.sum(dim=-1), score, score)

    def before_layer(self, i: int, x: torch.Tensor, B: int, T: int, training: bool):
        """Prune (or, in LTP's soft stage, fade) tokens before layer i; returns x, the new length and the new bias."""
        pruner = self.pruner
        if pruner.soft and training:  # LTP stage 1: fade tokens out of attention, differentiably
            # a faded key receives attention in proportion to its mask: divide that out, so the score says
            # what the token would receive if present, as in the hard path (else fading feeds on itself)
            present = self.layer_score if self.soft is None else self.layer_score / self.soft.detach().clamp(min=1e-3)
            m = pruner.soft_mask(i, present, self.mask, self.protected)  # (B, T)
            self.soft = m if self.soft is None else self.soft * m  # a faded token stays faded
            self.soft_masks.append(self.soft)
            bias = attention_bias_from(self.mask, x.dtype) + torch.log(self.soft.clamp(min=1e-6))[:, None, None, :]
            return x, T, bias
        selection_score = self.score if pruner.mode == "top_k" else self.layer_score
        index, self.mask = pruner.select(i, selection_score, self.mask, self.protected, self.real_length)  # (B, T')
        x = torch.gather(x.view(B, T, -1), 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        self.positions, self.protected = torch.gather(self.positions, 1, index), torch.gather(self.protected, 1, index)
        self.score = torch.gather(self.score, 1, index)
        T = index.shape[1]
        torch._check(T >= 1)  # k >= 1 by construction; tells torch.export the data-dependent length
        x = x.reshape(B * T, -1)  # (B*T', H): the pruned tokens are gone
        self.gathered = True
        # (B, 1, T', T'), not (B, 1, 1, T'): the exporter cannot tell whether a data-dependent T' is 1,
        # so the mask's shape must not rely on broadcasting over the query axis
        return x, T, attention_bias_from(self.mask, x.dtype).expand(-1, -1, T, -1)

    def after_layer(self, probs: torch.Tensor | None) -> None:
        """Score tokens by the attention they received in the layer that just ran (when it returned it)."""
        if probs is not None:
            self.layer_score = self.pruner.received(probs, self.mask)  # (B, T)
            self.score = self.score + self.layer_score
        self.kept_indices.append(self.positions if self.gathered else None)
        self.kept_masks.append(self.mask if self.gathered else None)

    def outputs(self) -> dict:
        gathered = self.gathered
        return {"kept_indices": tuple(self.kept_indices) if gathered else None,
                "kept_masks": tuple(self.kept_masks) if gathered else None,
                "soft_token_masks": tuple(self.soft_masks) if self.soft_masks else None}


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
        x, all_hidden, all_attentions, pruning = self._encode(input_ids, attention_mask, token_type_ids,
                                                              output_attentions, output_hidden_states)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None  # (B, H)
        if not return_dict:
            return tuple(v for v in (x, pooled, all_hidden, all_attentions) if v is not None)
        return CompactBertOutput(
            last_hidden_state=x, pooler_output=pooled, hidden_states=all_hidden, attentions=all_attentions,
            **(pruning.outputs() if pruning is not None else {}),
        )

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                token_type_ids: torch.Tensor | None, output_attentions: bool, output_hidden_states: bool):
        """Embeddings and every layer, with token pruning between layers. Returns the (B, T', H) states, the hidden
        states and attentions asked for, and the pruning state (None without a pruner)."""
        B, T = input_ids.shape
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        mask = attention_mask.bool() if attention_mask is not None else None
        pruning = _Pruning.start(self.token_pruner, input_ids, mask, x) if self.token_pruner is not None else None
        attention_bias = attention_bias_from(pruning.mask if pruning is not None else mask, x.dtype)
        all_hidden = (x,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        # The layers run on a token-major (B*T, H) matrix: every Linear is then one 2-D GEMM with its bias fused, and
        # ONNX Runtime keeps Add + LayerNormalization instead of rewriting them into its SkipLayerNormalization
        # kernel, which measured 5-7% slower end to end on x86 (bench/results/foundation.md).
        x = x.reshape(B * T, -1)  # (B*T, H)
        for i, layer in enumerate(self.layers):
            if pruning is not None and pruning.pruner.prunes_before(i):
                x, T, attention_bias = pruning.before_layer(i, x, B, T, self.training)
            need_probs = bool(output_attentions) or (pruning is not None and pruning.pruner.needs_attention(i))
            x, probs = layer(x, B, T, attention_bias, need_probs)
            if pruning is not None:
                pruning.after_layer(probs if need_probs else None)
            if output_hidden_states:
                all_hidden += (x.view(B, T, -1),)
            if output_attentions:
                all_attentions += (probs,)
        return x.view(B, T, -1), all_hidden, all_attentions, pruning

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


__all__ = [
    "ACTIVATIONS", "CLASSIFIER_HEADS", "CompactBertAttention", "CompactBertClassificationHead", "CompactBertConfig",
    "CompactBertEmbeddings", "CompactBertForSequenceClassification", "CompactBertLayer", "CompactBertModel",
    "CompactBertOutput", "CompactBertPreTrainedModel", "CompactConfigError", "CompactSequenceClassifierOutput",
    "TokenPruner", "attention_bias_from", "check_inputs", "check_layer_count", "check_weights_match_config", "mean_pool",
    "saved_layer_count", "saved_weight_shapes", "sequence_classification_loss",
]

"""Hugging Face checkpoints <-> CompactBert, by weight mapping.

One table per family says which CompactBert module holds which Hugging Face module; the same table drives both
directions, so a converted model writes back to the stock layout (hub tools, sentence-transformers and serving
stacks keep working) as long as its widths are uniform. MiniLM checkpoints use the BERT layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    PreTrainedConfig,
    PreTrainedModel,
    RobertaConfig,
    XLMRobertaConfig,
)

from .modeling import (
    CompactBertConfig,
    CompactBertForSequenceClassification,
    CompactBertModel,
    CompactConfigError,
)
from .pretrained import resolve_checkpoint

# transformers model_type -> the layout its weights use. MiniLM checkpoints are model_type "bert".
LAYOUTS = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "electra": "bert", "distilbert": "distilbert"}
SUPPORTED_MODEL_TYPES = tuple(LAYOUTS)
HF_CONFIG_CLASSES = {
    "bert": BertConfig, "roberta": RobertaConfig, "xlm-roberta": XLMRobertaConfig,
    "electra": ElectraConfig, "distilbert": DistilBertConfig,
}
CLASSIFIER_HEAD_OF = {
    "bert": "pooler", "roberta": "roberta", "xlm-roberta": "roberta", "electra": "electra", "distilbert": "distilbert",
}

# CompactBert module (inside one layer) -> Hugging Face module, per layout.
LAYER_MODULES = {
    "bert": {
        "attention.query": "encoder.layer.{i}.attention.self.query",
        "attention.key": "encoder.layer.{i}.attention.self.key",
        "attention.value": "encoder.layer.{i}.attention.self.value",
        "attention.out_proj": "encoder.layer.{i}.attention.output.dense",
        "attention_norm": "encoder.layer.{i}.attention.output.LayerNorm",
        "ffn_in": "encoder.layer.{i}.intermediate.dense",
        "ffn_out": "encoder.layer.{i}.output.dense",
        "ffn_norm": "encoder.layer.{i}.output.LayerNorm",
    },
    "distilbert": {
        "attention.query": "transformer.layer.{i}.attention.q_lin",
        "attention.key": "transformer.layer.{i}.attention.k_lin",
        "attention.value": "transformer.layer.{i}.attention.v_lin",
        "attention.out_proj": "transformer.layer.{i}.attention.out_lin",
        "attention_norm": "transformer.layer.{i}.sa_layer_norm",
        "ffn_in": "transformer.layer.{i}.ffn.lin1",
        "ffn_out": "transformer.layer.{i}.ffn.lin2",
        "ffn_norm": "transformer.layer.{i}.output_layer_norm",
    },
}
EMBEDDING_MODULES = {
    "embeddings.word_embeddings": "embeddings.word_embeddings",
    "embeddings.position_embeddings": "embeddings.position_embeddings",
    "embeddings.token_type_embeddings": "embeddings.token_type_embeddings",
    "embeddings.layer_norm": "embeddings.LayerNorm",
    "embeddings.projection": "embeddings_project",  # ELECTRA, when embedding_size != hidden_size
    "pooler": "pooler.dense",
}
# CompactBert classification head -> Hugging Face head, per transformers model_type.
HEAD_MODULES = {
    "bert": {"classifier.out_proj": "classifier"},
    "roberta": {"classifier.dense": "classifier.dense", "classifier.out_proj": "classifier.out_proj"},
    "xlm-roberta": {"classifier.dense": "classifier.dense", "classifier.out_proj": "classifier.out_proj"},
    "electra": {"classifier.dense": "classifier.dense", "classifier.out_proj": "classifier.out_proj"},
    "distilbert": {"classifier.dense": "pre_classifier", "classifier.out_proj": "classifier"},
}
# Buffers Hugging Face keeps in its state dicts that carry no weights.
IGNORED_HF_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")


class UnsupportedArchitectureError(ValueError):
    pass


def check_supported(model_type: str) -> None:
    if model_type not in LAYOUTS:
        raise UnsupportedArchitectureError(
            f"compact cannot convert model_type {model_type!r}. Supported: {', '.join(SUPPORTED_MODEL_TYPES)} "
            "(MiniLM and other checkpoints in the BERT layout load as 'bert'); "
            "XLM-R loads as 'xlm-roberta' and ELECTRA as its discriminator."
        )


def compact_config_from_hf(hf_config: PreTrainedConfig, add_pooler: bool) -> CompactBertConfig:
    """The CompactBertConfig that describes a Hugging Face BERT-family config exactly."""
    model_type = hf_config.model_type
    check_supported(model_type)
    if getattr(hf_config, "is_decoder", False) or getattr(hf_config, "add_cross_attention", False):
        raise UnsupportedArchitectureError(f"{model_type} configured as a decoder is not supported; compact is encoder-only.")
    position_type = getattr(hf_config, "position_embedding_type", "absolute")
    if position_type not in (None, "absolute"):
        raise UnsupportedArchitectureError(
            f"position_embedding_type={position_type!r} is not supported; compact supports absolute positions only."
        )
    labels = dict(id2label=hf_config.id2label, label2id=hf_config.label2id, problem_type=hf_config.problem_type)
    if model_type == "distilbert":
        return CompactBertConfig(
            vocab_size=hf_config.vocab_size, hidden_size=hf_config.dim, head_dim=hf_config.dim // hf_config.n_heads,
            num_heads_per_layer=[hf_config.n_heads] * hf_config.n_layers,
            intermediate_size_per_layer=[hf_config.hidden_dim] * hf_config.n_layers,
            hidden_act=hf_config.activation, max_position_embeddings=hf_config.max_position_embeddings,
            position_offset=0, type_vocab_size=0, layer_norm_eps=1e-12,  # DistilBERT hard-codes its LayerNorm eps
            hidden_dropout_prob=hf_config.dropout, attention_probs_dropout_prob=hf_config.attention_dropout,
            classifier_dropout=hf_config.seq_classif_dropout, initializer_range=hf_config.initializer_range,
            pad_token_id=hf_config.pad_token_id, add_pooler=False, classifier_head="distilbert",
            source_model_type=model_type, **labels,
        )
    heads, hidden = hf_config.num_attention_heads, hf_config.hidden_size
    embedding_size = getattr(hf_config, "embedding_size", None)
    roberta_positions = model_type in ("roberta", "xlm-roberta")
    head = CLASSIFIER_HEAD_OF[model_type]
    return CompactBertConfig(
        vocab_size=hf_config.vocab_size, hidden_size=hidden, head_dim=hidden // heads,
        num_heads_per_layer=[heads] * hf_config.num_hidden_layers,
        intermediate_size_per_layer=[hf_config.intermediate_size] * hf_config.num_hidden_layers,
        hidden_act=hf_config.hidden_act, max_position_embeddings=hf_config.max_position_embeddings,
        position_offset=hf_config.pad_token_id + 1 if roberta_positions else 0,
        type_vocab_size=hf_config.type_vocab_size,
        embedding_size=embedding_size if embedding_size not in (None, hidden) else None,
        layer_norm_eps=hf_config.layer_norm_eps, hidden_dropout_prob=hf_config.hidden_dropout_prob,
        attention_probs_dropout_prob=hf_config.attention_probs_dropout_prob,
        classifier_dropout=hf_config.classifier_dropout, initializer_range=hf_config.initializer_range,
        pad_token_id=hf_config.pad_token_id, add_pooler=add_pooler or head == "pooler", classifier_head=head,
        source_model_type=model_type, **labels,
    )


def hf_config_from_compact(config: CompactBertConfig) -> PreTrainedConfig:
    """The stock transformers config for a CompactBert whose widths are uniform (the reverse of the above)."""
    model_type = config.source_model_type or "bert"
    check_supported(model_type)
    heads, ffn, layers = config.num_attention_heads, config.intermediate_size, config.num_hidden_layers
    if not config.has_uniform_widths or heads == 0 or heads * config.head_dim != config.hidden_size:
        raise CompactConfigError(
            f"only a model with the same width in every layer and num_heads * head_dim == hidden_size writes back to "
            f"the stock {model_type} layout; this one has heads {config.num_heads_per_layer}, FFN "
            f"{config.intermediate_size_per_layer}, head_dim {config.head_dim}, hidden {config.hidden_size}. "
            "Keep it as a compact folder (save_pretrained) or export it to ONNX instead."
        )
    labels = dict(id2label=config.id2label, label2id=config.label2id, problem_type=config.problem_type)
    if model_type == "distilbert":
        return DistilBertConfig(
            vocab_size=config.vocab_size, dim=config.hidden_size, n_layers=layers, n_heads=heads, hidden_dim=ffn,
            activation=config.hidden_act, max_position_embeddings=config.max_position_embeddings,
            dropout=config.hidden_dropout_prob, attention_dropout=config.attention_probs_dropout_prob,
            seq_classif_dropout=config.classifier_dropout if config.classifier_dropout is not None else 0.2,
            initializer_range=config.initializer_range, pad_token_id=config.pad_token_id, **labels,
        )
    extra = {"embedding_size": config.embedding_size or config.hidden_size} if model_type == "electra" else {}
    return HF_CONFIG_CLASSES[model_type](
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=ffn, hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob, attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        max_position_embeddings=config.max_position_embeddings, type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps, pad_token_id=config.pad_token_id,
        classifier_dropout=config.classifier_dropout, initializer_range=config.initializer_range, **extra, **labels,
    )


def module_pairs(config: CompactBertConfig, with_head: bool) -> list[tuple[str, str]]:
    """(CompactBert module, Hugging Face module) pairs, relative to the base models (heads: to the full models)."""
    layout = LAYOUTS[config.source_model_type or "bert"]
    pairs = [(ours, theirs) for ours, theirs in EMBEDDING_MODULES.items()]
    for i in range(config.num_hidden_layers):
        pairs += [(f"layers.{i}.{ours}", theirs.format(i=i)) for ours, theirs in LAYER_MODULES[layout].items()]
    if with_head:
        pairs += list(HEAD_MODULES[config.source_model_type or "bert"].items())
    return pairs


def map_state_dict(source: dict[str, torch.Tensor], pairs: list[tuple[str, str]], source_prefix: str,
                   target_prefix: str, head_names: set[str]) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Rename `source` weights through `pairs` (source module -> target module); heads carry no base prefix.

    Returns the renamed weights and the source keys they came from.
    """
    mapped, used = {}, set()
    for src_module, dst_module in pairs:
        src_pre = "" if src_module in head_names else source_prefix
        dst_pre = "" if dst_module in head_names else target_prefix
        for suffix in (".weight", ".bias"):
            if src_pre + src_module + suffix in source:
                mapped[dst_pre + dst_module + suffix] = source[src_pre + src_module + suffix]
                used.add(src_pre + src_module + suffix)
    return mapped, used


def head_module_names(model_type: str) -> set[str]:
    """Classification-head module names on both sides; they sit outside the base model's prefix."""
    return set(HEAD_MODULES[model_type]) | set(HEAD_MODULES[model_type].values())


def _check_all_used(state_dict: dict, used: set[str], what: str) -> None:
    unused = sorted(k for k in state_dict if k not in used and not k.endswith(IGNORED_HF_KEYS))
    if unused:
        raise UnsupportedArchitectureError(
            f"{what} has weights compact does not know how to place: {unused[:8]}{' ...' if len(unused) > 8 else ''}"
        )


def from_hf_model(hf_model: PreTrainedModel) -> CompactBertModel | CompactBertForSequenceClassification:
    """Convert a loaded transformers BERT-family model (base or *ForSequenceClassification) to CompactBert."""
    hf_config = hf_model.config
    check_supported(hf_config.model_type)
    base = hf_model.base_model
    with_head = base is not hf_model
    if with_head and not type(hf_model).__name__.endswith("ForSequenceClassification"):
        raise UnsupportedArchitectureError(
            f"{type(hf_model).__name__} is not supported; compact converts base models and *ForSequenceClassification."
        )
    config = compact_config_from_hf(hf_config, add_pooler=getattr(base, "pooler", None) is not None)
    pairs = [(theirs, ours) for ours, theirs in module_pairs(config, with_head)]
    hf_prefix = f"{hf_model.base_model_prefix}." if with_head else ""
    our_prefix = "compact_bert." if with_head else ""
    hf_state = hf_model.state_dict()
    state, used = map_state_dict(hf_state, pairs, hf_prefix, our_prefix, head_module_names(config.source_model_type))
    _check_all_used(hf_state, used, type(hf_model).__name__)

    model = (CompactBertForSequenceClassification if with_head else CompactBertModel)(config)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.train(hf_model.training)


def to_hf_model(model: CompactBertModel | CompactBertForSequenceClassification) -> PreTrainedModel:
    """Write a uniform-width CompactBert back into the stock transformers class it came from."""
    config = model.config
    hf_config = hf_config_from_compact(config)
    with_head = isinstance(model, CompactBertForSequenceClassification)
    auto = AutoModelForSequenceClassification if with_head else AutoModel
    hf_model = auto.from_config(hf_config)
    hf_prefix = f"{hf_model.base_model_prefix}." if with_head else ""
    state, _ = map_state_dict(model.state_dict(), module_pairs(config, with_head), "compact_bert." if with_head else "",
                              hf_prefix, head_module_names(hf_config.model_type))
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(IGNORED_HF_KEYS)]
    if not config.add_pooler and hf_config.model_type in ("bert", "roberta", "xlm-roberta") and not with_head:
        missing = [k for k in missing if not k.startswith("pooler.")]  # the stock class always builds a pooler
    if missing or unexpected:
        raise CompactConfigError(f"could not write back to {hf_config.model_type}: missing {missing}, unexpected {unexpected}")
    return hf_model.eval()


def load_hf_checkpoint(name_or_path: str, model_type: str, with_head: bool, **hf_kwargs):
    """Load a transformers checkpoint (hub id or local folder) with its own classes, then convert it."""
    check_supported(model_type)  # before loading weights that cannot be converted
    auto = AutoModelForSequenceClassification if with_head else AutoModel
    hf_model = auto.from_pretrained(name_or_path, **hf_kwargs)
    return from_hf_model(hf_model.eval())


# from_pretrained keyword arguments that say where a checkpoint is (AutoConfig takes them too)
HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "subfolder")


def load_compact(name_or_path: str | os.PathLike, compact_class: type, **hf_kwargs):
    """A `compact_class` (CompactBertModel or CompactBertForSequenceClassification) from a hub id, a transformers
    checkpoint (converted on load) or a compact folder; hf_kwargs are what transformers' from_pretrained takes."""
    path = resolve_checkpoint(name_or_path)
    config = AutoConfig.from_pretrained(path, **{k: v for k, v in hf_kwargs.items() if k in HUB_KWARGS})
    if isinstance(config, CompactBertConfig):
        ptq = (config.quant or {}).get("int8", {}).get("mode") == "ptq"
        if ptq and not (Path(path) / "model.safetensors").is_file():
            raise OSError(f"{name_or_path} holds a post-training int8 graph and no PyTorch weights (dynamic int8 "
                          "has no PyTorch form). Load it with backend='onnxruntime'.")
        return compact_class.from_pretrained(path, **hf_kwargs)
    return load_hf_checkpoint(path, config.model_type,
                              with_head=compact_class is CompactBertForSequenceClassification, **hf_kwargs)

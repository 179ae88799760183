"""The drop-in wrapper: `AutoCompactModel...from_pretrained` where users had `AutoModel...from_pretrained`.

The source may be a hub id, a local transformers checkpoint (converted to CompactBert on load), or a compact folder.
`backend="onnxruntime"` returns the ONNX Runtime-backed model instead, with the same call and outputs.
"""

from __future__ import annotations

import json
import os

from .convert import load_compact
from .modeling import CompactBertForSequenceClassification, CompactBertModel, check_layer_count
from .runtime import ORTModel, ORTModelForFeatureExtraction, ORTModelForSequenceClassification

BACKENDS = ("pytorch", "onnxruntime")


class _AutoCompact:
    task: str
    compact_class: type
    ort_class: type[ORTModel]
    ort_class_name: str

    def __init__(self):
        raise TypeError(f"use {type(self).__name__}.from_pretrained(...)")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, backend: str = "pytorch", **hf_kwargs):
        """Load a CompactBert (PyTorch) or its ONNX Runtime twin.

        hf_kwargs are what transformers' from_pretrained takes (num_labels, id2label, revision, token, ...).
        With backend="onnxruntime": export=True exports a PyTorch source first; threads=N sets intra-op threads;
        file_name="model.ort" loads the ORT Mobile file.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} is not one of {BACKENDS}.")
        if backend == "onnxruntime":
            return cls.ort_class.from_pretrained(name_or_path, **hf_kwargs)
        _check_stock_folder(name_or_path)
        return load_compact(name_or_path, cls.compact_class, **hf_kwargs)


def _check_stock_folder(name_or_path) -> None:
    """A local transformers checkpoint whose config names another layer count than its weights hold would load with
    random or dropped layers (compact folders are checked by CompactBertPreTrainedModel.from_pretrained)."""
    config_file = os.path.join(str(name_or_path), "config.json")
    if not os.path.isfile(config_file):
        return
    with open(config_file) as handle:
        config = json.load(handle)
    layers = config.get("num_hidden_layers", config.get("n_layers"))  # DistilBERT calls it n_layers
    if config.get("model_type") != "compact-bert" and isinstance(layers, int):
        check_layer_count(str(name_or_path), layers)


class AutoCompactModel(_AutoCompact):
    """Feature extraction / sentence embeddings: `CompactBertModel` (or `ORTModelForFeatureExtraction`)."""

    task = "feature-extraction"
    compact_class = CompactBertModel
    ort_class = ORTModelForFeatureExtraction
    ort_class_name = "ORTModelForFeatureExtraction"


class AutoCompactModelForSequenceClassification(_AutoCompact):
    """Classification and regression: `CompactBertForSequenceClassification` (or its ORT twin)."""

    task = "text-classification"
    compact_class = CompactBertForSequenceClassification
    ort_class = ORTModelForSequenceClassification
    ort_class_name = "ORTModelForSequenceClassification"


AUTO_CLASSES = {c.task: c for c in (AutoCompactModel, AutoCompactModelForSequenceClassification)}

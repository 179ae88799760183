"""The drop-in wrapper: `AutoCompactModel...from_pretrained` where users had `AutoModel...from_pretrained`.

The source may be a hub id, a local transformers checkpoint (converted to CompactBert on load), or a compact folder.
`backend="onnxruntime"` returns the ONNX Runtime-backed model instead, with the same call and outputs.
"""

from __future__ import annotations

import os

from .convert import load_compact
from .modeling import CompactBertForSequenceClassification, CompactBertModel
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
        return load_compact(name_or_path, cls.compact_class, **hf_kwargs)


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

"""The drop-in wrapper: `AutoCompactModel...from_pretrained` where users had `AutoModel...from_pretrained`.

The source may be a hub id, a local transformers checkpoint (converted to CompactBert on load), or a compact folder.
`backend="onnxruntime"` returns the ONNX Runtime-backed model instead, with the same call and outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoConfig

from .convert import load_hf_checkpoint
from .modeling import CompactBertConfig, CompactBertForSequenceClassification, CompactBertModel
from .pretrained import resolve_checkpoint

BACKENDS = ("pytorch", "onnxruntime")
_HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "subfolder")


class _AutoCompact:
    task: str
    compact_class: type
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
            from . import runtime

            return getattr(runtime, cls.ort_class_name).from_pretrained(name_or_path, **hf_kwargs)
        path = resolve_checkpoint(name_or_path)
        config = AutoConfig.from_pretrained(path, **{k: v for k, v in hf_kwargs.items() if k in _HUB_KWARGS})
        if isinstance(config, CompactBertConfig):
            ptq = (config.quant or {}).get("int8", {}).get("mode") == "ptq"
            if ptq and not (Path(path) / "model.safetensors").is_file():
                raise OSError(f"{name_or_path} holds a post-training int8 graph and no PyTorch weights (dynamic int8 "
                              "has no PyTorch form). Load it with backend='onnxruntime'.")
            return cls.compact_class.from_pretrained(path, **hf_kwargs)
        return load_hf_checkpoint(path, config.model_type,
                                  with_head=cls.compact_class is CompactBertForSequenceClassification, **hf_kwargs)


class AutoCompactModel(_AutoCompact):
    """Feature extraction / sentence embeddings: `CompactBertModel` (or `ORTModelForFeatureExtraction`)."""

    task = "feature-extraction"
    compact_class = CompactBertModel
    ort_class_name = "ORTModelForFeatureExtraction"


class AutoCompactModelForSequenceClassification(_AutoCompact):
    """Classification and regression: `CompactBertForSequenceClassification` (or its ORT twin)."""

    task = "text-classification"
    compact_class = CompactBertForSequenceClassification
    ort_class_name = "ORTModelForSequenceClassification"


AUTO_CLASSES = {c.task: c for c in (AutoCompactModel, AutoCompactModelForSequenceClassification)}

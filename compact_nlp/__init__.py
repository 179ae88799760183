"""compact: make Hugging Face encoders small and fast enough for phones.

`import compact_nlp` registers CompactBert with transformers' Auto classes. onnxruntime, datasets and evaluate
are imported only by the modules that need them (runtime, export, bench), so importing the package stays light.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .modeling import (
    CompactBertConfig,
    CompactBertForSequenceClassification,
    CompactBertModel,
    CompactConfigError,
    mean_pool,
)
from .shrink import shrink
from .auto import AutoCompactModel, AutoCompactModelForSequenceClassification  # noqa: E402

AutoConfig.register(CompactBertConfig.model_type, CompactBertConfig, exist_ok=True)
AutoModel.register(CompactBertConfig, CompactBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(CompactBertConfig, CompactBertForSequenceClassification, exist_ok=True)

__version__ = "0.1.0"
_LAZY = {"ORTModelForFeatureExtraction": "runtime", "ORTModelForSequenceClassification": "runtime",
         "export_model": "export"}


def __getattr__(name):  # onnxruntime loads only when an ORT class or the exporter is asked for
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AutoCompactModel",
    "AutoCompactModelForSequenceClassification",
    "ORTModelForFeatureExtraction",
    "ORTModelForSequenceClassification",
    "export_model",
    "shrink",
    "CompactBertConfig",
    "CompactBertModel",
    "CompactBertForSequenceClassification",
    "CompactConfigError",
    "mean_pool",
]

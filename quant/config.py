"""Int8Config: what an int8 CompactBert is, stored in its config.json under `quant` (house style: validated, JSON
round-trip, versioned).

    Int8Config()                                           dynamic int8, per-channel weights, int8 embeddings
    Int8Config(activations="static")                       QDQ, U8S8, min-max calibration on real task text
    Int8Config(mode="qat")                                 fake-quantized training (Q8BERT), then both exports

Weights are always symmetric int8 (zero point 0), as Q8BERT and every ORT int8 kernel here expect. LayerNorm, softmax
and GELU always stay fp32 (ORT has no int8 kernels for them); `keep_fp32` names the weight-bearing modules that stay
fp32 too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compact_nlp.config_section import ConfigSection

INT8_CONFIG_VERSION = 1

# modules whose weights may stay fp32; the anchors keep the classifier and position embeddings in full precision
KEEPABLE = ("classifier", "pooler", "word_embeddings", "position_embeddings", "token_type_embeddings")


class QuantConfigError(ValueError):
    """An impossible or contradictory quantization setting."""


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise QuantConfigError(f"{name} must be one of {list(choices)}, got {value!r}.")


@dataclass
class Int8Config(ConfigSection):
    mode: str = "ptq"  # ptq: quantize the trained fp32 export; qat: train with fake quantization first
    weights: str = "per_channel"  # per_channel (one scale per output row) or per_tensor
    activations: str = "dynamic"  # dynamic: ranges measured per call (fast x86 path); static: QDQ with fixed scales
    activation_type: str | None = None  # static only: uint8 (U8S8, fast on x86; default) or int8 (S8S8)
    calibration: str | None = None  # static PTQ only: minmax (default), entropy or percentile
    calibration_examples: int = 256
    keep_fp32: list[str] = field(default_factory=lambda: ["classifier", "pooler", "position_embeddings",
                                                          "token_type_embeddings"])
    embedding_bits: int = 8  # word embeddings: 8, or 4 / 2 packed into bytes (one symmetric scale per row)
    trim_vocabulary: bool = False  # keep only the wordpieces the task's training text uses (tokenizer rewritten too)
    ema_decay: float = 0.99  # qat only: activation ranges are an EMA of batch min/max (Q8BERT)
    version: int = INT8_CONFIG_VERSION

    def __post_init__(self):
        _choice("mode", self.mode, ("ptq", "qat"))
        _choice("weights", self.weights, ("per_channel", "per_tensor"))
        _choice("activations", self.activations, ("dynamic", "static"))
        if self.activations == "dynamic":
            for name in ("activation_type", "calibration"):
                if getattr(self, name) is not None:
                    raise QuantConfigError(
                        f"{name} applies to static activations only; with activations='dynamic' ranges are measured "
                        f"at run time. Drop {name}, or set activations='static'.")
        else:
            self.activation_type = self.activation_type or "uint8"
            _choice("activation_type", self.activation_type, ("uint8", "int8"))
            if self.calibration is not None and self.mode == "qat":
                raise QuantConfigError("calibration does not apply to QAT: its activation scales are trained. Drop "
                                       "calibration, or use mode='ptq'.")
            if self.mode == "ptq":
                self.calibration = self.calibration or "minmax"
                _choice("calibration", self.calibration, ("minmax", "entropy", "percentile"))
        _choice("embedding_bits", self.embedding_bits, (8, 4, 2))
        if self.calibration_examples < 1:
            raise QuantConfigError(f"calibration_examples must be >= 1, got {self.calibration_examples}.")
        unknown = sorted(set(self.keep_fp32) - set(KEEPABLE))
        if unknown:
            raise QuantConfigError(f"keep_fp32 names unknown modules {unknown}; choose from {list(KEEPABLE)} "
                                   "(LayerNorm, softmax and GELU are always fp32).")
        if not 0 < self.ema_decay < 1:
            raise QuantConfigError(f"ema_decay must be in (0, 1), got {self.ema_decay}.")
        self.check_version(INT8_CONFIG_VERSION)

    @property
    def per_channel(self) -> bool:
        return self.weights == "per_channel"

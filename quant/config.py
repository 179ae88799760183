"""Int8Config and BinaryConfig: what a quantized CompactBert is, stored in its config.json under `quant` (house style:
validated, JSON round-trip, versioned).

    Int8Config()                                           dynamic int8, per-channel weights, int8 embeddings,
                                                           SmoothQuant scale migration (alpha 0.8) on calibration text,
                                                           per-token activation scales for the FFN output projections
    Int8Config(activations="static")                       QDQ, U8S8, min-max calibration on real task text
    Int8Config(mode="qat")                                 fake-quantized training (Q8BERT), then both exports
    BinaryConfig()                                         W1A8 (BinaryBERT / BiT): sign weights, int8 activations,
                                                           1-bit word embeddings, two-stage distillation
    BinaryConfig(activation_bits=1)                        W1A1: binary activations too (BiT's elastic binarization)

Weights are always symmetric int8 (zero point 0), as Q8BERT and every ORT int8 kernel here expect. LayerNorm, softmax
and GELU always stay fp32 (ORT has no int8 kernels for them); `keep_fp32` names the weight-bearing modules that stay
fp32 too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compact_nlp.config_section import ConfigSection

INT8_CONFIG_VERSION = 1
DEFAULT_SMOOTHING = 0.8  # Int8Config.smoothing's default for ptq dynamic per_tensor (bench/int8_variants.py)

# modules whose weights may stay fp32; the anchors keep the classifier and position embeddings in full precision
KEEPABLE = ("classifier", "pooler", "word_embeddings", "position_embeddings", "token_type_embeddings")


class QuantConfigError(ValueError):
    """An impossible or contradictory quantization setting."""


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise QuantConfigError(f"{name} must be one of {list(choices)}, got {value!r}.")


def _check_shared(config) -> None:
    """The fields Int8Config and BinaryConfig share."""
    if config.calibration_examples < 1:
        raise QuantConfigError(f"calibration_examples must be >= 1, got {config.calibration_examples}.")
    unknown = sorted(set(config.keep_fp32) - set(KEEPABLE))
    if unknown:
        raise QuantConfigError(f"keep_fp32 names unknown modules {unknown}; choose from {list(KEEPABLE)} "
                               "(LayerNorm, softmax and GELU are always fp32).")
    if not 0 < config.ema_decay < 1:
        raise QuantConfigError(f"ema_decay must be in (0, 1), got {config.ema_decay}.")


@dataclass
class Int8Config(ConfigSection):
    section = "int8"  # the key under config.json's `quant` and a recipe's `quant:`

    mode: str = "ptq"  # ptq: quantize the trained fp32 export; qat: train with fake quantization first
    weights: str = "per_channel"  # per_channel (one scale per output row) or per_tensor
    activations: str = "dynamic"  # dynamic: ranges measured per call (fast x86 path); static: QDQ with fixed scales
    activation_type: str | None = None  # static only: uint8 (U8S8, fast on x86; default) or int8 (S8S8)
    calibration: str | None = None  # static PTQ only: minmax (default), entropy or percentile
    calibration_examples: int = 256
    keep_fp32: list[str] = field(default_factory=lambda: ["classifier", "pooler", "position_embeddings",
                                                          "token_type_embeddings"])
    # dynamic only: how finely activations are scaled. per_tensor: one scale per activation tensor per call (ORT's
    # DynamicQuantizeLinear + MatMulInteger); per_block: MatMulNBits 8-bit with accuracy_level=4, which quantizes
    # each token's activations per block of `block_size` input features inside the kernel (int8 compute on VNNI/AMX)
    # against block-wise weights; ffn_out_per_block: per_block for the FFN output projections (the outlier-heavy
    # ones), per_tensor elsewhere; ffn_out_per_row: one scale per row (token) for the FFN output projections, built
    # in the graph (quant/per_row.py; ORT's fast kernels take one scalar activation scale), per_tensor elsewhere.
    # None: ffn_out_per_row for ptq dynamic (on the protocol's SST-2 MiniLM, argmax agreement with fp32 99.77% vs
    # per_tensor's 99.08%, at 0.87x ORT dynamic int8's latency at real lengths), per_tensor for static and QAT.
    # bench/int8_variants.py measures them all (docs/results.md, "Runtimes and peers").
    activation_granularity: str | None = None
    block_size: int = 32  # per_block / ffn_out_per_block: input features per scale (16, 32, 64, 128 or 256)
    per_row_layers: int = 0  # ffn_out_per_row: only the last N layers' FFN outputs per row (0: every layer)
    # dynamic only: SmoothQuant migration strength alpha in [0, 1) (quant/smooth.py): per-channel activation outliers
    # of the MatMul inputs (except attention's output projection) are moved into the weights, measured on the
    # calibration text; 0 turns it off. None: 0.8 for ptq dynamic per_tensor and ffn_out_per_row (chosen on SST-2
    # train text for per_tensor; mean embedding cosine 0.9928 -> 0.998 on all-MiniLM-L6-v2 at ~5% latency,
    # bench/results/int8_variants.md), else 0.
    smoothing: float | None = None
    embedding_bits: int = 8  # word embeddings: 8, or 4 / 2 packed into bytes (one symmetric scale per row)
    trim_vocabulary: bool = False  # keep only the wordpieces the task's training text uses (tokenizer rewritten too)
    ema_decay: float = 0.99  # qat only: activation ranges are an EMA of batch min/max (Q8BERT)
    # qat only: also quantize the starting model without training (PTQ, same settings) and ship whichever export
    # scores higher on the held-out split (QAT on ties). Small tasks can lose accuracy to QAT (docs/quant.md).
    fallback_to_ptq: bool = False
    version: int = INT8_CONFIG_VERSION

    def __post_init__(self):
        _choice("mode", self.mode, ("ptq", "qat"))
        _choice("weights", self.weights, ("per_channel", "per_tensor"))
        _choice("activations", self.activations, ("dynamic", "static"))
        if self.activation_granularity is None:  # QAT trains per-tensor activation ranges; static has one scale
            fast = self.mode == "ptq" and self.activations == "dynamic"
            self.activation_granularity = "ffn_out_per_row" if fast else "per_tensor"
        _choice("activation_granularity", self.activation_granularity,
                ("per_tensor", "per_block", "ffn_out_per_block", "ffn_out_per_row"))
        if self.per_row_layers < 0 or (self.per_row_layers and self.activation_granularity != "ffn_out_per_row"):
            raise QuantConfigError(f"per_row_layers is the number of last layers (>= 0) whose FFN outputs are scaled "
                                   f"per row, for activation_granularity='ffn_out_per_row'; got {self.per_row_layers} "
                                   f"with {self.activation_granularity!r}.")
        _choice("block_size", self.block_size, (16, 32, 64, 128, 256))
        self._resolve_smoothing()
        if self.activation_granularity != "per_tensor" and self.activations != "dynamic":
            raise QuantConfigError(f"activation_granularity={self.activation_granularity!r} scales activations at run "
                                   "time, so it needs activations='dynamic'.")
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
        if self.fallback_to_ptq and self.mode != "qat":
            raise QuantConfigError("fallback_to_ptq chooses between QAT and PTQ on the held-out split, so it needs "
                                   "mode='qat'. Set mode='qat', or drop fallback_to_ptq.")
        _check_shared(self)
        self.check_version(INT8_CONFIG_VERSION)

    @property
    def per_channel(self) -> bool:
        return self.weights == "per_channel"

    def _resolve_smoothing(self) -> None:
        if self.smoothing is None:
            auto = self.mode == "ptq" and self.activations == "dynamic" \
                and self.activation_granularity in ("per_tensor", "ffn_out_per_row")
            self.smoothing = DEFAULT_SMOOTHING if auto else 0.0
        if isinstance(self.smoothing, bool) or not isinstance(self.smoothing, (int, float)) \
                or not 0 <= self.smoothing < 1:
            raise QuantConfigError(f"smoothing is SmoothQuant's migration strength alpha in [0, 1) (0: off), got "
                                   f"{self.smoothing!r}.")
        self.smoothing = float(self.smoothing)
        if self.smoothing and (self.activations != "dynamic" or self.mode != "ptq"):
            raise QuantConfigError("smoothing is measured for post-training dynamic int8 only (mode='ptq', "
                                   "activations='dynamic'); QAT trains its own ranges. Drop smoothing, or set it to 0.")


BINARY_CONFIG_VERSION = 1


@dataclass
class BinaryConfig(ConfigSection):
    """Binary weights (BinaryBERT, BiT): every Linear not in `keep_fp32` computes with sign(W) times a scale, stored
    packed at 1 bit per weight. Always trained (binarizing a trained model without training destroys it), starting
    from the fine-tuned fp32 model and distilled from it in two stages: intermediate layers (hidden states and
    attention maps) for the first `intermediate_fraction` of the steps, then logits."""

    section = "binary"

    weights: str = "per_channel"  # the weight scale: one per output row, or one per tensor
    weight_scale: str = "analytic"  # analytic: mean|W| of the latent weights (XNOR-Net, BinaryBERT); learned: a
    #                                 trained scale with BiT's elastic (clipped) straight-through gradient
    activation_bits: int = 8  # 8: W1A8, int8 activations as explicit QDQ; 1: W1A1, sign activations (BiT)
    activation_type: str | None = None  # activation_bits=8 only: uint8 (default) or int8
    activation_scale: str = "per_tensor"  # activation scales are per tensor (see __post_init__)
    calibration: str | None = None  # activation_bits=8 only: None keeps the trained (EMA) ranges; minmax re-measures
    #                                 them on real training text after training
    calibration_examples: int = 256
    # the position embeddings train and ship at 8 bits: kept fp32 they were 768 KB of a 4.5 MB 6-layer MiniLM file
    # (bench/experiments/binary_fp32_tables.py)
    keep_fp32: list[str] = field(default_factory=lambda: ["classifier", "pooler", "token_type_embeddings"])
    embedding_bits: int = 1  # word embeddings: 1 (sign x per-row mean|w|, as BinaryBERT), or 2 / 4 / 8
    trim_vocabulary: bool = False
    intermediate_fraction: float = 0.5  # two-stage distillation: share of steps on intermediate layers (0: one stage)
    ema_decay: float = 0.99
    version: int = BINARY_CONFIG_VERSION

    def __post_init__(self):
        _choice("weights", self.weights, ("per_channel", "per_tensor"))
        _choice("weight_scale", self.weight_scale, ("analytic", "learned"))
        _choice("activation_bits", self.activation_bits, (8, 1))
        if self.activation_scale == "per_channel":
            raise QuantConfigError(
                "activation_scale='per_channel' is impossible: an activation's channels are the axis a MatMul sums "
                "over, so a scale per channel cannot be taken out of the integer (or binary) product, and no ONNX "
                "Runtime kernel or NNAPI/CoreML op accepts one. Use activation_scale='per_tensor'; per-channel "
                "scales apply to weights (weights='per_channel').")
        _choice("activation_scale", self.activation_scale, ("per_tensor",))
        if self.activation_bits == 1:
            for name in ("activation_type", "calibration"):
                if getattr(self, name) is not None:
                    raise QuantConfigError(
                        f"{name} applies to int8 activations; binary activations (activation_bits=1) have no int8 "
                        f"range to calibrate: their scale and threshold are trained (BiT's elastic binarization). "
                        f"Drop {name}, or use activation_bits=8.")
        else:
            self.activation_type = self.activation_type or "uint8"
            _choice("activation_type", self.activation_type, ("uint8", "int8"))
            if self.calibration is not None:
                _choice("calibration", self.calibration, ("minmax",))
        _choice("embedding_bits", self.embedding_bits, (1, 2, 4, 8))
        _check_shared(self)
        if not 0 <= self.intermediate_fraction < 1:
            raise QuantConfigError(f"intermediate_fraction is the share of steps distilling intermediate layers, in "
                                   f"[0, 1), got {self.intermediate_fraction}.")
        self.check_version(BINARY_CONFIG_VERSION)

    @property
    def per_channel(self) -> bool:
        return self.weights == "per_channel"

"""TokenPruningConfig: which tokens and heads leave a CompactBert, stored in its config.json under `token_pruning`
(house style: validated, JSON round-trip, versioned).

    TokenPruningConfig(keep_ratio=0.5)                  SpAtten top-k: the layers run on half the real tokens on
                                                        average; the first layer on all of them, then a falling ratio
    TokenPruningConfig(keep_ratios=[1, 1, .7, .5, .35, .25])   an explicit per-layer schedule
    TokenPruningConfig(mode="threshold")                LTP: learned per-layer thresholds (soft masks in training)
    TokenPruningConfig(keep_ratio=0.5, head_keep_ratio=0.75)   also remove a quarter of the heads (by magnitude)

Ratios count each example's real tokens, never padding. [CLS] (position 0) is always kept; `protect` names the other
special tokens that are.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from compact_nlp.config_section import ConfigSection

TOKEN_PRUNING_VERSION = 1
PROTECT_CHOICES = ("cls", "cls_sep", "specials")


class TokenPruningConfigError(ValueError):
    """An impossible token or head pruning setting."""


def geometric_schedule(keep_ratio: float, layers: int, unpruned_layers: int) -> list[float]:
    """Per-layer keep ratios: 1 for the first `unpruned_layers`, then rho, rho^2, ... with rho chosen so the layers run
    on `keep_ratio` of the real tokens on average (about the share of the encoder's FLOPs that remains)."""
    pruned = layers - unpruned_layers
    if keep_ratio == 1 or pruned == 0:
        return [1.0] * layers
    floor = unpruned_layers / layers
    if keep_ratio <= floor:
        raise TokenPruningConfigError(
            f"keep_ratio {keep_ratio} is out of reach with {unpruned_layers} of {layers} layers unpruned: those alone "
            f"run on {floor:.3f} of the tokens on average. Raise keep_ratio above {floor:.3f} or lower unpruned_layers.")

    def mean(rho: float) -> float:
        return (unpruned_layers + sum(rho ** j for j in range(1, pruned + 1))) / layers

    low, high = 0.0, 1.0
    for _ in range(60):  # bisection: mean() rises with rho
        rho = (low + high) / 2
        low, high = (rho, high) if mean(rho) < keep_ratio else (low, rho)
    rho = (low + high) / 2
    return [1.0] * unpruned_layers + [round(rho ** j, 6) for j in range(1, pruned + 1)]


@dataclass
class TokenPruningConfig(ConfigSection):
    mode: Literal["top_k", "threshold"] = "top_k"  # SpAtten's cascade top-k, or LTP's learned thresholds
    keep_ratio: float = 0.5  # top_k: average share of real tokens the layers run on (sets a geometric schedule)
    keep_ratios: list[float] | None = None  # top_k: explicit per-layer schedule (overrides keep_ratio)
    unpruned_layers: int = 1  # the first layers run on every token (SpAtten, LTP)
    protect: str = "cls_sep"  # tokens never pruned: cls (position 0 only), cls_sep, or specials (every special token)
    protected_token_ids: list[int] | None = None  # filled by prepare_token_pruning from the tokenizer
    head_keep_ratio: float = 1.0  # share of each layer's heads kept (by accumulated output magnitude)
    head_keep_ratios: list[float] | None = None  # per layer (overrides head_keep_ratio)
    head_importance_examples: int = 512  # training examples used to rank heads
    # threshold mode (LTP): a token enters layer i only if the attention it received in layer i-1 (1.0 = the average
    # token) reaches thresholds[i]; trained with soft masks, then hard
    thresholds: list[float] | None = None  # per layer; None: initial_threshold for every pruned layer
    initial_threshold: float = 0.0
    temperature: float = 0.1  # soft mask sigmoid((score - threshold) / temperature)
    sparsity_weight: float = 0.05  # LTP's lambda: the penalty on the average soft mask
    soft_fraction: float = 0.5  # share of the training steps with soft masks; hard (real pruning) after that
    threshold_lr: float = 0.01  # thresholds learn faster than weights (LTP)
    version: int = TOKEN_PRUNING_VERSION

    def __post_init__(self):
        if self.mode not in ("top_k", "threshold"):
            raise TokenPruningConfigError(f"mode must be 'top_k' or 'threshold', got {self.mode!r}.")
        if not 0 < self.keep_ratio <= 1:
            raise TokenPruningConfigError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}.")
        if self.keep_ratios is not None:
            self._check_ratios("keep_ratios", self.keep_ratios)
            if any(b > a for a, b in zip(self.keep_ratios, self.keep_ratios[1:])):
                raise TokenPruningConfigError(
                    f"keep_ratios must not rise from layer to layer (a pruned token never comes back), got "
                    f"{self.keep_ratios}.")
            if self.keep_ratios[0] != 1:
                raise TokenPruningConfigError(
                    f"keep_ratios[0] must be 1: the first layer's attention is what scores tokens, so it runs on all of "
                    f"them; got {self.keep_ratios[0]}.")
            if self.mode == "threshold" and any(r != 1 for r in self.keep_ratios):
                raise TokenPruningConfigError("keep_ratios is a top_k schedule; threshold mode learns how many tokens "
                                              "to keep. Drop keep_ratios, or set mode='top_k'.")
        if self.unpruned_layers < 1:
            raise TokenPruningConfigError(
                f"unpruned_layers must be >= 1 (the first layer's attention scores the tokens), got "
                f"{self.unpruned_layers}.")
        if self.protect not in PROTECT_CHOICES:
            raise TokenPruningConfigError(f"protect must be one of {list(PROTECT_CHOICES)}, got {self.protect!r}.")
        if not 0 < self.head_keep_ratio <= 1:
            raise TokenPruningConfigError(f"head_keep_ratio must be in (0, 1], got {self.head_keep_ratio}.")
        if self.head_keep_ratios is not None:
            self._check_ratios("head_keep_ratios", self.head_keep_ratios)
        if self.head_importance_examples < 1:
            raise TokenPruningConfigError(f"head_importance_examples must be >= 1, got {self.head_importance_examples}.")
        if self.temperature <= 0 or self.sparsity_weight < 0 or self.threshold_lr <= 0:
            raise TokenPruningConfigError(
                f"temperature and threshold_lr must be > 0 and sparsity_weight >= 0, got {self.temperature}, "
                f"{self.threshold_lr}, {self.sparsity_weight}.")
        if not 0 <= self.soft_fraction <= 1:
            raise TokenPruningConfigError(f"soft_fraction must be in [0, 1], got {self.soft_fraction}.")
        self.check_version(TOKEN_PRUNING_VERSION)

    @staticmethod
    def _check_ratios(name: str, ratios: list[float]) -> None:
        if not ratios:
            raise TokenPruningConfigError(f"{name} is empty; give one ratio per layer.")
        bad = [r for r in ratios if not 0 < r <= 1]
        if bad:
            raise TokenPruningConfigError(f"{name} must all be in (0, 1], got {bad} in {ratios}.")

    @property
    def prunes_heads(self) -> bool:
        return self.head_keep_ratios is not None or self.head_keep_ratio < 1

    def resolved(self, layers: int) -> TokenPruningConfig:
        """This config for a model with `layers` layers: per-layer keep ratios (and thresholds) filled in."""
        if self.unpruned_layers > layers:
            raise TokenPruningConfigError(f"unpruned_layers is {self.unpruned_layers} but the model has {layers} layers.")
        for name in ("keep_ratios", "head_keep_ratios", "thresholds"):
            value = getattr(self, name)
            if value is not None and len(value) != layers:
                raise TokenPruningConfigError(
                    f"{name} has {len(value)} entries but the model has {layers} layers: give exactly one per layer.")
        if self.mode == "threshold":
            thresholds = self.thresholds or [self.initial_threshold] * layers
            return replace(self, keep_ratios=[1.0] * layers, thresholds=[float(t) for t in thresholds])
        ratios = self.keep_ratios or geometric_schedule(self.keep_ratio, layers, self.unpruned_layers)
        first_pruned = next((i for i, r in enumerate(ratios) if r < 1), layers)
        if first_pruned < self.unpruned_layers:
            raise TokenPruningConfigError(
                f"keep_ratios {ratios} prune before layer {first_pruned}, but unpruned_layers is "
                f"{self.unpruned_layers}; make them agree.")
        return replace(self, keep_ratios=[float(r) for r in ratios])

    def head_ratios(self, layers: int) -> list[float]:
        return list(self.head_keep_ratios or [self.head_keep_ratio] * layers)

"""HatConfig: the whole HAT search as one config section (a recipe's `hat:` section, `compact search`'s settings)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from compact_nlp.config_section import ConfigSection
from compact_nlp.distill import DistillationConfig

HAT_CONFIG_VERSION = 1


class HatConfigError(ValueError):
    """A HAT setting that cannot work."""


@dataclass
class HatConfig(ConfigSection):
    """Settings of a HAT search on a fine-tuned model; the defaults are sized for a 2-core CPU (docs/hat.md).

    Search space (None: derived from the model, SearchSpace.from_model):
        hidden, heads, ffn, depth: the choices; layer_selection: which layers a shallower SubTransformer keeps.
    Latency (what a budget means; recorded with every measurement and predictor):
        precision ("int8-dynamic", the form that ships, or "fp32"), threads, batch, sequence_length (null: the
        mean token count of the task's training texts, as compress plans it);
        measurer: None times on ONNX Runtime CPU on this machine; "module:factory" names your own (e.g. one that
        times the model on a phone): factory(spec, tokenizer, texts) returns an object with a `spec` (LatencySpec)
        and `measure(model) -> list[float]` (ms), as hat.latency.Measurer (docs/hat.md).
    budgets: fractions of the full model's measured latency in that setting, e.g. [0.5, 0.33]; each gets its own
        SubTransformer.
    Stages: importance_batches (rewiring); supernet_steps / supernet_batch_size / supernet_learning_rate /
        random_subs (sandwich-rule training); latency_models / noise_models / noise_repeats / latency_passes
        (measurements: latency_passes > 1 measures every model again and the predictor learns the mean);
        latency_predictor: "mlp" (HAT's), "cost" (a linear model on the encoder's cost terms) or "auto" (both
        fitted, the lower validation MAPE kept; hat.latency.LatencyPredictor);
        population / parents / mutations / crossovers / mutation_probability / iterations (evolution, HAT's
        defaults are 125 / 25 / 50 / 50 / 0.3 / 30); fitness_examples (held-out rows scoring each candidate);
        distill_epochs / distill_learning_rate / distill_seeds (the extracted SubTransformer's further distillation,
        repeated with that many training seeds on the same data split); distillation: DistillationConfig fields for
        that distillation ({}: the fine-tuned model's logits at T=1 plus the labels, as the SuperTransformer learns;
        e.g. {hidden_weight: 1.0} adds TinyBERT's hidden-state MSE, each student layer matched to the teacher layer
        it was cut from unless layer_map is given);
        full_reference: also put the full architecture through the same SuperTransformer training and distillation,
        so the SubTransformers are compared with a full model that had as much training as they had;
        uniform_reference: also distil the hand-picked uniform SubTransformer of each budget (the comparison that shows
        what the search found; the combined pipeline, which ships the searched one only, turns it off).
    subtransformer: {hidden, heads, ffn} to ship under each budget instead of searching for one (it must lie in the
        space): to rerun a documented architecture, or to try one by hand; results mark it as given, not searched.
        The SuperTransformer is trained as for a search, since the SubTransformer inherits its weights.
    supernet_seed: the seed of the stages before distillation (the splits, the SuperTransformer's training); None:
        the protocol's first seed. Runs at other protocol seeds that give the same supernet_seed in one folder share
        those stages and the architecture they choose, and differ only in the distillation (`-seed<N>` folders):
        `compact compress --seeds K` searches once this way.
    distill_longer: distil the searched SubTransformer this many times distill_epochs, in folders of their own
        (`-distil<x>x`) beside the default's, so that a longer distillation reuses a finished search (compress's
        escalation of a search plan).
    """

    hidden: list[int] | None = None
    heads: list[int] | None = None
    ffn: list[int] | None = None
    depth: list[int] | None = None
    layer_selection: Literal["spread", "first"] = "spread"
    precision: Literal["int8-dynamic", "fp32"] = "int8-dynamic"
    threads: int = 1
    batch: int = 1
    sequence_length: int | None = 32  # None: the mean token count of the task's training texts
    measurer: str | None = None
    budgets: list[float] = field(default_factory=lambda: [0.5])
    importance_batches: int = 16
    supernet_steps: int = 1500
    supernet_batch_size: int = 33  # 11 examples for each of the 3 SubTransformers of a step
    supernet_learning_rate: float = 3e-5
    random_subs: int = 1
    latency_models: int = 200
    noise_models: int = 4
    noise_repeats: int = 5
    latency_passes: int = 1
    latency_predictor: Literal["auto", "mlp", "cost"] = "auto"
    population: int = 40
    parents: int = 10
    mutations: int = 15
    crossovers: int = 15
    mutation_probability: float = 0.3
    iterations: int = 10
    fitness_examples: int = 1000
    distill_epochs: float = 2.0
    distill_learning_rate: float = 1e-4
    distill_seeds: int = 1
    distillation: dict = field(default_factory=dict)
    full_reference: bool = True
    uniform_reference: bool = True
    subtransformer: dict | None = None
    seed: int = 0
    supernet_seed: int | None = None
    distill_longer: float = 1.0
    version: int = field(default=HAT_CONFIG_VERSION)

    def __post_init__(self):
        if not self.budgets or not all(0 < b <= 1 for b in self.budgets):
            raise HatConfigError(f"budgets are fractions of the full model's latency in (0, 1], got {self.budgets}.")
        if self.sequence_length is not None and self.sequence_length <= 0:
            raise HatConfigError(f"hat.sequence_length must be positive, or null for the task's mean length, got "
                                 f"{self.sequence_length}.")
        positive = ("threads", "batch", "importance_batches", "supernet_steps",
                    "supernet_batch_size", "latency_models", "latency_passes", "population", "parents",
                    "iterations", "fitness_examples", "distill_seeds", "distill_longer")
        for name in positive:
            if getattr(self, name) <= 0:
                raise HatConfigError(f"hat.{name} must be positive, got {getattr(self, name)}.")
        if self.latency_predictor not in ("auto", "mlp", "cost"):
            raise HatConfigError(f"hat.latency_predictor must be 'auto', 'mlp' or 'cost', got {self.latency_predictor!r}.")
        if self.measurer is not None and not re.fullmatch(r"[\w.]+:\w+", self.measurer):
            raise HatConfigError(f"hat.measurer names a factory as 'module:callable' (e.g. "
                                 f"'my_package.phone:PhoneMeasurer'), got {self.measurer!r}.")
        if self.parents > self.population:
            raise HatConfigError(f"hat.parents ({self.parents}) cannot exceed hat.population ({self.population}).")
        if self.mutations < 0 or self.crossovers < 0 or self.mutations + self.crossovers + self.parents < self.population:
            raise HatConfigError(
                f"each generation keeps {self.parents} parents and adds {self.mutations} mutations and "
                f"{self.crossovers} crossovers: together they must refill the population of {self.population}.")
        if not 0 <= self.mutation_probability <= 1:
            raise HatConfigError(f"hat.mutation_probability must lie in [0, 1], got {self.mutation_probability}.")
        if self.supernet_batch_size % (2 + self.random_subs):
            raise HatConfigError(
                f"hat.supernet_batch_size ({self.supernet_batch_size}) is split into {2 + self.random_subs} "
                "micro-batches (sandwich rule: largest, smallest and random SubTransformers): make it a multiple.")
        if not isinstance(self.distillation, dict):
            raise HatConfigError("hat.distillation is a mapping of distillation settings, e.g. "
                                 f"{{hidden_weight: 1.0}}, got {self.distillation!r}.")
        try:
            DistillationConfig.from_dict(self.subtransformer_distillation())
        except (TypeError, ValueError) as error:
            raise HatConfigError(f"hat.distillation: {error}") from error
        if self.subtransformer is not None and (not isinstance(self.subtransformer, dict)
                                                or set(self.subtransformer) != {"hidden", "heads", "ffn"}):
            raise HatConfigError("hat.subtransformer names one architecture as {hidden: H, heads: [..], ffn: [..]} "
                                 f"(one head count and FFN width per layer), got {self.subtransformer!r}.")
        self.check_version(HAT_CONFIG_VERSION)

    def subtransformer_distillation(self) -> dict:
        """The extracted SubTransformer's distillation settings: logits at T=1 plus the labels, then `distillation`."""
        return {"temperature": 1.0, "task_weight": 1.0, "logits_weight": 1.0, **self.distillation}

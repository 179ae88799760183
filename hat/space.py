"""The search space: which SubTransformers a SuperTransformer holds, and how evolution moves through them.

A SubTransformer has one hidden size, a depth, and per-layer head counts and FFN widths (HAT, Wang et al. 2020,
with its encoder's elastic dimensions; DynaBERT and AutoTinyBERT for encoders distilled from a checkpoint). It is
encoded for the evolutionary search as HAT encodes it: one gene for the hidden size, one for the depth, and one
head and one FFN gene per layer of the SuperTransformer, of which only the first `depth` are read.

Which layers a shallower SubTransformer keeps is `layer_selection`:
- "spread" (default, as DynaBERT drops layers): evenly spaced, always ending with the last layer, so the classifier
  reads the states it was trained on;
- "first" (as HAT's decoder): the first `depth` layers.
docs/hat.md has the measurement that chose the default.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Literal

from compact_nlp.config_section import ConfigSection

SEARCH_SPACE_VERSION = 1


class SearchSpaceError(ValueError):
    """A search space, or a SubTransformer, that cannot be built from the SuperTransformer."""


@dataclass(frozen=True)
class SubTransformer:
    """One architecture in the space: `heads[i]` heads and `ffn[i]` FFN neurons in its i-th layer."""

    hidden: int
    heads: tuple[int, ...]
    ffn: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
        object.__setattr__(self, "ffn", tuple(int(f) for f in self.ffn))
        if len(self.heads) != len(self.ffn) or not self.heads:
            raise SearchSpaceError(f"a SubTransformer needs one head count and one FFN width per layer (at least "
                                   f"one layer), got heads={self.heads}, ffn={self.ffn}.")

    @property
    def depth(self) -> int:
        return len(self.heads)

    def to_dict(self) -> dict:
        return {"hidden": self.hidden, "heads": list(self.heads), "ffn": list(self.ffn)}

    @classmethod
    def from_dict(cls, data: dict) -> SubTransformer:
        return cls(int(data["hidden"]), tuple(data["heads"]), tuple(data["ffn"]))

    def __str__(self) -> str:
        return f"hidden {self.hidden}, {self.depth} layers, heads {list(self.heads)}, FFN {list(self.ffn)}"


def shallowest_depth(layers: int) -> int:
    """The fewest layers a SubTransformer of the default space keeps: a third of the model's."""
    return max(1, layers // 3)


Gene = tuple[int, ...]  # (hidden, depth, heads x max_layers, ffn x max_layers)


def _sorted_choices(values, name: str) -> list[int]:
    values = sorted({int(v) for v in values}, reverse=True)
    if not values:
        raise SearchSpaceError(f"the search space's {name} choices are empty: give at least one value.")
    if values[-1] <= 0:
        raise SearchSpaceError(f"the search space's {name} choices must be positive, got {values}.")
    return values


@dataclass
class SearchSpace(ConfigSection):
    """Choices per elastic dimension. `SearchSpace.from_model(config)` derives HAT-style defaults from the model."""

    max_layers: int
    hidden: list[int]
    heads: list[int]
    ffn: list[int]
    depth: list[int]
    layer_selection: Literal["spread", "first"] = "spread"
    version: int = field(default=SEARCH_SPACE_VERSION)

    def __post_init__(self):
        self.hidden = _sorted_choices(self.hidden, "hidden")
        self.heads = _sorted_choices(self.heads, "heads")
        self.ffn = _sorted_choices(self.ffn, "ffn")
        self.depth = _sorted_choices(self.depth, "depth")
        if self.max_layers <= 0:
            raise SearchSpaceError(f"max_layers must be positive, got {self.max_layers}.")
        if self.depth[0] > self.max_layers:
            raise SearchSpaceError(f"depth choices {self.depth} exceed the SuperTransformer's {self.max_layers} layers.")
        if self.layer_selection not in ("spread", "first"):
            raise SearchSpaceError(f"layer_selection must be 'spread' or 'first', got {self.layer_selection!r}.")
        self.check_version(SEARCH_SPACE_VERSION)

    @classmethod
    def from_model(cls, config, layer_selection: str = "spread") -> SearchSpace:
        """HAT-like defaults from a CompactBert config: for MiniLM-L6 (hidden 384, 12 heads, FFN 1536) heads
        {12, 8, 6, 4}, FFN {1536, 1024, 768, 512}, depth 2-6, hidden {384, 320, 256}."""
        if not config.has_uniform_widths:
            raise SearchSpaceError("derive the space from a model with the same width in every layer (the fine-tuned "
                                   "source model), or give the choices explicitly.")
        layers, heads, ffn, hidden = (config.num_hidden_layers, config.num_heads_per_layer[0],
                                      config.intermediate_size_per_layer[0], config.hidden_size)

        def fractions(full: int, parts, multiple: int = 1) -> list[int]:
            return sorted({max(multiple, round(full * p / multiple) * multiple) for p in parts}, reverse=True)

        return cls(max_layers=layers, hidden=fractions(hidden, (1, 5 / 6, 2 / 3), 8),
                   heads=fractions(heads, (1, 2 / 3, 1 / 2, 1 / 3)), ffn=fractions(ffn, (1, 2 / 3, 1 / 2, 1 / 3), 8),
                   depth=list(range(shallowest_depth(layers), layers + 1)), layer_selection=layer_selection)

    # --- checks against the SuperTransformer -------------------------------------------------------------------
    def check_model(self, config) -> None:
        """Raise SearchSpaceError when the model cannot hold every SubTransformer of this space."""
        problems = []
        if config.num_hidden_layers != self.max_layers:
            problems.append(f"the space is for {self.max_layers} layers, the model has {config.num_hidden_layers}")
        if self.hidden[0] > config.hidden_size:
            problems.append(f"hidden choice {self.hidden[0]} > the model's hidden size {config.hidden_size}")
        if self.heads[0] > min(config.num_heads_per_layer):
            problems.append(f"head choice {self.heads[0]} > the model's {min(config.num_heads_per_layer)} heads")
        if self.ffn[0] > min(config.intermediate_size_per_layer):
            problems.append(f"FFN choice {self.ffn[0]} > the model's FFN width {min(config.intermediate_size_per_layer)}")
        if problems:
            raise SearchSpaceError("the search space does not fit the SuperTransformer: " + "; ".join(problems)
                                   + ". Derive it with SearchSpace.from_model(model.config) or shrink the choices.")

    def check(self, sub: SubTransformer) -> None:
        if (sub.hidden not in self.hidden or sub.depth not in self.depth or any(h not in self.heads for h in sub.heads)
                or any(f not in self.ffn for f in sub.ffn)):
            raise SearchSpaceError(f"SubTransformer ({sub}) is not in the search space (hidden {self.hidden}, depth "
                                   f"{self.depth}, heads {self.heads}, FFN {self.ffn}).")

    def fingerprint(self) -> str:
        """A short hash of the space, stored with everything that depends on it (latency data, search state)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def layers_for(self, depth: int) -> list[int]:
        """The SuperTransformer layers a SubTransformer of `depth` layers runs, in order."""
        if not 1 <= depth <= self.max_layers:
            raise SearchSpaceError(f"depth {depth} is outside 1..{self.max_layers}.")
        if self.layer_selection == "first":
            return list(range(depth))
        return [round((i + 1) * self.max_layers / depth) - 1 for i in range(depth)]

    # --- members ---------------------------------------------------------------------------------------------
    def largest(self) -> SubTransformer:
        return SubTransformer(self.hidden[0], (self.heads[0],) * self.depth[0], (self.ffn[0],) * self.depth[0])

    def smallest(self) -> SubTransformer:
        return SubTransformer(self.hidden[-1], (self.heads[-1],) * self.depth[-1], (self.ffn[-1],) * self.depth[-1])

    def uniform(self, depth: int, hidden: int | None = None, heads: int | None = None,
                ffn: int | None = None) -> SubTransformer:
        """A hand-picked SubTransformer with the same width in every layer (full width unless given)."""
        sub = SubTransformer(hidden or self.hidden[0], (heads or self.heads[0],) * depth, (ffn or self.ffn[0],) * depth)
        self.check(sub)
        return sub

    def size(self) -> int:
        """How many distinct SubTransformers the space holds."""
        per_layer = len(self.heads) * len(self.ffn)
        return len(self.hidden) * sum(per_layer ** d for d in self.depth)

    # --- the genetic encoding (HAT) ------------------------------------------------------------------------------
    def encode(self, sub: SubTransformer) -> Gene:
        self.check(sub)
        pad = self.max_layers - sub.depth  # genes of unused layers: any valid value; they are never read
        return (sub.hidden, sub.depth, *sub.heads, *(self.heads[0],) * pad, *sub.ffn, *(self.ffn[0],) * pad)

    def decode(self, gene: Gene) -> SubTransformer:
        hidden, depth, L = gene[0], gene[1], self.max_layers
        return SubTransformer(hidden, gene[2:2 + depth], gene[2 + L:2 + L + depth])

    def _choices(self, position: int) -> list[int]:
        if position == 0:
            return self.hidden
        if position == 1:
            return self.depth
        return self.heads if position < 2 + self.max_layers else self.ffn

    def random_gene(self, rng: random.Random) -> Gene:
        return tuple(rng.choice(self._choices(i)) for i in range(2 + 2 * self.max_layers))

    def sample(self, rng: random.Random) -> SubTransformer:
        return self.decode(self.random_gene(rng))

    def mutate(self, gene: Gene, rng: random.Random, probability: float) -> Gene:
        """HAT's mutation: each gene is redrawn from its choices with `probability`."""
        return tuple(rng.choice(self._choices(i)) if rng.random() < probability else g for i, g in enumerate(gene))

    @staticmethod
    def crossover(a: Gene, b: Gene, rng: random.Random) -> Gene:
        """HAT's crossover: each gene taken from either parent with equal chance."""
        return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))

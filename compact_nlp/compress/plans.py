"""The plans `compact compress` may run: a depth for the student (layers kept, spread over the original's) and at most
one option of each registered technique that offers some (compact_nlp.registry.PlanOption). The planner never names
a technique: it only combines what the registry offers, with the rules each option carries (`min_layers`).

A plan's attempts are the plan itself, then its escalations at the same latency and size, cheapest first: each
technique option's own escalation (e.g. QAT after PTQ), then the student distilled twice as long.

An option that searches (PlanOption.latency_share: HAT's search under a latency budget) picks its own depth, so it is
planned at the full depth only; it trains by its own settings, so a plan's `training` escalation lengthens the first
step after it, never the search.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from ..registry import PlanOption, techniques

DEPTH_FRACTIONS = (1.0, 5 / 6, 2 / 3, 1 / 2, 1 / 3)  # the student depths tried, as fractions of the original's
# Prior cost of depth, points per removed fraction of the layers: distilling MiniLM's 6 layers into 3 cost 2.4 points
# on SST-2 (87.61 -> 85.23, docs/results.md "Distillation"). Like PlanOption.expected_drop it only orders plans.
DEPTH_DROP = 4.8


def student_layers(original: int, depth: int) -> list[int] | None:
    """The `depth` layers a student keeps, spread evenly and ending at the last one (6 -> 3: [1, 3, 5]); None keeps
    them all."""
    if depth >= original:
        return None
    return [round((i + 1) * original / depth) - 1 for i in range(depth)]


@dataclass
class Plan:
    """A depth and one option per technique (by technique name, registry order); `training` multiplies the
    student step's epochs (an escalation)."""

    original_layers: int
    layers: int
    options: dict[str, PlanOption] = field(default_factory=dict)
    training: float = 1.0
    predicted_ms: float | None = None  # measured on an untrained model of this shape, in the form that ships
    predicted_size_mb: float | None = None
    shape: str | None = None  # set on the plan all_plans made; its escalations inherit it (their shape is the same)

    @property
    def shape_key(self) -> str:
        """What decides latency and size: the depth and each option's section (not how long it trains); an
        escalation keeps the key of the plan it escalates."""
        if self.shape is not None:
            return self.shape
        parts = [f"L{self.layers}"] + [f"{name}={option.section}" for name, option in self.options.items()]
        return "|".join(parts)

    @property
    def label(self) -> str:
        longer = "" if self.training == 1 else f"distilled {self.training:g}x"
        parts = ([longer] if longer else []) if self.searched else [  # a search picks its own depth
            f"{self.layers} of {self.original_layers} layers" + (f", {longer}" if longer else "")]
        return ", ".join(parts + [option.label for option in self.options.values()])

    @property
    def slug(self) -> str:
        text = self.label.lower()
        return "".join(c if c.isalnum() or c == "." else "-" for c in text).strip("-").replace("--", "-")[:80]

    @property
    def expected_drop(self) -> float:
        return DEPTH_DROP * (1 - self.layers / self.original_layers) + sum(
            option.expected_drop for option in self.options.values())

    @property
    def searched(self) -> bool:
        """Whether an option searches the shape: its latency is predicted from the search's budget, its size is not
        known before the search."""
        return any(option.searches for option in self.options.values())

    @property
    def cost_share(self) -> float:
        """What a training example of the plan's model costs, as a share of the full model's: its share of the
        layers, times the latency share a search keeps (a searched model is as much cheaper to train as to run)."""
        share = self.layers / self.original_layers
        for option in self.options.values():
            share *= option.latency_share if option.searches else 1.0
        return share

    @property
    def changes_structure(self) -> bool:
        """Whether the plan has a student step that its `training` lengthens: fewer layers, an option that trains
        before the last one (a search aside: it trains by its own settings), or a search that says how to lengthen
        its training (PlanOption.lengthen_key)."""
        return self.layers < self.original_layers or any(o.trains and not o.searches
                                                         for o in list(self.options.values())[:-1]) \
            or any(o.searches and o.lengthen_key for o in self.options.values())

    def at_least_as_lossy_as(self, other: Plan) -> bool:
        """Whether this plan takes at least as much away as `other` in every part: no more layers, and each
        technique's option at least as lossy by its prior (PlanOption.expected_drop; no option is lossless). Its
        ladder of escalations is then expected to lose at least as much as the other's."""
        if self.layers > other.layers:
            return False
        return all(_prior(self, name) >= _prior(other, name) for name in {*self.options, *other.options})

    def to_dict(self) -> dict:
        return {"label": self.label, "layers": self.layers, "training": self.training,
                "options": {name: {"label": o.label, "section": o.section} for name, o in self.options.items()},
                "predicted_ms": self.predicted_ms, "predicted_size_mb": self.predicted_size_mb,
                "expected_drop": round(self.expected_drop, 2), "searched": self.searched}


def _prior(plan: Plan, technique: str) -> float:
    option = plan.options.get(technique)
    return 0.0 if option is None else option.expected_drop


def depths(original: int) -> list[int]:
    return sorted({max(1, round(original * f)) for f in DEPTH_FRACTIONS}, reverse=True)


def all_plans(original_layers: int) -> list[Plan]:
    """Every depth x every combination of at most one option per technique, less those an option's rule forbids
    (`min_layers`; a search, which picks its own depth, at the full depth only) and the original itself."""
    offered = [(t.name, [None, *t.plan_options()]) for t in techniques() if t.plan_options()]
    plans = []
    for depth in depths(original_layers):
        for choice in itertools.product(*[options for _, options in offered]):
            chosen = {name: option for (name, _), option in zip(offered, choice) if option is not None}
            allowed = all(_fewest_layers(depth, chosen) >= o.min_layers and (depth == original_layers or
                                                                             not o.searches) for o in chosen.values())
            if (depth < original_layers or chosen) and allowed:
                plan = Plan(original_layers, depth, chosen)
                plans.append(replace(plan, shape=plan.shape_key))
    return plans


def _fewest_layers(depth: int, options: dict[str, PlanOption]) -> int:
    """The fewest layers the plan's model may have: its depth, or what a search in it may keep."""
    return min([depth] + [o.shallowest(depth) for o in options.values() if o.searches and o.shallowest])


def escalations(plan: Plan) -> list[Plan]:
    """The plan, then each costlier try at the same shape: every option's escalation in turn (kept once taken), then
    a student step twice as long when the plan has one."""
    tries, current = [plan], plan
    for name, option in plan.options.items():
        step = option.escalation
        while step is not None:
            current = replace(current, options={**current.options, name: step})
            tries.append(current)
            step = step.escalation
    if plan.changes_structure:
        tries.append(replace(current, training=2.0 * current.training))
    return tries


__all__ = ["Plan", "all_plans", "depths", "escalations", "student_layers"]

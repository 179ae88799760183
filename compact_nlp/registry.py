"""The technique registry: each technique registers one `Technique` object, and the pipeline (recipes, `compact run`,
the combined pipeline, cards) iterates the registry instead of naming techniques.

A technique owns one recipe section (`Technique.name`, e.g. `quant:`), and says what it does at each step:

    config(section)                  -> its typed config, validated (a bad section is a ValueError naming the fix)
    check(config, recipe)            -> cross-section checks against the rest of the recipe
    prepare(model, config, context)  -> Prepared(model, hooks): make the model trainable its way before training
    exporter(config, context)        -> exporter(model, folder) -> report, when it ships its own files
    card_line(result)                -> its sentence in the model card ("", when it did nothing)
    facts(model, config)             -> what results.json records about it
    plan_options()                   -> the ways `compact compress` may use it (PlanOption), gentlest first

A technique that produces a model on its own, before the others train (HAT's search), sets `standalone = True` and
implements `run_standalone`; `compact run` runs it first and trains the others from what it returns.

Built-in techniques register through the `compact_nlp.techniques` entry point group (pyproject.toml), so a package
outside compact registers the same way; `register()` does it in code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "compact_nlp.techniques"


@dataclass
class Prepared:
    """A model made ready to train by a technique, and the CompactTrainer hooks it trains with."""

    model: object
    hooks: list = field(default_factory=list)


@dataclass
class TrainContext:
    """What a technique may use to prepare: the tokenizer, the tokenized training rows, their raw text."""

    tokenizer: object
    train_features: object  # datasets.Dataset of input_ids, attention_mask, ... (never held-out or dev)
    train_texts: list  # strings, or (a, b) pairs for sentence-pair tasks


@dataclass
class ExportContext:
    """What a technique's export step may use."""

    tokenizer: object
    texts: list  # a few hundred training examples: calibration and parity checks
    vocabulary_texts: list | None  # every training example, when the vocabulary is trimmed to it
    max_length: int
    mobile: bool
    target_platform: str
    fuse_attention: bool


@dataclass
class StandaloneResult:
    """What a standalone technique produced: the fp32 model the next steps start from, its summary for the run's
    results, the facts each final result carries about it (for the card), and lines to print."""

    model_dir: str
    summary: dict
    facts: dict = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    results_file: str | None = None


@dataclass
class PlanOption:
    """One way a technique can take part in a `compact compress` plan (compact_nlp.compress): the recipe section it
    trains with, and what the planner must know to order and check plans without naming the technique.

    The planner measures each plan's latency and size on an untrained model of the plan's shape (weights do not
    change either); `expected_drop` only orders plans that are predicted to meet the goal (the held-out split then
    decides), and `escalation` is what to try next when the held-out drop is too large."""

    label: str  # for reports, e.g. "int8 PTQ", "tokens kept 0.5"
    section: dict  # the technique's recipe section
    stage: dict = field(default_factory=dict)  # protocol/distillation overrides of the step that trains it
    expected_drop: float = 0.0  # points of the main metric, a prior from measured runs (docs/results.md)
    min_layers: int = 0  # a rule learned from earlier runs: the option needs at least this many layers
    trains: bool = True  # False: post-training (no training step of its own)
    train_factor: float = 1.0  # its training step runs this many times the planner's epochs (an escalation: 2.0)
    escalation: PlanOption | None = None  # the costlier try at the same latency and size (e.g. QAT after PTQ)
    # it trains from a finished model, in a step of its own, never in a student's step: QAT with its PTQ fallback,
    # which quantizes the model it starts from (so the student an earlier PTQ attempt trained is reused)
    own_step: bool = False
    # A search (a standalone technique) picks its own depth and widths under a latency budget: the planner pairs it
    # with the full depth only, predicts its latency as this share of the model it starts from (the budget it
    # searches under) instead of timing a proxy, and cannot predict its size before the search has run.
    latency_share: float | None = None
    shallowest: Callable[[int], int] | None = None  # a search: the fewest layers it may keep, of a model's layers
    late_keys: tuple[str, ...] = ()  # section keys only its last stages read: options differing there share the rest
    fixed_examples: int = 0  # training examples its own stages take whatever the data's size (a SuperTransformer's)
    fixed_seconds: float = 0.0  # its work that is not training (latency measurements, the search itself)
    # the section key that seeds its shared work (a search's SuperTransformer, hence the architecture it picks): the
    # planner sets it to the job's first seed, so every seed's attempt shares that work and differs in what follows
    seed_key: str | None = None
    # the section key of its own training length, present in `section` (a search's distillation of the model it
    # found, read by its last stages, so also a late key): an escalation that trains twice as long doubles it, and
    # the search is reused
    lengthen_key: str | None = None

    @property
    def searches(self) -> bool:
        return self.latency_share is not None


class Technique:
    """The base a technique subclasses; each method's default does nothing, so a technique implements its steps."""

    name: str = ""  # the recipe section
    order: int = 100  # prepare order among the techniques of one run (lower first)
    standalone: bool = False  # produces a model on its own before the others train (a search)
    description: str = ""

    def config(self, section: dict):
        return section or None

    def check(self, config, recipe) -> None:
        return None

    def prepare(self, model, config, context: TrainContext) -> Prepared:
        return Prepared(model, [])

    def exporter(self, config, context: ExportContext):
        return None

    def wants_training_texts(self, config) -> bool:
        return False

    def card_line(self, result: dict) -> str:
        return ""

    def facts(self, model, config) -> dict:
        return {}

    def plan_options(self) -> list[PlanOption]:
        """The ways `compact compress` may use this technique, gentlest first (none: compress leaves it out)."""
        return []

    def add_commands(self, subparsers) -> None:
        """Add the technique's own `compact` subcommands (argparse subparsers; set `func` on each)."""
        return None

    def run_standalone(self, recipe, config, data, out, glue_dir: str | None = None) -> StandaloneResult:
        """Produce a model from `recipe.model` on `data` (compact_nlp.data.TaskData) into `out`."""
        raise NotImplementedError(f"{self.name} is not a standalone technique.")


_REGISTRY: dict[str, Technique] = {}
_LOADED = False


def register(technique: Technique) -> Technique:
    """Add a technique (an instance); its recipe section becomes valid in every recipe."""
    if not technique.name or not technique.name.isidentifier():
        raise ValueError(f"a technique needs a recipe section name that is an identifier, got {technique.name!r}.")
    _REGISTRY[technique.name] = technique
    return technique


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load_entry_points() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        technique = entry.load()
        if technique.name not in _REGISTRY:
            register(technique)


def techniques() -> list[Technique]:
    """Every registered technique, in prepare order."""
    _load_entry_points()
    return sorted(_REGISTRY.values(), key=lambda t: (t.order, t.name))


def technique(name: str) -> Technique:
    _load_entry_points()
    if name not in _REGISTRY:
        raise KeyError(f"no technique {name!r}; registered: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def section_names() -> tuple[str, ...]:
    return tuple(t.name for t in techniques())


def card_lines(result: dict) -> list[str]:
    """What each registered technique did to a shipped model, in its own words, for the card (from the run's
    result for that model)."""
    return [line for t in techniques() if (line := t.card_line(result))]

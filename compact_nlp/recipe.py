"""Recipes: what `compact run` does, as YAML, validated before anything trains.

    task: mrpc                          # a GLUE task by name, or a data: section (your files):
    data: {train: reviews.csv, validation: null, text: review, label: sentiment, problem_type: null}
    model: sentence-transformers/all-MiniLM-L6-v2
    protocol: {train_subset: null, heldout: 0.1, epochs: 3, max_length: 128, batch_size: 32,
               learning_rate: 5.0e-5, warmup: 0.1, weight_decay: 0.01, seeds: [1, 2, 3]}
    student_layers: null                # keep only these pretrained layers (a shallower student), e.g. [1, 3, 5]
    teacher: null                       # a fine-tuned model folder to distil from
    distillation: {}                    # DistillationConfig fields
    export: {mobile: true, target_platform: arm, fuse_attention: true}   # fuse_attention: false for NNAPI/CoreML
    stages: null                        # a standalone technique (a search) followed by others is the combined
                                        # pipeline (compact_nlp.combined); stages overrides its steps' settings
    <technique>: null                   # one section per registered technique (compact_nlp.registry), e.g.
                                        # hat, token_pruning, quant (docs/hat.md, token_pruning.md, quant.md)

Presets (`--preset NAME`, recipes/presets/NAME.yaml, or a path to a YAML file) are partial recipes merged over the
recipe in order, e.g. `smoke` (a minutes-long check that a recipe runs) or `int8-qat` (quantization-aware training
from a fine-tuned fp32 model). `--set protocol.epochs=1 --set protocol.seeds=[7]` then overrides any key (values
are parsed as YAML).
docs/protocol.md explains the protocol's numbers.
"""

from __future__ import annotations

import copy
import importlib.resources
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from .augment import augmented_copies
from .data import PROBLEM_TYPES
from .distill import DistillationConfig
from .distributed import DeviceError, uses_cuda
from .glue import GlueDataError, get_task
from .protocol import Protocol
from .registry import section_names, techniques

# the recipes and presets ship inside the package (compact_nlp.recipes, from the repo's recipes/ folder), so an
# installed wheel has them as a checkout does
RECIPES_DIR = Path(str(importlib.resources.files("compact_nlp.recipes")))
DEFAULT_RECIPE = "default"  # recipes/default.yaml: the baseline protocol for your own data
STAGE_KEYS = ("protocol", "distillation", "transfer")  # what a combined step may change; techniques stay the recipe's


class RecipeError(ValueError):
    pass


@dataclass
class Export:
    mobile: bool = True
    target_platform: str = "arm"
    # each layer's attention as one MultiHeadAttention node (compact_nlp/export/attention.py): faster on ONNX Runtime's
    # CPU provider; false keeps the plain ops NNAPI/CoreML run. HAT measures latency in the same form.
    fuse_attention: bool = True


@dataclass
class DataSection:
    """The recipe's own data (compact_nlp.data.load_task_data): files, a saved dataset folder or a hub id."""

    train: str
    validation: str | None = None  # carved from train (10%, seeded) when absent
    test: str | None = None  # scored with validation when it has labels
    text: str | list[str] | None = None  # one column, or two for sentence pairs; inferred when absent
    label: str | None = None  # inferred from common names (label, labels, target, ...) when absent
    problem_type: str | None = None  # inferred: text/integer labels -> classification, fractions -> regression
    name: str | None = None  # folder and card name; default: the train file's stem


@dataclass
class Recipe:
    task: str | None = None  # a GLUE task by name (its data from --glue-dir or the hub); or give `data`
    data: DataSection | None = None
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    protocol: Protocol = field(default_factory=Protocol)
    student_layers: list[int] | None = None  # pretrained layers the student keeps (e.g. [1, 3, 5]); None = all
    teacher: str | None = None
    distillation: dict = field(default_factory=dict)
    # TinyBERT's transfer set: unlabelled text the teacher labels, added to the training data (needs a teacher).
    # "swapped": every training pair with its sentences swapped (pair tasks); "rest_of_train": the task's training
    # rows outside train_subset; a GLUE task name: that task's training text (same number of sentences per example);
    # "augmented" / "augmented:N": N (default 2) perturbed copies of the training rows (compact_nlp.augment)
    transfer: list[str] | None = None
    export: Export = field(default_factory=Export)
    # the combined pipeline (a standalone technique such as hat, then the others, compact_nlp.combined): per-step
    # protocol and distillation overrides, e.g. {quant: {protocol: {epochs: 1, learning_rate: 2.0e-5}}}
    stages: dict | None = None
    sections: dict = field(default_factory=dict)  # technique name -> its section (top-level keys in the YAML)

    def __getattr__(self, name):  # recipe.quant, recipe.hat, ...: a registered technique's section, or None
        if name.startswith("__") or name not in section_names():
            raise AttributeError(name)
        return self.__dict__.get("sections", {}).get(name)

    def techniques(self, every: bool = False) -> list:
        """The registered techniques this recipe trains with (its sections, standalone ones aside), in prepare
        order; with `every`, all registered techniques."""
        return [t for t in techniques() if every or (self.sections.get(t.name) and not t.standalone)]

    def standalone_techniques(self) -> list:
        return [t for t in techniques() if t.standalone and self.sections.get(t.name)]

    def technique_sections(self) -> dict:
        return {t.name: self.sections.get(t.name) for t in techniques()}

    def standalone_sections(self) -> dict:
        return {t.name: self.sections[t.name] for t in self.standalone_techniques()}

    def technique_configs(self) -> dict:
        """Technique name -> its validated config, for the techniques this recipe trains with."""
        return {t.name: t.config(self.sections[t.name]) for t in self.techniques()}

    def validate(self) -> None:
        if (self.task is None) == (self.data is None):
            raise RecipeError("a recipe names its data once: `task:` (a GLUE task) or a `data:` section (your files; "
                              "on the command line --train FILE), not " + ("both." if self.task else "neither."))
        if self.task is not None:
            get_task(self.task)
        if self.data is not None and self.data.problem_type not in (None, *PROBLEM_TYPES):
            raise RecipeError(f"data.problem_type must be one of {', '.join(PROBLEM_TYPES)}, got "
                              f"{self.data.problem_type!r}.")
        _validate_protocol(self.protocol)
        if self.export.target_platform not in ("arm", "amd64"):
            raise RecipeError(f"export.target_platform must be arm or amd64, got {self.export.target_platform!r}.")
        if self.student_layers is not None and (not self.student_layers or min(self.student_layers) < 0
                                                or len(set(self.student_layers)) != len(self.student_layers)):
            raise RecipeError(f"student_layers must list distinct layer indices >= 0, got {self.student_layers}.")
        self._validate_transfer()
        if self.distillation and not self.teacher:
            raise RecipeError("distillation settings need a teacher: set teacher to a fine-tuned model folder.")
        DistillationConfig.from_dict(self.distillation)
        self._validate_techniques()

    def _validate_techniques(self) -> None:
        for technique in techniques():
            section = self.sections.get(technique.name)
            if not section:
                continue
            try:
                technique.check(technique.config(section), self)
            except RecipeError:
                raise
            except ValueError as error:
                raise RecipeError(f"{technique.name}: {error}") from None
        if self.stages and not self.standalone_techniques():
            raise RecipeError("stages configures the steps of the combined pipeline, which starts with a standalone "
                              f"technique ({', '.join(t.name for t in techniques() if t.standalone)}). Drop stages, "
                              "or add one (e.g. --preset combined).")
        if self.standalone_techniques() and self.techniques():
            self._validate_stages()

    def _validate_stages(self) -> None:
        steps = [t.name for t in self.techniques()]
        for name, body in (self.stages or {}).items():
            if name not in steps:
                raise RecipeError(f"stages.{name}: the steps this recipe runs after "
                                  f"{self.standalone_techniques()[0].name} are {steps}.")
            unknown = sorted(set(body or {}) - set(STAGE_KEYS))
            if unknown:
                raise RecipeError(f"stages.{name} sets {unknown}; a step may only change {list(STAGE_KEYS)}.")
        for name in steps:
            try:
                self.stage(name, self.model)
            except RecipeError as error:
                raise RecipeError(f"stages.{name}: {error}") from None

    def stage(self, name: str, model: str) -> Recipe:
        """The plain `compact run` recipe of combined step `name`: this recipe's protocol, teacher and distillation
        with the step's overrides, that technique's section only, starting from `model`."""
        data = self.to_dict()
        for other in section_names():
            data[other] = self.sections.get(other) if other == name else None
        data.update(model=model, stages=None)
        data = merge(data, (self.stages or {}).get(name) or {})
        if data["protocol"].get("split_seed") is None:  # the searched model trained on the first seed's split
            data["protocol"]["split_seed"] = self.protocol.seeds[0]
        built = _build(Recipe, data, "")
        built.validate()
        return built

    def standalone_only(self) -> Recipe:
        """This recipe without the techniques that train after the standalone one (the search step's recipe)."""
        data = self.to_dict()
        for technique in self.techniques():
            data[technique.name] = None
        data["stages"] = None
        return _build(Recipe, data, "")

    def _validate_transfer(self) -> None:
        if not self.transfer:
            return
        if not self.teacher:
            raise RecipeError("transfer needs a teacher: its examples have no labels, the teacher's logits are the "
                              "only signal. Set teacher, or drop transfer.")
        task = get_task(self.task) if self.task else None  # own data: its columns are checked when it is loaded
        for source in self.transfer:
            try:
                if augmented_copies(source) is not None:
                    continue
            except ValueError as error:
                raise RecipeError(str(error)) from None
            if source == "swapped":
                if task is not None and len(task.text_columns) != 2:
                    raise RecipeError(f"transfer 'swapped' swaps the two sentences of a pair; {task.name} has one.")
            elif source == "rest_of_train":
                if self.protocol.train_subset is None:
                    raise RecipeError("transfer 'rest_of_train' is the training rows outside protocol.train_subset; "
                                      "this recipe trains on all of them. Set train_subset, or drop it.")
            else:
                try:
                    other = get_task(source)
                except GlueDataError as error:
                    raise RecipeError(f"transfer source {source!r} is not 'swapped', 'rest_of_train', 'augmented[:N]' "
                                      f"or a GLUE task: {error}") from None
                if task is not None and (other.name == task.name or len(other.text_columns) != len(task.text_columns)):
                    raise RecipeError(f"transfer task {source!r} must be another task with "
                                      f"{len(task.text_columns)} sentence(s) per example, like {task.name}.")

    def to_dict(self) -> dict:
        """Plain data, the technique sections as top-level keys (as the YAML has them)."""
        data = asdict(self)
        sections = data.pop("sections")
        return {**data, **{name: sections.get(name) for name in section_names()}}


def _validate_protocol(p: Protocol) -> None:
    if p.train_subset is not None and p.train_subset <= 0:
        raise RecipeError(f"protocol.train_subset must be positive or null, got {p.train_subset}.")
    if not (0 < p.heldout < 1 or (isinstance(p.heldout, int) and p.heldout >= 1)):
        raise RecipeError(f"protocol.heldout must be a fraction in (0, 1) or a count >= 1, got {p.heldout}.")
    for name in ("epochs", "max_length", "batch_size", "learning_rate"):
        if getattr(p, name) <= 0:
            raise RecipeError(f"protocol.{name} must be positive, got {getattr(p, name)}.")
    if not p.seeds or len(set(p.seeds)) != len(p.seeds):
        raise RecipeError(f"protocol.seeds must be a non-empty list of distinct integers, got {p.seeds}.")
    if p.steps is not None and p.steps <= 0:
        raise RecipeError(f"protocol.steps must be positive or null, got {p.steps}.")
    try:  # an unknown device, or cuda without a GPU, is refused before anything loads
        uses_cuda(p.device)
    except DeviceError as error:
        raise RecipeError(f"protocol.{error}") from None


def _build(cls, data, where: str):
    """Construct a recipe dataclass from plain data, rejecting unknown keys and wrong types with their path; a
    Recipe's registered technique sections go to `sections`."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where.rstrip('.') or 'the recipe'} must be a mapping, got {type(data).__name__}.")
    known = {f.name: f for f in fields(cls) if f.name != "sections"}
    sections = {name: data[name] for name in section_names() if name in data} if cls is Recipe else {}
    unknown = sorted(set(data) - set(known) - set(sections))
    if unknown:
        raise RecipeError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(where + k for k in unknown)}; "
                          f"{where or 'top-level '}keys are: {', '.join([*known, *section_names()] if cls is Recipe else known)}.")
    values = {"sections": {k: v for k, v in sections.items() if v}} if cls is Recipe else {}
    for name, value in data.items():
        if name in sections:
            if value is not None and not isinstance(value, dict):
                raise RecipeError(f"{name} must be a mapping (the technique's settings) or null, got {value!r}.")
            continue
        nested = {"protocol": Protocol, "export": Export, "data": DataSection}.get(name) if cls is Recipe else None
        if nested is DataSection and value is None:  # `data: null` in a GLUE recipe
            values[name] = None
            continue
        values[name] = _build(nested, value, f"{name}.") if nested else _check_type(value, known[name], where + name)
    try:
        return cls(**values)
    except TypeError as error:
        raise RecipeError(f"{where.rstrip('.') or 'the recipe'} is incomplete: {error}.") from None


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,),
          "list[int]": (list,), "list[str]": (list,)}


def _check_type(value, spec, path: str):
    annotation = str(spec.type).replace(" ", "")
    allowed = annotation.split("|")
    if value is None:
        if "None" in allowed:
            return None
        raise RecipeError(f"{path} must not be null.")
    for part in allowed:
        types = _TYPES.get(part)
        if types and isinstance(value, types) and not (part != "bool" and isinstance(value, bool)):
            if part == "list[int]" and not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                continue
            return float(value) if part == "float" and "int" not in allowed else value
    raise RecipeError(f"{path} must be {' or '.join(allowed)}, got {value!r} ({type(value).__name__}).")


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where `1e-4` (no dot) is a string; users write learning rates that way, so floats
    follow YAML 1.2 here."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."))


def _parse_yaml(text: str):
    return yaml.load(text, Loader=_RecipeLoader)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`key.sub=value` strings (values parsed as YAML) applied to a copy of the recipe data."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item!r} must look like key=value, e.g. protocol.epochs=1.")
        key, raw = item.split("=", 1)
        target, parts = data, key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise RecipeError(f"--set {key}: {part} is not a section.")
        target[parts[-1]] = _parse_yaml(raw)
    return data


def _read_yaml(path: Path) -> dict:
    try:
        data = _parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path} must hold a mapping of recipe keys, got {type(data).__name__}.")
    return data


def available_presets() -> list[str]:
    return sorted(p.stem for p in (RECIPES_DIR / "presets").glob("*.yaml"))


def preset_path(name: str) -> Path:
    """A preset name (recipes/presets/NAME.yaml) or a path to a YAML file."""
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
    else:
        path = RECIPES_DIR / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise RecipeError(f"unknown preset {name!r}; the presets are: {', '.join(available_presets())} "
                          "(or give a path to a YAML file).")
    return path


# merged key by key (a preset's stages.quant keeps the recipe's stages.token_pruning); other mappings (distillation,
# the technique sections) are replaced whole
_SECTIONS = ("protocol", "export", "stages")


def merge(base: dict, update: dict) -> dict:
    """`update` over `base`, section by section (a preset's protocol.epochs keeps the recipe's other protocol keys)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key in _SECTIONS:
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def recipe_path(name: str | os.PathLike) -> Path:
    """A recipe file, or a recipe shipped with compact by name: "default" (your own data), "glue/sst2", "sst2"."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (RECIPES_DIR / f"{name}.yaml", RECIPES_DIR / "glue" / f"{name}.yaml"):
        if not str(name).endswith((".yaml", ".yml")) and candidate.is_file():
            return candidate
    raise RecipeError(f"recipe {name} does not exist; give a YAML file, or a shipped recipe: default, "
                      f"{', '.join('glue/' + p.stem for p in sorted((RECIPES_DIR / 'glue').glob('*.yaml')))}.")


def load_recipe(path: str | os.PathLike, overrides: list[str] = (), presets: list[str] = (),
                data: dict | None = None) -> Recipe:
    """The recipe at `path` (or shipped by that name), with `presets` merged over it, then `data` (a data section
    given on the command line, which replaces a GLUE task), then the `--set` overrides."""
    data_section = data
    data = _read_yaml(recipe_path(path))
    for name in presets:
        data = merge(data, _read_yaml(preset_path(name)))
    if data_section is not None:
        data = {**data, "task": None, "data": data_section}
    recipe = _build(Recipe, apply_overrides(data, list(overrides)), "")
    recipe.validate()
    return recipe

"""Recipes: one YAML per GLUE task, the baseline protocol's settings, validated before anything trains.

    task: mrpc
    model: sentence-transformers/all-MiniLM-L6-v2
    protocol: {train_subset: null, heldout: 0.1, epochs: 3, max_length: 128, batch_size: 32,
               learning_rate: 5.0e-5, warmup: 0.1, weight_decay: 0.01, seeds: [1, 2, 3]}
    student_layers: null                # keep only these pretrained layers (a shallower student), e.g. [1, 3, 5]
    teacher: null                       # a fine-tuned model folder to distil from
    distillation: {}                    # DistillationConfig fields
    export: {mobile: true, target_platform: arm, fuse_attention: true}   # fuse_attention: false for NNAPI/CoreML
    hat: null                           # HatConfig fields (docs/hat.md); alone: compact search
    token_pruning: null                 # TokenPruningConfig fields, e.g. {keep_ratio: 0.45} (docs/token_pruning.md)
    quant: null                         # {int8: Int8Config fields} or {binary: BinaryConfig fields} (docs/quant.md)
    stages: null                        # hat with token_pruning and/or quant is the combined pipeline
                                        # (compact_nlp.combined); stages overrides its steps' protocol/distillation

Presets (`--preset NAME`, recipes/presets/NAME.yaml, or a path to a YAML file) are partial recipes merged over the
recipe in order, e.g. `smoke` (a minutes-long check that a recipe runs) or `int8-qat` (quantization-aware training
from a fine-tuned fp32 model). `--set protocol.epochs=1 --set protocol.seeds=[7]` then overrides any key (values
are parsed as YAML).
docs/protocol.md explains the protocol's numbers.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from .augment import augmented_copies
from .distill import DistillationConfig
from .glue import GlueDataError, get_task


RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


class RecipeError(ValueError):
    pass


@dataclass
class Protocol:
    train_subset: int | None = None  # seeded subset of train (before the held-out split); None = all of it
    heldout: float | int = 0.1  # fraction or count carved from train for model selection
    epochs: float = 3.0
    max_length: int = 128
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup: float = 0.1  # fraction of the steps
    weight_decay: float = 0.01
    seeds: list[int] = field(default_factory=lambda: [42])
    steps: int | None = None  # optimizer steps; overrides epochs (to give two arms the same steps on different data)
    # the seed that draws train_subset and carves the held-out split; None: each run's seed. The combined pipeline
    # sets it to its first seed, whose split the search trained on once for every seed (compact_nlp.combined)
    split_seed: int | None = None
    # held-out rows whose text the model never learns from: whole texts (inside no other training row), and every
    # training row inside one of them dropped (SST-2 lists each sentence's phrases as rows; docs/protocol.md)
    heldout_unseen: bool = False


@dataclass
class Export:
    mobile: bool = True
    target_platform: str = "arm"
    # each layer's attention as one MultiHeadAttention node (compact_nlp/export/attention.py): faster on ONNX Runtime's
    # CPU provider; false keeps the plain ops NNAPI/CoreML run. HAT measures latency in the same form.
    fuse_attention: bool = True


@dataclass
class Recipe:
    task: str
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
    hat: dict | None = None
    token_pruning: dict | None = None
    quant: dict | None = None
    # the combined pipeline (hat with token_pruning and/or quant, compact_nlp.combined): per-step protocol and
    # distillation overrides, e.g. {quant: {protocol: {epochs: 1, learning_rate: 2.0e-5}}}
    stages: dict | None = None

    def validate(self) -> None:
        get_task(self.task)
        p = self.protocol
        if p.train_subset is not None and p.train_subset <= 0:
            raise RecipeError(f"protocol.train_subset must be positive or null, got {p.train_subset}.")
        if not (0 < p.heldout < 1 or (isinstance(p.heldout, int) and p.heldout >= 1)):
            raise RecipeError(f"protocol.heldout must be a fraction in (0, 1) or a count >= 1, got {p.heldout}.")
        for name in ("epochs", "max_length", "batch_size", "learning_rate"):
            if getattr(p, name) <= 0:
                raise RecipeError(f"protocol.{name} must be positive, got {getattr(p, name)}.")
        if not p.seeds or len(set(p.seeds)) != len(p.seeds):
            raise RecipeError(f"protocol.seeds must be a non-empty list of distinct integers, got {p.seeds}.")
        if self.export.target_platform not in ("arm", "amd64"):
            raise RecipeError(f"export.target_platform must be arm or amd64, got {self.export.target_platform!r}.")
        if self.student_layers is not None and (not self.student_layers or min(self.student_layers) < 0
                                                or len(set(self.student_layers)) != len(self.student_layers)):
            raise RecipeError(f"student_layers must list distinct layer indices >= 0, got {self.student_layers}.")
        if p.steps is not None and p.steps <= 0:
            raise RecipeError(f"protocol.steps must be positive or null, got {p.steps}.")
        self._validate_transfer()
        if self.distillation and not self.teacher:
            raise RecipeError("distillation settings need a teacher: set teacher to a fine-tuned model folder.")
        DistillationConfig.from_dict(self.distillation)
        if self.quant:
            from compact_nlp.quant.recipes import check_distillation, quant_config

            config = quant_config(self.quant)
            check_distillation(config, self.teacher, self.distillation)
            if getattr(config, "fallback_to_ptq", False) and not self.hat and (self.token_pruning
                                                                               or self.student_layers is not None):
                raise RecipeError(
                    "quant.int8.fallback_to_ptq quantizes the starting model as it is, but this recipe changes it "
                    "first (token_pruning / student_layers), so the fallback would ship an untrained model. Run those "
                    "first and quantize their output, or drop fallback_to_ptq (the combined pipeline does the former).")
        if self.token_pruning:
            from compact_nlp.token_pruning.recipes import token_pruning_config

            token_pruning_config(self.token_pruning)
        if self.hat:
            from compact_nlp.hat import HatConfig

            try:
                HatConfig.from_dict(self.hat)
            except ValueError as error:
                raise RecipeError(f"hat: {error}") from error
            if self.quant or self.token_pruning:
                self._validate_combined()
        elif self.stages:
            raise RecipeError("stages configures the steps of the combined pipeline, which needs a hat section "
                              "(with token_pruning and/or quant). Drop stages, or add hat (e.g. --preset combined).")

    def _validate_combined(self) -> None:
        from compact_nlp.combined import STAGE_KEYS, STAGE_NAMES, stage_recipe
        from compact_nlp.hat import HatConfig

        if not self.teacher:
            raise RecipeError("the combined pipeline distils every step from the fine-tuned full model: set teacher "
                              "to it (usually the same folder as model).")
        budgets = HatConfig.from_dict(self.hat).budgets
        if len(budgets) != 1:
            raise RecipeError(f"the combined pipeline ships one model, so hat.budgets takes one budget, got {budgets}; "
                              "e.g. --set hat.budgets=[0.5] (compact search compares several).")
        stages = self.stages or {}
        for name, body in stages.items():
            if name not in STAGE_NAMES or not getattr(self, name):
                raise RecipeError(f"stages.{name}: the steps this recipe runs after hat are "
                                  f"{[n for n in STAGE_NAMES if getattr(self, n)]}.")
            unknown = sorted(set(body or {}) - set(STAGE_KEYS))
            if unknown:
                raise RecipeError(f"stages.{name} sets {unknown}; a step may only change {list(STAGE_KEYS)}.")
        for name in STAGE_NAMES:
            if getattr(self, name):
                try:
                    stage_recipe(self, name, self.model)
                except RecipeError as error:
                    raise RecipeError(f"stages.{name}: {error}") from None

    def _validate_transfer(self) -> None:
        if not self.transfer:
            return
        if not self.teacher:
            raise RecipeError("transfer needs a teacher: its examples have no labels, the teacher's logits are the "
                              "only signal. Set teacher, or drop transfer.")
        task = get_task(self.task)
        for source in self.transfer:
            try:
                if augmented_copies(source) is not None:
                    continue
            except ValueError as error:
                raise RecipeError(str(error)) from None
            if source == "swapped":
                if len(task.text_columns) != 2:
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
                if other.name == task.name or len(other.text_columns) != len(task.text_columns):
                    raise RecipeError(f"transfer task {source!r} must be another task with "
                                      f"{len(task.text_columns)} sentence(s) per example, like {task.name}.")

    def to_dict(self) -> dict:
        return asdict(self)


def _build(cls, data, where: str):
    """Construct a recipe dataclass from plain data, rejecting unknown keys and wrong types with their path."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where.rstrip('.') or 'the recipe'} must be a mapping, got {type(data).__name__}.")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RecipeError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(where + k for k in unknown)}; "
                          f"{where or 'top-level '}keys are: {', '.join(known)}.")
    values = {}
    for name, value in data.items():
        nested = {"protocol": Protocol, "export": Export}.get(name) if cls is Recipe else None
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


def load_recipe(path: str | os.PathLike, overrides: list[str] = (), presets: list[str] = ()) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist; the GLUE recipes are in recipes/glue/.")
    data = _read_yaml(path)
    for name in presets:
        data = merge(data, _read_yaml(preset_path(name)))
    recipe = _build(Recipe, apply_overrides(data, list(overrides)), "")
    recipe.validate()
    return recipe

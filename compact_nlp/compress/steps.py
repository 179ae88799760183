"""Running one attempt of a plan: its steps, each a plain `compact run` (compact_nlp.run) distilled from the teacher,
or, for a post-training option with nothing trained before it, the technique's export of the teacher as it is.

Every step trains on the compress run's training rows and is measured on the planner's held-out rows (which the
step sees as its "validation" split: `compact run` carves its own epoch-selection split from the training rows),
so the user's validation and test splits are never read here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import AutoTokenizer

from ..auto import AutoCompactModelForSequenceClassification
from ..data import TaskData, task_texts
from ..distributed import everywhere
from ..io import write_json
from ..protocol import tokenize
from ..recipe import load_recipe
from ..registry import ExportContext, TrainContext, technique
from ..run import RESULTS_FILE, run_recipe
from ..ship import export_for_shipping, measure_shipped
from .plans import Plan, student_layers

WORK_DONE = "work_done.json"  # in a work folder once a search has run there
# the seed of the planner's held-out split and of the teacher; a job's seeds count up from it, and work shared
# between seeds (PlanOption.seed_key) is seeded with it
FIRST_SEED = 1

# the student step (fewer layers), distilled from the teacher's logits and hidden states at a learning rate a
# shallower student needs (docs/results.md "Distillation": SST-2 and MRPC students trained at 1e-4)
STUDENT_STAGE = {"protocol": {"learning_rate": 1.0e-4},
                 "distillation": {"temperature": 1.0, "task_weight": 1.0, "logits_weight": 1.0, "hidden_weight": 1.0}}


@dataclass
class Step:
    """One step of an attempt: the technique sections it trains with, the layers it keeps, its settings."""

    sections: dict = field(default_factory=dict)  # technique name -> recipe section
    layers: list[int] | None = None  # student_layers
    stage: dict = field(default_factory=dict)  # protocol / distillation overrides
    epochs_factor: float = 1.0
    trains: bool = True
    work: dict | None = None  # a search's section less its late keys: steps that share it share its costly stages
    work_shared_by_seeds: bool = False  # its work is seeded by FIRST_SEED, whatever the attempt's seed


def steps_of(plan: Plan) -> list[Step]:
    """The plan's steps, in registry order: the student step (when it has fewer layers) takes the first option that
    trains; every other option is a step of its own (a post-training one trains nothing), so that attempts which share
    their first steps share them on disk too (run_attempt)."""
    # plan.training goes to one step: the first, but a search only when it says how (PlanOption.lengthen_key)
    steps, lengthened = [], plan.layers < plan.original_layers
    if lengthened:
        steps.append(Step(layers=student_layers(plan.original_layers, plan.layers), stage=STUDENT_STAGE,
                          epochs_factor=plan.training))
    for name, option in plan.options.items():
        if option.trains and not option.own_step and steps and steps[-1].layers and not steps[-1].sections:
            steps[-1].sections[name] = option.section
            steps[-1].stage = _merge(steps[-1].stage, option.stage)  # the option's settings win over the student's
            steps[-1].epochs_factor *= option.train_factor
        else:
            here = not lengthened and (not option.searches or option.lengthen_key is not None)
            factor, lengthened = option.train_factor * (plan.training if here else 1.0), lengthened or here
            section = _seeded(_lengthened(option, plan.training) if here else option.section, option)
            work = {k: v for k, v in section.items() if k not in option.late_keys} if option.late_keys else None
            steps.append(Step({name: section}, None, option.stage, factor, option.trains, work,
                              option.seed_key is not None))
    return steps


def _lengthened(option, training: float) -> dict:
    """The option's section with its own length setting (a search's distillation) times `training`."""
    if option.lengthen_key is None or training == 1:
        return option.section
    return {**option.section, option.lengthen_key: option.section[option.lengthen_key] * training}


def _seeded(section: dict, option) -> dict:
    return {**section, option.seed_key: FIRST_SEED} if option.seed_key else section


def _merge(base: dict, update: dict) -> dict:
    merged = {key: dict(value) for key, value in base.items()}
    for key, value in update.items():
        merged[key] = {**merged.get(key, {}), **value} if key == "protocol" else dict(value)
    return merged


@dataclass
class Context:
    """What every attempt shares: the data as the steps see it, the teacher, the protocol the planner chose."""

    data: TaskData  # train: the rows the steps train on; validation: the planner's held-out rows
    teacher: str  # the fine-tuned model folder every step distils from
    max_length: int
    epochs: float  # of a step that trains, before its factor
    train_subset: int | None  # rows per step when the time budget cannot afford them all (stated in the report)
    target_platform: str = "arm"
    device: str = "auto"  # what the steps train on (compact_nlp.distributed.uses_cuda)

    def protocol(self, seed: int, stage: dict, factor: float) -> dict:
        protocol = {"heldout": 0.1, "epochs": self.epochs, "max_length": self.max_length, "batch_size": 32,
                    "learning_rate": 5.0e-5, "warmup": 0.1, "weight_decay": 0.01, "seeds": [seed],
                    "train_subset": self.train_subset, "device": self.device, **stage.get("protocol", {})}
        protocol["epochs"] = round(protocol["epochs"] * factor, 3)
        return protocol


def step_recipe(context: Context, step: Step, model: str, seed: int):
    """The `compact run` recipe of a step: the default recipe on the compress run's data, from `model`, distilled from
    the teacher, with the step's sections and settings."""
    overrides = [f"model={model}", f"teacher={context.teacher}",
                 f"protocol={json.dumps(context.protocol(seed, step.stage, step.epochs_factor))}",
                 f"distillation={json.dumps(step.stage.get('distillation', STUDENT_STAGE['distillation']))}",
                 f"student_layers={json.dumps(step.layers)}",
                 f"export={json.dumps({'mobile': True, 'target_platform': context.target_platform})}"]
    overrides += [f"{name}={json.dumps(section)}" for name, section in step.sections.items()]
    spec = context.data.spec
    return load_recipe("default", overrides, data={"train": spec.source, "name": spec.name})


def run_step(context: Context, step: Step, model: str, seed: int, out: Path) -> dict:
    """Run one step from `model` into `out` (resumable: a finished step is read back); returns its results in
    `compact run`'s layout (recipe, per_seed: held-out scores under "dev", latency beside the teacher's, size)."""
    if (out / RESULTS_FILE).is_file():
        return json.loads((out / RESULTS_FILE).read_text())
    recipe = step_recipe(context, step, model, seed)
    if _searches(step):
        result = _searched(context, step, recipe, seed, out)
    elif step.trains:  # every process trains it (accelerate launch); the main one exports and times it
        return everywhere(run_recipe, recipe, out, data=context.data)
    else:
        result = _post_training(context, step, model, seed, out)
    results = {"recipe": recipe.to_dict(), "per_seed": [result]}
    write_json(out / RESULTS_FILE, results)
    return results


def _searches(step: Step) -> bool:
    return any(technique(name).standalone for name in step.sections)


def _searched(context: Context, step: Step, recipe, seed: int, out: Path) -> dict:
    """A standalone option (a search) run from the step's model in its work folder (resumable there): the model it
    produces is exported as it is, in fp32 (the next step quantizes it, or it ships so), and measured on the held-out
    rows beside the teacher like any step's. A search runs in one process (its technique refuses more)."""
    (name, section), = step.sections.items()
    chosen = technique(name)
    working = out / name if step.work is None else work_folder(context, step, recipe.model, seed, out.parent)
    produced = chosen.run_standalone(recipe, chosen.config(section), context.data, working)
    write_json(working / WORK_DONE, {"done": section})  # its costly stages are on disk: the next search skips them
    for line in produced.lines:
        print(line, flush=True)
    spec, folder = context.data.spec, out / f"seed-{seed}" / "model"
    model = AutoCompactModelForSequenceClassification.from_pretrained(produced.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(produced.model_dir)
    report = export_for_shipping(model, tokenizer, folder, target_platform=context.target_platform)
    shipped = measure_shipped(folder, report, spec, context.data.dev(), context.max_length,
                              context.target_platform, original=context.teacher)
    return {"task": spec.name, "data": spec.to_dict(), "seed": seed, "model": recipe.model,
            "teacher": context.teacher, "train_examples": len(context.data.train), "transfer_examples": 0,
            "heldout_examples": len(context.data.splits["validation"]), **shipped, **produced.facts,
            name: produced.summary}


def _post_training(context: Context, step: Step, model_dir: str, seed: int, out: Path) -> dict:
    """A post-training option applied to `model_dir` as it is: the technique prepares and exports it (calibrating
    on training rows), and the export is measured on the held-out rows beside the teacher."""
    (name, section), = step.sections.items()
    spec, folder = context.data.spec, out / f"seed-{seed}" / "model"
    chosen = technique(name)
    config = chosen.config(section)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoCompactModelForSequenceClassification.from_pretrained(model_dir)
    train = context.data.train
    texts = task_texts(train, spec, getattr(config, "calibration_examples", 256))
    features = tokenize(train.select(range(min(256, len(train)))), tokenizer, spec, context.max_length)
    model = chosen.prepare(model, config, TrainContext(tokenizer, features, texts)).model
    export = ExportContext(tokenizer, texts, None, context.max_length, True, context.target_platform, True)
    report = export_for_shipping(model, tokenizer, folder, exporter=chosen.exporter(config, export))
    shipped = measure_shipped(folder, report, spec, context.data.dev(), context.max_length,
                              context.target_platform, original=context.teacher)
    # the shipped model is the one it starts from, trained on these rows (it only calibrates on them here)
    return {"task": spec.name, "data": spec.to_dict(), "seed": seed, "model": model_dir, "teacher": context.teacher,
            "train_examples": len(train), "transfer_examples": 0, "train_steps": 0,
            "heldout_examples": len(context.data.splits["validation"]), **shipped, **chosen.facts(model, config),
            "train_seconds": 0.0}


@dataclass
class AttemptRun:
    """What one attempt's steps produced: the folder that ships, and each step's results (`compact run` layout)."""

    model_dir: str
    steps: list

    @property
    def result(self) -> dict:
        """The last step's seed result (what ships), with what the earlier steps recorded about the model (their
        techniques' facts, for the card); the last step's own numbers win."""
        merged: dict = {}
        for step in self.steps:
            merged.update(step["per_seed"][0])
        return merged

    @property
    def recipe(self) -> dict:
        return self.steps[-1]["recipe"]


def step_key(context: Context, step: Step, model: str, seed: int) -> str:
    """A step's folder name: what it starts from and everything that decides its result, so that two attempts that
    begin with the same step (PTQ, then QAT, of one student) run it once."""
    described = {key: value for key, value in asdict(step).items()  # work follows from sections
                 if key not in ("work", "work_shared_by_seeds")}
    name = "-".join([*step.sections, "student" if step.layers else ""]).strip("-") or "step"
    return f"{name}-{_digest(context, described, model, seed)}"


def work_folder(context: Context, step: Step, model: str, seed: int, steps_folder: Path) -> Path:
    """Where a search step's technique works: shared by the steps whose sections differ only in late keys (a search
    at another budget reuses the SuperTransformer and latency measurements there)."""
    (name,) = step.sections
    seed = FIRST_SEED if step.work_shared_by_seeds else seed
    return steps_folder / f"{name}-work-{_digest(context, {'work': step.work, 'stage': step.stage}, model, seed)}"


def _digest(context: Context, step: dict, model: str, seed: int) -> str:
    settings = {"model": model, "seed": seed, "step": step, "epochs": context.epochs,
                "subset": context.train_subset, "max_length": context.max_length}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def finished_steps(context: Context, plan: Plan, seed: int, steps_folder: Path) -> tuple[int, set[str]]:
    """How many of `plan`'s first steps an earlier attempt has run already (run_attempt reads them back), and the
    options whose shared work (work_folder) an earlier attempt has done."""
    model, done, shared = context.teacher, 0, set()
    for step in steps_of(plan):
        if step.work is not None and (work_folder(context, step, model, seed, steps_folder) / WORK_DONE).is_file():
            shared |= set(step.sections)
        where = steps_folder / step_key(context, step, model, seed)
        if not (where / RESULTS_FILE).is_file():
            break
        model, done = str(where / f"seed-{seed}" / "model"), done + 1
    return done, shared


def run_attempt(context: Context, plan: Plan, seed: int, steps_folder: Path) -> AttemptRun:
    """Every step of `plan` for `seed`, each in its own folder under `steps_folder` (shared between attempts)."""
    model = context.teacher
    steps = []
    for step in steps_of(plan):
        where = steps_folder / step_key(context, step, model, seed)
        steps.append(run_step(context, step, model, seed, where))
        model = str(where / f"seed-{seed}" / "model")
    return AttemptRun(model, steps)


__all__ = ["AttemptRun", "Context", "FIRST_SEED", "STUDENT_STAGE", "Step", "finished_steps", "run_attempt", "run_step",
           "steps_of"]

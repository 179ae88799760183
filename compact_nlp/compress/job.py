"""`compact compress`: the goal in, a model out. The phases, each resumable in OUT/:

    1. check the goal, the model and the data (one-line errors before anything trains), claim OUT for this job;
    2. carve the planner's held-out rows from the training data (seeded, fixed for every seed);
    3. measure (OUT/plan/): the reference, the int8 peers, every plan's predicted latency and size, training cost;
    4. choose the training length the time budget affords; `--dry-run` stops here with the plan;
    5. fine-tune the teacher on the user's data when the model is not fine-tuned on it (OUT/teacher/);
    6. try the plans predicted to meet the goal, each with its escalations (OUT/attempts/), until one holds on the
       held-out rows on the mean of the seeds, or the time budget is spent;
    7. read the user's validation split once, for the chosen model, and write OUT/model (+ card) and the report.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
from transformers import AutoConfig

from ..convert import SUPPORTED_MODEL_TYPES, UnsupportedArchitectureError
from ..data import TaskData
from ..distributed import everywhere
from ..modeling import CompactBertConfig
from ..glue import carve_heldout
from ..io import write_json
from ..pretrained import resolve_checkpoint
from ..recipe import load_recipe
from ..run import run_recipe
from ..workdir import Job, defaults_of, input_digest
from .budget import Clock, TrainingPlan, attempt_seconds
from .goal import EMBEDDINGS, TASKS, Goal, GoalError, Limits
from .planner import (Attempt, Failure, Target, best, hopeless, meets_target, order, out_of_reach, predicted_to_meet,
                      rescale_searches)
from .plans import Plan, escalations
from .steps import FIRST_SEED, Context, finished_steps, run_attempt

SELECTION_FRACTION, SELECTION_MAX_ROWS = 0.1, 2000
SPLIT_SEED = FIRST_SEED


@dataclass
class Setup:
    """What the phases share: the checked inputs and the folders."""

    model: str
    data: TaskData  # the user's data (its validation/test splits are read once, at the end)
    selection: TaskData  # train: the rows steps train on; validation: the planner's held-out rows
    goal: Goal
    limits: Limits
    out: Path
    max_length: int
    notes: list[str] = field(default_factory=list)


def check_model(model: str) -> str:
    """The model's family, checked before anything trains; returns the model's source."""
    source = resolve_checkpoint(model)  # a local path that does not exist is refused there ("no such folder")
    model_type = AutoConfig.from_pretrained(source).model_type
    if model_type not in (*SUPPORTED_MODEL_TYPES, CompactBertConfig.model_type):  # a compact folder is one of ours
        raise UnsupportedArchitectureError(
            f"compact compress cannot compress a {model_type!r} model; supported families: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (MiniLM and other BERT-layout checkpoints load as 'bert').")
    return source


def check_inputs(model: str, data: TaskData, task: str | None) -> str:
    """The model's family and the task kind, checked before anything trains; returns the model's source."""
    source = check_model(model)
    spec = data.spec
    if task is not None:
        if task not in TASKS or task == EMBEDDINGS:
            raise GoalError(f"--task must be one of {', '.join(TASKS)}, got {task!r}.")
        wrong = ((task == "regression") != spec.is_regression) or (task == "pairs" and len(spec.text_columns) != 2)
        if wrong:
            raise GoalError(f"--task {task} does not match the data: {len(spec.text_columns)} text column(s), "
                            f"{spec.problem_type}; drop --task or give --text-column/--problem-type.")
    return source


def selection_data(data: TaskData) -> tuple[TaskData, str]:
    """The rows the steps train on and the planner's held-out rows, carved from the user's training split."""
    size = min(SELECTION_MAX_ROWS, max(1, round(SELECTION_FRACTION * len(data.train))))
    train, heldout = carve_heldout(data.train, size, SPLIT_SEED)
    splits = datasets.DatasetDict(train=train, validation=heldout)
    spec = data.spec
    note = (f"the planner's held-out split: {len(heldout)} rows carved from the {len(data.train)} training rows "
            f"(seed {SPLIT_SEED}); every choice is made on it, the validation split is read once at the end")
    return TaskData(spec, splits, [*data.notes, note]), note


def data_digest(data: TaskData) -> str:
    """sha256 of every split's rows (text, labels) and the label names: the same data from another file name is the
    same job, an edited file is another."""
    digest = hashlib.sha256(json.dumps(data.spec.label_names).encode())
    for name in sorted(data.splits):
        digest.update(name.encode())
        digest.update(json.dumps(data.splits[name][:], sort_keys=True, default=str).encode())
    return "sha256:" + digest.hexdigest()


def job_of(model: str, data: TaskData, goal: Goal, limits: Limits, task: str | None) -> Job:
    source = resolve_checkpoint(model)
    inputs = {"model": input_digest(source) if os.path.isdir(source) else model, "data": data_digest(data)}
    return Job("compress", {**goal.to_dict(), **limits.to_dict(), "task": task, "model": model}, inputs,
               defaults=defaults_of(Limits))


def is_fine_tuned(source: str, data: TaskData) -> bool:
    """Whether the model already has this task's head: a sequence-classification model with the task's labels."""
    config = AutoConfig.from_pretrained(source)
    if not any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
        return False
    spec = data.spec
    if spec.is_regression:
        return config.num_labels == 1
    return [config.id2label[i] for i in range(config.num_labels)] == list(spec.label_names)


def fine_tune_teacher(setup: Setup, training: TrainingPlan) -> tuple[str, float, float]:
    """Fine-tune the model on the training rows (the baseline protocol; the epochs and rows the budget affords) into
    OUT/teacher; returns the folder, its held-out score (points) and the seconds one training example took."""
    spec = setup.data.spec
    protocol = {"heldout": 0.1, "epochs": training.teacher_epochs, "max_length": setup.max_length,
                "seeds": [SPLIT_SEED], "train_subset": training.teacher_subset, "device": setup.limits.device}
    recipe = load_recipe("default", [f"model={setup.model}", f"protocol={json.dumps(protocol)}"],
                         data={"train": spec.source, "name": spec.name})
    results = everywhere(run_recipe, recipe, setup.out / "teacher", data=setup.selection)
    first = results["per_seed"][0]
    per_example = first["train_seconds"] / max(1.0, first["train_examples"] * training.teacher_epochs)
    return (str(setup.out / "teacher" / f"seed-{SPLIT_SEED}" / "model"),
            100 * first["dev"]["validation"][spec.main_metric], per_example)


def trivial_score(setup: Setup) -> float:
    """What a model that learned nothing scores on the held-out rows (points): always the most frequent class, or no
    correlation for regression (and micro-F1 of predicting no label for multi-label)."""
    heldout = setup.selection.splits["validation"]
    if setup.data.spec.problem_type != "single_label_classification":
        return 0.0
    labels = list(heldout["label"])
    return 100 * max(labels.count(label) for label in set(labels)) / len(labels)


def teacher_warning(setup: Setup, score: float) -> str:
    """A line for the report (and the log) when the fine-tuned teacher is barely better than learning nothing: its
    compressed versions cannot be better, whatever the drop says."""
    floor = trivial_score(setup)
    if score > floor + 5:
        return ""
    return (f"the fine-tuned teacher scores {score:.2f} on the held-out rows, against {floor:.2f} for a model that "
            "learned nothing: give more training time (--time-budget) or rows, or a model fine-tuned on this task")


def attempt_of(plan: Plan, run, seed: int, reference_ms: float, target: Target, main: str, seconds: float) -> Attempt:
    """An attempt's held-out numbers; its latency is brought into the reference's timing frame through the teacher
    it was timed beside (the teacher has the reference's shape)."""
    result = run.result
    teacher_ms = result["original"]["latency_ms_batch1"]["median"]
    ms = result["latency_ms_batch1"]["median"] * reference_ms / teacher_ms
    size = result["size_mb"][result["artifact"]] if isinstance(result["size_mb"], dict) else result["size_mb"]
    return Attempt(plan.to_dict(), seed, run.model_dir, round(100 * result["dev"]["validation"][main], 2),
                   round(100 * result["original"]["dev"]["validation"][main], 2), round(ms, 3), round(size, 3),
                   round(target.peer_ms / ms, 2) if target.peer_ms else None, round(seconds, 1))


def one_attempt(setup: Setup, context: Context, plan: Plan, seed: int, reference_ms: float, target: Target,
                clock: Clock) -> Attempt:
    """Run (or, when a killed run did it already, read back) one attempt; OUT/attempts/<plan>-seed-<s>.json holds it
    with every step's results merged."""
    saved = setup.out / "attempts" / f"{plan.slug}-seed-{seed}.json"
    if saved.is_file():
        return Attempt(**json.loads(saved.read_text())["attempt"])
    started = clock.elapsed
    run = run_attempt(context, plan, seed, setup.out / "steps")
    attempt = attempt_of(plan, run, seed, reference_ms, target, setup.data.spec.main_metric, clock.elapsed - started)
    attempt.result_file = str(saved)
    write_json(saved, {"attempt": asdict(attempt), "recipe": run.recipe, "result": run.result})
    clock.save()
    return attempt


@dataclass
class Ladder:
    """What one plan's ladder of escalations gave: its attempts, those that met the goal on the mean of the seeds
    (empty when none did), and its failure when every rung ran at the target's speed and none held the drop."""

    attempts: list[Attempt]
    met: list[Attempt]
    failure: Failure | None = None


def try_plans(setup: Setup, context: Context, plans: list[Plan], target: Target, reference_ms: float,
              clock: Clock, training: TrainingPlan, seconds_per_example: float, log) -> tuple[list, list]:
    """Phase 6: every attempt (held-out numbers, seed by seed) and the attempts of the plan that met the goal on the
    mean of the seeds (empty when none did). A plan at least as lossy in every part as one that failed is not
    tried (compact_nlp.compress.planner.hopeless)."""
    tried, failures = [], []
    for plan in plans:
        if not predicted_to_meet(plan, target):  # predicted again once a search it shares was measured
            log(f"skip {plan.label}: predicted {plan.predicted_ms:.2f} ms once its search was measured")
            continue
        if failed := hopeless(plan, failures):
            why = (f"at least as lossy in every part as {failed.plan.label}, which lost {failed.best_drop:.2f} "
                   f"points at best (allowed {setup.goal.max_drop:g})")
            log(f"skip {plan.label}: {why}")
            setup.notes.append(f"not tried: {plan.label} ({why})")
            continue
        ladder = try_ladder(setup, context, plan, plans, target, reference_ms, clock, training, seconds_per_example,
                            log)
        tried += ladder.attempts
        if ladder.met:
            return tried, ladder.met
        failures += [ladder.failure] if ladder.failure else []
    return tried, []


def try_ladder(setup: Setup, context: Context, plan: Plan, plans: list[Plan], target: Target, reference_ms: float,
               clock: Clock, training: TrainingPlan, seconds_per_example: float, log) -> Ladder:
    """One plan and its escalations, cheapest first, each on every seed, until one holds the drop on the mean of
    the seeds, one misses the target (the rungs keep the shape), or one is out of reach of any escalation."""
    rows, main, max_drop = len(setup.selection.train), setup.data.spec.main_metric, setup.goal.max_drop
    seeds = [SPLIT_SEED + i for i in range(setup.limits.seeds)]
    attempts, drops, every_rung_ran = [], [], True
    for attempt_plan in escalations(plan):
        expected = expected_seconds(context, attempt_plan, seeds, setup.out / "steps",
                                    training.train_subset or rows, training.epochs, seconds_per_example)
        if not clock.affords(sum(expected)):  # an attempt holds only when every seed has run
            log(f"skip {attempt_plan.label}: about {sum(expected) / 60:.0f} min for {len(seeds)} seed(s), "
                f"{clock.left() / 60:.0f} min left")
            every_rung_ran = False
            continue
        runs = []
        for seed, seconds in zip(seeds, expected):
            log(f"attempt {attempt_plan.label} (seed {seed}; about {seconds / 60:.0f} min, "
                f"{'no limit' if clock.left() is None else f'{clock.left() / 60:.0f} min left'})")
            runs.append(one_attempt(setup, context, attempt_plan, seed, reference_ms, target, clock))
            log(f"  held-out {main} {runs[-1].score:.2f} (teacher {runs[-1].teacher_score:.2f}, drop "
                f"{runs[-1].drop:.2f}); {runs[-1].ms:.2f} ms; {runs[-1].size_mb:.2f} MB")
            if not meets_target(runs[-1], target) or runs[-1].drop > max_drop + 2.0:
                break  # another seed cannot bring the mean back
        attempts += runs
        rescale_searches(plans, plan, runs[-1].ms)
        if not meets_target(runs[-1], target):
            return Ladder(attempts, [])  # the escalations keep the shape: none of them is faster or smaller
        drops.append(sum(a.drop for a in runs) / len(runs))
        if len(runs) == len(seeds) and drops[-1] <= max_drop:
            return Ladder(attempts, runs)
        if out_of_reach(drops[-1], max_drop):
            why = f"{drops[-1]:.2f} points lost, far over the allowed {max_drop:g}: no escalation of it is tried"
            log(f"  {why}")
            setup.notes.append(f"{attempt_plan.label}: {why}")
            break
    return Ladder(attempts, [], Failure(plan, min(drops)) if drops and every_rung_ran else None)


def expected_seconds(context: Context, plan: Plan, seeds: list[int], steps_folder: Path, rows: int, epochs: float,
                     seconds_per_example: float) -> list[float]:
    """Each seed's expected wall time for `plan`: the steps an earlier attempt began with (the student, a search) are
    read back, not run again, and work the seeds share (PlanOption.seed_key) is counted in the first seed's only."""
    shared_by_seeds = {name for name, option in plan.options.items() if option.seed_key}
    expected = []
    for index, seed in enumerate(seeds):
        finished, work_done = finished_steps(context, plan, seed, steps_folder)
        work_done = work_done | shared_by_seeds if index else work_done
        expected.append(attempt_seconds(plan, rows, epochs, seconds_per_example, finished, work_done))
    return expected


VERIFIED_PLANS = 3  # the head of the order is measured on proxies of its own before anything trains


def plans_to_try(plans: list[Plan], target: Target, predictor, seconds_of) -> list[Plan]:
    """The plans predicted to meet the target in the order they are tried, the first VERIFIED_PLANS predicted from
    proxies of their own shape (the rest from the basis: compact_nlp.compress.measure.factor_predictions)."""
    for _ in range(4):
        ordered = order(plans, target, seconds_of)
        unmeasured = [plan for plan in ordered[:VERIFIED_PLANS] if not (predictor.is_measured(plan) or plan.searched)]
        if not unmeasured:
            break
        predictor.measure(unmeasured)
        predictor.predict(plans)
    return order(plans, target, seconds_of)


def best_effort(tried: list[Attempt], target: Target) -> list[Attempt]:
    chosen = best(tried, target)
    return [a for a in tried if a.plan["label"] == chosen.plan["label"]]


__all__ = ["Setup", "check_inputs", "check_model", "fine_tune_teacher", "is_fine_tuned", "job_of", "plans_to_try",
           "selection_data", "teacher_warning", "try_plans"]

"""Time: how long each stage of a compress is expected to take on this machine (from the measured cost of one
training example), the training length a time budget affords, and the clock that survives a resume."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..io import write_json
from .goal import GoalError
from .plans import Plan
from .steps import steps_of

TEACHER_EPOCHS = 3.0  # the baseline protocol's (docs/protocol.md)
STUDENT_EPOCHS = 3.0
MIN_ROWS = 500  # below this a training step is not worth running; the budget must afford it
STEP_OVERHEAD_S = 90.0  # export, .ort conversion, held-out scoring and timing of one step
DISTILLATION_COST = 0.35  # the teacher's forward pass, as a share of the full model's training step
FIRST_ATTEMPT_SHARE = 0.5  # the first attempt may use this share of what is left, so that escalations fit
TEACHER_SHARE = 0.35  # of the budget, for fine-tuning the teacher when the model has no head for the task


@dataclass
class TrainingPlan:
    """The training length the planner chose: epochs of a student step and rows per step (None: all), the teacher's
    epochs and rows (0 epochs when the given model is already fine-tuned on the task), and why."""

    epochs: float
    train_subset: int | None
    teacher_epochs: float
    teacher_subset: int | None = None
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def step_seconds(rows: int, epochs: float, seconds_per_example: float, share_of_layers: float,
                 distilled: bool = True) -> float:
    return rows * 0.9 * epochs * seconds_per_example * (share_of_layers + (DISTILLATION_COST if distilled else 0)) \
        + STEP_OVERHEAD_S


def attempt_seconds(plan: Plan, rows: int, epochs: float, seconds_per_example: float, finished: int = 0,
                    work_done: frozenset | set = frozenset()) -> float:
    """Expected wall time of one attempt of `plan` (one seed): its steps, the first `finished` aside (run by an
    earlier attempt that began the same way), each with the fixed work of its options (a search's SuperTransformer
    training and latency measurements) unless an earlier attempt did that work (`work_done`: option names)."""
    total = 0.0
    for step in steps_of(plan)[finished:]:
        total += sum(plan.options[name].fixed_examples * seconds_per_example * (1 + DISTILLATION_COST) +
                     plan.options[name].fixed_seconds for name in step.sections if name not in work_done)
        if not step.trains:
            total += STEP_OVERHEAD_S
            continue
        step_epochs = step.stage.get("protocol", {}).get("epochs", epochs) * step.epochs_factor
        total += step_seconds(rows, step_epochs, seconds_per_example, plan.cost_share)
    return total


def _rows_that_fit(rows: int, seconds_of, budget_s: float) -> int:
    fits = rows
    while fits > MIN_ROWS and seconds_of(fits) > budget_s:
        fits = int(fits * 0.8)
    return max(MIN_ROWS, min(rows, fits))


def teacher_training(rows: int, seconds_per_example: float, budget_s: float) -> tuple[float, int | None, str]:
    """The teacher's epochs and rows within TEACHER_SHARE of the budget: fewer epochs first, then fewer rows."""
    share = TEACHER_SHARE * budget_s
    per_epoch = step_seconds(rows, 1, seconds_per_example, 1.0, False) - STEP_OVERHEAD_S
    epochs = max(1.0, min(TEACHER_EPOCHS, float(int((share - STEP_OVERHEAD_S) / per_epoch))))
    subset = None
    if step_seconds(rows, epochs, seconds_per_example, 1.0, False) > share:
        subset = _rows_that_fit(rows, lambda n: step_seconds(n, 1, seconds_per_example, 1.0, False), share)
    note = "" if epochs == TEACHER_EPOCHS and subset is None else (
        f"the teacher is fine-tuned {epochs:g} epochs (the protocol's: {TEACHER_EPOCHS:g})"
        + (f" on {subset} of {rows} rows" if subset else ""))
    return epochs, subset, note


def attempt_training(rows: int, seconds_per_example: float, budget_s: float | None,
                     first: Plan | None, seeds: int = 1) -> tuple[float, int | None, str]:
    """A student step's epochs and rows: the first attempt's training, for each of `seeds`, fits in its part of
    FIRST_ATTEMPT_SHARE of what is left once its fixed work (a search's, which fewer rows would not shorten and the
    seeds share: PlanOption.seed_key) is counted."""
    if budget_s is None or first is None:
        return STUDENT_EPOCHS, None, ""
    fixed = attempt_seconds(first, 0, 1, seconds_per_example)
    share = fixed + FIRST_ATTEMPT_SHARE * max(0.0, budget_s - fixed) / seeds
    epochs, subset = STUDENT_EPOCHS, None
    while epochs > 1 and attempt_seconds(first, rows, epochs, seconds_per_example) > share:
        epochs -= 1
    if attempt_seconds(first, rows, epochs, seconds_per_example) > share:
        subset = _rows_that_fit(rows, lambda n: attempt_seconds(first, n, 1, seconds_per_example), share)
    note = "" if epochs == STUDENT_EPOCHS and subset is None else (
        f"the time budget affords {epochs:g} epochs per student step (the protocol's: {STUDENT_EPOCHS:g})"
        + (f" on {subset} of {rows} rows" if subset else ""))
    return epochs, subset, note


def least_seconds(plan: Plan | None, rows: int, seconds_per_example: float, needs_teacher: bool) -> float:
    """The least a compress with `plan` first can take: the teacher (when it is fine-tuned here) and one attempt,
    each one epoch on MIN_ROWS rows."""
    fewest = min(rows, MIN_ROWS)
    return (step_seconds(fewest, 1, seconds_per_example, 1.0, False) if needs_teacher else 0) + \
        (attempt_seconds(plan, fewest, 1, seconds_per_example) if plan else 0)


def affordable(plans: list[Plan], rows: int, seconds_per_example: float, budget_s: float | None,
               needs_teacher: bool) -> tuple[list[Plan], list[str]]:
    """The plans a time budget can run at all (least_seconds), in their order, and a note for each left out; when
    none fits, all are kept, and choose_training says how much time the first needs."""
    if budget_s is None:
        return plans, []
    least = {id(p): least_seconds(p, rows, seconds_per_example, needs_teacher) for p in plans}
    kept = [p for p in plans if least[id(p)] <= budget_s]
    notes = [f"left out: {p.label} (about {least[id(p)] / 60:.0f} min even on {min(rows, MIN_ROWS)} rows; the "
             f"budget has {budget_s / 60:.0f})" for p in plans if least[id(p)] > budget_s]
    return (kept, notes) if kept else (plans, [])


def choose_training(rows: int, seconds_per_example: float, budget_s: float | None, needs_teacher: bool,
                    first: Plan | None, seeds: int = 1) -> TrainingPlan:
    """The longest training the budget affords, up to the protocol's (the teacher's, then the first attempt's; the
    attempts are planned again from the teacher's measured speed once it has trained). Raises GoalError when the
    budget does not cover the baseline and one attempt on MIN_ROWS rows."""
    if budget_s is None:
        return TrainingPlan(STUDENT_EPOCHS, None, TEACHER_EPOCHS if needs_teacher else 0.0)
    minimum = least_seconds(first, rows, seconds_per_example, needs_teacher)
    if budget_s < minimum:
        raise GoalError(f"--time-budget {budget_s / 60:.0f} min is too short: fine-tuning the baseline and one "
                        f"attempt on {min(rows, MIN_ROWS)} rows takes about {minimum / 60:.0f} min here; give at "
                        f"least {minimum / 60 * 1.5:.0f} min.")
    teacher = teacher_training(rows, seconds_per_example, budget_s) if needs_teacher else (0.0, None, "")
    spent = step_seconds(teacher[1] or rows, teacher[0], seconds_per_example, 1.0, False) if needs_teacher else 0
    epochs, subset, note = attempt_training(rows, seconds_per_example, budget_s - spent, first, seeds)
    return TrainingPlan(epochs, subset, teacher[0], teacher[1], "; ".join(n for n in (teacher[2], note) if n))


def kept_decision(path: Path, make: Callable[[], TrainingPlan]) -> TrainingPlan:
    """A training decision made once per OUT folder: a resumed run reads the first run's back (its time left has
    shrunk), so that it continues the steps the first run started, whose folders are named by their settings."""
    if path.is_file():
        return TrainingPlan(**json.loads(path.read_text()))
    decided = make()
    write_json(path, decided.to_dict())
    return decided


class Clock:
    """Wall time spent on one OUT folder across runs (a resumed run continues the earlier run's clock)."""

    def __init__(self, path: Path, budget_s: float | None):
        self.path, self.budget_s = path, budget_s
        self.before = json.loads(path.read_text())["elapsed_s"] if path.is_file() else 0.0
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return self.before + time.monotonic() - self.started

    def left(self) -> float | None:
        return None if self.budget_s is None else self.budget_s - self.elapsed

    def affords(self, seconds: float) -> bool:
        return self.budget_s is None or seconds <= self.left()

    def save(self) -> None:
        write_json(self.path, {"elapsed_s": round(self.elapsed, 1), "budget_s": self.budget_s})

"""The planner's decisions, as code with tests: which plans are predicted to meet the goal and in what order they
are tried, whether an attempt met it, and which attempt is the best when none did.

Every number here comes from the held-out rows carved from the user's training data (compact_nlp.compress.run):
the user's validation and test splits are read once, for the final report, after the choice is made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .goal import LATENCY, SIZE, SPEEDUP, Goal
from .plans import Plan

# a plan is tried when its predicted latency is within this share of the target: the proxy is an .onnx timed on 80
# held-out rows, the shipped file an .ort timed on 200, and a trained model keeps the same shape
PREDICTION_SLACK = 1.05
# Points over the allowed drop past which a plan's remaining escalations are not tried. The most an escalation has
# won back on held-out rows so far is 2.25 points (STS-B, a 0.33 search: int8 QAT 2.08 -> distilled 2x -0.17;
# QAT after PTQ at 0.25: 7.73 -> 5.93; docs/results.md "compact compress"): twice that is out of reach.
ESCALATION_REACH = 5.0


@dataclass
class Target:
    """The goal in measured units: the latency (ms, in the reference's timing frame) or size (MB) to reach."""

    kind: str
    ms: float | None = None
    size_mb: float | None = None
    peer: str | None = None  # the peer a speedup is counted from
    peer_ms: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def target_of(goal: Goal, peer: str, peer_ms: float) -> Target:
    if goal.kind == SPEEDUP:
        return Target(goal.kind, ms=peer_ms / goal.value, peer=peer, peer_ms=peer_ms)
    if goal.kind == LATENCY:
        return Target(goal.kind, ms=goal.value, peer=peer, peer_ms=peer_ms)
    return Target(SIZE, size_mb=goal.value, peer=peer, peer_ms=peer_ms)


def predicted_to_meet(plan: Plan, target: Target) -> bool:
    if plan.predicted_ms is None:  # a technique refused the plan's shape
        return False
    if target.kind == SIZE:  # a search's size is not known before it runs: it is not planned for a size goal
        return plan.predicted_size_mb is not None and plan.predicted_size_mb <= target.size_mb * PREDICTION_SLACK
    return plan.predicted_ms <= target.ms * PREDICTION_SLACK


def order(plans: list[Plan], target: Target, seconds_of) -> list[Plan]:
    """The plans predicted to meet the target, the one expected to lose least first (on ties, the quicker to run);
    `seconds_of(plan)` is its expected wall time."""
    feasible = [plan for plan in plans if predicted_to_meet(plan, target)]
    return sorted(feasible, key=lambda plan: (round(plan.expected_drop, 3), seconds_of(plan), -plan.layers))


def searches_alike(plan: Plan, other: Plan) -> bool:
    """Whether both plans begin with the same search (the same searched model, whatever follows it)."""
    searched = {name: option.section for name, option in plan.options.items() if option.searches}
    return bool(searched) and searched == {name: option.section for name, option in other.options.items()
                                           if option.searches}


def rescale_searches(plans: list[Plan], tried: Plan, measured_ms: float) -> float:
    """A search's latency is known once it has run: the plans that search alike are predicted again, times the
    ratio of `tried`'s measured latency to its prediction (returned). A search is predicted from its budget
    (compact_nlp.compress.measure.factor_predictions), and the shipped model's measured latency is the better guide."""
    if not tried.searched or not tried.predicted_ms:
        return 1.0
    ratio = measured_ms / tried.predicted_ms
    for plan in plans:
        if searches_alike(plan, tried) and plan.predicted_ms is not None:
            plan.predicted_ms = round(plan.predicted_ms * ratio, 3)
    return ratio


def closest(plans: list[Plan], target: Target) -> Plan:
    """The plan predicted to come nearest the target, when none is predicted to meet it."""
    possible = [plan for plan in plans if plan.predicted_ms is not None]
    if target.kind == SIZE:
        return min((plan for plan in possible if plan.predicted_size_mb is not None),
                   key=lambda plan: plan.predicted_size_mb)
    return min(possible, key=lambda plan: plan.predicted_ms)


@dataclass
class Failure:
    """A plan whose ladder of escalations ran at the target's speed to its end (or until it was out of reach) without
    holding the drop: the best mean drop any of its rungs had."""

    plan: Plan
    best_drop: float


def out_of_reach(mean_drop: float, max_drop: float) -> bool:
    """Whether an attempt lost so much more than allowed that no escalation of it is expected to win it back."""
    return mean_drop > max_drop + ESCALATION_REACH


def hopeless(plan: Plan, failures: list[Failure]) -> Failure | None:
    """The failed plan that `plan` is at least as lossy as in every part (Plan.at_least_as_lossy_as), if any: `plan`
    is expected to lose at least that plan's best drop, so it is not tried."""
    return next((failure for failure in failures if plan.at_least_as_lossy_as(failure.plan)), None)


@dataclass
class Attempt:
    """One attempt, measured on the held-out rows beside the teacher."""

    plan: dict  # Plan.to_dict()
    seed: int
    folder: str  # the model folder it shipped
    score: float  # the main metric, points
    teacher_score: float
    ms: float  # batch 1, in the reference's timing frame
    size_mb: float
    speedup_vs_peer: float | None
    seconds: float
    result_file: str = ""  # every step's results merged (compact run's layout: the card is written from it)

    @property
    def drop(self) -> float:
        return round(self.teacher_score - self.score, 2)

    def to_dict(self) -> dict:
        return {**asdict(self), "drop": self.drop}


def meets_target(attempt: Attempt, target: Target) -> bool:
    if target.kind == SIZE:
        return attempt.size_mb <= target.size_mb
    return attempt.ms <= target.ms


def distance(attempts: list[Attempt], goal: Goal, target: Target) -> str:
    """How far the attempts are from the goal, in words: the drop over the allowed, or the speed/size missing."""
    if target.kind == SIZE:
        missing = f"{min(a.size_mb for a in attempts):.2f} MB against {target.size_mb:g}"
    else:
        best_ms = min(a.ms for a in attempts)
        missing = (f"{target.peer_ms / best_ms:.2f}x against {goal.value:g}x" if goal.kind == SPEEDUP
                   else f"{best_ms:.2f} ms against {target.ms:g}")
    fast = [a for a in attempts if meets_target(a, target)]
    if fast:
        least = min(a.drop for a in fast)
        return f"the target is met by {len(fast)} attempt(s), the smallest drop among them {least:.2f} points " \
               f"(allowed {goal.max_drop:g})"
    return f"no attempt reached the target (best: {missing})"


def best(attempts: list[Attempt], target: Target) -> Attempt:
    """The best attempt when none met the goal: the smallest drop among those that meet the target, else the
    nearest the target."""
    fast = [a for a in attempts if meets_target(a, target)]
    if fast:
        return min(fast, key=lambda a: a.drop)
    return min(attempts, key=lambda a: a.size_mb if target.kind == SIZE else a.ms)

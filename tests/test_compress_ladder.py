"""How `compact compress` walks its plans: a plan's ladder of escalations ends when a rung is out of reach of any
escalation, and a plan at least as lossy in every part as one that failed is not tried. The attempts' training is
replaced by the held-out drops a run could give, so that the walk itself is what is tested."""

import pytest

from compact_nlp.compress import job
from compact_nlp.compress.budget import Clock, TrainingPlan
from compact_nlp.compress.goal import Goal, Limits
from compact_nlp.compress.planner import ESCALATION_REACH, Attempt, Failure, Target, hopeless, out_of_reach
from compact_nlp.compress.plans import all_plans
from compact_nlp.data import load_task_data


def plan_named(label: str):
    return next(plan for plan in all_plans(6) if plan.label == label)


def test_a_plan_is_as_lossy_as_another_only_when_it_takes_as_much_away_in_every_part():
    three, two = plan_named("3 of 6 layers, int8 PTQ"), plan_named("2 of 6 layers, int8 PTQ")
    pruned = plan_named("3 of 6 layers, tokens kept 0.7, int8 PTQ")
    assert two.at_least_as_lossy_as(three) and pruned.at_least_as_lossy_as(three)
    assert not three.at_least_as_lossy_as(two) and not three.at_least_as_lossy_as(pruned)
    assert not two.at_least_as_lossy_as(pruned) and not pruned.at_least_as_lossy_as(two), "fewer layers or pruning"
    searched = {plan.label: plan for plan in all_plans(6) if plan.searched and list(plan.options) == ["hat", "quant"]}
    narrow = next(p for label, p in searched.items() if "0.25" in label and "PTQ" in label)
    wide = next(p for label, p in searched.items() if "0.33" in label and "PTQ" in label)
    assert narrow.at_least_as_lossy_as(wide) and not wide.at_least_as_lossy_as(narrow)
    assert not narrow.at_least_as_lossy_as(three), "a search keeps the depth it finds: not comparable by layers"
    failures = [Failure(three, 2.4)]
    assert hopeless(two, failures) is failures[0] and hopeless(plan_named("4 of 6 layers, int8 PTQ"), failures) is None


def test_an_attempt_far_over_the_allowed_drop_is_out_of_reach_of_any_escalation():
    assert out_of_reach(1.0 + ESCALATION_REACH + 0.01, 1.0) and not out_of_reach(1.0 + ESCALATION_REACH, 1.0)


@pytest.fixture
def walk(sst2_csv, tmp_path, monkeypatch):
    """try_plans over the given plans with canned held-out drops (by plan label); returns the labels attempted, the
    attempts that met the goal and the report's notes."""
    data = load_task_data(str(sst2_csv[0]), text="review", label="sentiment")
    selection, note = job.selection_data(data)
    setup = job.Setup("model", data, selection, Goal("speedup", 3.0, 1.0), Limits(seeds=2), tmp_path, 64, [note])
    target = Target("speedup", ms=1.0, peer="ORT dynamic int8", peer_ms=3.0)

    def run(plans, drops):
        attempted = []

        def one_attempt(setup, context, plan, seed, reference_ms, target, clock):
            attempted.append(plan.label)
            drop = drops[plan.label]
            return Attempt(plan.to_dict(), seed, str(tmp_path / plan.slug), 90.0 - drop, 90.0, 0.5, 10.0, 6.0, 1.0)

        monkeypatch.setattr(job, "one_attempt", one_attempt)
        monkeypatch.setattr(job, "expected_seconds", lambda context, plan, seeds, *_: [0.0] * len(seeds))
        for plan in plans:
            plan.predicted_ms = 0.5
        tried, met = job.try_plans(setup, None, plans, target, 3.0, Clock(tmp_path / "clock.json", None),
                                   TrainingPlan(1.0, None, 0.0), 0.01, lambda line: None)
        return attempted, met, setup.notes

    return run


def test_a_plan_at_least_as_lossy_as_a_failed_one_is_not_tried_and_the_report_says_why(walk):
    plans = [plan_named(label) for label in ("3 of 6 layers, int8 PTQ", "2 of 6 layers, int8 PTQ",
                                             "3 of 6 layers, tokens kept 0.7, int8 PTQ", "4 of 6 layers, int8 PTQ")]
    ladder = [p.label for p in job.escalations(plans[0])]
    drops = {**{label: 2.0 for label in ladder}, **{p.label: 0.4 for p in plans[1:]}}
    attempted, met, notes = walk(plans, drops)
    assert attempted == [label for label in ladder for _ in (1, 2)] + ["4 of 6 layers, int8 PTQ"] * 2
    assert [a.plan["label"] for a in met] == ["4 of 6 layers, int8 PTQ"] * 2
    skipped = [n for n in notes if n.startswith("not tried:")]
    assert len(skipped) == 2 and all("3 of 6 layers, int8 PTQ, which lost 2.00 points" in n for n in skipped)


def test_a_rung_out_of_reach_ends_its_ladder_and_a_ladder_cut_short_still_counts_as_failed(walk):
    plans = [plan_named("3 of 6 layers, int8 PTQ"), plan_named("2 of 6 layers, int8 PTQ")]
    drops = {p.label: 1.0 + ESCALATION_REACH + 3 for p in job.escalations(plans[0])}
    attempted, met, notes = walk(plans, drops)
    assert attempted == ["3 of 6 layers, int8 PTQ"], "no QAT, no longer distillation, no second seed, no 2 layers"
    assert not met and any("2 of 6 layers, int8 PTQ" in n for n in notes)


def test_a_plan_too_slow_says_nothing_of_the_drop_of_plans_lossier_than_it(walk, monkeypatch):
    plans = [plan_named("3 of 6 layers, int8 PTQ"), plan_named("2 of 6 layers, int8 PTQ")]
    real_attempt_ms = {"3 of 6 layers, int8 PTQ": 2.0}  # slower than the 1.0 ms target
    drops = {"3 of 6 layers, int8 PTQ": 3.0, "2 of 6 layers, int8 PTQ": 0.5}
    original = job.meets_target
    monkeypatch.setattr(job, "meets_target", lambda attempt, target: attempt.plan["label"] not in real_attempt_ms
                        and original(attempt, target))
    attempted, met, notes = walk(plans, drops)
    assert attempted == ["3 of 6 layers, int8 PTQ", "2 of 6 layers, int8 PTQ", "2 of 6 layers, int8 PTQ"]
    assert len(met) == 2 and not any(n.startswith("not tried:") for n in notes)

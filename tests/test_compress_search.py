"""`compact compress` with a search among its plans (HAT's search under a latency budget, offered through the
registry): planned at the full depth only, predicted from its budget, never re-run by an escalation, its fixed cost
in the time estimates, and (slow) one attempt of a search + int8 plan on real SST-2 rows, run and read back."""

import json
from dataclasses import replace

import pytest

from compact_nlp import CompactBertConfig, CompactBertForSequenceClassification
from compact_nlp.compress.budget import affordable, attempt_seconds, attempt_training, choose_training
from compact_nlp.compress.goal import Goal, GoalError
from compact_nlp.compress.job import expected_seconds, selection_data
from compact_nlp.compress.measure import basis, factor_predictions
from compact_nlp.compress.planner import closest, predicted_to_meet, rescale_searches, target_of
from compact_nlp.compress.plans import Plan, all_plans, escalations
from compact_nlp.compress.steps import (FIRST_SEED, Context, finished_steps, run_attempt, step_key, steps_of,
                                        work_folder)
from compact_nlp.data import load_task_data
from compact_nlp.hat.distil import distil_folder
from compact_nlp.registry import technique
from conftest import requires_glue


def search_options():
    return technique("hat").plan_options()


def test_a_search_is_planned_at_full_depth_with_what_its_shallowest_model_allows():
    searched = [plan for plan in all_plans(6) if plan.searched]
    assert {plan.layers for plan in searched} == {6}, "a search picks its own depth"
    assert {plan.options["hat"].latency_share for plan in searched} == {o.latency_share for o in search_options()}
    # HAT may keep 2 of 6 layers: binary weights (5 layers or more) and keeping half the tokens (3 or more) are
    # never planned after it; keeping 0.7 of the tokens (2 or more) is
    labels = [plan.label for plan in searched]
    assert not any("binary" in label or "kept 0.5" in label for label in labels)
    assert any("kept 0.7" in label for label in labels) and all("layers" not in label for label in labels)
    assert not any(p.layers == 2 and "kept 0.5" in p.label for p in all_plans(6)), "out of reach at 2 layers"


def test_a_search_plan_is_predicted_from_its_budget_and_has_no_size_before_it_runs():
    plans = all_plans(6)
    assert not any(plan.searched for plan in basis(6, plans)), "a search has no proxy to measure"
    measured = {plan.shape_key: (5.0 if plan.options else 8.0, 10.0) for plan in basis(6, plans)}
    factor_predictions(plans, measured, 10.0, 40.0)
    ptq = next(p for p in plans if p.searched and p.options["hat"].latency_share == 0.33 and len(p.options) == 2
               and "PTQ" in p.label)
    assert ptq.predicted_ms == pytest.approx(10.0 * 0.33 * 0.5) and ptq.predicted_size_mb is None
    size_goal = target_of(Goal("size_mb", 5, 3), "peer", 6.0)
    assert not predicted_to_meet(ptq, size_goal), "a size goal is never planned on a size nobody predicted"
    assert closest(plans, size_goal).predicted_size_mb is not None
    assert predicted_to_meet(ptq, target_of(Goal("speedup", 3, 1), "peer", 6.0))  # 1.65 ms against 2 ms


def test_once_a_search_is_measured_the_plans_that_share_it_are_predicted_from_the_measurement():
    """SST-2's first search measured 1.28x its prediction: the same search followed by keep 0.7 (no faster at 13
    tokens) is then predicted past the target and skipped; another budget's search keeps its prediction."""
    plans = all_plans(6)
    measured = {plan.shape_key: (10.0 if "token_pruning" in plan.options else 5.0 if plan.options else 8.0, 10.0)
                for plan in basis(6, plans)}  # as measured at SST-2's lengths: token pruning gains nothing there
    factor_predictions(plans, measured, 10.0, 40.0)
    by_label = {plan.label: plan for plan in plans}
    tried = by_label["HAT search at 0.33 of the latency, int8 PTQ"]
    alike = by_label["HAT search at 0.33 of the latency, tokens kept 0.7, int8 PTQ"]
    other = by_label["HAT search at 0.25 of the latency, int8 PTQ"]
    before = (tried.predicted_ms, alike.predicted_ms, other.predicted_ms)
    assert rescale_searches(plans, tried, before[0] * 1.28) == pytest.approx(1.28)
    assert (tried.predicted_ms, alike.predicted_ms, other.predicted_ms) == pytest.approx(
        (before[0] * 1.28, before[1] * 1.28, before[2]), abs=0.002)
    target = target_of(Goal("speedup", 3, 1), "peer", 3 * 1.7)  # 1.7 ms
    assert predicted_to_meet(other, target) and not predicted_to_meet(alike, target)
    assert rescale_searches(plans, by_label["3 of 6 layers, int8 PTQ"], 1.0) == 1.0, "a student is measured by proxy"


def test_escalating_a_search_plan_never_runs_the_search_again_and_at_last_distils_its_model_longer(tmp_path):
    """PTQ, then QAT, then the searched SubTransformer distilled twice as long: every attempt shares the search's
    work folder (SuperTransformer, latency data, evolution); the longer distillation is a step of its own."""
    context = Context(None, "teacher", max_length=32, epochs=1.0, train_subset=None)
    for plan in [p for p in all_plans(6) if p.searched and list(p.options) in (["hat", "quant"],
                                                                               ["hat", "token_pruning", "quant"])]:
        tries = escalations(plan)
        assert [t.training for t in tries] == [1.0, 1.0, 2.0]
        first, last = steps_of(tries[0]), steps_of(tries[-1])
        assert {work_folder(context, steps_of(t)[0], "teacher", 1, tmp_path) for t in tries} == \
            {work_folder(context, first[0], "teacher", 1, tmp_path)}, "one search for every attempt"
        assert first[0].sections["hat"]["distill_longer"] == 1.0
        assert last[0].sections["hat"]["distill_longer"] == 2.0 and last[0].epochs_factor == 2.0
        assert step_key(context, last[0], "teacher", 1) != step_key(context, first[0], "teacher", 1)
        assert all(step.epochs_factor == 1.0 for step in last[1:]), "plan.training goes to one step"
    assert distil_folder(tmp_path, 0.33, "searched", 1, 1, 2.0).name == "sub-0.33-searched-distil2x"
    assert distil_folder(tmp_path, 0.33, "searched", 2, 1).name == "sub-0.33-searched-seed2"


def test_a_search_plans_fixed_work_is_in_its_time_estimate():
    plan = next(p for p in all_plans(6) if p.searched and len(p.options) == 1)
    option = plan.options["hat"]
    assert option.fixed_examples > 0 and option.fixed_seconds > 0
    assert plan.cost_share == option.latency_share, "the searched model trains as much cheaper as it runs"
    without = replace(plan, options={"hat": replace(option, fixed_examples=0, fixed_seconds=0)})
    assert attempt_seconds(plan, 1000, 3, 0.01) - attempt_seconds(without, 1000, 3, 0.01) == pytest.approx(
        option.fixed_examples * 0.01 * 1.35 + option.fixed_seconds)


def test_a_searchs_fixed_work_leaves_the_rows_their_share_and_is_not_counted_for_an_escalation():
    """Fewer rows do not shorten a SuperTransformer's training: the first attempt's rows get half of what the fixed
    work leaves (not the minimum), and QAT after PTQ reads the search back, so its estimate leaves the search out."""
    plan = next(p for p in all_plans(6) if p.searched and list(p.options) == ["hat", "quant"])
    budget_s, per_example = 60 * 60, 0.0266  # SST-2 on one thread of this machine
    epochs, rows, _ = attempt_training(65349, per_example, budget_s, plan)
    spent = attempt_seconds(plan, rows, epochs, per_example)
    assert rows > 10000 and spent < budget_s
    qat = escalations(plan)[1]
    assert attempt_seconds(qat, rows, epochs, per_example, finished=1) < spent / 4


def test_the_seeds_share_one_search_and_its_fixed_work_is_counted_once(tmp_path):
    """--seeds K searches once: every seed's search step works in one folder, seeded with the first seed (the
    SuperTransformer and the architecture it picks are the plan), and differs from the others in its distillation;
    the estimates count the search's fixed work once, and the first attempt's rows are shared among the seeds."""
    plan = next(p for p in all_plans(6) if p.searched and list(p.options) == ["hat", "quant"])
    context = Context(None, "teacher", max_length=32, epochs=1.0, train_subset=None)
    search_step = steps_of(plan)[0]
    assert search_step.sections["hat"]["supernet_seed"] == FIRST_SEED and search_step.work_shared_by_seeds
    assert work_folder(context, search_step, "teacher", 1, tmp_path) == work_folder(
        context, search_step, "teacher", 2, tmp_path)
    assert step_key(context, search_step, "teacher", 1) != step_key(context, search_step, "teacher", 2)
    first, second = expected_seconds(context, plan, [1, 2], tmp_path, 10000, 1.0, 0.0266)
    option = plan.options["hat"]
    assert first - second == pytest.approx(option.fixed_examples * 0.0266 * 1.35 + option.fixed_seconds)
    one, two = (attempt_training(65349, 0.0266, 60 * 60, plan, seeds) for seeds in (1, 2))
    assert two[1] < one[1], "two seeds' training shares what one seed's had"


def test_a_budget_that_cannot_run_a_search_leaves_it_out_and_keeps_the_cheaper_plans():
    search = next(p for p in all_plans(6) if p.searched and list(p.options) == ["hat", "quant"])
    student = next(p for p in all_plans(6) if p.layers == 3 and list(p.options) == ["quant"])
    kept, notes = affordable([search, student], 60000, 0.0266, 25 * 60, needs_teacher=True)
    assert kept == [student] and len(notes) == 1 and notes[0].startswith(f"left out: {search.label} (about")
    assert affordable([search], 60000, 0.0266, 25 * 60, True) == ([search], []), "none fits: choose_training says so"
    with pytest.raises(GoalError, match="too short"):
        choose_training(60000, 0.0266, 25 * 60, True, search)
    assert affordable([search, student], 60000, 0.0266, None, True) == ([search, student], [])


def test_a_search_is_not_offered_to_several_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert search_options() == [] and not any(plan.searched for plan in all_plans(6))


# the search times SubTransformers by their parameter counts (conftest.user_measurer): no timing noise
TINY_SEARCH = {"budgets": [0.6], "full_reference": False, "uniform_reference": False, "supernet_steps": 2,
               "supernet_batch_size": 3, "importance_batches": 1, "latency_models": 10, "noise_models": 2,
               "noise_repeats": 2, "population": 4, "parents": 2, "mutations": 1, "crossovers": 1, "iterations": 2,
               "fitness_examples": 16, "distill_epochs": 1, "distill_longer": 1.0, "sequence_length": None,
               "measurer": "user_measurer:ParameterCount"}


@requires_glue
@pytest.mark.slow
def test_an_attempt_searches_then_quantizes_the_searched_model_and_reads_back(sst2_csv, tiny_tokenizer, tmp_path,
                                                                               user_measurer):
    train, _ = sst2_csv
    selection, _ = selection_data(load_task_data(str(train), label="sentiment"))
    teacher = tmp_path / "teacher"  # a (tiny, random) classifier of the user's labels, as a fine-tuned teacher is
    config = CompactBertConfig(vocab_size=99, hidden_size=64, head_dim=8, num_heads_per_layer=[8] * 3,
                               intermediate_size_per_layer=[256] * 3, max_position_embeddings=64,
                               **selection.spec.model_labels())
    CompactBertForSequenceClassification(config).save_pretrained(teacher)
    tiny_tokenizer.save_pretrained(teacher)
    context = Context(selection, str(teacher), max_length=32, epochs=1.0, train_subset=None)
    search = replace(search_options()[0], section=TINY_SEARCH, latency_share=0.6)
    plan = Plan(3, 3, {"hat": search, "quant": technique("quant").plan_options()[0]})

    run = run_attempt(context, plan, 1, tmp_path / "steps")
    searched, quantized = (step["per_seed"][0] for step in run.steps)
    sub = searched["subtransformer"]
    assert searched["hat"]["predicted_ms"] <= searched["hat"]["budget_ms"], "the search kept to its budget"
    assert 8 <= searched["hat"]["sequence_length"] <= 32, "its budget was timed at the reviews' mean length"
    assert searched["artifact"] == "model.ort" and searched["original"]["folder"] == str(teacher)
    search_step = next(p for p in (tmp_path / "steps").glob("hat-*") if "-work-" not in p.name)
    shipped = CompactBertForSequenceClassification.from_pretrained(search_step / "seed-1" / "model")
    assert shipped.config.num_heads_per_layer == sub["heads"], "the next step starts from the searched shape"
    assert quantized["quant"]["config"]["mode"] == "ptq" and quantized["layers"] == len(sub["heads"])
    assert run.result["subtransformer"] == sub, "the card learns what the search found"
    assert set(shipped.config.id2label.values()) == {"negative", "positive"}

    assert finished_steps(context, plan, 1, tmp_path / "steps") == (2, {"hat"})
    assert finished_steps(context, escalations(plan)[1], 1, tmp_path / "steps") == (1, {"hat"}), \
        "QAT reads the search back"
    again = run_attempt(context, plan, 1, tmp_path / "steps")
    assert again.steps == json.loads(json.dumps(run.steps)) and again.model_dir == run.model_dir, \
        "a finished attempt is read back, nothing searched again"

    # a search at another budget: its own step, in the same work folder, where the SuperTransformer and the latency
    # measurements are read back (the estimate leaves their fixed work out)
    other = Plan(3, 3, {"hat": replace(search, section={**TINY_SEARCH, "budgets": [0.8]}, latency_share=0.8)})
    assert finished_steps(context, other, 1, tmp_path / "steps") == (0, {"hat"})
    work = next((tmp_path / "steps").glob("hat-work-*"))
    measured, trained = (work / "latency.jsonl").read_text(), (work / "supernet" / "model" / "model.safetensors")
    stamp = trained.stat().st_mtime_ns
    wider = run_attempt(context, other, 1, tmp_path / "steps").result
    assert (work / "latency.jsonl").read_text() == measured and trained.stat().st_mtime_ns == stamp
    assert wider["hat"]["budget_ms"] > searched["hat"]["budget_ms"] and len(list((tmp_path / "steps").glob(
        "hat-work-*"))) == 1

    # the second seed: the same search, read back; only the distillation is its own
    assert finished_steps(context, plan, 2, tmp_path / "steps") == (0, {"hat"})
    seed2 = run_attempt(context, plan, 2, tmp_path / "steps")
    assert (work / "latency.jsonl").read_text() == measured and trained.stat().st_mtime_ns == stamp
    assert seed2.result["subtransformer"] == sub and seed2.model_dir != run.model_dir
    assert (work / "sub-0.6-searched-seed2" / "pytorch").is_dir() and (work / "search_results-seed2.json").is_file()
    assert json.loads((work / "search_results.json").read_text())["seed"] == 1, "the first seed's results stay"

    # the last escalation: the same search, its SubTransformer distilled twice as long in a folder of its own
    longer = escalations(plan)[-1]
    assert longer.training == 2 and finished_steps(context, longer, 1, tmp_path / "steps") == (0, {"hat"})
    assert run_attempt(context, longer, 1, tmp_path / "steps").result["subtransformer"] == sub
    assert (work / "sub-0.6-searched-distil2x" / "pytorch").is_dir() and trained.stat().st_mtime_ns == stamp
    assert json.loads((work / "search_results-distil2x.json").read_text())["hat"]["distill_longer"] == 2.0
    kept = [str(c.relative_to(tmp_path)) for c in (tmp_path / "steps").rglob("checkpoint-*")]
    assert not kept, f"Trainer checkpoints kept after their steps finished: {kept}"

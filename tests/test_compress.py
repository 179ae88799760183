"""`compact compress`: the planner's rules as code (which plans, in what order, escalations, the budget), bad input
refused in one line before training, and (slow) a tiny compress on real SST-2 rows end to end: dry run, ship,
resume, the refused changed-arguments case and the unreachable target."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import transformers as tf

from compact_nlp.cli import main
from compact_nlp.ship import machine
from compact_nlp.compress.budget import TrainingPlan, choose_training, kept_decision
from compact_nlp.compress.goal import Goal, GoalError, goal_from, parse_duration
from compact_nlp.compress.planner import Attempt, Target, best, order, predicted_to_meet, target_of
from compact_nlp.compress.plans import Plan, all_plans, escalations, student_layers
from compact_nlp.compress import prepare
from compact_nlp.compress.steps import steps_of
from compact_nlp.registry import PlanOption
from conftest import requires_glue


def test_goals_are_checked_before_anything_runs():
    assert goal_from(3, None, None, 1).describe() == "3x faster than the fastest int8 peer, at most 1 points worse"
    for bad, message in (((None, None, None, 1), "exactly one target"), ((3, 5, None, 1), "exactly one target"),
                         ((0.5, None, None, 1), "slower model"), ((None, -2, None, 1), "positive"),
                         ((3, None, None, -1), "max-drop")):
        with pytest.raises(GoalError, match=message):
            goal_from(*bad)
    assert parse_duration("1h30m") == 5400 and parse_duration("90m") == 5400 and parse_duration("45s") == 45
    assert parse_duration("600") == 600 and parse_duration(None) is None
    with pytest.raises(GoalError, match="not a duration"):
        parse_duration("soon")


def test_plans_combine_what_the_registry_offers_under_each_options_rule():
    plans = all_plans(6)
    assert all(p.layers < 6 or p.options for p in plans), "the original itself is not a plan"
    assert {p.layers for p in plans} == {6, 5, 4, 3, 2}
    binary = [p for p in plans if "binary" in p.label]
    assert binary and min(p.layers for p in binary) == 5, "binary weights need depth (a rule from earlier runs)"
    half = [p for p in plans if "kept 0.5" in p.label]
    assert half and min(p.layers for p in half) == 3, "half the tokens is out of reach with 1 of 2 layers unpruned"
    assert student_layers(6, 3) == [1, 3, 5] and student_layers(6, 6) is None


def test_escalations_keep_the_shape_and_get_costlier():
    plan = next(p for p in all_plans(6) if p.layers == 3 and len(p.options) == 2
                and "binary" not in p.label and "PTQ" in p.label)
    tries = escalations(plan)
    assert [t.shape_key for t in tries] == [plan.shape_key] * len(tries), "an escalation never changes the shape"
    assert "PTQ" in tries[0].label and "QAT" in tries[1].label and tries[-1].training == 2.0
    # PTQ is a step of its own after the student, so QAT's attempt reuses the student step (same step settings)
    first, second = steps_of(tries[0]), steps_of(tries[1])
    assert first[0] == second[0] and first[1].trains is False and second[1].trains is True


def test_qat_after_ptq_of_a_plain_student_quantizes_the_trained_student_in_a_step_of_its_own():
    """Merged into the student's step, QAT's recipe changed the model before quantizing it, which its PTQ fallback
    refuses (an STS-B compress stopped there with exit 2): it is a step of its own, after the student PTQ reused."""
    plan = next(p for p in all_plans(6) if p.layers == 2 and list(p.options) == ["quant"] and "PTQ" in p.label)
    ptq, qat = escalations(plan)[:2]
    first, second = steps_of(ptq), steps_of(qat)
    assert len(second) == 2 and first[0] == second[0] and not second[0].sections, "the same student, reused"
    assert second[1].sections["quant"]["int8"]["fallback_to_ptq"] and list(second[1].sections) == ["quant"]
    assert second[1].layers is None, "no student_layers in QAT's recipe: its fallback quantizes the trained student"


def test_a_resumed_run_keeps_the_first_runs_training_decision(tmp_path):
    """The time left shrinks between a kill and the resume; the steps' folders are named by their settings, so a
    training length decided again would start them over."""
    first = kept_decision(tmp_path / "training.json", lambda: TrainingPlan(3.0, None, 3.0))
    again = kept_decision(tmp_path / "training.json", lambda: TrainingPlan(1.0, 500, 1.0, note="less time left"))
    assert again == first == TrainingPlan(3.0, None, 3.0)


def test_binary_weights_at_full_depth_escalate_to_twice_the_training():
    plan = next(p for p in all_plans(6) if p.layers == 6 and "binary" in p.label)
    tries = escalations(plan)
    assert len(tries) == 2 and tries[1].shape_key == plan.shape_key
    assert steps_of(tries[1])[-1].epochs_factor == 2 * steps_of(tries[0])[-1].epochs_factor


def test_order_tries_the_plans_predicted_to_meet_the_target_least_lossy_first():
    gentle, harsh, slow = Plan(6, 4), Plan(6, 2), Plan(6, 5)
    for plan, ms in ((gentle, 4.0), (harsh, 2.0), (slow, 9.0)):
        plan.predicted_ms, plan.predicted_size_mb = ms, 10.0
    target = target_of(Goal("speedup", 3, 1), "peer", 15.0)
    assert target.ms == 5.0 and not predicted_to_meet(slow, target)
    assert order([harsh, slow, gentle], target, lambda plan: 60.0) == [gentle, harsh]


def test_best_effort_prefers_attempts_that_reach_the_target():
    target = Target("speedup", ms=5.0, peer="peer", peer_ms=15.0)

    def attempt(label, score, ms):
        return Attempt({"label": label}, 1, label, score, 90.0, ms, 10.0, 15.0 / ms, 1.0)

    fast_bad, fast_better, slow_good = attempt("a", 85.0, 4.0), attempt("b", 87.0, 4.5), attempt("c", 89.9, 7.0)
    assert best([fast_bad, fast_better, slow_good], target) is fast_better
    assert best([slow_good], target) is slow_good


def test_the_time_budget_sets_the_training_and_refuses_a_budget_below_the_baseline():
    plan = Plan(6, 3, {"t": PlanOption("x", {}, {})})
    free = choose_training(10000, 0.01, None, True, plan)
    assert free.epochs == 3 and free.train_subset is None and free.teacher_epochs == 3
    tight = choose_training(60000, 0.01, 1800, True, plan)
    assert tight.epochs < 3 or tight.train_subset is not None
    assert tight.note, "a scaled-down run says so"
    with pytest.raises(GoalError, match="too short.*takes about"):
        choose_training(60000, 0.05, 30, True, plan)


@pytest.mark.parametrize("argv, message", [
    (["--speedup", "fast", "--max-drop", "1"], "not a number"),
    (["--speedup", "-3", "--max-drop", "1"], "> 0"),
    (["--speedup", "3", "--max-drop", "-1"], "negative"),
    (["--speedup", "3", "--latency-ms", "4", "--max-drop", "1"], "not allowed with"),
])
def test_bad_targets_exit_2_with_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["compress", "m", str(tmp_path / "out"), "--data", "x.csv", *argv])
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_an_unsupported_architecture_is_refused_before_training(tmp_path, capsys):
    folder = tmp_path / "gpt2"
    tf.GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(folder)
    data = tmp_path / "reviews.csv"
    data.write_text("review,sentiment\n" + "".join(f"row {i},{'positive' if i % 2 else 'negative'}\n"
                                                     for i in range(40)))
    code = main(["compress", str(folder), str(tmp_path / "out"), "--data", str(data), "--label-column", "sentiment",
                 "--speedup", "3", "--max-drop", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "'gpt2'" in err and "supported families: bert" in err
    assert not (tmp_path / "out").exists(), "nothing is written before the inputs are checked"


def test_a_compact_folder_is_a_model_compress_takes(tmp_path, tiny_bert_classifier):
    from compact_nlp.compress.job import check_inputs
    from compact_nlp.data import load_task_data

    folder = tmp_path / "compact-model"
    tiny_bert_classifier.save_pretrained(folder)
    data = tmp_path / "reviews.csv"
    data.write_text("review,label\n" + "".join(f"row {i},{'POSITIVE' if i % 2 else 'NEGATIVE'}\n" for i in range(40)))
    assert check_inputs(str(folder), load_task_data(str(data)), None) == str(folder)


def test_an_output_onto_an_input_is_refused(tmp_path, tiny_model, capsys):
    data = tmp_path / "reviews.csv"
    data.write_text("review,sentiment\n" + "".join(f"row {i},{'positive' if i % 2 else 'negative'}\n"
                                                     for i in range(40)))
    for out in (tiny_model, tmp_path):  # into the model's folder; a folder that holds the data
        code = main(["compress", str(tiny_model), str(out), "--data", str(data), "--label-column", "sentiment",
                     "--speedup", "2", "--max-drop", "1"])
        assert code == 2 and "would overwrite" in capsys.readouterr().err
    assert data.read_text().startswith("review,sentiment")


@requires_glue
@pytest.mark.slow
def test_a_tiny_compress_plans_ships_resumes_and_refuses_other_arguments(sst2_csv, tiny_model, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setenv("COMPACT_PEER_ENVS", str(tmp_path / "no-peers"))  # ORT dynamic int8 only: fast and certain
    train, dev = sst2_csv
    out = tmp_path / "out"
    base = ["compress", str(tiny_model), str(out), "--data", str(train), "--validation", str(dev),
            "--label-column", "sentiment", "--max-drop", "100", "--latency-ms", "1000"]
    assert main([*base, "--dry-run"]) == 0
    planned = json.loads((out / "report.json").read_text())
    assert planned["status"] == "planned" and planned["plans"] and not (out / "model").exists()
    assert planned["plans"][0]["predicted_ms"] > 0 and planned["baseline"]["fastest_peer"]

    assert main(base) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "met" and report["teacher"]["fine_tuned_here"]
    assert (out / "model" / "model.ort").is_file() and (out / "model" / "README.md").is_file()
    assert (out / "candidates.png").is_file() and "## Attempts" in (out / "report.md").read_text()
    assert report["final"]["metric"] == "validation/accuracy"
    peers = json.loads((out / "final" / "peers.json").read_text())
    timed = [p["name"] for p in report["final"]["peers_on_validation"] if p["available"]]
    assert timed == [report["final"]["peer"]] == [p["name"] for p in peers["peers"] if p["available"]], \
        "the peers are measured again on the validation rows, and the speedup is counted there"
    graphs = (out / "plan" / "proxies", out / "plan" / "peers", out / "final" / "peers")
    left = [f"{f.parent.name}/{f.name}" for f in graphs if f.exists()]
    assert not left, f"graphs kept after they were timed: {left}"  # the timings are in plan/ and final/peers.json
    assert "The validation inputs average" in (out / "report.md").read_text(), \
        "SST-2's dev sentences are about twice as long as its training phrases: the report says so"
    card = (out / "model" / "README.md").read_text()
    assert f"the speed of {report['baseline']['fastest_peer']} (the fastest int8 runtime measured in the same run)" \
        in card and f"on this CPU: {machine()['cpu']}" in card, "the card states the peer ratio and names the CPU"
    model = tf.AutoConfig.from_pretrained(out / "model")
    assert set(model.id2label.values()) == {"negative", "positive"}, "the shipped model answers with the user's labels"

    capsys.readouterr()
    assert main(base) == 0, "the same command again resumes (everything is done: nothing retrains)"
    assert json.loads((out / "report.json").read_text())["attempts"] == report["attempts"]
    assert main([*base[:-2], "--latency-ms", "500"]) == 2
    assert "different compress job" in capsys.readouterr().err and "--restart" in capsys.readouterr().err + "--restart"


@requires_glue
@pytest.mark.slow
def test_an_unreachable_target_ships_nothing_and_exits_3(sst2_csv, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPACT_PEER_ENVS", str(tmp_path / "no-peers"))
    train, _ = sst2_csv
    out = tmp_path / "out"
    code = main(["compress", str(tiny_model), str(out), "--data", str(train), "--label-column", "sentiment",
                 "--latency-ms", "0.0001",
                 "--max-drop", "1"])
    report = json.loads((out / "report.json").read_text())
    assert code == 3 and report["status"] == "unmet" and not (out / "model").exists()
    assert "no plan is predicted" in report["distance"]


def compress_command(launch: list[str] | None, arguments: list[str]) -> list[str]:
    """`compact compress` in a process of its own, or under `accelerate launch` with `launch`'s options."""
    if launch is None:
        return [sys.executable, "-m", "compact_nlp.cli", "compress", *arguments]
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate is not installed")
    return [str(accelerate), "launch", *launch, "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend",
            "no", "-m", "compact_nlp.cli", "compress", *arguments]


def compress_env(tmp_path) -> dict:
    return {**os.environ, "COMPACT_PEER_ENVS": str(tmp_path / "no-peers"), "COMPACT_CACHE": str(tmp_path / "cache"),
            "OMP_NUM_THREADS": "1"}


def accelerate_compress(tmp_path, launch: list[str], arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(compress_command(launch, arguments), env=compress_env(tmp_path), capture_output=True,
                          text=True, timeout=1200)


@requires_glue
@pytest.mark.slow
@pytest.mark.parametrize("launch", [None, ["--multi_gpu", "--num_processes", "2"]], ids=["one", "two-processes"])
def test_a_compress_killed_during_an_attempt_resumes_without_training_the_teacher_again(sst2_csv, tiny_model,
                                                                                         tmp_path, launch):
    """SIGKILL to every process once the first attempt has begun (the teacher fine-tuned, its folder final); the same
    command then resumes: the teacher is read back, the attempt runs, the folder ships."""
    train, dev = sst2_csv
    out = tmp_path / "out"
    arguments = [str(tiny_model), str(out), "--data", str(train), "--validation", str(dev), "--label-column",
                 "sentiment", "--latency-ms", "1000", "--max-drop", "100"]
    first = subprocess.Popen(compress_command(launch, arguments), env=compress_env(tmp_path),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 900
    while not (out / "steps").is_dir() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, "the compress ended before its first attempt began: nothing was killed"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    teacher = out / "teacher" / "seed-1" / "model" / "model.safetensors"
    written = teacher.stat().st_mtime_ns
    assert not (out / "model").exists()

    again = subprocess.run(compress_command(launch, arguments), env=compress_env(tmp_path), capture_output=True,
                           text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming compress" in again.stdout + again.stderr
    assert teacher.stat().st_mtime_ns == written, "the fine-tuned teacher is read back, not trained again"
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "met" and (out / "model" / "model.ort").is_file()


@requires_glue
@pytest.mark.slow
@pytest.mark.parametrize("launch, processes", [(["--multi_gpu", "--num_processes", "2"], 2),
                                               (["--cpu", "--num_processes", "2"], 1)],
                         ids=["two-processes", "cpu-flag"])
def test_a_tiny_compress_trains_data_parallel_under_accelerate_launch(sst2_csv, tiny_model, tmp_path, launch,
                                                                      processes):
    """Every training run of the compress is data-parallel over the processes accelerate starts; the main one
    measures, decides and writes, and the folder ships once. On a machine without a GPU, `--multi_gpu` starts the
    processes (torch.distributed.run) and they train on the CPU over gloo; accelerate 1.16 runs the issue's literal
    `--cpu --num_processes 2` through its simple launcher, as one process (multi-CPU there needs mpirun), which must
    work too."""
    train, dev = sst2_csv
    out = tmp_path / "out"
    done = accelerate_compress(tmp_path, launch, [
        str(tiny_model), str(out), "--data", str(train), "--validation", str(dev), "--label-column", "sentiment",
        "--latency-ms", "1000", "--max-drop", "100"])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "met" and (out / "model" / "model.ort").is_file()
    assert done.stdout.count("# compact compress") == 1  # one report printed, by the main process
    trained = [json.loads(f.read_text())["per_seed"][0] for f in [out / "teacher" / "results.json",
                                                                    *(out / "steps").glob("*/results.json")]]
    assert trained[0]["train_steps"] > 0  # the tiny model has no head: the teacher was fine-tuned here
    assert {run["processes"] for run in trained if run["train_steps"]} == {processes}


def test_device_cuda_without_a_gpu_is_refused_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    code = main(["compress", "model-that-is-never-loaded", str(tmp_path / "out"), "--data", str(tmp_path / "x.csv"),
                 "--speedup", "2", "--max-drop", "1", "--device", "cuda"])
    assert code == 2 and not (tmp_path / "out").exists()


def test_a_teacher_no_better_than_learning_nothing_is_called_out():
    from types import SimpleNamespace

    from compact_nlp.compress.job import teacher_warning

    heldout = {"label": [0] * 70 + [1] * 30}
    setup = SimpleNamespace(selection=SimpleNamespace(splits={"validation": heldout}),
                            data=SimpleNamespace(spec=SimpleNamespace(problem_type="single_label_classification")))
    assert "learned nothing" in teacher_warning(setup, 71.0) and "70.00" in teacher_warning(setup, 71.0)
    assert teacher_warning(setup, 88.0) == ""
    setup.data.spec.problem_type = "regression"
    assert "learned nothing" in teacher_warning(setup, -16.6) and teacher_warning(setup, 80.0) == ""


def test_cached_measurements_are_keyed_by_the_machine_they_were_timed_on(monkeypatch):
    """A cache folder copied to, or shared with, another machine is not read there: its latencies are this CPU's."""
    class JobStub:  # what measurement_key reads of a compress job
        inputs, arguments = {"train": "digest"}, {"model": "m"}

    here = prepare.measurement_key(JobStub, 1, 64)
    assert prepare.measurement_key(JobStub, 1, 64) == here and prepare.measurement_key(JobStub, 2, 64) != here
    monkeypatch.setattr(prepare, "cpu_name", lambda: "another CPU (avx512_vnni)")
    assert prepare.measurement_key(JobStub, 1, 64) != here


"""Several processes (compact_nlp.distributed): training data-parallel under `accelerate launch`, everything else once;
the training device and its refusals."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compact_nlp.cli import main
from compact_nlp.distributed import DeviceError, everywhere, lead, on_main, per_process, uses_cuda
from compact_nlp.recipe import RecipeError, load_recipe
from conftest import GLUE_DIR, requires_glue


def test_a_batch_is_split_over_the_processes_or_refused(monkeypatch):
    assert per_process(32) == 32
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert per_process(32) == 8
    with pytest.raises(ValueError, match="a batch of 30 rows does not split evenly over 4 processes"):
        per_process(30)


def test_with_one_process_every_pattern_is_a_plain_call():
    assert on_main(sorted, [3, 1, 2]) == [1, 2, 3]
    assert lead(lambda: everywhere(max, 4, 7), cpu=True) == 7
    with pytest.raises(KeyError, match="missing"):
        lead(lambda: {}["missing"], cpu=True)


def test_the_training_device_is_checked(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert uses_cuda("auto") is False and uses_cuda("cpu") is False
    with pytest.raises(DeviceError, match="must be one of auto, cpu, cuda, got 'gpu'"):
        uses_cuda("gpu")
    with pytest.raises(RecipeError, match=r"protocol.device cuda: torch sees no CUDA GPU.*--device cpu"):
        load_recipe("glue/sst2", ["protocol.device=cuda"])
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert uses_cuda("auto") is True and uses_cuda("cpu") is False


@pytest.fixture
def reviews(tmp_path):
    """400 real SST-2 training rows as a user's CSV (other column names, labels as words)."""
    if GLUE_DIR is None:
        pytest.skip("GLUE data not found")
    with open(GLUE_DIR / "SST-2" / "train.tsv") as source, open(tmp_path / "reviews.csv", "w", newline="") as target:
        rows = list(csv.reader(source, delimiter="\t", quoting=csv.QUOTE_NONE))[1:401]
        writer = csv.writer(target)
        writer.writerow(["review", "sentiment"])
        writer.writerows([text, ("negative", "positive")[int(label)]] for text, label in rows)
    return tmp_path / "reviews.csv"


@requires_glue
@pytest.mark.slow
def test_compact_run_trains_data_parallel_under_accelerate_launch(reviews, tiny_model, tmp_path):
    """`accelerate launch` with two processes (on the CPU, over gloo): each trains on half of every batch, so the run
    takes the steps one process takes, with the same batches; the main process alone exports, times and writes."""
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate is not installed")
    arguments = ["run", "--train", str(reviews), "--text-column", "review", "--label-column", "sentiment",
                 "--model", str(tiny_model), "--set", "protocol.epochs=1", "--set", "protocol.batch_size=16",
                 "--set", "protocol.max_length=64", "--device", "cpu"]
    assert main([*arguments, "--out", str(tmp_path / "one")]) == 0
    done = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "compact_nlp.cli", *arguments,
                           "--out", str(tmp_path / "two")],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / run / "results.json").read_text())["per_seed"][0] for run in ("one", "two"))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert json.loads((tmp_path / "two" / "results.json").read_text())["recipe"]["protocol"]["device"] == "cpu"
    # the batch is the step's: each process takes 8 of its 16 rows, so both take the same 21 steps
    assert two["train_steps"] == one["train_steps"] == 21
    shipped = [sorted(p.name for p in (tmp_path / run / "seed-1" / "model").iterdir()) for run in ("one", "two")]
    assert shipped[0] == shipped[1] and {"model.ort", "README.md"} <= set(shipped[1])  # written once, complete


def test_hardware_aware_search_refuses_several_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what accelerate launch / torchrun set; the check reads only that
    with pytest.raises(ValueError, match="runs in one process, and 2 were started"):
        load_recipe("glue/sst2", ["teacher=some/fine-tuned-model"], ["combined"])


def test_a_job_file_from_before_the_device_setting_is_the_same_job_while_the_device_is_auto():
    """Job files written before `device` existed lack it: at its default the job resumes, chosen it is another job,
    and the difference is named setting by setting."""
    from compact_nlp.commands import RECIPE_DEFAULTS
    from compact_nlp.compress.goal import Limits
    from compact_nlp.workdir import Job, defaults_of

    def run_job(overrides):
        return Job("run", {"recipe": load_recipe("glue/sst2", overrides).to_dict()}, defaults=RECIPE_DEFAULTS)

    older = run_job([])
    del older.arguments["recipe"]["protocol"]["device"]  # as written before the setting
    assert run_job([]).differences(older) == []
    assert run_job(["protocol.device=cpu"]).differences(older) == [
        "argument recipe.protocol.device: (not recorded) -> 'cpu'"]
    assert run_job(["protocol.epochs=1"]).differences(run_job([])) == ["argument recipe.protocol.epochs: 2.0 -> 1.0"]
    limits = {k: v for k, v in Limits().to_dict().items() if k != "device"}
    assert Job("compress", Limits().to_dict(), defaults=defaults_of(Limits)).differences(
        Job("compress", limits)) == []
    assert Job("compress", Limits(device="cpu").to_dict(), defaults=defaults_of(Limits)).differences(
        Job("compress", limits)) == ["argument device: (not recorded) -> 'cpu'"]


def test_compact_run_takes_the_device_and_refuses_cuda_without_a_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    (tmp_path / "reviews.csv").write_text("review,sentiment\na fine film,positive\na dull film,negative\n")
    code = main(["run", "--train", str(tmp_path / "reviews.csv"), "--label-column", "sentiment", "--device", "cuda",
                 "--out", str(tmp_path / "out")])
    assert code == 2 and "protocol.device cuda: torch sees no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@requires_glue
@pytest.mark.slow
def test_an_error_inside_a_led_compress_reaches_every_process_instead_of_hanging(reviews, tiny_model, tmp_path):
    """The data says classification and --task says regression: compress finds that inside `lead`, on the main
    process; the follower must get the same error (exit 2), not wait for a training run that never comes."""
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate is not installed")
    done = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "compact_nlp.cli", "compress",
                           str(tiny_model), str(tmp_path / "out"), "--data", str(reviews), "--text-column", "review",
                           "--label-column", "sentiment", "--task", "regression", "--size-mb", "5",
                           "--max-drop", "1"],
                          env={**os.environ, "OMP_NUM_THREADS": "1", "COMPACT_PEER_ENVS": str(tmp_path / "none")},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.count("compact: error: --task regression does not match the data") == 2  # each process

"""CompactTrainer: distillation through compute_loss, hooks, evaluation, resume, and two processes."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainingArguments

from compact_nlp.distill import DistillationConfig
from compact_nlp.trainer import DISTILLER_FILE, CompactConfig, CompactHook, CompactTrainer, remove_checkpoints

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from tiny import random_dataset, tiny_classifier  # noqa: E402

DISTILL = CompactConfig(distillation=DistillationConfig(hidden_weight=1.0, attention_weight=1.0, temperature=2.0))


def arguments(out, **overrides):
    settings = dict(per_device_train_batch_size=8, max_steps=4, learning_rate=1e-3, logging_steps=2, report_to=[],
                    use_cpu=True, save_strategy="no", seed=0, disable_tqdm=True)
    return TrainingArguments(str(out), **{**settings, **overrides})


def distillation_trainer(out, **overrides):
    torch.manual_seed(0)
    teacher, student = tiny_classifier(hidden=32, heads=4, layers=4), tiny_classifier(hidden=24, heads=3, layers=2)
    return CompactTrainer(model=student, args=arguments(out, **overrides), compact_config=DISTILL,
                          teacher_model=teacher, train_dataset=random_dataset(64), eval_dataset=random_dataset(16, seed=1))


def test_distillation_terms_are_trained_and_logged(tmp_path):
    trainer = distillation_trainer(tmp_path)
    before = trainer.distiller.projection.weight.detach().clone()
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and {"loss_task", "loss_logits", "loss_hidden", "loss_attention"} <= set(logged[0])
    assert not torch.equal(before, trainer.distiller.projection.weight)  # the projection is in the optimizer
    assert all(not p.requires_grad for p in trainer.teacher.parameters())
    metrics = trainer.evaluate()  # evaluation reports the task loss alone
    assert 0.3 < metrics["eval_loss"] < 1.5


def test_hooks_change_the_model_per_step_and_add_loss_terms(tmp_path):
    class CountAndRegularise(CompactHook):
        steps = 0

        def on_step_begin(self, args, state, control, model=None, **kwargs):
            CountAndRegularise.steps += 1
            assert model is not None

        def loss_terms(self, model, inputs, outputs):
            return {"l2": 1e-3 * sum(p.pow(2).sum() for p in model.classifier.parameters())}

    trainer = CompactTrainer(model=tiny_classifier(), args=arguments(tmp_path), hooks=[CountAndRegularise()],
                             train_dataset=random_dataset(64))
    trainer.train()
    assert CountAndRegularise.steps == 4
    assert "loss_l2" in trainer.state.log_history[0] and "loss_logits" not in trainer.state.log_history[0]


def test_no_labels_and_no_teacher_is_a_clear_error(tmp_path):
    unlabelled = random_dataset(16).remove_columns("labels")
    trainer = CompactTrainer(model=tiny_classifier(), args=arguments(tmp_path, max_steps=1),
                             train_dataset=unlabelled)
    with pytest.raises(ValueError, match="nothing to train on"):
        trainer.train()


@pytest.mark.slow
def test_resume_from_a_checkpoint_loses_nothing(tmp_path):
    full = distillation_trainer(tmp_path / "full", save_strategy="steps", save_steps=2)
    full.train()
    assert (tmp_path / "full" / "checkpoint-2" / DISTILLER_FILE).is_file()

    # an interrupted run: only its first checkpoint survives, then a fresh process resumes from it
    shutil.copytree(tmp_path / "full" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    resumed = distillation_trainer(tmp_path / "resumed", save_strategy="steps", save_steps=2)
    resumed.train(resume_from_checkpoint=True)
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert torch.allclose(full.distiller.projection.weight, resumed.distiller.projection.weight, atol=1e-6)


def test_resuming_without_the_projections_is_refused(tmp_path):
    full = distillation_trainer(tmp_path / "run", save_strategy="steps", save_steps=2)
    full.train()
    (tmp_path / "run" / "checkpoint-4" / DISTILLER_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="projections cannot be restored"):
        distillation_trainer(tmp_path / "run", save_strategy="steps", save_steps=2).train(resume_from_checkpoint=True)


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(tmp_path):
    # accelerate 1.15 runs `launch --cpu --num_processes 2` as ONE process (multi-CPU needs an mpirun hostfile);
    # `--multi_gpu` starts two through torch.distributed.run, and use_cpu=True keeps them on the CPU (gloo).
    accelerate = Path(sys.executable).parent / "accelerate"
    result = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPTS / "distill_two_processes.py"),
         str(tmp_path)],
        capture_output=True, text=True, cwd=SCRIPTS, timeout=300,
        env={**os.environ, "PYTHONPATH": str(SCRIPTS)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1)]
    assert int(ranks[0]["world_size"]) == int(ranks[1]["world_size"]) == 2
    # the student (DDP) and the projections (averaged by hand) stay identical across processes
    assert torch.equal(ranks[0]["classifier"], ranks[1]["classifier"])
    assert torch.equal(ranks[0]["projection"], ranks[1]["projection"])


def test_compact_config_round_trip_and_errors():
    config = CompactConfig(distillation={"temperature": 3.0, "hidden_weight": 0.5})
    assert isinstance(config.distillation, DistillationConfig)
    assert CompactConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown CompactConfig keys \\['quantisation'\\]"):
        CompactConfig.from_dict({"quantisation": {}})
    with pytest.raises(ValueError, match="CompactConfig version 9 is not supported"):
        CompactConfig(version=9)


def test_finished_training_leaves_its_output_but_not_its_checkpoints(tmp_path):
    for name in ("checkpoint-2", "checkpoint-10"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "optimizer.pt").write_bytes(b"state")
    (tmp_path / "checkpoint-notes.txt").write_text("a file, not a checkpoint folder")
    (tmp_path / "model").mkdir()
    assert remove_checkpoints(tmp_path) == ["checkpoint-10", "checkpoint-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-notes.txt", "model"]
    assert remove_checkpoints(tmp_path / "missing") == []  # a step that never saved one

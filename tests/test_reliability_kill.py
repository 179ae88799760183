"""A training run killed (SIGKILL) or out of disk in the middle of a checkpoint save resumes and ends with the same
weights as a run that was never interrupted (issue 30).

Run as a script, this file is the training process the slow test kills:
    python tests/test_reliability_kill.py OUT [--kill-at K] [--count-writes FILE]
K counts the checkpoint writes (weights, projections, optimizer, scheduler, RNG state, trainer_state.json): the
K-th is killed half-written (odd K) or before it starts (even K)."""

from __future__ import annotations

import argparse
import errno
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers.modeling_utils
import transformers.trainer
from safetensors.torch import load_file, save_file
from transformers import TrainingArguments
from transformers.trainer_callback import TrainerState

import compact_nlp.trainer
from compact_nlp.distill import DistillationConfig
from compact_nlp.trainer import CompactConfig, CompactTrainer, IncompleteCheckpointError

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from tiny import random_dataset, tiny_classifier  # noqa: E402

DISTILL = CompactConfig(distillation=DistillationConfig(hidden_weight=1.0, attention_weight=1.0, temperature=2.0))
STEPS = 6


def trainer_for(out: Path) -> CompactTrainer:
    """A distilling CompactTrainer that checkpoints every step (keeping two, as compact run's protocol does)."""
    torch.manual_seed(0)
    teacher, student = tiny_classifier(hidden=32, heads=4, layers=4), tiny_classifier(hidden=24, heads=3, layers=2)
    args = TrainingArguments(str(out), per_device_train_batch_size=8, max_steps=STEPS, learning_rate=1e-3,
                             report_to=[], use_cpu=True, save_strategy="steps", save_steps=1, save_total_limit=2,
                             seed=0, disable_tqdm=True, logging_steps=100)
    return CompactTrainer(model=student, args=args, compact_config=DISTILL, teacher_model=teacher,
                          train_dataset=random_dataset(64))


def final_weights(trainer: CompactTrainer) -> dict[str, torch.Tensor]:
    weights = {f"model.{k}": v.detach().clone() for k, v in trainer.model.state_dict().items()}
    weights.update({f"distiller.{k}": v.detach().clone() for k, v in trainer.distiller.state_dict().items()})
    return weights


def test_a_full_disk_during_a_checkpoint_save_leaves_the_run_resumable(tmp_path, monkeypatch, capsys):
    reference = trainer_for(tmp_path / "reference")
    reference.train()
    calls, original = [], TrainerState.save_to_json

    def full_disk_at_the_third_save(self, json_path):
        calls.append(json_path)
        if len(calls) == 3:
            Path(json_path).write_text('{"global_st')  # what a full disk leaves of it
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, json_path)
    monkeypatch.setattr(TrainerState, "save_to_json", full_disk_at_the_third_save)
    with pytest.raises(OSError):
        trainer_for(tmp_path / "run").train()
    monkeypatch.undo()
    assert (tmp_path / "run" / "checkpoint-3").is_dir()  # the checkpoint the full disk broke
    with pytest.raises(IncompleteCheckpointError, match="checkpoint-3 is an incomplete checkpoint"):
        trainer_for(tmp_path / "run").train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    resumed = trainer_for(tmp_path / "run")
    resumed.train(resume_from_checkpoint=True)
    assert "skipping" in capsys.readouterr().out
    expected, got = final_weights(reference), final_weights(resumed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_without_a_complete_checkpoint_the_run_starts_over(tmp_path):
    (tmp_path / "run" / "checkpoint-2").mkdir(parents=True)  # killed before its first file was written
    trainer = trainer_for(tmp_path / "run")
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == STEPS


def _script(out: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, __file__, str(out), *extra], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).parent)


@pytest.mark.slow
def test_killed_at_20_random_points_of_its_checkpoint_saves_every_run_resumes_to_the_same_weights(tmp_path):
    count_file = tmp_path / "writes.txt"
    done = _script(tmp_path / "reference", "--count-writes", str(count_file))
    assert done.returncode == 0, done.stderr[-2000:]
    writes = int(count_file.read_text())
    reference = load_file(tmp_path / "reference" / "final.safetensors")
    points = sorted(random.Random(30).sample(range(1, writes + 1), min(20, writes)))
    for point in points:
        out = tmp_path / f"killed-at-{point}"
        killed = _script(out, "--kill-at", str(point))
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        resumed = _script(out)
        assert resumed.returncode == 0, (point, resumed.stderr[-2000:])
        final = load_file(out / "final.safetensors")
        different = [k for k in reference if not torch.equal(reference[k], final[k])]
        assert not different, f"killed at write {point}: {different[:3]} differ from the uninterrupted run"


# --- the training process the slow test kills ---------------------------------------------------------------------

class _Writes:
    """Counts the checkpoint writes; kills this process at the chosen one."""

    def __init__(self, kill_at: int | None):
        self.kill_at, self.count = kill_at, 0

    def wrap(self, write, path_of):
        def wrapped(*args, **kwargs):
            self.count += 1
            if self.count == self.kill_at:
                if self.kill_at % 2:  # half-written
                    write(*args, **kwargs)
                    path = Path(path_of(args, kwargs))
                    with open(path, "r+b") as handle:
                        handle.truncate(path.stat().st_size // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            return write(*args, **kwargs)
        return wrapped


def _instrument(writes: _Writes) -> None:
    TrainerState.save_to_json = writes.wrap(TrainerState.save_to_json, lambda a, k: a[1])
    transformers.modeling_utils.safe_save_file = writes.wrap(transformers.modeling_utils.safe_save_file,
                                                             lambda a, k: a[1])
    compact_nlp.trainer.save_file = writes.wrap(compact_nlp.trainer.save_file, lambda a, k: a[1])
    transformers.trainer.torch.save = writes.wrap(torch.save, lambda a, k: a[1])  # optimizer, scheduler, RNG


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--count-writes", default=None)
    args = parser.parse_args()
    writes = _Writes(args.kill_at)
    _instrument(writes)
    trainer = trainer_for(Path(args.out))
    trainer.train(resume_from_checkpoint=True)
    save_file(final_weights(trainer), str(Path(args.out) / "final.safetensors"))
    if args.count_writes:
        Path(args.count_writes).write_text(str(writes.count))


if __name__ == "__main__":
    _main()

"""Run by tests/test_trainer.py under `accelerate launch` with two processes on the CPU: distil a tiny student whose
hidden size differs from the teacher's, then write what each process ended with."""

import sys

import torch
from safetensors.torch import save_file
from transformers import TrainingArguments

from compact_nlp.distill import DistillationConfig
from compact_nlp.distributed import finish
from compact_nlp.trainer import CompactConfig, CompactTrainer
from tiny import random_dataset, tiny_classifier

out = sys.argv[1]
torch.manual_seed(0)  # the same initial weights in both processes
teacher, student = tiny_classifier(hidden=32, heads=4, layers=4), tiny_classifier(hidden=24, heads=3, layers=2)
config = CompactConfig(distillation=DistillationConfig(hidden_weight=1.0, attention_weight=1.0))
args = TrainingArguments(out, per_device_train_batch_size=4, max_steps=3, learning_rate=1e-3, report_to=[],
                         use_cpu=True, save_strategy="no", logging_steps=1, seed=0)
trainer = CompactTrainer(model=student, args=args, compact_config=config, teacher_model=teacher,
                         train_dataset=random_dataset(32))
trainer.train()
rank = trainer.accelerator.process_index
save_file({"projection": trainer.distiller.projection.weight.detach().contiguous(),
           "classifier": trainer.model.classifier.out_proj.weight.detach().contiguous(),
           "world_size": torch.tensor(trainer.accelerator.num_processes)}, f"{out}/rank{rank}.safetensors")
# Leave the process group and end the process as compact's CLI does: left to interpreter shutdown, gloo's threads
# occasionally abort the process ("terminate called without an active exception") after the work is done.
finish()

"""CompactTrainer: transformers' Trainer plus distillation and technique hooks, and nothing else.

What killed ORTTrainer, OVTrainer and INCTrainer was copying the training loop. This class adds logic only where
Trainer expects subclasses to: `compute_loss`, `create_optimizer`, `log`, `save_model` and `train` (to save and
restore the distillation projections on resume) and `TrainerCallback`s. It therefore keeps working under `accelerate launch`, with gradient
accumulation, and when resuming from checkpoints.

The technique hook interface is `CompactHook` (compact_nlp.hooks, re-exported here): a `TrainerCallback` whose
`loss_terms`, `term_weights` and `param_groups` add loss terms, scale the trainer's own terms and add optimizer
parameter groups.

`save_compact` ships the trained model through compact_nlp.ship, with the export step of the registered technique whose
section is on the model's config (compact_nlp.registry: the same `Technique.exporter` that `compact run` uses); the
trainer never imports a technique.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .config_section import ConfigSection
from .distill import DistillationConfig, Distiller
from .export.card import write_model_card
from .glue import task_texts
from .hooks import CompactHook
from .io import atomic_path, write_json
from .modeling import sequence_classification_loss
from .registry import ExportContext, techniques
from .ship import ship, summarize

DISTILLER_FILE = "distiller.safetensors"
COMPACT_CONFIG_VERSION = 1


@dataclass
class CompactConfig(ConfigSection):
    """The compression a CompactTrainer applies. Techniques add their sections (hat, token_pruning, quant)."""

    distillation: DistillationConfig = field(default_factory=DistillationConfig)
    version: int = COMPACT_CONFIG_VERSION

    def __post_init__(self):
        if isinstance(self.distillation, dict):
            self.distillation = DistillationConfig.from_dict(self.distillation)
        self.check_version(COMPACT_CONFIG_VERSION)


UNLABELLED = -100  # the label of a transfer-set row (TinyBERT): no gold label, distilled from the teacher only


def labelled_loss(logits: torch.Tensor, labels: torch.Tensor, config) -> torch.Tensor | None:
    """The task loss over the rows that have labels (None when none has)."""
    keep = (labels != UNLABELLED).reshape(len(labels), -1).any(-1)  # per row: multi-label rows hold several labels
    if not bool(keep.any()):
        return None
    return sequence_classification_loss(logits[keep], labels[keep], config)


class CompactTrainer(Trainer):
    def __init__(self, model=None, args=None, *, compact_config: CompactConfig | None = None, teacher_model=None,
                 hooks: list[CompactHook] | tuple = (), **kwargs):
        self.hooks = list(hooks)
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + self.hooks
        super().__init__(model=model, args=args, **kwargs)
        self.compact_config = compact_config or CompactConfig()
        self.teacher = None
        self.distiller = None
        if teacher_model is not None:
            self.teacher = teacher_model.to(self.args.device).eval().requires_grad_(False)
            self.distiller = Distiller(self.compact_config.distillation, self.model, self.teacher).to(self.args.device)
            if any(True for _ in self.distiller.parameters()):
                self.add_callback(_DistillerCallback(self))
        self._terms: dict[str, float] = defaultdict(float)
        self._term_calls = 0

    # --- the loss ----------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:  # evaluation: the task loss only
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        distill = self.distiller is not None
        cfg = self.compact_config.distillation
        scale = {}
        for hook in self.hooks:
            for name, value in hook.term_weights(self.state).items():
                scale[name] = scale.get(name, 1.0) * value
        flags = {"output_hidden_states": True} if distill and cfg.needs_hidden_states and scale.get("hidden", 1) else {}
        if distill and cfg.needs_attentions and scale.get("attention", 1):
            flags["output_attentions"] = True
        labels = inputs.get("labels")
        if labels is not None and bool((labels == UNLABELLED).any()):  # a transfer set's rows: the teacher teaches
            if not distill:
                raise ValueError("the batch has unlabelled rows (label -100) but there is no teacher to label them.")
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, **flags)
            task_loss = labelled_loss(outputs.logits, labels, model.config)
        else:
            outputs = model(**inputs, **flags)
            task_loss = getattr(outputs, "loss", None)  # an encoder (no head, no labels) has none: hooks teach it
        terms, weighted = {}, []
        if task_loss is not None and scale.get("task", 1):
            terms["task"] = task_loss
            weighted.append((cfg.task_weight if distill else 1.0) * scale.get("task", 1.0) * task_loss)
        if distill:
            features = {k: v for k, v in inputs.items() if k != "labels"}
            with torch.no_grad():
                teacher_out = self.teacher(**features, **flags)
            mask = inputs.get("attention_mask")
            if mask is None:
                mask = torch.ones_like(inputs["input_ids"])
            for name, value in self.distiller.losses(outputs, teacher_out, mask,
                                                     kept=getattr(outputs, "kept_indices", None),
                                                     kept_masks=getattr(outputs, "kept_masks", None),
                                                     skip={n for n, v in scale.items() if not v}).items():
                terms[name] = value
                weighted.append(self.distiller.weight(name) * scale.get(name, 1.0) * value)
        for hook in self.hooks:
            for name, value in hook.loss_terms(model, inputs, outputs).items():
                terms[name] = value
                weighted.append(value)
        if not weighted:
            raise ValueError("nothing to train on: the batch has no labels and there is no teacher or hook loss; pass "
                             "labels, a teacher_model, or a hook with loss terms.")
        for name, value in terms.items():
            self._terms[name] += float(value.detach())
        self._term_calls += 1
        loss = torch.stack(weighted).sum()
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Add the mean of each loss term since the last log to the training logs."""
        if "loss" in logs and self._term_calls:
            logs.update({f"loss_{name}": round(total / self._term_calls, 6) for name, total in self._terms.items()})
            self._terms.clear()
            self._term_calls = 0
        super().log(logs, *args, **kwargs)

    # --- what ships ---------------------------------------------------------------------------------------------
    def save_compact(self, output_dir: str | os.PathLike, *, task: str, dev, max_length: int = 128,
                     mobile: bool = True, target_platform: str = "arm", original: str | os.PathLike | None = None,
                     base_model: str | None = None, vocabulary_texts: list | None = None) -> dict:
        """Write the deployable folder: weights, tokenizer, model.onnx (+ model.ort), results.json and a model card
        (README.md) with the dev scores, latency and size measured on the exported file, next to `original` (an
        exported folder of the model you started from, e.g. the teacher) measured the same way.

        task: the GLUE task name (its metric); dev: the labelled raw dev split (a `datasets.Dataset` with the task's
        text columns), or a dict of them (MNLI: matched and mismatched). A model prepared for QAT ships its int8
        exports, a binary one its packed export (the quant technique's export step, found through the registry);
        vocabulary_texts: the training text, if its config trims the vocabulary.
        Returns the results.
        """
        if self.processing_class is None:
            raise ValueError("save_compact needs the tokenizer: create the CompactTrainer with processing_class=.")
        splits = dict(dev) if isinstance(dev, dict) else {"validation": dev}
        exporter = self.technique_exporter(next(iter(splits.values())), task, max_length, mobile, target_platform,
                                           vocabulary_texts)
        result = ship(self.model, self.processing_class, output_dir, task, splits, max_length, mobile=mobile,
                      target_platform=target_platform, original=original, exporter=exporter)
        result.update(self.training_facts(task, max_length, target_platform, base_model))
        results = {"recipe": result.pop("recipe"), "summary": summarize([result]), "per_seed": [result]}
        write_json(Path(output_dir) / "results.json", results)
        write_model_card(output_dir, results)
        return results

    def technique_exporter(self, dev, task: str, max_length: int, mobile: bool, target_platform: str,
                           vocabulary_texts: list | None):
        """The export step of the registered technique whose section is on the model's config (None: the plain
        export)."""
        texts = task_texts(dev, task, 64)  # only to check the export follows PyTorch
        context = ExportContext(self.processing_class, texts, vocabulary_texts, max_length, mobile, target_platform,
                                fuse_attention=True)
        for technique in techniques():
            section = getattr(self.model.config, technique.name, None)
            exporter = technique.exporter(technique.config(section), context) if section else None
            if exporter is not None:
                return exporter
        return None

    def training_facts(self, task: str, max_length: int, target_platform: str = "arm",
                       base_model: str | None = None) -> dict:
        """What was done, in the shape `compact run` records it, for results.json and the model card."""
        args = self.args
        runtime = next((e["train_runtime"] for e in reversed(self.state.log_history) if "train_runtime" in e), None)
        teacher = getattr(self.teacher.config, "_name_or_path", None) if self.teacher is not None else None
        return {
            "recipe": {
                "task": task, "model": base_model or getattr(self.model.config, "_name_or_path", None) or "unknown",
                "teacher": teacher or None,
                "distillation": self.compact_config.distillation.to_dict() if self.teacher is not None else {},
                "protocol": {"train_subset": None, "epochs": args.num_train_epochs,
                             "batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps
                             * args.world_size, "learning_rate": args.learning_rate, "max_length": max_length},
                "export": {"target_platform": target_platform},
            },
            "task": task, "seed": args.seed, "teacher": teacher,
            "train_examples": len(self.train_dataset) if self.train_dataset is not None else 0,
            "heldout_examples": len(self.eval_dataset) if self.eval_dataset is not None else 0,
            "train_seconds": round(runtime, 1) if runtime is not None else None,
        }

    # --- the distiller's own parameters (projections) ----------------------------------------------------------
    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        own_groups = [group for hook in self.hooks for group in hook.param_groups(self.model)]
        if own_groups and not getattr(optimizer, "_compact_groups_added", False):
            own = {id(p) for group in own_groups for p in group["params"]}
            for group in optimizer.param_groups:
                group["params"] = [p for p in group["params"] if id(p) not in own]
            for group in own_groups:
                optimizer.add_param_group(group)
            optimizer._compact_groups_added = True
        if self.distiller is not None:
            params = [p for p in self.distiller.parameters() if p.requires_grad]
            known = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if params and not any(id(p) in known for p in params):
                optimizer.add_param_group({"params": params, "weight_decay": 0.0})
        return optimizer

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """Trainer.train; resume_from_checkpoint=True takes the newest *complete* checkpoint (a kill or a full disk
        during a save leaves an incomplete one: it is removed and named, and the run resumes from the one before,
        or starts over when there is none)."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = newest_complete_checkpoint(self.args.output_dir, self.args.save_only_model)
        elif resume_from_checkpoint:
            problem = incomplete(Path(resume_from_checkpoint), self.args.save_only_model)
            if problem:
                raise IncompleteCheckpointError(f"{resume_from_checkpoint} is an incomplete checkpoint ({problem}); "
                                                "resume from an earlier one, or pass resume_from_checkpoint=True.")
        if resume_from_checkpoint and self._has_projections():
            folder = resume_from_checkpoint
            path = Path(folder) / DISTILLER_FILE
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: the checkpoint was not written by a CompactTrainer with "
                                        "the same distillation setup, so its projections cannot be restored.")
            self.distiller.load_state_dict(load_file(path))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Trainer.save_model; in a checkpoint, the distillation projections are saved with the weights, before
        Trainer writes trainer_state.json: a checkpoint with a readable trainer_state.json is complete."""
        super().save_model(output_dir, _internal_call)
        folder = Path(output_dir or self.args.output_dir)
        if _internal_call and folder.name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and self.args.should_save \
                and self.distiller is not None:
            with atomic_path(folder / DISTILLER_FILE) as tmp:
                save_file({k: v.contiguous() for k, v in self.distiller.state_dict().items()}, str(tmp))

    def _has_projections(self) -> bool:
        return self.distiller is not None and any(True for _ in self.distiller.parameters())


class IncompleteCheckpointError(ValueError):
    """A checkpoint folder that a killed or failed save left without all of its files."""


def incomplete(folder: Path, save_only_model: bool = False) -> str | None:
    """What a checkpoint folder lacks (None when complete). Trainer writes the weights (with CompactTrainer's
    projections), the optimizer, the RNG state, and trainer_state.json last."""
    state = folder / "trainer_state.json"
    try:
        json.loads(state.read_text())["global_step"]
    except (OSError, ValueError, KeyError):
        return "no readable trainer_state.json"
    weights = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "adapter_model.safetensors")
    files = [] if save_only_model else ["optimizer.pt"]
    missing = [name for name in files if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in weights):
        missing.insert(0, "model weights")
    return f"no {', '.join(missing)}" if missing else None


def newest_complete_checkpoint(output_dir: str | os.PathLike, save_only_model: bool = False) -> str | None:
    """The newest complete checkpoint-N in `output_dir` (None if there is none); newer incomplete ones are removed,
    each named in a printed line (they cannot be resumed, and Trainer's rotation would count them)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    steps = sorted((int(p.name.rsplit("-", 1)[1]), p) for p in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                   if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit())
    for _, folder in reversed(steps):
        problem = incomplete(folder, save_only_model)
        if problem is None:
            return str(folder)
        print(f"skipping {folder} ({problem}: its save was interrupted), and removing it")
        shutil.rmtree(folder, ignore_errors=True)
    return None


def remove_checkpoints(output_dir: str | os.PathLike) -> list[str]:
    """Remove the Trainer's checkpoint-N folders in `output_dir` (returns their names). Call it once what the
    training produced is saved: a checkpoint holds the weights and the optimizer state, three times the model, and
    only resuming that training reads it."""
    output_dir = Path(output_dir)
    removed = []
    for folder in sorted(output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")) if output_dir.is_dir() else []:
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


class _DistillerCallback(TrainerCallback):
    """Train the distiller's projections like model parameters: gradients averaged across processes and zeroed
    after each optimizer step (CompactTrainer.save_model saves them with every checkpoint)."""

    def __init__(self, trainer: CompactTrainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # the projections live outside the DDP-wrapped model, so average their gradients by hand
        accelerator = self.trainer.accelerator
        if accelerator.num_processes > 1:
            for p in self.trainer.distiller.parameters():
                if p.grad is not None:
                    p.grad = accelerator.reduce(p.grad, reduction="mean")

    def on_optimizer_step(self, args, state, control, **kwargs):
        # Trainer zeroes the model's gradients after each step; the projections are not in the model
        self.trainer.distiller.zero_grad(set_to_none=True)


__all__ = ["CompactConfig", "CompactHook", "CompactTrainer", "DistillationConfig"]

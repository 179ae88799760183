"""CompactTrainer: transformers' Trainer plus distillation and technique hooks, and nothing else.

What killed ORTTrainer, OVTrainer and INCTrainer was copying the training loop. This class adds logic only where
Trainer expects subclasses to: `compute_loss`, `create_optimizer`, `log`, `train` (to restore the distillation
projections on resume) and `TrainerCallback`s. It therefore keeps working under `accelerate launch`, with gradient
accumulation, and when resuming from checkpoints.

The technique hook interface is `CompactHook`, a `TrainerCallback` with one more method:
    - the usual callback events change the model per step: `on_step_begin` samples a SubTransformer (hat/) or
      updates a pruning schedule (token_pruning/); `on_epoch_begin` freezes observers (quant/). The model comes in
      `kwargs["model"]`, as for every TrainerCallback.
    - `loss_terms(model, inputs, outputs)` returns named, already weighted loss terms that are added to the training
      loss and logged as `loss_<name>`.
    - `term_weights(state)` returns multipliers for the trainer's own terms ("task", "logits", "hidden", "attention")
      at this step, e.g. two-stage distillation (quant/: intermediate layers first, then logits). A term whose
      multiplier is 0 is not computed.
    - `param_groups(model)` returns optimizer parameter groups with their own settings (e.g. LTP's thresholds learn
      at their own rate, token_pruning/); those parameters leave the default groups.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .config_section import ConfigSection
from .distill import DistillationConfig, Distiller

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
    from .modeling import sequence_classification_loss

    keep = labels != UNLABELLED
    if not bool(keep.any()):
        return None
    return sequence_classification_loss(logits[keep], labels[keep], config)


class CompactHook(TrainerCallback):
    """A technique's part in training: TrainerCallback events, plus loss terms (see the module docstring)."""

    def loss_terms(self, model, inputs: dict, outputs) -> dict[str, torch.Tensor]:
        return {}

    def term_weights(self, state) -> dict[str, float]:
        return {}

    def param_groups(self, model) -> list[dict]:
        return []


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
        exports (compact_nlp.quant.export_qat), a binary one its packed export; vocabulary_texts: the training text, if its config trims the
        vocabulary. Returns the results.
        """
        from .hub import write_model_card
        from .io import write_json
        from .ship import ship, summarize

        if self.processing_class is None:
            raise ValueError("save_compact needs the tokenizer: create the CompactTrainer with processing_class=.")
        splits = dict(dev) if isinstance(dev, dict) else {"validation": dev}
        exporter = None
        if getattr(self.model.config, "quant", None):
            from .glue import task_texts
            from .quant.recipes import exporter as quant_exporter
            from .quant.recipes import quant_config

            texts = task_texts(next(iter(splits.values())), task, 64)  # only to check the export follows PyTorch
            exporter = quant_exporter(quant_config(self.model.config.quant), self.processing_class,
                                      texts, max_length, mobile, target_platform, vocabulary_texts)
        result = ship(self.model, self.processing_class, output_dir, task, splits, max_length, mobile=mobile,
                      target_platform=target_platform, original=original, exporter=exporter)
        result.update(self.training_facts(task, max_length, target_platform, base_model))
        results = {"recipe": result.pop("recipe"), "summary": summarize([result]), "per_seed": [result]}
        write_json(Path(output_dir) / "results.json", results)
        write_model_card(output_dir, results)
        return results

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
        if resume_from_checkpoint and self.distiller is not None and any(True for _ in self.distiller.parameters()):
            folder = (get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True
                      else resume_from_checkpoint)
            path = Path(folder) / DISTILLER_FILE
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: the checkpoint was not written by a CompactTrainer with "
                                        "the same distillation setup, so its projections cannot be restored.")
            from safetensors.torch import load_file

            self.distiller.load_state_dict(load_file(path))
        return super().train(resume_from_checkpoint, *args, **kwargs)


class _DistillerCallback(TrainerCallback):
    """Train the distiller's projections like model parameters: gradients averaged across processes and zeroed
    after each optimizer step, weights saved with every checkpoint."""

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

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            from safetensors.torch import save_file

            from .io import atomic_path

            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            with atomic_path(folder / DISTILLER_FILE) as tmp:
                save_file({k: v.contiguous() for k, v in self.trainer.distiller.state_dict().items()}, str(tmp))


__all__ = ["CompactConfig", "CompactHook", "CompactTrainer", "DistillationConfig"]

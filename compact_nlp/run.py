"""`compact run RECIPE`: fine-tune (or distil) -> select on held-out -> save -> export -> evaluate what ships.

The data is the recipe's `data:` section (your files, `compact_nlp.data.load_task_data`) or a GLUE task by name.
For each seed of the recipe's protocol, in OUT/seed-<seed>/:
    1. take the seeded train subset and carve the held-out split from it (compact_nlp.protocol);
    2. let each technique of the recipe prepare the model (compact_nlp.registry), then train with CompactTrainer,
       evaluating on the held-out split each epoch and keeping the best epoch there (dev is not looked at);
    3. ship it (compact_nlp.ship): save the folder, export model.onnx (+ model.ort) or the technique's own files,
       score the exported file on the validation split(s) and time it at batch 1 on their real, unpadded inputs,
       side by side with the teacher's exported file when there is a teacher (the original it is compared with);
    4. write results.json.
OUT/results.json aggregates the seeds (mean and sd), and each OUT/seed-<seed>/model/README.md is a model card with
those numbers (push a seed's folder with `compact push`). A finished seed is skipped when the run starts again; an
interrupted one resumes from its last Trainer checkpoint.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer, DataCollatorWithPadding, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .auto import AutoCompactModelForSequenceClassification
from .data import MULTI_LABEL, TaskData, TaskSpec, glue_task_data, load_task_data, task_texts
from .distill import DistillationConfig
from .distributed import on_main
from .export.card import write_model_card
from .io import write_json
from .metrics import compute_metrics
from .pretrained import resolve_checkpoint
from .protocol import (protocol_splits, seen_heldout, tokenize, training_arguments, transfer_set, truncated_rows,
                       warn_truncated, with_transfer)
from .recipe import Recipe, load_recipe
from .registry import ExportContext, TrainContext
from .ship import choose_export, measure_shipped, ship, summarize
from .shrink import shrink
from .trainer import CompactConfig, CompactTrainer, remove_checkpoints

RESULTS_FILE = "results.json"


def load_data(recipe: Recipe, glue_dir: str | None = None) -> TaskData:
    """The recipe's task data: its `data:` section, or its GLUE task (from `glue_dir` or the hub)."""
    if recipe.data is None:
        return glue_task_data(recipe.task, glue_dir)
    d = recipe.data
    return load_task_data(d.train, d.validation, d.test, text=d.text, label=d.label, problem_type=d.problem_type,
                          name=d.name)


@dataclass
class Started:
    """A seed's model before training: the student, its teacher, each technique's config and the start copy some
    techniques keep (to offer an export of it to the held-out split)."""

    model: object
    teacher: object
    model_name: str
    teacher_name: str | None
    configs: dict  # technique name -> config, for the recipe's technique sections
    start_copy: object = None


def start_model(recipe: Recipe, spec: TaskSpec, seed: int) -> Started:
    model_name = recipe.model.replace("{seed}", str(seed))  # e.g. start QAT of seed s from the fp32 model of seed s
    teacher_name = recipe.teacher.replace("{seed}", str(seed)) if recipe.teacher else None
    model = AutoCompactModelForSequenceClassification.from_pretrained(model_name, **spec.model_labels())
    if recipe.student_layers is not None:  # a shallower student initialised from the chosen pretrained layers
        keep = set(recipe.student_layers)
        if max(keep) >= model.config.num_hidden_layers:
            raise ValueError(f"student_layers {sorted(keep)} names layers the model does not have "
                             f"(it has 0..{model.config.num_hidden_layers - 1}).")
        model = shrink(model, layers=[i for i in range(model.config.num_hidden_layers) if i not in keep])
    model.config.problem_type = spec.problem_type
    teacher = AutoCompactModelForSequenceClassification.from_pretrained(teacher_name) if teacher_name else None
    configs = recipe.technique_configs()
    keeps = any(getattr(t, "keeps_start_model", lambda c: False)(configs[t.name]) for t in recipe.techniques())
    return Started(model, teacher, model_name, teacher_name, configs, copy.deepcopy(model) if keeps else None)


def prepare_techniques(started: Started, recipe: Recipe, context: TrainContext) -> list:
    """Each technique of the recipe prepares the model in registry order; returns the hooks to train with."""
    hooks = []
    for technique in recipe.techniques():
        prepared = technique.prepare(started.model, started.configs[technique.name], context)
        started.model = prepared.model
        hooks += prepared.hooks
    return hooks


def train_seed(recipe: Recipe, data: TaskData, seed: int, out: Path, glue_dir: str | None):
    """Steps 1-2 of the module docstring: (trainer, what the run learned about its data, the start)."""
    p, spec = recipe.protocol, data.spec
    splits = protocol_splits(p, data, seed)
    transfer = transfer_set(recipe.transfer, spec, splits, glue_dir, seed)
    overlap = seen_heldout(spec, splits.heldout, splits.train, transfer)
    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(recipe.model.replace("{seed}", str(seed))))
    started = start_model(recipe, spec, seed)
    train_features = tokenize(splits.train, tokenizer, spec, p.max_length)
    hooks = prepare_techniques(started, recipe, TrainContext(tokenizer, train_features, task_texts(splits.train, spec)))
    args = training_arguments(p, str(out / "checkpoints"), seed, spec.main_metric)
    trainer = CompactTrainer(
        model=started.model, args=args, train_dataset=with_transfer(train_features, transfer, tokenizer, spec,
                                                                    p.max_length),
        eval_dataset=tokenize(splits.heldout, tokenizer, spec, p.max_length), teacher_model=started.teacher,
        hooks=hooks, compact_config=CompactConfig(distillation=DistillationConfig.from_dict(recipe.distillation)),
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
        compute_metrics=lambda prediction: compute_metrics(spec, prediction.predictions, prediction.label_ids),
    )
    truncated = {name: truncated_rows(split, tokenizer, spec, p.max_length)
                 for name, split in {"train": splits.train, **data.dev()}.items()}
    warn_truncated(truncated, {"train": len(splits.train), **{k: len(v) for k, v in data.dev().items()}},
                   p.max_length)
    interrupted = os.path.isdir(args.output_dir) and get_last_checkpoint(args.output_dir) is not None
    trainer.train(resume_from_checkpoint=True if interrupted else None)
    facts = {"train_examples": len(splits.train), "transfer_examples": len(transfer) if transfer is not None else 0,
             "heldout_examples": len(splits.heldout), "heldout_overlap": overlap,
             "truncated_rows": truncated}
    return trainer, splits, facts, started


def export_context(recipe: Recipe, spec: TaskSpec, tokenizer, train) -> ExportContext:
    """Calibration/parity text: real training rows (never dev); the whole train split when a technique trims the
    vocabulary to it."""
    configs = recipe.technique_configs()
    trims = any(getattr(config, "trim_vocabulary", False) for config in configs.values())
    texts = next((task_texts(train, spec, getattr(c, "calibration_examples", 256)) for c in configs.values()
                  if hasattr(c, "calibration_examples")), task_texts(train, spec, 256))
    return ExportContext(tokenizer, texts, task_texts(train, spec) if trims else None, recipe.protocol.max_length,
                         recipe.export.mobile, recipe.export.target_platform, recipe.export.fuse_attention)


def ship_seed(recipe: Recipe, data: TaskData, trainer, splits, started: Started, out: Path) -> dict:
    """Step 3: the technique that ships its own files exports (choosing on held-out among its candidates when it
    offers several); else the plain export. Then the shipped file is scored and timed."""
    spec, p = data.spec, recipe.protocol
    context = export_context(recipe, spec, trainer.processing_class, splits.train)
    exporters = {t: exporter for t in recipe.techniques()
                 if (exporter := t.exporter(started.configs[t.name], context)) is not None}
    if len(exporters) > 1:
        raise ValueError(f"{' and '.join(t.name for t in exporters)} each ship their own files; run them one after "
                         "the other (the combined pipeline does).")
    technique, exporter = next(iter(exporters.items()), (None, None))
    config = started.configs[technique.name] if technique else None
    candidates = technique.export_candidates(config) if technique and hasattr(technique, "export_candidates") else {}
    if candidates:  # the held-out split chooses; dev sees only the winner
        models = {name: (started.start_copy if from_start else trainer.model, technique.exporter(c, context))
                  for name, (c, from_start) in candidates.items()}
        report, choice = choose_export(models, out / "model", splits.heldout, spec, p.max_length)
        shipped = measure_shipped(out / "model", report, spec, data.dev(), p.max_length,
                                  recipe.export.target_platform, original=started.teacher_name)
        return {**shipped, f"{technique.name}_choice": choice}
    return ship(trainer.model, trainer.processing_class, out / "model", spec, data.dev(), p.max_length,
                mobile=recipe.export.mobile, target_platform=recipe.export.target_platform,
                original=started.teacher_name, exporter=exporter, fuse_attention=recipe.export.fuse_attention)


def run_seed(recipe: Recipe, seed: int, out: Path, data: TaskData, glue_dir: str | None = None) -> dict:
    started_at = time.perf_counter()
    set_seed(seed)
    if data.spec.problem_type == MULTI_LABEL and (recipe.teacher or recipe.transfer):
        raise ValueError("distillation (teacher, transfer) is not supported for multi-label tasks yet; fine-tune "
                         "without a teacher.")
    trainer, splits, facts, started = train_seed(recipe, data, seed, out, glue_dir)
    train_seconds = time.perf_counter() - started_at
    heldout_scores = trainer.evaluate()  # every process takes part (the Trainer splits the rows between them)
    trainer.model.to("cpu")  # what ships runs on the CPU, whatever trained it
    shipped = on_main(ship_seed, recipe, data, trainer, splits, started, out)  # the others wait for its numbers
    technique_facts = {k: v for t in recipe.techniques()
                       for k, v in t.facts(trainer.model, started.configs[t.name]).items()}
    return {
        "task": data.spec.name, "data": data.spec.to_dict(), "data_notes": data.notes, "seed": seed,
        "model": started.model_name, "teacher": started.teacher_name, **facts,
        "train_steps": trainer.state.global_step, "processes": trainer.args.world_size,
        "heldout": {k.removeprefix("eval_"): v for k, v in heldout_scores.items()},
        **shipped, **technique_facts,
        "train_seconds": round(train_seconds, 1), "wall_seconds": round(time.perf_counter() - started_at, 1),
    }


def run_recipe(recipe: Recipe, out: str | os.PathLike, glue_dir: str | None = None,
               data: TaskData | None = None) -> dict:
    """Run `recipe` into `out` (every protocol seed; finished seeds are skipped); `data` replaces the recipe's."""
    out = Path(out)
    data = data or load_data(recipe, glue_dir)
    per_seed = []
    for seed in recipe.protocol.seeds:
        done = out / f"seed-{seed}" / RESULTS_FILE
        if done.is_file():  # finished earlier: a restarted run does not redo it
            per_seed.append(json.loads(done.read_text()))
            continue
        result = run_seed(recipe, seed, out / f"seed-{seed}", data, glue_dir)
        on_main(write_json, done, result)
        on_main(remove_checkpoints, out / f"seed-{seed}" / "checkpoints")  # the seed is done: resuming is not
        per_seed.append(result)
    results = {"recipe": recipe.to_dict(), "summary": summarize(per_seed), "per_seed": per_seed}
    on_main(write_results, recipe, results, out)
    return results


def write_results(recipe: Recipe, results: dict, out: Path) -> None:
    """OUT/results.json, and the card of the whole run in every seed's model folder."""
    write_json(out / RESULTS_FILE, results)
    lines = card_lines(recipe, results["per_seed"][0])
    for seed in recipe.protocol.seeds:
        write_model_card(out / f"seed-{seed}" / "model", results, technique_lines=lines)


def card_lines(recipe: Recipe, result: dict) -> list[str]:
    """What each technique did to the shipped model, in its own words, for the card."""
    return [line for t in recipe.techniques(every=True) if (line := t.card_line(result))]


def run_task(data: TaskData, out: str | os.PathLike, recipe: str = "default", presets: list[str] = (),
             overrides: list[str] = ()) -> dict:
    """The Python form of `compact run --train ...`: `data` (compact_nlp.data.load_task_data) under the shipped
    recipe `recipe` (default: the baseline protocol) with `presets` and `--set`-style `overrides`."""
    section = {"train": data.spec.source, "name": data.spec.name}
    return run_recipe(load_recipe(recipe, overrides, presets, data=section), out, data=data)


__all__ = ["load_data", "run_recipe", "run_seed", "run_task"]

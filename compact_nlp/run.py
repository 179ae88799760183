"""`compact run RECIPE`: fine-tune (or distil) -> select on held-out -> save -> export -> evaluate what ships.

For each seed of the recipe's protocol, in OUT/seed-<seed>/:
    1. load the task (local glue_data or the hub); take the seeded train subset; carve the held-out split;
    2. train with CompactTrainer, evaluating on the held-out split each epoch and keeping the best epoch there
       (the dev set is never looked at until step 4);
    3. save the compact folder and export model.onnx (+ model.ort);
    4. evaluate the dev split(s) on the exported artifact that ships (model.ort, else model.onnx), and time it at
       batch 1 on the dev set's real, unpadded inputs;
    5. write results.json.
OUT/results.json aggregates the seeds (mean and sd), and each OUT/seed-<seed>/model/README.md is a model card with
those numbers (push a seed's folder with `compact push`). A finished seed is skipped when the run starts again; an
interrupted one resumes from its last Trainer checkpoint.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from .glue import carve_heldout, get_task, load_glue
from .io import write_json
from .recipe import Recipe

RESULTS_FILE = "results.json"


def main_score_name(task_name: str) -> str:
    """The task's one score for model selection: its metric, or the mean of its two (GLUE's combined_score)."""
    metrics = get_task(task_name).metrics
    return "combined_score" if len(metrics) > 1 else metrics[0]


def tokenize(dataset, tokenizer, task, max_length: int):
    def encode(batch):
        texts = [batch[column] for column in task.text_columns]
        return tokenizer(*texts, truncation=True, max_length=max_length)

    return dataset.map(encode, batched=True, remove_columns=list(task.text_columns) + ["idx"]).rename_column(
        "label", "labels")


def run_seed(recipe: Recipe, seed: int, out: Path, glue_dir: str | None) -> dict:
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from .auto import AutoCompactModelForSequenceClassification
    from .distill import DistillationConfig
    from .export import export_model
    from .metrics import compute_glue_metrics
    from .pretrained import resolve_checkpoint
    from .shrink import shrink
    from .trainer import CompactConfig, CompactTrainer

    task, p = get_task(recipe.task), recipe.protocol
    started = time.perf_counter()
    set_seed(seed)
    data = load_glue(task.name, glue_dir)
    train = data["train"]
    if p.train_subset is not None and p.train_subset < len(train):
        train = train.shuffle(seed=seed).select(range(p.train_subset))
    train, heldout = carve_heldout(train, p.heldout, seed)

    source = resolve_checkpoint(recipe.model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    labels = {} if task.is_regression else dict(id2label=dict(enumerate(task.label_names)),
                                                label2id={n: i for i, n in enumerate(task.label_names)})
    model = AutoCompactModelForSequenceClassification.from_pretrained(recipe.model, num_labels=task.num_labels,
                                                                      **labels)
    if recipe.student_layers is not None:  # a shallower student initialised from the chosen pretrained layers
        keep = set(recipe.student_layers)
        if max(keep) >= model.config.num_hidden_layers:
            raise ValueError(f"student_layers {sorted(keep)} names layers the model does not have "
                             f"(it has 0..{model.config.num_hidden_layers - 1}).")
        model = shrink(model, layers=[i for i in range(model.config.num_hidden_layers) if i not in keep])
    if task.is_regression:
        model.config.problem_type = "regression"
    teacher = (AutoCompactModelForSequenceClassification.from_pretrained(recipe.teacher) if recipe.teacher else None)

    main = main_score_name(task.name)
    args = TrainingArguments(
        str(out / "checkpoints"), num_train_epochs=p.epochs, per_device_train_batch_size=p.batch_size,
        per_device_eval_batch_size=64, learning_rate=p.learning_rate, warmup_steps=p.warmup,
        weight_decay=p.weight_decay, eval_strategy="epoch", save_strategy="epoch", save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model=main, greater_is_better=True, seed=seed,
        logging_steps=50, report_to=[], use_cpu=not torch.cuda.is_available(), disable_tqdm=False,
        train_sampling_strategy="group_by_length",  # batches of similar lengths: less padding, faster on CPU
    )
    trainer = CompactTrainer(
        model=model, args=args, train_dataset=tokenize(train, tokenizer, task, p.max_length),
        eval_dataset=tokenize(heldout, tokenizer, task, p.max_length), teacher_model=teacher,
        compact_config=CompactConfig(distillation=DistillationConfig.from_dict(recipe.distillation)),
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
        compute_metrics=lambda prediction: compute_glue_metrics(task.name, prediction.predictions,
                                                                prediction.label_ids),
    )
    interrupted = os.path.isdir(args.output_dir) and get_last_checkpoint(args.output_dir) is not None
    trainer.train(resume_from_checkpoint=True if interrupted else None)
    train_seconds = time.perf_counter() - started
    heldout_scores = trainer.evaluate()

    folder = out / "model"
    report = export_model(trainer.model.eval(), folder, tokenizer_source=tokenizer, mobile=recipe.export.mobile,
                          target_platform=recipe.export.target_platform)
    shipped = "model.ort" if recipe.export.mobile else "model.onnx"
    dev = {split: evaluate_artifact(folder / shipped, folder, data[split], task, p.max_length)
           for split in task.dev_splits}
    latency = artifact_latency(folder / shipped, folder, data[task.dev_splits[0]], task, p.max_length)
    return {
        "task": task.name, "seed": seed, "model": recipe.model, "teacher": recipe.teacher,
        "layers": model.config.num_hidden_layers, "parameters": sum(p.numel() for p in model.parameters()),
        "train_examples": len(train), "heldout_examples": len(heldout),
        "heldout": {k.removeprefix("eval_"): v for k, v in heldout_scores.items()},
        "dev": dev, "dev_main_metric": main, "artifact": shipped,
        "latency_ms_batch1": latency, "size_mb": report["size_mb"],
        "export_parity": report.get("ort_parity", report["onnx_parity"])["max_abs_diff"],
        "train_seconds": round(train_seconds, 1), "wall_seconds": round(time.perf_counter() - started, 1),
        "versions": _versions(), "machine": {"platform": platform.platform(), "cores": os.cpu_count()},
    }


def _ort_model(path: Path, folder: Path, threads: int | None = None):
    from .runtime import ORTModelForSequenceClassification

    return ORTModelForSequenceClassification.from_pretrained(folder, file_name=path.name, threads=threads)


def evaluate_artifact(path: Path, folder: Path, split, task, max_length: int, batch_size: int = 64) -> dict:
    """The task metric of the exported file on a labelled split (batched; padding does not change outputs)."""
    from transformers import AutoTokenizer

    from .metrics import compute_glue_metrics

    model, tokenizer = _ort_model(path, folder), AutoTokenizer.from_pretrained(folder)
    logits = []
    for start in range(0, len(split), batch_size):
        rows = split[start:start + batch_size]
        encoded = tokenizer(*[rows[c] for c in task.text_columns], truncation=True, max_length=max_length,
                            padding=True, return_tensors="np")
        logits.append(model(**encoded).logits)
    return compute_glue_metrics(task.name, np.concatenate(logits), np.asarray(split["label"]))


def artifact_latency(path: Path, folder: Path, split, task, max_length: int, examples: int = 200) -> dict:
    """Median/p90 ms at batch 1, one thread, on the split's first `examples` real, unpadded inputs."""
    from transformers import AutoTokenizer

    model, tokenizer = _ort_model(path, folder, threads=1), AutoTokenizer.from_pretrained(folder)
    rows = split[:examples]
    inputs = [tokenizer(*[[rows[c][i]] for c in task.text_columns], truncation=True, max_length=max_length,
                        return_tensors="np") for i in range(len(rows["label"]))]
    for encoded in inputs[:10]:
        model(**encoded)
    times = []
    for encoded in inputs:
        start = time.perf_counter()
        model(**encoded)
        times.append((time.perf_counter() - start) * 1e3)
    lengths = [int(e["input_ids"].shape[1]) for e in inputs]
    return {"median": round(statistics.median(times), 3), "p90": round(float(np.percentile(times, 90)), 3),
            "examples": len(times), "mean_tokens": round(float(np.mean(lengths)), 1), "threads": 1}


def _versions() -> dict:
    import onnxruntime
    import torch
    import transformers

    from . import __version__

    return {"compact": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__}


def summarize(per_seed: list[dict]) -> dict:
    """Mean and sd over seeds of every dev metric, and the wall time."""
    summary: dict = {"seeds": [r["seed"] for r in per_seed]}
    for split in per_seed[0]["dev"]:
        for metric in per_seed[0]["dev"][split]:
            values = [100 * r["dev"][split][metric] for r in per_seed]
            summary[f"{split}/{metric}"] = {"mean": round(statistics.mean(values), 2),
                                             "sd": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
                                             "values": [round(v, 2) for v in values]}
    summary["train_minutes_per_seed"] = round(statistics.mean(r["train_seconds"] for r in per_seed) / 60, 1)
    summary["latency_ms_batch1_median"] = round(statistics.mean(r["latency_ms_batch1"]["median"] for r in per_seed), 3)
    return summary


def run_recipe(recipe: Recipe, out: str | os.PathLike, glue_dir: str | None = None) -> dict:
    import json

    out = Path(out)
    per_seed = []
    for seed in recipe.protocol.seeds:
        seed_dir = out / f"seed-{seed}"
        done = seed_dir / RESULTS_FILE
        if done.is_file():  # finished earlier: a restarted run does not redo it
            per_seed.append(json.loads(done.read_text()))
            continue
        result = run_seed(recipe, seed, seed_dir, glue_dir)
        write_json(done, result)
        per_seed.append(result)
    results = {"recipe": recipe.to_dict(), "summary": summarize(per_seed), "per_seed": per_seed}
    write_json(out / RESULTS_FILE, results)
    from .hub import write_model_card

    for seed in recipe.protocol.seeds:  # every seed's folder ships with the card of the whole run
        write_model_card(out / f"seed-{seed}" / "model", results)
    return results

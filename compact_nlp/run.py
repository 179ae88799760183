"""`compact run RECIPE`: fine-tune (or distil) -> select on held-out -> save -> export -> evaluate what ships.

For each seed of the recipe's protocol, in OUT/seed-<seed>/:
    1. load the task (local glue_data or the hub); take the seeded train subset; carve the held-out split;
    2. train with CompactTrainer, evaluating on the held-out split each epoch and keeping the best epoch there
       (the dev set is never looked at until step 3);
    3. ship it (compact_nlp.ship): save the compact folder, export model.onnx (+ model.ort), evaluate the dev
       split(s) on the exported file that ships, and time it at batch 1 on the dev set's real, unpadded inputs,
       side by side with the teacher's exported file when there is a teacher (the original it is compared with);
    4. write results.json.
OUT/results.json aggregates the seeds (mean and sd), and each OUT/seed-<seed>/model/README.md is a model card with
those numbers (push a seed's folder with `compact push`). A finished seed is skipped when the run starts again; an
interrupted one resumes from its last Trainer checkpoint.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from pathlib import Path

from .glue import (SEEN_HELDOUT_WARNING_PERCENT, carve_heldout, carve_unseen_heldout, get_task, heldout_overlap,
                   load_glue, task_texts)
from .io import write_json
from .recipe import Recipe
from .ship import main_score_name, measure_shipped, ship, summarize

RESULTS_FILE = "results.json"


def tokenize(dataset, tokenizer, task, max_length: int):
    def encode(batch):
        texts = [batch[column] for column in task.text_columns]
        return tokenizer(*texts, truncation=True, max_length=max_length)

    return dataset.map(encode, batched=True, remove_columns=list(task.text_columns) + ["idx"]).rename_column(
        "label", "labels")


def protocol_splits(recipe: Recipe, seed: int, glue_dir: str | None):
    """(task, all splits, train, rest_of_train, heldout) as the protocol makes them for `seed` (or for
    protocol.split_seed when set): the seeded train subset (rest_of_train: the train rows left out of it, or None),
    and the held-out split carved from the subset. With protocol.heldout_unseen the held-out rows are whole texts
    drawn first, and the subset and rest_of_train come from the rows left once their phrases are dropped
    (glue.carve_unseen_heldout; about 20 s for SST-2).
    Every command that compares with `compact run` (compact search, the benches) takes its splits from here."""
    task, p = get_task(recipe.task), recipe.protocol
    seed = seed if p.split_seed is None else p.split_seed
    data = load_glue(task.name, glue_dir)
    train, rest_of_train = data["train"], None
    if p.heldout_unseen:  # the same sizes as below: held-out as carved from the subset, the subset less the held-out
        subset = len(train) if p.train_subset is None else min(p.train_subset, len(train))
        size = p.heldout if p.heldout >= 1 else round(p.heldout * subset)
        pool, heldout = carve_unseen_heldout(train.shuffle(seed=seed), size, task.text_columns)
        keep = min(subset - size, len(pool))
        rest_of_train = pool.select(range(keep, len(pool))) if keep < len(pool) else None
        return task, data, pool.select(range(keep)), rest_of_train, heldout
    if p.train_subset is not None and p.train_subset < len(train):
        shuffled = train.shuffle(seed=seed)
        train, rest_of_train = shuffled.select(range(p.train_subset)), shuffled.select(range(p.train_subset,
                                                                                            len(shuffled)))
    train, heldout = carve_heldout(train, p.heldout, seed)
    return task, data, train, rest_of_train, heldout


def transfer_set(recipe: Recipe, task, rest_of_train, train, glue_dir: str | None, seed: int):
    """The recipe's transfer set (TinyBERT): unlabelled examples (label -100) in the task's text columns, or None.
    Only training text: other tasks' train splits, the rest of this task's train, swapped training pairs, perturbed
    copies of the training rows (compact_nlp.augment, seeded by `seed`)."""
    import datasets

    from .augment import augmented_copies, augmented_rows

    parts = []
    for source in recipe.transfer or []:
        copies = augmented_copies(source)
        if copies is not None:  # perturbed copies of this seed's training rows (never held-out or dev)
            rows = augmented_rows({c: train[c] for c in task.text_columns}, copies, seed)
        elif source == "swapped":
            a, b = task.text_columns
            rows = {a: train[b], b: train[a]}
        elif source == "rest_of_train":
            rows = {c: rest_of_train[c] for c in task.text_columns}
        else:
            other = get_task(source)
            other_train = load_glue(other.name, glue_dir)["train"]
            rows = dict(zip(task.text_columns, (other_train[c] for c in other.text_columns)))
        parts.append(datasets.Dataset.from_dict(rows))
    if not parts:
        return None
    transfer = datasets.concatenate_datasets(parts)
    fill = -100.0 if task.is_regression else -100
    return transfer.add_column("label", [fill] * len(transfer)).add_column("idx", list(range(len(transfer))))


def seen_heldout(task, heldout, train, transfer) -> dict:
    """`glue.heldout_overlap` against every row the model learns from (training and transfer rows). Warns when over
    a fifth of the held-out rows are text the model learns from anyway, whose scores overestimate new text."""
    column = task.text_columns[0]
    learned_from = list(train[column]) + (list(transfer[column]) if transfer is not None else [])
    overlap = heldout_overlap(heldout, learned_from, column)
    if overlap["inside_training_rows"] > SEEN_HELDOUT_WARNING_PERCENT:
        warnings.warn(f"{overlap['inside_training_rows']}% of the {task.name} held-out rows checked have their "
                      f"'{column}' inside a training or transfer row: held-out scores overestimate new text, and "
                      "small differences between held-out scores may not carry over to dev. Weigh held-out choices "
                      "with that in mind (docs/protocol.md, 'Held-out rows the model has seen').", stacklevel=2)
    return overlap


def with_transfer(train_tokenized, transfer, tokenizer, task, max_length: int):
    """The tokenized training rows followed by the tokenized transfer set (unlabelled rows: label -100, taught by the
    teacher alone; CompactTrainer masks them out of the task loss), or the training rows alone without one."""
    if transfer is None:
        return train_tokenized
    import datasets

    label_type = datasets.Value("float32" if task.is_regression else "int64")
    return datasets.concatenate_datasets([train_tokenized.cast_column("labels", label_type),
                                          tokenize(transfer, tokenizer, task, max_length).cast_column("labels",
                                                                                                      label_type)])


def run_seed(recipe: Recipe, seed: int, out: Path, glue_dir: str | None) -> dict:
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from .auto import AutoCompactModelForSequenceClassification
    from .distill import DistillationConfig
    from .metrics import compute_glue_metrics
    from .pretrained import resolve_checkpoint
    from .quant.recipes import export_qat_or_ptq
    from .quant.recipes import exporter as quant_exporter
    from .quant.recipes import quant_config
    from .quant.recipes import prepare as prepare_quant
    from .shrink import shrink
    from .token_pruning.recipes import prepare as prepare_token_pruning
    from .token_pruning.recipes import token_pruning_config
    from .trainer import CompactConfig, CompactTrainer

    p = recipe.protocol
    started = time.perf_counter()
    set_seed(seed)
    task, data, train, rest_of_train, heldout = protocol_splits(recipe, seed, glue_dir)
    transfer = transfer_set(recipe, task, rest_of_train, train, glue_dir, seed)
    overlap = seen_heldout(task, heldout, train, transfer)

    model_name = recipe.model.replace("{seed}", str(seed))  # e.g. start QAT of seed s from the fp32 model of seed s
    teacher_name = recipe.teacher.replace("{seed}", str(seed)) if recipe.teacher else None
    source = resolve_checkpoint(model_name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    labels = {} if task.is_regression else dict(id2label=dict(enumerate(task.label_names)),
                                                label2id={n: i for i, n in enumerate(task.label_names)})
    model = AutoCompactModelForSequenceClassification.from_pretrained(model_name, num_labels=task.num_labels,
                                                                      **labels)
    if recipe.student_layers is not None:  # a shallower student initialised from the chosen pretrained layers
        keep = set(recipe.student_layers)
        if max(keep) >= model.config.num_hidden_layers:
            raise ValueError(f"student_layers {sorted(keep)} names layers the model does not have "
                             f"(it has 0..{model.config.num_hidden_layers - 1}).")
        model = shrink(model, layers=[i for i in range(model.config.num_hidden_layers) if i not in keep])
    if task.is_regression:
        model.config.problem_type = "regression"
    teacher = AutoCompactModelForSequenceClassification.from_pretrained(teacher_name) if teacher_name else None
    quant = quant_config(recipe.quant)  # validated with the recipe (load_recipe)
    # fallback_to_ptq: the starting model, kept in fp32 to be quantized without training once QAT has trained
    ptq_start = copy.deepcopy(model) if getattr(quant, "fallback_to_ptq", False) else None
    hooks = prepare_quant(model, quant) if quant else []

    main = main_score_name(task.name)
    train_data = tokenize(train, tokenizer, task, p.max_length)
    pruning = token_pruning_config(recipe.token_pruning)
    if pruning:  # heads ranked on training rows, then tokens pruned between layers from the first step on
        model, pruning_hooks = prepare_token_pruning(model, pruning, tokenizer, train_data)
        hooks += pruning_hooks
    train_data = with_transfer(train_data, transfer, tokenizer, task, p.max_length)
    args = TrainingArguments(
        str(out / "checkpoints"), num_train_epochs=p.epochs, max_steps=p.steps or -1,
        per_device_train_batch_size=p.batch_size,
        per_device_eval_batch_size=64, learning_rate=p.learning_rate, warmup_steps=p.warmup,
        weight_decay=p.weight_decay, eval_strategy="epoch", save_strategy="epoch", save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model=main, greater_is_better=True, seed=seed,
        logging_steps=50, report_to=[], use_cpu=not torch.cuda.is_available(), disable_tqdm=False,
        train_sampling_strategy="group_by_length",  # batches of similar lengths: less padding, faster on CPU
    )
    trainer = CompactTrainer(
        model=model, args=args, train_dataset=train_data,
        eval_dataset=tokenize(heldout, tokenizer, task, p.max_length), teacher_model=teacher, hooks=hooks,
        compact_config=CompactConfig(distillation=DistillationConfig.from_dict(recipe.distillation)),
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
        compute_metrics=lambda prediction: compute_glue_metrics(task.name, prediction.predictions,
                                                                prediction.label_ids),
    )
    interrupted = os.path.isdir(args.output_dir) and get_last_checkpoint(args.output_dir) is not None
    trainer.train(resume_from_checkpoint=True if interrupted else None)
    train_seconds = time.perf_counter() - started
    heldout_scores = trainer.evaluate()

    exporter_for = None
    if quant:  # calibration / parity text: real training examples (never dev)
        texts = task_texts(train, task.name, quant.calibration_examples)
        vocabulary = task_texts(train, task.name) if quant.trim_vocabulary else None

        def exporter_for(config):
            return quant_exporter(config, tokenizer, texts, p.max_length, recipe.export.mobile,
                                  recipe.export.target_platform, vocabulary_texts=vocabulary,
                                  fuse_attention=recipe.export.fuse_attention)
    dev = {split: data[split] for split in task.dev_splits}
    quant_choice = None
    if ptq_start is None:
        shipped = ship(trainer.model, tokenizer, out / "model", task.name, dev, p.max_length,
                       mobile=recipe.export.mobile, target_platform=recipe.export.target_platform,
                       original=teacher_name, exporter=exporter_for(quant) if quant else None,
                       fuse_attention=recipe.export.fuse_attention)
    else:  # the held-out split chooses between the QAT model and PTQ of the starting model; dev sees only the winner
        report, quant_choice = export_qat_or_ptq(trainer.model, ptq_start, quant, exporter_for, out / "model",
                                                 heldout, task.name, p.max_length)
        shipped = measure_shipped(out / "model", report, task.name, dev, p.max_length,
                                  recipe.export.target_platform, original=teacher_name)
    return {
        "task": task.name, "seed": seed, "model": model_name, "teacher": teacher_name,
        "train_examples": len(train), "transfer_examples": len(transfer) if transfer is not None else 0,
        "train_steps": trainer.state.global_step, "heldout_examples": len(heldout),
        "heldout_overlap": overlap, "heldout": {k.removeprefix("eval_"): v for k, v in heldout_scores.items()},
        **shipped,
        **({"quant_choice": quant_choice} if quant_choice else {}),
        **({"token_pruning": trainer.model.config.token_pruning} if pruning else {}),
        **({"heads_per_layer": trainer.model.config.num_heads_per_layer} if pruning and pruning.prunes_heads else {}),
        "train_seconds": round(train_seconds, 1), "wall_seconds": round(time.perf_counter() - started, 1),
    }


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

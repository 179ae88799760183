"""The baseline protocol (docs/protocol.md) as code every training command shares: the seeded train subset, the
held-out split carved from train for every choice, the distillation transfer set, tokenization, and the one place
that builds `TrainingArguments`.

The dev splits (`TaskData.dev()`) are never touched here: they are only scored on what ships.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import datasets
import torch
from transformers import TrainingArguments

from .augment import augmented_copies, augmented_rows
from .data import TaskData, TaskSpec, glue_task_data
from .distributed import WAIT, per_process, uses_cuda
from .glue import SEEN_HELDOUT_WARNING_PERCENT, carve_heldout, carve_unseen_heldout, heldout_overlap

UNLABELLED = -100  # the label of transfer rows: only the teacher teaches them


@dataclass
class Protocol:
    train_subset: int | None = None  # seeded subset of train (before the held-out split); None = all of it
    heldout: float | int = 0.1  # fraction or count carved from train for model selection
    epochs: float = 3.0
    max_length: int = 128
    batch_size: int = 32  # rows per optimizer step, split over the processes under accelerate launch
    learning_rate: float = 5e-5
    warmup: float = 0.1  # fraction of the steps
    weight_decay: float = 0.01
    seeds: list[int] = field(default_factory=lambda: [42])
    steps: int | None = None  # optimizer steps; overrides epochs (to give two arms the same steps on different data)
    # the seed that draws train_subset and carves the held-out split; None: each run's seed. The combined pipeline
    # sets it to its first seed, whose split the search trained on once for every seed (compact_nlp.combined)
    split_seed: int | None = None
    # held-out rows whose text the model never learns from: whole texts (inside no other training row), and every
    # training row inside one of them dropped (SST-2 lists each sentence's phrases as rows; docs/protocol.md)
    heldout_unseen: bool = False
    # what trains: auto (a CUDA GPU where torch sees one, else the CPU), cpu or cuda (with mixed precision: bf16 where
    # the GPU has it, else fp16); exported models are timed on the CPU whatever trained them
    device: str = "auto"


@dataclass
class Splits:
    """One seed's protocol splits of train: what it trains on, the rows left out of the subset, the held-out rows."""

    train: datasets.Dataset
    rest_of_train: datasets.Dataset | None
    heldout: datasets.Dataset


def protocol_splits(protocol: Protocol, data: TaskData, seed: int) -> Splits:
    """The seeded train subset (rest_of_train: the train rows left out of it, or None), and the held-out split carved
    from the subset, for `seed` (or protocol.split_seed when set). With protocol.heldout_unseen the held-out rows are
    whole texts drawn first, and the subset and rest_of_train come from the rows left once their phrases are dropped
    (glue.carve_unseen_heldout; about 20 s for SST-2). Every command that compares with `compact run` (compact
    search, the benches) takes its splits from here."""
    p, spec = protocol, data.spec
    seed = seed if p.split_seed is None else p.split_seed
    train, rest_of_train = data.train, None
    rows = len(train) if p.train_subset is None else min(p.train_subset, len(train))
    if p.heldout >= 1 and p.heldout >= rows - 1:
        raise ValueError(f"protocol.heldout={p.heldout} rows leaves nothing to train on: train has {rows} rows; "
                         "lower it (e.g. --set protocol.heldout=0.1) or give more training rows.")
    if p.heldout_unseen:  # the same sizes as below: held-out as carved from the subset, the subset less the held-out
        subset = len(train) if p.train_subset is None else min(p.train_subset, len(train))
        size = p.heldout if p.heldout >= 1 else round(p.heldout * subset)
        pool, heldout = carve_unseen_heldout(train.shuffle(seed=seed), size, list(spec.text_columns))
        keep = min(subset - size, len(pool))
        rest_of_train = pool.select(range(keep, len(pool))) if keep < len(pool) else None
        return Splits(pool.select(range(keep)), rest_of_train, heldout)
    if p.train_subset is not None and p.train_subset < len(train):
        shuffled = train.shuffle(seed=seed)
        train = shuffled.select(range(p.train_subset))
        rest_of_train = shuffled.select(range(p.train_subset, len(shuffled)))
    train, heldout = carve_heldout(train, p.heldout, seed)
    return Splits(train, rest_of_train, heldout)


def transfer_set(sources: list[str] | None, spec: TaskSpec, splits: Splits, glue_dir: str | None, seed: int):
    """The transfer set (TinyBERT): unlabelled examples (label -100) in the task's text columns, or None. Only
    training text: other GLUE tasks' train splits, the rest of this task's train, swapped training pairs, perturbed
    copies of the training rows (compact_nlp.augment, seeded by `seed`)."""
    parts = []
    for source in sources or []:
        parts.append(datasets.Dataset.from_dict(_transfer_rows(source, spec, splits, glue_dir, seed)))
    if not parts:
        return None
    transfer = datasets.concatenate_datasets(parts)
    fill = float(UNLABELLED) if spec.is_regression else UNLABELLED
    labels = [[fill] * spec.num_labels if spec.problem_type == "multi_label_classification" else fill] * len(transfer)
    return transfer.add_column("label", labels).add_column("idx", list(range(len(transfer))))


def _transfer_rows(source: str, spec: TaskSpec, splits: Splits, glue_dir: str | None, seed: int) -> dict:
    columns = spec.text_columns
    copies = augmented_copies(source)
    if copies is not None:  # perturbed copies of this seed's training rows (never held-out or dev)
        return augmented_rows({c: splits.train[c] for c in columns}, copies, seed)
    if source == "swapped":
        if len(columns) != 2:
            raise ValueError(f"transfer 'swapped' swaps the two texts of a pair; {spec.name} has one text column.")
        a, b = columns
        return {a: splits.train[b], b: splits.train[a]}
    if source == "rest_of_train":
        if splits.rest_of_train is None:
            raise ValueError("transfer 'rest_of_train' is the training rows outside protocol.train_subset; this run "
                             "trains on all of them. Set protocol.train_subset, or drop it.")
        return {c: splits.rest_of_train[c] for c in columns}
    other = glue_task_data(source, glue_dir)
    if len(other.spec.text_columns) != len(columns):
        raise ValueError(f"transfer task {source!r} has {len(other.spec.text_columns)} text column(s); "
                         f"{spec.name} has {len(columns)}.")
    return dict(zip(columns, (other.train[c] for c in other.spec.text_columns)))


def seen_heldout(spec: TaskSpec, heldout, train, transfer) -> dict:
    """`glue.heldout_overlap` against every row the model learns from (training and transfer rows). Warns when over
    a fifth of the held-out rows are text the model learns from anyway, whose scores overestimate new text."""
    column = spec.text_columns[0]
    learned_from = list(train[column]) + (list(transfer[column]) if transfer is not None else [])
    overlap = heldout_overlap(heldout, learned_from, column)
    if overlap["inside_training_rows"] > SEEN_HELDOUT_WARNING_PERCENT:
        warnings.warn(f"{overlap['inside_training_rows']}% of the {spec.name} held-out rows checked have their "
                      f"'{column}' inside a training or transfer row: held-out scores overestimate new text, and "
                      "small differences between held-out scores may not carry over to dev. Weigh held-out choices "
                      "with that in mind (docs/protocol.md, 'Held-out rows the model has seen').", stacklevel=2)
    return overlap


def tokenize(dataset, tokenizer, spec: TaskSpec, max_length: int):
    """Token ids of a split in the task layout, truncated to `max_length`; `label` becomes `labels`."""
    def encode(batch):
        return tokenizer(*[batch[column] for column in spec.text_columns], truncation=True, max_length=max_length)

    return dataset.map(encode, batched=True, remove_columns=list(spec.text_columns) + ["idx"]).rename_column(
        "label", "labels")


def truncated_rows(dataset, tokenizer, spec: TaskSpec, max_length: int) -> int:
    """How many rows are longer than `max_length` tokens (and so are cut when tokenized)."""
    lengths = tokenizer(*[list(dataset[c]) for c in spec.text_columns], truncation=False)["input_ids"]
    return sum(len(ids) > max_length for ids in lengths)


def warn_truncated(truncated: dict[str, int], rows: dict[str, int], max_length: int) -> None:
    """Say, before training, which splits have rows longer than `max_length` tokens: they are cut, silently
    otherwise (the counts also go to results.json)."""
    cut = {name: count for name, count in truncated.items() if count}
    if cut:
        shares = ", ".join(f"{name} {count} of {rows[name]} ({100 * count / rows[name]:.1f}%)"
                           for name, count in cut.items())
        warnings.warn(f"rows longer than max_length {max_length} tokens are cut: {shares}; raise "
                      "protocol.max_length (--set protocol.max_length=N) if their ends matter.", stacklevel=2)


def with_transfer(train_tokenized, transfer, tokenizer, spec: TaskSpec, max_length: int):
    """The tokenized training rows followed by the tokenized transfer set (unlabelled rows: label -100, taught by the
    teacher alone; CompactTrainer masks them out of the task loss), or the training rows alone without one."""
    if transfer is None:
        return train_tokenized
    if spec.problem_type == "multi_label_classification":
        label_type = datasets.Sequence(datasets.Value("float32"), length=spec.num_labels)
    else:
        label_type = datasets.Value("float32" if spec.is_regression else "int64")
    return datasets.concatenate_datasets([
        train_tokenized.cast_column("labels", label_type),
        tokenize(transfer, tokenizer, spec, max_length).cast_column("labels", label_type)])


def training_arguments(protocol: Protocol, output_dir: str, seed: int, metric: str | None, **changes) -> \
        TrainingArguments:
    """The protocol's TrainingArguments: evaluated on the held-out split each epoch, the best epoch there kept
    (`metric`; None: no selection), batches of similar lengths (less padding, faster on CPU); `changes` override."""
    p = protocol
    cuda = uses_cuda(p.device)
    settings = dict(
        num_train_epochs=p.epochs, max_steps=p.steps or -1, per_device_train_batch_size=per_process(p.batch_size),
        per_device_eval_batch_size=64, learning_rate=p.learning_rate, warmup_steps=p.warmup,
        weight_decay=p.weight_decay, eval_strategy="epoch" if metric else "no",
        save_strategy="epoch", save_total_limit=2, load_best_model_at_end=metric is not None,
        metric_for_best_model=metric, greater_is_better=True if metric else None, seed=seed, logging_steps=50,
        report_to=[], use_cpu=not cuda, disable_tqdm=False, train_sampling_strategy="group_by_length",
        bf16=cuda and torch.cuda.is_bf16_supported(), fp16=cuda and not torch.cuda.is_bf16_supported(),
        ddp_timeout=int(WAIT.total_seconds()),  # the other processes wait while the main one exports and times
    )
    settings.update(changes)
    return TrainingArguments(output_dir, **settings)

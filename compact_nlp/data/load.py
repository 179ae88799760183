"""`load_task_data`: a user's files or datasets objects as `TaskData`; `glue_task_data`: a GLUE task as `TaskData`."""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from ..glue import HUB_DATASET, default_glue_dir, display_name, get_task, load_glue
from .infer import (check_labels, check_texts, choose_columns, encode_labels, infer_problem_type, label_feature,
                    label_names)
from .sources import describe, read_source, split_of
from .task import REGRESSION, SINGLE_LABEL, DataError, TaskData, TaskSpec

VALIDATION_FRACTION = 0.1  # of train, carved off when the user gives no validation split
VALIDATION_SEED = 0  # fixed, so every run (and every seed of a run) reports on the same rows


def load_task_data(train, validation=None, test=None, *, text=None, label: str | None = None,
                   problem_type: str | None = None, name: str | None = None,
                   validation_fraction: float = VALIDATION_FRACTION) -> TaskData:
    """A labelled text task from the user's data.

    train: a CSV/TSV/JSON/JSONL/Parquet file, a folder saved with `save_to_disk`, a hub dataset id ("name" or
    "name:config"), or a `datasets.Dataset`/`DatasetDict` (whose validation/test splits are used when the arguments
    are not given). text: the text column, or two (a list, or "a,b") for sentence pairs; inferred when None.
    label: the label column; inferred from common names when None. problem_type: inferred when None (text or
    integer labels: single-label classification; fractional numbers: regression; lists: multi-label).
    Without a validation split, `validation_fraction` of train is carved off (seeded, stratified by label when the
    classes allow) and the notes say so.
    """
    raw_train = read_source(train, "train")
    raw = {"train": split_of(raw_train, "train", train)}
    for role, given in (("validation", validation), ("test", test)):
        chosen = read_source(given, role) if given is not None else raw_train
        found = split_of(chosen, role, given) if given is not None or isinstance(chosen, datasets.DatasetDict) \
            else None
        if found is not None:
            raw[role] = found
    where = f"train ({describe(train)})"
    text_columns, label_column = choose_columns(raw["train"].column_names, text, label, where)
    values = raw["train"][label_column]
    check_labels(values, label_column, where)
    kind = infer_problem_type(values, problem_type, label_column, where)
    names = label_names(values, kind, label_column, where)
    spec = TaskSpec(name=name or _name_of(train), source=describe(train), text_columns=text_columns,
                    problem_type=kind, label_names=names, label_column=label_column,
                    hub_dataset=train if isinstance(train, str) and not Path(train).exists() else None)
    notes = [f"text column(s) {', '.join(text_columns)}; label column {label_column!r}; {kind}"
             + (f" with labels {', '.join(names)}" if names else "")]
    splits = {}
    for role, split in raw.items():
        encoded = _encode(split, spec, role, validation if role == "validation" else test if role == "test" else train)
        if encoded is None:
            notes.append(f"{role} split has no {label_column!r} column: not used (only labelled splits are scored)")
            continue
        splits[role] = encoded
    if "validation" not in splits:
        splits["train"], splits["validation"] = carve_validation(splits["train"], validation_fraction, spec)
        notes.append(f"validation: {len(splits['validation'])} rows ({validation_fraction:.0%} of train) carved "
                     f"from train with seed {VALIDATION_SEED}; train keeps {len(splits['train'])}")
    dev = tuple(s for s in ("validation", "test") if s in splits)
    spec = TaskSpec(**{**spec.to_dict(), "dev_splits": dev})
    return TaskData(spec=spec, splits=datasets.DatasetDict(splits), notes=notes)


def _name_of(source) -> str:
    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        return "dataset"
    return Path(str(source)).stem.replace(":", "-").replace("/", "-") or "data"


def _encode(split, spec: TaskSpec, role: str, source):
    """One split in the task layout, or None when it has no labels (an unlabelled test file)."""
    where = f"{role} ({describe(source)})"
    missing = [c for c in spec.text_columns if c not in split.column_names]
    if missing:
        raise DataError(f"{where}: no column {', '.join(map(repr, missing))}; its columns are "
                        f"{', '.join(split.column_names)} (train's text columns must be in every split).")
    if spec.label_column not in split.column_names:
        if role == "test":
            return None
        raise DataError(f"{where}: no label column {spec.label_column!r}; its columns are "
                        f"{', '.join(split.column_names)}.")
    values = split[spec.label_column]
    check_labels(values, spec.label_column, where)
    labels = encode_labels(values, spec.problem_type, spec.label_names, spec.label_column, where)
    texts = check_texts(split, spec.text_columns, where)
    features = datasets.Features({**{c: datasets.Value("string") for c in spec.text_columns},
                                  "label": label_feature(spec.problem_type, spec.label_names),
                                  "idx": datasets.Value("int32")})
    columns = {**dict(zip(spec.text_columns, texts)), "label": labels, "idx": list(range(len(labels)))}
    return datasets.Dataset.from_dict(columns, features=features)


def carve_validation(train, fraction: float, spec: TaskSpec):
    """(train, validation): `fraction` of train, seeded, stratified by label when every class has two rows."""
    if not 0 < fraction < 1:
        raise DataError(f"validation_fraction must be in (0, 1), got {fraction}.")
    if len(train) < 10:
        raise DataError(f"train has {len(train)} rows, too few to carve a validation split from; give a "
                        "validation file (--validation) or more rows.")
    stratify = None
    if spec.problem_type == SINGLE_LABEL and min(_counts(train["label"]).values()) >= 2:
        stratify = "label"
    parts = train.train_test_split(test_size=fraction, seed=VALIDATION_SEED, stratify_by_column=stratify)
    return parts["train"], parts["test"]


def _counts(labels: list) -> dict:
    counts: dict = {}
    for value in labels:
        counts[value] = counts.get(value, 0) + 1
    return counts


def glue_spec(task_name: str) -> TaskSpec:
    """The spec of a GLUE task (no data is read)."""
    task = get_task(task_name)
    return TaskSpec(name=task.name, source=f"GLUE {display_name(task)}", text_columns=task.text_columns,
                    problem_type=REGRESSION if task.is_regression else SINGLE_LABEL,
                    label_names=task.label_names, metrics=task.metrics, glue=task.name, hub_dataset=HUB_DATASET,
                    dev_splits=task.dev_splits)


def as_spec(task: TaskSpec | str) -> TaskSpec:
    """A spec as it is, or a GLUE task name's spec (for callers that still name GLUE tasks by name)."""
    return task if isinstance(task, TaskSpec) else glue_spec(task)


def glue_task_data(task_name: str, glue_dir: str | os.PathLike | None = None) -> TaskData:
    """A GLUE task from a local glue_data folder or the hub, with GLUE's official metrics."""
    spec = glue_spec(task_name)
    return TaskData(spec=spec, splits=load_glue(spec.glue, glue_dir))


def task_data_from_options(options, task: str | None, glue_dir: str | None) -> TaskData:
    """The task data a command's options name: the user's (`options.train`, `.validation`, `.test`, `.text_column`,
    `.label_column`, `.problem_type`) or else the GLUE task `task` (from `glue_dir`, or the default places)."""
    if getattr(options, "train", None):
        return load_task_data(options.train, options.validation, options.test, text=options.text_column,
                              label=options.label_column, problem_type=options.problem_type)
    for flag in ("validation", "test", "text_column", "label_column", "problem_type"):
        if getattr(options, flag, None):
            raise DataError(f"--{flag.replace('_', '-')} describes your data, which needs --train FILE too.")
    if not task:
        raise DataError("name the data: --task GLUE_TASK (e.g. sst2, with --glue-dir DIR), or your own with "
                        "--train FILE [--text-column COL --label-column COL].")
    return glue_task_data(task, glue_dir or default_glue_dir())

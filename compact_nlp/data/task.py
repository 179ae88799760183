"""What a text task is to compact, whatever its source: `TaskSpec` (columns, labels, problem type, metrics) and
`TaskData` (the spec with its splits as `datasets` objects).

Every source ends in the same layout, so the rest of compact never asks where the data came from:
- the text columns keep the user's names (one column, or two for sentence pairs);
- the label column is `label`: a ClassLabel with the user's label names (single-label classification), float32
  (regression), or a list of ClassLabel (multi-label classification);
- `idx` numbers the rows of each split.
Splits: `train`, and the labelled splits that are only ever reported (`validation`, and `test` when it has labels;
GLUE's MNLI has two validation splits). Selection and tuning use a held-out split that `compact run` carves from
train, never these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)  # transformers' `config.problem_type` values

# the metrics of a task that is not GLUE, by problem type, named as `evaluate` names them; the first is the one
# model selection uses (compact_nlp/metrics/task_metric.py computes them)
METRICS = {SINGLE_LABEL: ("accuracy", "macro_f1"), REGRESSION: ("spearmanr", "pearson"),
           MULTI_LABEL: ("micro_f1", "macro_f1")}


class DataError(ValueError):
    """Task data that cannot be used as given; the message names the problem and how to fix it."""


@dataclass(frozen=True)
class TaskSpec:
    """A text task: which columns hold the text, what the labels are, how it is scored."""

    name: str  # short name for folders and cards: a GLUE task name, or the data file's stem
    source: str  # where the data came from, portable (a file name, a hub id, "GLUE SST-2"); never a local path
    text_columns: tuple[str, ...]
    problem_type: str
    label_names: tuple[str, ...] | None = None  # None for regression
    metrics: tuple[str, ...] = ()
    glue: str | None = None  # the GLUE config name when the data is a GLUE task (its official metrics apply)
    hub_dataset: str | None = None  # the hub id, when the data is a hub dataset (for the card's metadata)
    label_column: str = "label"  # the user's name for the label column (messages, cards)
    dev_splits: tuple[str, ...] = ("validation",)

    def __post_init__(self):
        if self.problem_type not in PROBLEM_TYPES:
            raise DataError(f"problem_type must be one of {', '.join(PROBLEM_TYPES)}, got {self.problem_type!r}.")
        if not 1 <= len(self.text_columns) <= 2:
            raise DataError(f"a task has one text column, or two for sentence pairs; got {list(self.text_columns)}.")
        if not self.metrics:
            object.__setattr__(self, "metrics", METRICS[self.problem_type])

    @property
    def is_regression(self) -> bool:
        return self.problem_type == REGRESSION

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def main_metric(self) -> str:
        """The one score model selection maximises: GLUE's (the mean of its two metrics where it has two, as the
        leaderboard does), else the problem type's first metric."""
        if self.glue is not None and len(self.metrics) > 1:
            return "combined_score"
        return self.metrics[0]

    def model_labels(self) -> dict:
        """`from_pretrained` keyword arguments that give the model the task's labels (`pipeline()` returns these
        names) and problem type."""
        labels = {} if self.is_regression else dict(id2label=dict(enumerate(self.label_names)),
                                                    label2id={n: i for i, n in enumerate(self.label_names)})
        return {"num_labels": self.num_labels, "problem_type": self.problem_type, **labels}

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TaskData:
    """A task's spec and its splits (a `datasets.DatasetDict` in the layout of the module docstring)."""

    spec: TaskSpec
    splits: object  # datasets.DatasetDict: train + spec.dev_splits
    notes: list[str] = field(default_factory=list)  # what was inferred or carved, for the run's report

    @property
    def train(self):
        return self.splits["train"]

    def dev(self) -> dict:
        """The labelled splits that are only reported: split name -> Dataset."""
        return {split: self.splits[split] for split in self.spec.dev_splits}


def task_texts(split, spec: TaskSpec, count: int | None = None) -> list:
    """The first `count` rows' text (all when None): strings, or (a, b) pairs for sentence-pair tasks."""
    rows = split if count is None else split.select(range(min(count, len(split))))
    columns = [rows[c] for c in spec.text_columns]
    return list(zip(*columns)) if len(columns) > 1 else list(columns[0])

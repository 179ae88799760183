"""GLUE: the nine tasks, loaded from the hub or from a local glue_data folder as the same `datasets` objects.

The hub copy is `nyu-mll/glue`; the local copy is the classic glue_data TSV layout written by
download_glue_data.py (CoLA without a header, MRPC with a byte-order mark, MNLI with matched/mismatched dev files).
Either way `load_glue(task)` returns a DatasetDict with the hub's column names and features (a ClassLabel with the
hub's label names, or float32 for STS-B) and its labelled splits: train, and validation (MNLI: validation_matched
and validation_mismatched). Unlabelled test files are not loaded.

`carve_heldout` splits a seeded held-out set off train before any training: every model selection, tuning, search
and early stopping uses it; the dev ("validation") split is only ever reported.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

GLUE_DIR_ENV = "COMPACT_GLUE_DIR"
HUB_DATASET = "nyu-mll/glue"


class GlueDataError(ValueError):
    """GLUE data that cannot be found or read; the message says how to fix it."""


@dataclass(frozen=True)
class LocalFile:
    """Where a split lives in glue_data and which TSV column feeds each dataset column (by header name or index)."""

    path: str
    columns: dict[str, str | int]  # dataset column -> TSV header name (or index when the file has no header)
    header: bool = True


@dataclass(frozen=True)
class GlueTask:
    name: str  # the hub config name
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...] | None  # None: regression (STS-B)
    metrics: tuple[str, ...]  # what compact_nlp/metrics/glue_metric.py reports for the task
    local: dict[str, LocalFile]  # split -> file
    sizes: dict[str, int] = field(default_factory=dict)  # official example counts per split

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def dev_splits(self) -> tuple[str, ...]:
        return tuple(split for split in self.local if split != "train")


def _pair(first: str, second: str, folder: str, label: str = "label", dev: str = "dev.tsv") -> dict[str, LocalFile]:
    columns = {"sentence1": first, "sentence2": second, "label": label}
    return {"train": LocalFile(f"{folder}/train.tsv", columns), "validation": LocalFile(f"{folder}/{dev}", columns)}


TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in [
        GlueTask(
            "cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews_correlation",),
            {split: LocalFile(f"CoLA/{f}", {"label": 1, "sentence": 3}, header=False)
             for split, f in (("train", "train.tsv"), ("validation", "dev.tsv"))},
            {"train": 8551, "validation": 1043},
        ),
        GlueTask(
            "sst2", ("sentence",), ("negative", "positive"), ("accuracy",),
            {split: LocalFile(f"SST-2/{f}", {"sentence": "sentence", "label": "label"})
             for split, f in (("train", "train.tsv"), ("validation", "dev.tsv"))},
            {"train": 67349, "validation": 872},
        ),
        GlueTask(
            "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("accuracy", "f1"),
            _pair("#1 String", "#2 String", "MRPC", label="Quality"), {"train": 3668, "validation": 408},
        ),
        GlueTask(
            "stsb", ("sentence1", "sentence2"), None, ("pearson", "spearmanr"),
            _pair("sentence1", "sentence2", "STS-B", label="score"), {"train": 5749, "validation": 1500},
        ),
        GlueTask(
            "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1"),
            {split: LocalFile(f"QQP/{f}", {"question1": "question1", "question2": "question2",
                                             "label": "is_duplicate"})
             for split, f in (("train", "train.tsv"), ("validation", "dev.tsv"))},
            {"train": 363846, "validation": 40430},
        ),
        GlueTask(
            "mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), ("accuracy",),
            {split: LocalFile(f"MNLI/{f}", {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"})
             for split, f in (("train", "train.tsv"), ("validation_matched", "dev_matched.tsv"),
                              ("validation_mismatched", "dev_mismatched.tsv"))},
            {"train": 392702, "validation_matched": 9815, "validation_mismatched": 9832},
        ),
        GlueTask(
            "qnli", ("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",),
            {split: LocalFile(f"QNLI/{f}", {"question": "question", "sentence": "sentence", "label": "label"})
             for split, f in (("train", "train.tsv"), ("validation", "dev.tsv"))},
            {"train": 104743, "validation": 5463},
        ),
        GlueTask(
            "rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",),
            _pair("sentence1", "sentence2", "RTE"), {"train": 2490, "validation": 277},
        ),
        GlueTask(
            "wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",),
            _pair("sentence1", "sentence2", "WNLI"), {"train": 635, "validation": 71},
        ),
    ]
}
ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli-mm": "mnli"}


def get_task(name: str) -> GlueTask:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise GlueDataError(f"unknown GLUE task {name!r}; the tasks are {', '.join(TASKS)}.")
    return TASKS[key]


def features(task: GlueTask):
    """The hub's features for the task: text columns, label (ClassLabel or float32), idx (int32)."""
    import datasets

    label = datasets.Value("float32") if task.is_regression else datasets.ClassLabel(names=list(task.label_names))
    return datasets.Features({**{c: datasets.Value("string") for c in task.text_columns}, "label": label,
                              "idx": datasets.Value("int32")})


def resolve_glue_dir(glue_dir: str | os.PathLike | None) -> Path | None:
    """The local glue_data folder to use: the argument, else $COMPACT_GLUE_DIR, else None (use the hub)."""
    chosen = glue_dir or os.environ.get(GLUE_DIR_ENV)
    return Path(chosen).expanduser() if chosen else None


def default_glue_dir() -> Path | None:
    """A local glue_data folder if there is one: $COMPACT_GLUE_DIR, else ../shared/data/glue_data beside a checkout."""
    candidates = [os.environ.get(GLUE_DIR_ENV), Path(__file__).resolve().parents[2] / "shared/data/glue_data"]
    return next((Path(c) for c in candidates if c and Path(c).is_dir()), None)


def display_name(task: GlueTask) -> str:
    """GLUE's own spelling of the task (its glue_data folder): CoLA, SST-2, STS-B, ..."""
    return task.local["train"].path.split("/")[0]


def load_glue(task_name: str, glue_dir: str | os.PathLike | None = None):
    """Labelled splits of one GLUE task as a DatasetDict, from a local glue_data folder or else the hub."""
    task = get_task(task_name)
    folder = resolve_glue_dir(glue_dir)
    return load_local(task, folder) if folder is not None else load_hub(task)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint answers at all. Without this check an offline machine waits minutes while
    `datasets` retries with backoff before failing."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def load_hub(task: GlueTask):
    import datasets

    hint = (f"Point compact at a local copy in the classic glue_data layout: --glue-dir DIR or {GLUE_DIR_ENV}=DIR "
            "(DIR holds CoLA/, SST-2/, MRPC/, ...).")
    if not hub_reachable():
        raise GlueDataError(f"the hub is not reachable from here, so {HUB_DATASET}/{task.name} cannot be "
                            f"downloaded. {hint}")
    try:
        loaded = datasets.load_dataset(HUB_DATASET, task.name)
    except Exception as error:  # blocked, missing or failing part-way: all end the same way for the user
        raise GlueDataError(f"could not load {HUB_DATASET}/{task.name} from the hub ({type(error).__name__}: "
                            f"{error}). {hint}") from error
    return datasets.DatasetDict({split: loaded[split] for split in ("train", *task.dev_splits)})


def load_local(task: GlueTask, folder: Path):
    import datasets

    if not folder.is_dir():
        raise GlueDataError(f"glue dir {folder} does not exist; pass the folder that holds CoLA/, SST-2/, MRPC/, ...")
    return datasets.DatasetDict({split: datasets.Dataset.from_dict(read_split(task, folder, spec),
                                                                   features=features(task))
                                 for split, spec in task.local.items()})


def read_split(task: GlueTask, folder: Path, spec: LocalFile) -> dict[str, list]:
    """Read one glue_data TSV into columns, checking every row; errors name the file and line."""
    path = folder / spec.path
    if not path.is_file():
        raise GlueDataError(
            f"{path} is missing. The {task.name} files belong at {folder}/{spec.path.split('/')[0]}/ in the classic "
            "glue_data layout (download_glue_data.py); check --glue-dir / "
            f"{GLUE_DIR_ENV}, or use another task."
        )
    columns: dict[str, list] = {name: [] for name in (*task.text_columns, "label", "idx")}
    with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig: MRPC files start with a byte-order mark
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows) if spec.header else None
        try:
            where = {name: header.index(col) if header is not None else col for name, col in spec.columns.items()}
        except ValueError as error:
            raise GlueDataError(f"{path}: header {header} lacks a column compact needs ({error}); is it the "
                                f"{task.name} file from glue_data?") from None
        width = len(header) if header is not None else max(where.values()) + 1
        for line, row in enumerate(rows, start=2 if header is not None else 1):
            if len(row) < width:
                raise GlueDataError(f"{path}:{line}: expected {width} tab-separated fields, found {len(row)}; "
                                    "the file is truncated or malformed.")
            for name in task.text_columns:
                columns[name].append(row[where[name]])
            columns["label"].append(_label(task, row[where["label"]], path, line))
            columns["idx"].append(len(columns["idx"]))
    return columns


def _label(task: GlueTask, raw: str, path: Path, line: int) -> int | float:
    raw = raw.strip()
    if task.is_regression:
        try:
            return float(raw)
        except ValueError:
            raise GlueDataError(f"{path}:{line}: score {raw!r} is not a number.") from None
    if raw in task.label_names:
        return task.label_names.index(raw)
    if raw.isdigit() and int(raw) < task.num_labels:
        return int(raw)
    raise GlueDataError(f"{path}:{line}: label {raw!r} is outside {task.name}'s labels "
                        f"{list(task.label_names)} (or 0..{task.num_labels - 1}).")


def carve_heldout(train, size: int | float, seed: int):
    """Split `train` into (train, heldout), seeded and stratified by label for classification tasks.

    size: a count of examples or a fraction of train. The held-out part is for selection/tuning/early stopping.
    """
    import datasets

    stratify = "label" if isinstance(train.features["label"], datasets.ClassLabel) else None
    parts = train.train_test_split(test_size=size, seed=seed, stratify_by_column=stratify)
    return parts["train"], parts["test"]


def carve_unseen_heldout(shuffled, size: int, columns: list[str]):
    """Split seeded-shuffled train rows into (pool, heldout), where the held-out texts are ones the model never learns
    from: each held-out row is, in every text column, a whole text (inside no longer row: SST-2's sentences, not their
    phrases), and every row with a text inside a held-out text of that column (the sentence's phrases, repeats of
    it) leaves the pool. Held-out rows are the first `size` whole-text rows in the shuffled order (not stratified: the
    label balance of whole texts, which is what dev holds). Texts are compared as whole words (space-padded), the way
    SST-2 writes its phrases. Written here: no datasets or evaluate utility splits by containment."""
    texts, searches = {}, {}
    for column in columns:
        texts[column] = [f" {t.strip()} " for t in shuffled[column]]
        # longest first, so a text is looked for only among the longer ones, the only ones that can contain it
        longest_first = sorted(set(texts[column]), key=len, reverse=True)
        starts, offset = {}, 0
        for text in longest_first:
            starts.setdefault(len(text), offset)
            offset += len(text) + 1
        searches[column] = ("\n".join(longest_first), starts)

    def whole(row: int) -> bool:
        return all(searches[c][0].find(texts[c][row], 0, searches[c][1][len(texts[c][row])]) < 0 for c in columns)

    picked = []
    for row in range(len(shuffled)):  # in the shuffled order, until there are enough (short rows are slow to test)
        if len(picked) == size:
            break
        if whole(row):
            picked.append(row)
    if len(picked) < size:
        raise GlueDataError(f"only {len(picked)} training rows are whole texts (inside no other row), fewer than the "
                            f"{size} held-out rows asked for: lower protocol.heldout or set protocol.heldout_unseen "
                            "to false.")
    heldout = shuffled.select(picked)
    inside = [False] * len(shuffled)
    for column in columns:
        seen = inside_rows(shuffled[column], heldout[column], whole_words=True)
        inside = [a or b for a, b in zip(inside, seen)]
    return shuffled.select([i for i, hit in enumerate(inside) if not hit]), heldout


SEEN_HELDOUT_WARNING_PERCENT = 20  # above this share of seen held-out rows, `compact run` and `compact search` warn


def inside_rows(texts: list[str], learned_from: list[str], whole_words: bool = False) -> list[bool]:
    """For each text (stripped), whether it occurs inside one of the `learned_from` rows; with `whole_words`, only as
    whole words ("good" is not inside "goodness")."""
    pad = " " if whole_words else ""
    # one newline-joined string and `in`: a substring test over every row without a loop in Python, and no match
    # across two rows
    haystack = "\n".join(f"{pad}{text.strip()}{pad}" for text in learned_from)
    return [f"{pad}{text.strip()}{pad}" in haystack for text in texts]


def heldout_overlap(heldout, learned_from: list[str], column: str, checked: int = 500) -> dict:
    """How much of the held-out split is text the model learns from anyway: the share of held-out rows whose `column`
    occurs inside a training or transfer row (`learned_from`), checked on the first `checked` held-out rows.

    SST-2 lists the phrases of each training sentence as rows of their own, so a random held-out split is mostly
    pieces of training rows: 61% of the protocol's SST-2 held-out rows, 89% with the rest of train as a transfer set
    (0.2% of dev). The fine-tuned model scores 91.3 on the 89% and 88.3 on the others (dev: 87.6), so held-out
    scores overestimate new text (bench/results/accuracy_by_length_sst2.md)."""
    rows = [text for text in heldout[column][:checked] if text.strip()]
    inside = sum(inside_rows(rows, learned_from))
    return {"rows_checked": len(rows), "column": column,
            "inside_training_rows": round(100 * inside / len(rows), 1) if rows else 0.0}


def task_texts(split, task_name: str, count: int | None = None) -> list:
    """The first `count` examples' text (all when None): strings, or (a, b) pairs for sentence-pair tasks."""
    task = get_task(task_name)
    rows = split if count is None else split.select(range(min(count, len(split))))
    columns = [rows[c] for c in task.text_columns]
    return list(zip(*columns)) if len(columns) > 1 else list(columns[0])

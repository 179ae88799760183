"""Task metrics through `evaluate`, from local modules next to this file (no hub needed): GLUE's official metrics
for GLUE tasks (glue_metric.py), and metrics by problem type for every other task (task_metric.py)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import evaluate
import numpy as np

from ..data.task import MULTI_LABEL, REGRESSION, TaskSpec
from ..glue import get_task

METRIC_MODULE = Path(__file__).with_name("glue_metric.py")
TASK_METRIC_MODULE = Path(__file__).with_name("task_metric.py")


@lru_cache(maxsize=None)
def glue_metric(task_name: str):
    """The `evaluate` metric for one GLUE task (config names as the hub's: cola, sst2, ..., mnli)."""
    return evaluate.load(str(METRIC_MODULE), config_name=get_task(task_name).name)


@lru_cache(maxsize=None)
def task_metric(problem_type: str):
    """The `evaluate` metric for a task that is not GLUE, by its problem type."""
    return evaluate.load(str(TASK_METRIC_MODULE), config_name=problem_type)


def predictions_of(logits: np.ndarray, problem_type: str) -> np.ndarray:
    """What the model predicts from its outputs: the score (regression), labels over 0 (multi-label), or argmax."""
    logits = np.asarray(logits)
    if problem_type == REGRESSION:
        return logits.reshape(-1)
    if problem_type == MULTI_LABEL:
        return (logits > 0).astype(np.int64)
    return logits.argmax(axis=-1)


def compute_metrics(spec: TaskSpec, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics from model outputs and gold labels (GLUE's official ones for GLUE tasks)."""
    predictions = predictions_of(logits, spec.problem_type)
    labels = np.asarray(labels)
    if spec.glue is not None:
        return glue_metric(spec.glue).compute(predictions=predictions, references=labels)
    if spec.problem_type == MULTI_LABEL:
        labels = labels.astype(np.int64)
    return task_metric(spec.problem_type).compute(predictions=predictions, references=labels)


def compute_glue_metrics(task_name: str, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """GLUE metrics from model outputs: argmax for classification, the single output for regression (STS-B)."""
    task = get_task(task_name)
    predictions = predictions_of(logits, REGRESSION if task.is_regression else "single_label_classification")
    return glue_metric(task.name).compute(predictions=predictions, references=np.asarray(labels))


def glue_score(task_scores: dict[str, dict[str, float]]) -> float:
    """GLUE's overall score in percent: the mean over tasks of each task's main score, which is the mean of its
    metrics when it has two (MRPC, QQP, STS-B) and, for MNLI, the mean of "mnli_matched" and "mnli_mismatched"."""
    by_task: dict[str, list[float]] = {}
    for name, scores in task_scores.items():
        main = scores.get("combined_score", scores.get("matthews_correlation", scores.get("accuracy")))
        if main is None:
            raise ValueError(f"no GLUE score in the results for {name}: {scores}")
        by_task.setdefault(name.split("_")[0], []).append(main)  # mnli_matched, mnli_mismatched -> mnli
    return 100 * float(np.mean([np.mean(scores) for scores in by_task.values()]))

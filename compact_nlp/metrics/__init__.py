"""GLUE metrics through `evaluate`, from the local module next to this file (no hub needed)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

METRIC_MODULE = Path(__file__).with_name("glue_metric.py")


@lru_cache(maxsize=None)
def glue_metric(task_name: str):
    """The `evaluate` metric for one GLUE task (config names as the hub's: cola, sst2, ..., mnli)."""
    import evaluate

    from ..glue import get_task

    return evaluate.load(str(METRIC_MODULE), config_name=get_task(task_name).name)


def compute_glue_metrics(task_name: str, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics from model outputs: argmax for classification, the single output for regression (STS-B)."""
    from ..glue import get_task

    task = get_task(task_name)
    logits = np.asarray(logits)
    predictions = logits.reshape(-1) if task.is_regression else logits.argmax(axis=-1)
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

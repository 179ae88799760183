"""Metrics of a text task that is not GLUE, by problem type, as an `evaluate` module that loads from this file (no hub
needed):

    evaluate.load(path_to_this_file, config_name="single_label_classification").compute(predictions=..., references=...)

single_label_classification: accuracy and macro-F1 (every class counts alike, whatever its size);
regression: Spearman and Pearson correlation; multi_label_classification: micro- and macro-F1 over the labels
(predictions and references are 0/1 rows). (Kept free of compact imports: evaluate copies this file into its module
cache and imports it alone.)
"""

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score

KINDS = {"single_label_classification": datasets.Value("int64"), "regression": datasets.Value("float32"),
         "multi_label_classification": datasets.Sequence(datasets.Value("int64"))}


class TaskMetric(evaluate.Metric):
    def _info(self):
        if self.config_name not in KINDS:
            raise KeyError(f"unknown problem type {self.config_name!r}; use one of {tuple(KINDS)}")
        kind = KINDS[self.config_name]
        return evaluate.MetricInfo(
            description="Task metrics by problem type, computed with scikit-learn and scipy.",
            citation="",
            inputs_description="predictions and references: class ids, scores, or 0/1 rows (multi-label).",
            features=datasets.Features({"predictions": kind, "references": kind}),
        )

    def _compute(self, predictions, references):
        if self.config_name == "regression":
            return {"spearmanr": float(spearmanr(predictions, references)[0]),
                    "pearson": float(pearsonr(predictions, references)[0])}
        if self.config_name == "multi_label_classification":
            return {"micro_f1": float(f1_score(references, predictions, average="micro", zero_division=0)),
                    "macro_f1": float(f1_score(references, predictions, average="macro", zero_division=0))}
        accuracy = float(sum(int(p == r) for p, r in zip(predictions, references)) / len(references))
        return {"accuracy": accuracy, "macro_f1": float(f1_score(references, predictions, average="macro"))}

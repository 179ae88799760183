"""GLUE metrics as an `evaluate` module that loads from this file, so evaluation works without the hub.

    evaluate.load(path_to_this_file, config_name="mrpc").compute(predictions=..., references=...)

Per task: CoLA Matthews correlation; STS-B Pearson and Spearman; MRPC and QQP accuracy and F1 (positive class 1);
the rest accuracy. Tasks with two metrics also report `combined_score`, their mean, as the GLUE leaderboard does.
(Kept free of compact imports: evaluate copies this file into its module cache and imports it alone.)
"""

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli")


class GlueMetric(evaluate.Metric):
    def _info(self):
        if self.config_name not in TASKS:
            raise KeyError(f"unknown GLUE task {self.config_name!r}; use one of {TASKS}")
        kind = "float32" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description="GLUE metrics (Wang et al., 2019), computed with scikit-learn and scipy.",
            citation="@inproceedings{wang2019glue, title={GLUE: A Multi-Task Benchmark and Analysis Platform for "
                     "Natural Language Understanding}, author={Wang, Alex and others}, booktitle={ICLR}, year={2019}}",
            inputs_description="predictions: predicted labels (scores for stsb); references: gold labels (scores).",
            features=datasets.Features({"predictions": datasets.Value(kind), "references": datasets.Value(kind)}),
        )

    def _compute(self, predictions, references):
        if self.config_name == "cola":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        if self.config_name == "stsb":
            pearson = float(pearsonr(predictions, references)[0])
            spearman = float(spearmanr(predictions, references)[0])
            return {"pearson": pearson, "spearmanr": spearman, "combined_score": (pearson + spearman) / 2}
        accuracy = float(sum(int(p == r) for p, r in zip(predictions, references)) / len(references))
        if self.config_name in ("mrpc", "qqp"):
            f1 = float(f1_score(references, predictions))
            return {"accuracy": accuracy, "f1": f1, "combined_score": (accuracy + f1) / 2}
        return {"accuracy": accuracy}

"""The model card (README.md) of a shipped folder: what was measured on the file that ships, with hub metadata.

The card's metadata (base_model, datasets, tags, library name, model-index) is written by huggingface_hub's
`ModelCardData`/`EvalResult`, so the hub reads it as it reads any card. It belongs to shipping (compact_nlp.ship
measures what it states), so the trainer and the pipeline both write it from here; compact_nlp.hub re-exports it.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data import TaskSpec, glue_spec
from ..io import write_text

METRIC_NAMES = {"accuracy": "Accuracy", "f1": "F1", "matthews_correlation": "Matthews correlation",
                "pearson": "Pearson", "spearmanr": "Spearman", "combined_score": "Combined score",
                "macro_f1": "Macro F1", "micro_f1": "Micro F1"}


def portable(name: str | None) -> str | None:
    """A model or data reference fit for a card that is uploaded: a hub id as it is, a local path as its folder or
    file name (a machine's paths mean nothing elsewhere)."""
    if not name:
        return name
    path = Path(name)
    return path.name if (path.is_absolute() or path.exists() or name.startswith((".", "~"))) else name


def task_of(results: dict) -> TaskSpec:
    """The task the run's results describe: their recorded spec, or (older results) their GLUE task."""
    recorded = results["per_seed"][0].get("data")
    return TaskSpec(**{**recorded, **{k: tuple(v) for k, v in recorded.items() if isinstance(v, list)}}) \
        if recorded else glue_spec(results["recipe"]["task"])


def model_card(results: dict, repo_name: str | None = None, technique_lines: list[str] = ()) -> str:
    """README.md for a folder written by `compact run`; `results` is its OUT/results.json; technique_lines: what
    each technique did to the model (compact_nlp.registry.card_lines)."""
    recipe, summary, first = results["recipe"], results["summary"], results["per_seed"][0]
    spec = task_of(results)
    data = _card_data(recipe, summary, spec, repo_name)
    name = repo_name or f"compact-{spec.name}"
    example = "a charming journey" if spec.glue else "your text here"
    labels = f" (labels: {', '.join(spec.label_names)})" if spec.label_names else " (a score)"
    body = f"""
# {name}

{_intro(recipe, first, spec, technique_lines)}.

## Measured on the file that ships (`{first['artifact']}`)

{_scores(summary, first)}

{_measurements(first)}
{_comparison(summary, first)}{_against_peer(results)}
{_training(results, summary, first)}

## Use

```python
from compact_nlp import AutoCompactModelForSequenceClassification
from transformers import pipeline

model = AutoCompactModelForSequenceClassification.from_pretrained("THIS_REPO", backend="onnxruntime",
                                                                  file_name="{first['artifact']}")
pipeline("text-classification", model=model, tokenizer="THIS_REPO")("{example}")  # {labels.strip(" ()")}
```
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def _card_data(recipe: dict, summary: dict, spec: TaskSpec, repo_name: str | None) -> ModelCardData:
    """The card's hub metadata, with one EvalResult per dev split and metric; the dataset is named by its hub id
    when it has one, else by its file name."""
    evals = []
    for key, stats in summary.items():
        if not isinstance(stats, dict) or "/" not in key:
            continue
        split, metric = key.split("/")
        evals.append(EvalResult(task_type="text-classification", dataset_type=spec.hub_dataset or spec.source,
                                dataset_name=spec.source, dataset_config=spec.glue, dataset_split=split,
                                metric_type=metric, metric_name=METRIC_NAMES.get(metric, metric),
                                metric_value=stats["mean"]))
    return ModelCardData(
        base_model=portable(recipe["model"]), datasets=[spec.hub_dataset] if spec.hub_dataset else None,
        library_name="compact-nlp", license="apache-2.0", language="en", pipeline_tag="text-classification",
        model_name=repo_name or f"compact-{spec.name}", eval_results=evals,
        tags=["compact-nlp", "onnx", "onnxruntime", "ort-mobile", *(["glue"] if spec.glue else []), spec.name],
    )


def _intro(recipe: dict, first: dict, spec: TaskSpec, technique_lines: list[str]) -> str:
    done = "".join(f", {line}" for line in technique_lines)
    teacher = f"(distilled from `{portable(recipe['teacher'])}`)" if recipe['teacher'] else ""
    return f"""`{portable(recipe['model'])}` fine-tuned on {spec.source} ({spec.problem_type.replace('_', ' ')}) with
[compact](https://pypi.org/project/compact-nlp/){" " + teacher if teacher else ""} and exported to ONNX Runtime and ONNX Runtime Mobile
(`{first['artifact']}`, opset 20, target {recipe['export']['target_platform']}){done}"""


def _scores(summary: dict, first: dict) -> str:
    """The dev scores table, mean ± sd over seeds."""
    rows = "\n".join(
        f"| {key} | {stats['mean']:.2f} ± {stats['sd']:.2f} | {', '.join(f'{v:.2f}' for v in stats['values'])} |"
        for key, stats in summary.items() if isinstance(stats, dict) and "/" in key)
    selection = ("The model was selected on a held-out split carved from train; the dev set was only used for these "
                 "numbers." if first.get("heldout_examples") else "The dev set was only used for these numbers.")
    return f"""Dev-set scores ×100, mean ± sd over seeds {summary['seeds']}. {selection}

| split/metric | mean ± sd | per seed |
|---|---|---|
{rows}"""


def _measurements(first: dict) -> str:
    """Latency, size, parity, hardware and versions of the shipped file."""
    size = f"{first['size_mb'].get(first['artifact'])} MB (`{first['artifact']}`)"
    if first["size_mb"].get("model.safetensors"):
        size += f", {first['size_mb']['model.safetensors']} MB (PyTorch)"
    parity_label = first.get("parity_label", "max abs difference, ONNX Runtime vs PyTorch")
    latency = first["latency_ms_batch1"]
    return f"""| what | value |
|---|---|
| latency, batch 1, 1 thread, real dev inputs ({latency['mean_tokens']} tokens on average) | median {latency['median']} ms, p90 {latency['p90']} ms |
| size | {size} |
| {parity_label} | {first['export_parity']:.1e} |
| hardware | {_hardware(first['machine'])} |
| versions | {", ".join(f"{k} {v}" for k, v in first['versions'].items())} |"""


def _hardware(machine: dict) -> str:
    cpu = f"{machine['cpu']}, " if machine.get("cpu") else ""  # results written before the CPU was recorded lack it
    return f"{cpu}{machine['platform']}, {machine['cores']} cores"


def _against_peer(results: dict) -> str:
    """One line on the fastest int8 peer measured in the same run (compact compress), with the CPU it ran on."""
    peer = results.get("against_peer")
    if not peer:
        return ""
    return (f"\n**{peer['speedup']:.2f}x** the speed of {peer['name']} (the fastest int8 runtime measured in the same "
            f"run) at batch 1 on this CPU: {peer['cpu']}.\n")


def _training(results: dict, summary: dict, first: dict) -> str:
    """How the model was trained: examples, held-out rows, epochs, batch, learning rate, time."""
    p = results["recipe"]["protocol"]
    return f"""Training{" (the last step; every step's settings are in the run's results.json)" if results.get("stages") else ""}: {first['train_examples']} training examples{"" if p.get('train_subset') is None else f" (a seeded subset of {p['train_subset']})"},
{first['heldout_examples']} more held out for model selection; {p['epochs']} epochs, batch {p['batch_size']}, learning
rate {p['learning_rate']}, max length {p['max_length']}{f"; {summary['train_minutes_per_seed']} min per seed" if summary.get('train_minutes_per_seed') is not None else ""}."""


def _comparison(summary: dict, first: dict) -> str:
    """The card's 'against the original' table, when an original (teacher, fp32 model) was measured beside it."""
    original = summary.get("original")
    if not original:
        return ""
    main = next(key for key in summary if key.endswith("/" + first["dev_main_metric"]))
    ours_ms, their_ms = summary["latency_ms_batch1_median"], original["latency_ms_batch1_median"]
    ours_mb, their_mb = first["size_mb"][first["artifact"]], original["size_mb"]
    return f"""
### Against the original (`{portable(original['folder'])}`, its `{original['artifact']}`, measured the same way, side by side)

| | this model | original | change |
|---|---|---|---|
| dev {main} | {summary[main]['mean']:.2f} | {original[main]:.2f} | {summary[main]['mean'] - original[main]:+.2f} |
| latency, median ms | {ours_ms} | {their_ms} | {their_ms / ours_ms:.2f}x faster |
| size, MB | {ours_mb} | {their_mb} | {their_mb / ours_mb:.2f}x smaller |
"""


def write_model_card(folder: str | os.PathLike, results: dict, repo_name: str | None = None,
                     technique_lines: list[str] = ()) -> Path:
    path = Path(folder) / "README.md"
    write_text(path, model_card(results, repo_name, technique_lines))
    return path

"""Model cards that state what was measured on the shipped artifact, and uploads through huggingface_hub.

The card's metadata (base_model, datasets, tags, library name, model-index) is written by huggingface_hub's
`ModelCardData`/`EvalResult`, so the hub reads it as it reads any card.
"""

from __future__ import annotations

import os
from pathlib import Path

from .glue import display_name, get_task
from .io import write_text

# never uploaded: training state, scratch files
IGNORED = ("checkpoints/*", "checkpoint-*/*", ".*", "*/.*", "*.tmp", "bench.json", "bench.md")

METRIC_NAMES = {"accuracy": "Accuracy", "f1": "F1", "matthews_correlation": "Matthews correlation",
                "pearson": "Pearson", "spearmanr": "Spearman", "combined_score": "Combined score"}


def model_card(results: dict, repo_name: str | None = None) -> str:
    """README.md for a folder written by `compact run`; `results` is its OUT/results.json."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    recipe, summary, runs = results["recipe"], results["summary"], results["per_seed"]
    task, first = recipe["task"], runs[0]
    glue_name = display_name(get_task(task))
    evals = []
    for key, stats in summary.items():
        if not isinstance(stats, dict) or "/" not in key:
            continue
        split, metric = key.split("/")
        evals.append(EvalResult(task_type="text-classification", dataset_type="nyu-mll/glue",
                                dataset_name=f"GLUE {glue_name}", dataset_config=task, dataset_split=split,
                                metric_type=metric, metric_name=METRIC_NAMES.get(metric, metric),
                                metric_value=stats["mean"]))
    data = ModelCardData(
        base_model=recipe["model"], datasets=["nyu-mll/glue"], library_name="compact-nlp", license="apache-2.0",
        language="en", pipeline_tag="text-classification", model_name=repo_name or f"compact-{task}",
        tags=["compact-nlp", "onnx", "onnxruntime", "ort-mobile", "glue", task], eval_results=evals,
    )
    rows = "\n".join(
        f"| {key} | {stats['mean']:.2f} ± {stats['sd']:.2f} | {', '.join(f'{v:.2f}' for v in stats['values'])} |"
        for key, stats in summary.items() if isinstance(stats, dict) and "/" in key)
    comparison = _comparison(summary, first)
    selection = ("The model was selected on a held-out split carved from train; the dev set was only used for these "
                 "numbers." if first.get("heldout_examples") else "The dev set was only used for these numbers.")
    size = f"{first['size_mb'].get(first['artifact'])} MB (`{first['artifact']}`)"
    if first["size_mb"].get("model.safetensors"):
        size += f", {first['size_mb']['model.safetensors']} MB (PyTorch)"
    quant = first.get("quant", {}).get("config")
    parity_label = ("max abs difference, ONNX Runtime vs PyTorch" if not quant else
                    "max abs logit difference vs the PyTorch quantized model (quantized activations round "
                    "differently; see docs/quant.md)" if quant.get("mode", "qat") == "qat"
                    else "max abs logit difference vs the fp32 graph")
    p = recipe["protocol"]
    latency = first["latency_ms_batch1"]
    body = f"""
# {repo_name or f"compact-{task}"}

`{recipe['model']}` fine-tuned on GLUE {glue_name} with [compact](https://pypi.org/project/compact-nlp/)
{f"(distilled from `{recipe['teacher']}`)" if recipe['teacher'] else ""} and exported to ONNX Runtime and ONNX Runtime
Mobile (`{first['artifact']}`, opset 20, target {recipe['export']['target_platform']}){_quant_line(first)}{_pruning_line(first)}{_search_line(first)}.

## Measured on the file that ships (`{first['artifact']}`)

Dev-set scores ×100, mean ± sd over seeds {summary['seeds']}. {selection}

| split/metric | mean ± sd | per seed |
|---|---|---|
{rows}

| what | value |
|---|---|
| latency, batch 1, 1 thread, real dev inputs ({latency['mean_tokens']} tokens on average) | median {latency['median']} ms, p90 {latency['p90']} ms |
| size | {size} |
| {parity_label} | {first['export_parity']:.1e} |
| hardware | {first['machine']['platform']}, {first['machine']['cores']} cores |
| versions | {", ".join(f"{k} {v}" for k, v in first['versions'].items())} |
{comparison}
Training{" (the last step; every step's settings are in the run's results.json)" if results.get("stages") else ""}: {first['train_examples']} training examples{"" if p.get('train_subset') is None else f" (a seeded subset of {p['train_subset']})"},
{first['heldout_examples']} more held out for model selection; {p['epochs']} epochs, batch {p['batch_size']}, learning
rate {p['learning_rate']}, max length {p['max_length']}{f"; {summary['train_minutes_per_seed']} min per seed" if summary.get('train_minutes_per_seed') is not None else ""}.

## Use

```python
from compact_nlp import AutoCompactModelForSequenceClassification
from transformers import pipeline

model = AutoCompactModelForSequenceClassification.from_pretrained("THIS_REPO", backend="onnxruntime",
                                                                  file_name="{first['artifact']}")
pipeline("text-classification", model=model, tokenizer="THIS_REPO")("a charming journey")
```
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def _search_line(first: dict) -> str:
    sub = first.get("subtransformer")
    if not sub:
        return ""
    return (f", as a SubTransformer found by hardware-aware search (HAT) and distilled: hidden {sub['hidden']}, "
            f"{len(sub['heads'])} layers, heads {sub['heads']}, FFN widths {sub['ffn']}")


def _quant_line(first: dict) -> str:
    config = first.get("quant", {}).get("config")
    if not config:
        return ""
    if "activation_bits" in config:  # BinaryConfig
        return (f", binary weights (W1A{config['activation_bits']}, {config['weights'].replace('_', '-')} "
                f"{config['weight_scale']} scales, 1 bit per weight, {config['embedding_bits']}-bit word embeddings"
                f"{', trimmed vocabulary' if config['trim_vocabulary'] else ''}; two-stage distillation)")
    how = "quantization-aware training" if config["mode"] == "qat" else "post-training quantization"
    choice = first.get("quant_choice")
    if choice:  # fallback_to_ptq: say that the held-out split chose, and by how much
        scores = {name: 100 * choice["heldout"][name][choice["metric"]] for name in ("qat", "ptq")}
        how += (f", chosen over {'post-training quantization' if choice['shipped'] == 'qat' else 'QAT'} on the "
                f"held-out split ({choice['metric']} {scores[choice['shipped']]:.2f} vs "
                f"{scores['ptq' if choice['shipped'] == 'qat' else 'qat']:.2f})")
    return (f", int8 by {how} ({config['weights'].replace('_', '-')} weights, {config['activations']} activations, "
            f"{config['embedding_bits']}-bit word embeddings{', trimmed vocabulary' if config['trim_vocabulary'] else ''})")


def _pruning_line(first: dict) -> str:
    config = first.get("token_pruning")
    if not config:
        return ""
    heads = f"; heads kept per layer: {first['heads_per_layer']}" if first.get("heads_per_layer") else ""
    if config["mode"] == "threshold":
        return (f", with learned-threshold token pruning (LTP; tokens leave the sequence from layer "
                f"{config['unpruned_layers']} on{heads})")
    shares = "/".join(f"{100 * r:.0f}" for r in config["keep_ratios"])
    return f", with cascade token pruning (SpAtten top-k; the layers run on {shares}% of the real tokens{heads})"


def _comparison(summary: dict, first: dict) -> str:
    """The card's 'against the original' table, when an original (teacher, fp32 model) was measured beside it."""
    original = summary.get("original")
    if not original:
        return ""
    main = next(key for key in summary if key.endswith("/" + first["dev_main_metric"]))
    ours_ms, their_ms = summary["latency_ms_batch1_median"], original["latency_ms_batch1_median"]
    ours_mb, their_mb = first["size_mb"][first["artifact"]], original["size_mb"]
    return f"""
### Against the original (`{original['folder']}`, its `{original['artifact']}`, measured the same way, side by side)

| | this model | original | change |
|---|---|---|---|
| dev {main} | {summary[main]['mean']:.2f} | {original[main]:.2f} | {summary[main]['mean'] - original[main]:+.2f} |
| latency, median ms | {ours_ms} | {their_ms} | {their_ms / ours_ms:.2f}x faster |
| size, MB | {ours_mb} | {their_mb} | {their_mb / ours_mb:.2f}x smaller |
"""


def write_model_card(folder: str | os.PathLike, results: dict, repo_name: str | None = None) -> Path:
    path = Path(folder) / "README.md"
    write_text(path, model_card(results, repo_name))
    return path


def files_to_upload(folder: str | os.PathLike) -> list[tuple[str, int]]:
    """(relative path, bytes) of what `push_folder` uploads, with IGNORED left out."""
    from fnmatch import fnmatch

    folder = Path(folder)
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if not any(fnmatch(relative, pattern) for pattern in IGNORED):
            files.append((relative, path.stat().st_size))
    return files


def push_folder(folder: str | os.PathLike, repo_id: str, private: bool = False, commit_message: str | None = None,
                dry_run: bool = False, token: str | None = None, api=None) -> list[tuple[str, int]]:
    """Upload a compact folder to the hub (one commit); with dry_run, only return what would be uploaded."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a compact folder (no config.json); push the folder that "
                                "`compact export` or `compact run` wrote (OUT/seed-N/model).")
    files = files_to_upload(folder)
    if dry_run:
        return files
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", ignore_patterns=list(IGNORED),
                      commit_message=commit_message or "Upload compact model")
    return files

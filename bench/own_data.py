"""compact on users' own files: real GLUE rows reshaped as user files (other column names, labels as words, other
formats), each run with one `compact run --train ...` command (the datasets-object case through the Python API), never
read through the GLUE loader; plus the GLUE-by-name run of SST-2 for the same protocol.

    python bench/own_data.py [--glue-dir DIR] [--out out/own_data] [--runs sst2_glue sst2_csv ...]

Each run uses its GLUE recipe's protocol (recipes/glue/<task>.yaml) with one seed, so its numbers sit beside the
baselines (bench/results/baselines.md). Runs are resumable (compact run skips finished seeds). Writes
bench/results/own_data.{json,md}: per run the command, the data notes, the validation scores of the shipped model.ort,
latency, size, wall time, and what `pipeline()` answers on two validation texts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pandas as pd
from transformers import pipeline

from compact_nlp import AutoCompactModelForSequenceClassification
from compact_nlp.data import load_task_data
from compact_nlp.embeddings_text import training_texts
from compact_nlp.glue import default_glue_dir, load_glue
from compact_nlp.io import write_json, write_text
from compact_nlp.run import run_task
from compact_nlp.ship import machine, versions

RESULTS = Path(__file__).parent / "results"
SEED = ["--set", "protocol.seeds=[1]"]


def write_files(glue_dir, folder: Path) -> None:
    """The GLUE rows as a user would have them."""
    folder.mkdir(parents=True, exist_ok=True)
    sst2 = load_glue("sst2", glue_dir)
    words = ("negative", "positive")
    for split, name in (("train", "reviews.csv"), ("validation", "reviews_dev.csv")):
        pd.DataFrame({"review": sst2[split]["sentence"],
                      "sentiment": [words[i] for i in sst2[split]["label"]]}).to_csv(folder / name, index=False)
    mrpc = load_glue("mrpc", glue_dir)
    for split, name in (("train", "paraphrases.jsonl"), ("validation", "paraphrases_dev.jsonl")):
        pd.DataFrame({"first": mrpc[split]["sentence1"], "second": mrpc[split]["sentence2"],
                      "paraphrase": [("no", "yes")[i] for i in mrpc[split]["label"]]}).to_json(
            folder / name, orient="records", lines=True)
    stsb = load_glue("stsb", glue_dir)
    for split, name in (("train", "similarity.csv"), ("validation", "similarity_dev.csv")):
        pd.DataFrame({"text_a": stsb[split]["sentence1"], "text_b": stsb[split]["sentence2"],
                      "similarity": stsb[split]["label"]}).to_csv(folder / name, index=False)
    for split, name in (("train", "similarity3.parquet"), ("validation", "similarity3_dev.parquet")):
        bins = ["low" if s < 2 else "medium" if s < 4 else "high" for s in stsb[split]["label"]]
        pd.DataFrame({"premise": stsb[split]["sentence1"], "hypothesis": stsb[split]["sentence2"],
                      "level": bins}).to_parquet(folder / name)
    # unlabelled text for `compress --task embeddings`: the train sentences compact embed distils on, never STS-B dev
    texts, _ = training_texts(glue_dir, limit=None, seed=1)  # all of them (distinct, shuffled)
    pd.DataFrame({"text": texts}).to_csv(folder / "sentences.csv", index=False)


def commands(glue_dir, files: Path, out: Path) -> dict[str, list[str]]:
    return {
        "sst2_glue": ["run", "recipes/glue/sst2.yaml", "--glue-dir", str(glue_dir), "--out", str(out / "sst2_glue")],
        "sst2_csv": ["run", "recipes/glue/sst2.yaml", "--train", str(files / "reviews.csv"), "--validation",
                     str(files / "reviews_dev.csv"), "--text-column", "review", "--label-column", "sentiment",
                     "--out", str(out / "sst2_csv")],
        "mrpc_jsonl": ["run", "recipes/glue/mrpc.yaml", "--train", str(files / "paraphrases.jsonl"), "--validation",
                       str(files / "paraphrases_dev.jsonl"), "--label-column", "paraphrase",
                       "--out", str(out / "mrpc_jsonl"), *SEED],
        "stsb_csv": ["run", "recipes/glue/stsb.yaml", "--train", str(files / "similarity.csv"), "--validation",
                     str(files / "similarity_dev.csv"), "--label-column", "similarity",
                     "--out", str(out / "stsb_csv"), *SEED],
        "stsb3_parquet": ["run", "recipes/glue/stsb.yaml", "--train", str(files / "similarity3.parquet"),
                          "--validation", str(files / "similarity3_dev.parquet"), "--label-column", "level",
                          "--out", str(out / "stsb3_parquet"), *SEED],
    }


def run_datasets_object(glue_dir, out: Path) -> dict:
    """RTE as a datasets.DatasetDict the user built in Python, through compact_nlp.run.run_task."""
    rte = load_glue("rte", glue_dir)
    names = ("entailment", "not_entailment")
    given = datasets.DatasetDict({split: datasets.Dataset.from_dict({
        "claim": rte[split]["sentence1"], "evidence": rte[split]["sentence2"],
        "verdict": [names[i] for i in rte[split]["label"]]}) for split in ("train", "validation")})
    data = load_task_data(given, text=["claim", "evidence"], label="verdict", name="rte_object")
    return run_task(data, out / "rte_object", recipe="glue/rte", overrides=["protocol.seeds=[1]"])


def answers(folder: Path, texts: list) -> list:
    model = AutoCompactModelForSequenceClassification.from_pretrained(folder, backend="onnxruntime",
                                                                      file_name="model.ort")
    classify = pipeline("text-classification", model=model, tokenizer=str(folder))
    return [classify({"text": t[0], "text_pair": t[1]} if isinstance(t, tuple) else t) for t in texts]


def summarize(name: str, command: list[str] | None, out: Path, wall: float | None) -> dict:
    results = json.loads((out / name / "results.json").read_text())
    first = results["per_seed"][0]
    folder = out / name / "seed-1" / "model"
    spec = first.get("data", {})
    return {"run": name, "command": ("compact " + " ".join(command)) if command else "python API: run_task",
            "data_notes": first.get("data_notes"), "problem_type": spec.get("problem_type"),
            "labels": spec.get("label_names"), "dev": first["dev"], "train_examples": first["train_examples"],
            "heldout_examples": first["heldout_examples"], "latency_ms_batch1": first["latency_ms_batch1"],
            "size_mb": first["size_mb"], "wall_seconds": first.get("wall_seconds"), "command_seconds": wall,
            "model": str(folder)}


TASK_OF = {"sst2_glue": "sst2", "sst2_csv": "sst2", "mrpc_jsonl": "mrpc", "stsb_csv": "stsb", "stsb3_parquet": "stsb",
           "rte_object": "rte"}


def sample_texts(name: str, glue_dir) -> list:
    """Two validation rows of the run's task (the same texts its validation file holds)."""
    dev = load_glue(TASK_OF[name], glue_dir)["validation"].select(range(2))
    columns = [c for c in dev.column_names if c not in ("label", "idx")]
    return [tuple(row[c] for c in columns) if len(columns) > 1 else row[columns[0]] for row in dev]


def markdown(rows: list[dict]) -> str:
    lines = ["# compact on users' own files (GLUE rows reshaped as user files)", "",
             f"{machine()['processor']}, {machine()['cores']} cores; "
             + ", ".join(f"{k} {v}" for k, v in versions().items()), "",
             "| run | problem | labels | validation scores (model.ort) | ms, batch 1 | .ort MB | train min | "
             "pipeline() on 2 validation texts |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        scores = "; ".join(f"{k} {100 * v:.2f}" for split in r["dev"].values() for k, v in split.items())
        said = ", ".join(a[0]["label"] if isinstance(a, list) else a["label"] for a in r.get("pipeline", []))
        lines.append(f"| {r['run']} | {r['problem_type'] or 'GLUE'} | {', '.join(r['labels'] or []) or 'score'} | "
                     f"{scores} | {r['latency_ms_batch1']['median']} | {r['size_mb'].get('model.ort')} | "
                     f"{round((r['wall_seconds'] or 0) / 60, 1)} | {said} |")
    lines += ["", "Commands:", ""] + [f"- {r['run']}: `{r['command']}`" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--out", default="out/own_data")
    parser.add_argument("--runs", nargs="+", default=None)
    args = parser.parse_args()
    glue_dir, out = args.glue_dir or default_glue_dir(), Path(args.out)
    files = out / "files"
    write_files(glue_dir, files)
    todo = commands(glue_dir, files, out)
    rows = []
    for name in args.runs or [*todo, "rte_object"]:
        started = time.perf_counter()
        if name == "rte_object":
            run_datasets_object(glue_dir, out)
            command = None
        else:
            command = todo[name]
            subprocess.run([sys.executable, "-m", "compact_nlp.cli", *command], check=True)
        row = summarize(name, command, out, round(time.perf_counter() - started, 1))
        row["pipeline_texts"] = sample_texts(name, glue_dir)
        row["pipeline"] = answers(Path(row["model"]), row["pipeline_texts"])
        rows.append(row)
        write_json(RESULTS / "own_data.json", rows)
        write_text(RESULTS / "own_data.md", markdown(rows))


if __name__ == "__main__":
    main()

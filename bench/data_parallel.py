"""`compact run` in one process and data-parallel under `accelerate launch`, side by side on the same user file.

    python bench/data_parallel.py --train reviews.csv --validation reviews_dev.csv [--rows 4000] [--out out/dp]

The same command (all-MiniLM-L6-v2 fine-tuned on SST-2 as a user's CSV: `review`, `sentiment` as words) runs once as
one process (torch on every core) and once as two processes (`accelerate launch --multi_gpu --num_processes 2`: on a
machine without a GPU they train on the CPU over gloo, one core each). Per arm: wall time, training time, optimizer
steps, processes, dev accuracy of the shipped model.ort. Writes bench/results/data_parallel_sst2.{json,md}. Each arm is
resumable (compact run skips a finished seed), so a killed bench continues where it was.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from compact_nlp.io import write_json, write_text
from compact_nlp.ship import machine, versions

RESULTS = Path(__file__).parent / "results"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LAUNCH = {"one process": [],
          "two processes": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]}


def command(args, arm: str) -> list[str]:
    run = ["-m", "compact_nlp.cli", "run", "--train", args.train, "--validation", args.validation,
           "--text-column", "review", "--label-column", "sentiment", "--model", MODEL,
           "--set", f"protocol.train_subset={args.rows}", "--set", "protocol.epochs=1", "--set", "protocol.seeds=[1]",
           "--set", "protocol.max_length=64", "--out", str(Path(args.out) / arm.replace(" ", "_"))]
    return [sys.executable, *LAUNCH[arm], *run]


def run_arm(args, arm: str) -> dict:
    cmd = command(args, arm)
    # one process uses both cores; each of two processes gets one (the cores are split, not oversubscribed)
    env = {**os.environ, "OMP_NUM_THREADS": str(os.cpu_count() if arm == "one process" else 1)}
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    wall = time.perf_counter() - started
    seed = json.loads((Path(cmd[cmd.index("--out") + 1]) / "results.json").read_text())["per_seed"][0]
    return {"arm": arm, "command": " ".join(cmd[1:]), "wall_seconds": round(wall, 1),
            "train_seconds": seed["train_seconds"], "train_steps": seed["train_steps"],
            "processes": seed["processes"], "train_examples": seed["train_examples"],
            "dev_accuracy": round(100 * seed["dev"]["validation"]["accuracy"], 2),
            "latency_ms_batch1": seed["latency_ms_batch1"]["median"]}


def markdown(rows: list[dict], about: dict) -> str:
    lines = ["# `compact run` in one process and under `accelerate launch` (2 processes)", "",
             f"CPU: {about['machine']['cpu']}, {about['machine']['cores']} cores; "
             + ", ".join(f"{k} {v}" for k, v in about["versions"].items()) + ".", "",
             f"{MODEL} fine-tuned on {rows[0]['train_examples']} SST-2 rows of a user CSV, 1 epoch, seed 1; dev "
             "accuracy of the shipped int8 `model.ort`.", "",
             "| arm | processes | optimizer steps | training s | wall s | dev accuracy |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['processes']} | {r['train_steps']} | {r['train_seconds']} | {r['wall_seconds']} | "
              f"{r['dev_accuracy']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True)
    parser.add_argument("--validation", required=True)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--out", default="out/data_parallel")
    parser.add_argument("--name", default="data_parallel_sst2")
    args = parser.parse_args()
    rows = [run_arm(args, arm) for arm in LAUNCH]
    about = {"machine": machine(), "versions": versions()}
    write_json(RESULTS / f"{args.name}.json", {**about, "rows": rows})
    write_text(RESULTS / f"{args.name}.md", markdown(rows, about))
    print(markdown(rows, about))


if __name__ == "__main__":
    main()

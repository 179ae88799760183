"""Collect `compact compress` runs into bench/results/compress.{json,md}: for each run its command, goal, status, the
plan chosen (or the distance), the held-out and validation numbers, and how long each phase took on this machine.

    python bench/compress_results.py RUN_DIR [RUN_DIR ...] [--out bench/results/compress]

RUN_DIR is a compress OUT folder (report.json, plan/, teacher/, steps/); the command is read from RUN_DIR.log when
there is one (the experiment scripts write it beside the folder).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from compact_nlp.io import write_json, write_text
from compact_nlp.ship import machine, versions


def _minutes(path: Path | None) -> float | None:
    return round(path.stat().st_mtime / 60, 2) if path is not None and path.exists() else None


def _first(run: Path, pattern: str, newest: bool = False) -> Path | None:
    found = sorted(run.glob(pattern), key=lambda p: p.stat().st_mtime)
    return (found[-1] if newest else found[0]) if found else None


def phase_minutes(run: Path) -> dict:
    """Wall minutes of each phase, from the files each phase finished with (the job file is written first; a phase
    whose file is missing is folded into the next). A search's first attempt is split into its latency
    measurements, its SuperTransformer, and the rest (evolution, distillation, int8, timing). A resumed run's phases
    hold the time between its sessions too: the report's wall time (its clock) does not."""
    milestones = [
        ("measure (peers, proxies, training cost)",
         run / "plan" / "baseline.json" if (run / "plan" / "baseline.json").exists() else run / "plan" / "embed_baseline.json"),
        ("fine-tune the teacher", run / "teacher" / "results.json"),
        ("search: latency of SubTransformers", _first(run, "steps/hat-work-*/latency.jsonl")),
        ("search: SuperTransformer", _first(run, "steps/hat-work-*/supernet/model/config.json")),
        ("first attempt (after a search: evolution, distillation, int8)", _first(run, "attempts/*.json")),
        ("later attempts", _first(run, "attempts/*.json", newest=True)),
        ("final validation and report", run / "report.json"),
    ]
    last, phases = _minutes(run / ".compact-job.json"), {}
    for name, path in milestones:
        at = _minutes(path)
        if at is None or last is None:
            phases[name] = None
            continue
        phases[name] = round(max(at - last, 0.0), 1)  # a cached measurement predates the job file: 0
        last = max(at, last)
    return phases


def command_of(run: Path) -> str:
    """The line of bench/compress_runs.sh that wrote `run` (its OUT folder is the run's name)."""
    script = Path(__file__).with_name("compress_runs.sh")
    return next((line for line in script.read_text().splitlines()
                 if not line.startswith("#") and f"/{run.name} " in line), "")


def summarize(run: Path) -> dict:
    report = json.loads((run / "report.json").read_text())
    chosen = report["chosen"][0]["plan"]["label"] if report["chosen"] else None
    return {"run": run.name, "command": command_of(run), "goal": report["goal"], "status": report["status"],
            "peer": report["baseline"]["fastest_peer"], "peer_ms_in_frame": report["baseline"]["fastest_peer_ms"],
            "reference_ms": report["baseline"]["reference_ms"], "target": report["target"],
            "plans_predicted_to_meet": len(report["plans"]), "attempts": report["attempts"], "chosen": chosen,
            "final": report["final"], "distance": report["distance"], "notes": report["notes"],
            "wall_minutes": round(report["wall_seconds"] / 60, 1), "phase_minutes": phase_minutes(run)}


def markdown(rows: list[dict]) -> str:
    lines = ["| run | goal | status | peer (ms in frame) | chosen | validation drop | speedup vs peer | size MB | wall min |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g, f = r["goal"], r["final"] or {}
        goal = f"{g['kind']} {g['value']:g}, max drop {g['max_drop']:g}"
        spread = f" ± {f['score_sd']:.2f}" if f.get("score_sd") is not None else ""
        drop = f"{f['drop']:.2f} ({f['metric']}, {f['score_mean']:.2f}{spread})" if f else "-"
        lines.append(f"| {r['run']} | {goal} | {r['status']} | {r['peer']} ({r['peer_ms_in_frame']:.2f}) | "
                     f"{r['chosen'] or '-'} | {drop} | {f.get('speedup_vs_peer', '-')} | {f.get('size_mb', '-')} | "
                     f"{r['wall_minutes']} |")
    names = list(rows[0]["phase_minutes"]) if rows else []
    lines += ["", "Where the time went (minutes, from the files each phase ended with):", "",
              "| run | wall (clock) | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for r in rows:
        lines.append(f"| {r['run']} | {r['wall_minutes']} | "
                     + " | ".join("-" if v is None else str(v) for v in r["phase_minutes"].values()) + " |")
    for r in rows:
        lines += ["", f"**{r['run']}**: `{r['command']}`" if r["command"] else f"**{r['run']}**"]
        lines += [f"- {note}" for note in r["notes"]]
        if r["distance"]:
            lines.append(f"- distance: {r['distance']}")
        lines += [f"- attempt {a['plan']['label']} seed {a['seed']}: held-out {a['score']:.2f} vs {a['teacher_score']:.2f}"
                  f" (drop {a['drop']:.2f}), {a['ms']:.2f} ms, {a['size_mb']:.2f} MB, {a['seconds'] / 60:.1f} min"
                  for a in r["attempts"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", default="bench/results/compress")
    args = parser.parse_args()
    rows = [summarize(Path(run)) for run in args.runs if (Path(run) / "report.json").is_file()]
    header = (f"`compact compress` runs; machine: {machine()}; versions: {versions()}; "
              f"OMP threads: {os.environ.get('OMP_NUM_THREADS', 'default')}.\n\n")
    write_json(f"{args.out}.json", {"machine": machine(), "versions": versions(), "runs": rows})
    write_text(f"{args.out}.md", header + markdown(rows))
    print(header + markdown(rows))


if __name__ == "__main__":
    main()

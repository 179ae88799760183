"""Issue 3's distillation demonstration: the same half-depth student, fine-tuned alone vs distilled from the
fine-tuned MiniLM (same seeds, same steps), into bench/results/distillation_<task>.{json,md}.

    compact run recipes/glue/mrpc.yaml --set "student_layers=[1, 3, 5]" --out runs/mrpc_student
    compact run recipes/glue/mrpc.yaml --set "student_layers=[1, 3, 5]" --set teacher=runs/mrpc/seed-1/model \\
        --set "distillation={temperature: 2.0, task_weight: 1.0, logits_weight: 1.0, hidden_weight: 1.0}" \\
        --out runs/mrpc_distilled
    python bench/distillation.py mrpc --student runs/mrpc_student --distilled runs/mrpc_distilled \\
        [--arm "distilled + hidden states" runs/mrpc_hidden_distilled ...]

Each arm may be several run folders (e.g. seeds 1-3 and 4-5 run separately); they are merged by seed, and every arm
must have the same seeds. "Beyond the seed spread" is read two ways and both are reported: the ranges do not overlap
(the worst distilled seed beats the best student seed), and the paired gain (same seed, same data) is positive on
every seed with a mean larger than twice its standard error.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from compact_nlp.io import write_json, write_text

RESULTS = Path(__file__).parent / "results"


def load_arm(paths: list[str]) -> dict:
    """Merge run folders into {"recipe", "per_seed"} ordered by seed."""
    runs = [json.loads((Path(p) / "results.json").read_text()) for p in paths]
    per_seed = sorted((r for run in runs for r in run["per_seed"]), key=lambda r: r["seed"])
    return {"recipe": runs[0]["recipe"], "per_seed": per_seed, "folders": paths}


def scores(arm: dict, split: str, metric: str) -> list[float]:
    return [round(100 * r["dev"][split][metric], 2) for r in arm["per_seed"]]


def compare(student: list[float], distilled: list[float]) -> dict:
    paired = [round(d - s, 2) for d, s in zip(distilled, student)]
    mean_gain = statistics.mean(paired)
    standard_error = statistics.stdev(paired) / len(paired) ** 0.5 if len(paired) > 1 else float("inf")
    return {"student": {"mean": round(statistics.mean(student), 2), "sd": round(statistics.stdev(student), 2)},
            "distilled": {"mean": round(statistics.mean(distilled), 2), "sd": round(statistics.stdev(distilled), 2)},
            "gain": round(mean_gain, 2), "gain_per_seed": paired,
            "ranges_disjoint": min(distilled) > max(student),
            "paired_gain_beyond_2se": all(g > 0 for g in paired) and mean_gain > 2 * standard_error,
            "paired_standard_error": round(standard_error, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("--student", nargs="+", required=True, help="run(s) of the student trained alone")
    parser.add_argument("--distilled", nargs="+", required=True, help="run(s) of the same student distilled")
    parser.add_argument("--arm", nargs="+", action="append", default=[], metavar=("NAME", "RUN"),
                        help="another distilled arm: its name, then its run folder(s) (repeatable)")
    parser.add_argument("--note", default="", help="setup and reading, added under the table")
    args = parser.parse_args()
    arms = {"distilled": load_arm(args.distilled)}
    for name, *paths in args.arm:
        if not paths:
            raise SystemExit(f"--arm {name!r} needs at least one run folder after its name")
        arms[name] = load_arm(paths)
    student = load_arm(args.student)
    seeds = [r["seed"] for r in student["per_seed"]]
    for name, arm in arms.items():
        if [r["seed"] for r in arm["per_seed"]] != seeds:
            raise SystemExit(f"every arm must use the same seeds: student {seeds}, {name} "
                             f"{[r['seed'] for r in arm['per_seed']]}")
    first = student["per_seed"][0]
    rows, comparison = [], {}
    for split, metrics in first["dev"].items():
        for metric in metrics:
            key = f"{split}/{metric}"
            for name, arm in arms.items():
                c = compare(scores(student, split, metric), scores(arm, split, metric))
                comparison.setdefault(key, {})[name] = c
                rows.append(f"| {key} | {name} | {c['student']['mean']:.2f} ± {c['student']['sd']:.2f} | "
                            f"{c['distilled']['mean']:.2f} ± {c['distilled']['sd']:.2f} | {c['gain']:+.2f} "
                            f"(se {c['paired_standard_error']}) | {', '.join(f'{g:+.2f}' for g in c['gain_per_seed'])} "
                            f"| {'yes' if c['ranges_disjoint'] else 'no'} | "
                            f"{'yes' if c['paired_gain_beyond_2se'] else 'no'} |")
    steps = {name: sorted({r.get("train_steps") for r in arm["per_seed"]} - {None})
             for name, arm in {"student": student, **arms}.items()}
    setups = "\n".join(f"- {name}: distillation {arm['recipe']['distillation']}, teacher `{arm['recipe']['teacher']}`, "
                       f"transfer {arm['recipe'].get('transfer')}, "
                       f"{arm['per_seed'][0].get('transfer_examples', 0)} transfer examples, steps {steps[name] or '-'}"
                       for name, arm in arms.items())
    text = "\n".join([
        f"# Distillation demonstration: {args.task}, half-depth MiniLM student",
        "",
        f"Student: pretrained MiniLM layers {student['recipe']['student_layers']} ({first['layers']} layers, "
        f"{first['parameters'] / 1e6:.1f}M parameters), trained alone with steps {steps['student'] or '-'}. Seeds "
        f"{seeds}, each with its own subset and held-out split, identical across arms; dev measured on the exported "
        "model.ort.",
        setups,
        "",
        "| dev metric | arm | student alone | student distilled | paired gain | gain per seed | ranges disjoint | "
        "every seed gains, mean > 2 se |",
        "|---|---|---|---|---|---|---|---|",
        *rows, "",
        *([args.note, ""] if args.note else []),
    ])
    write_json(RESULTS / f"distillation_{args.task}.json", {"task": args.task, "comparison": comparison,
                                                           "student": student, **arms})
    write_text(RESULTS / f"distillation_{args.task}.md", text)
    print(text)


if __name__ == "__main__":
    main()

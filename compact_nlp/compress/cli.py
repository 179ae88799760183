"""The `compact compress` subcommand: its arguments, checked by argparse where they are types (a number, a range),
and by compact_nlp.compress.goal where they are goals."""

from __future__ import annotations

from ..data.options import add_data_options, at_least, non_negative_float, positive_float, task_data_from_options
from ..distributed import DEVICES, is_main
from ..io import refuse_overwrite
from .api import compress
from .goal import EMBEDDINGS, TASKS


def add_compress_command(sub) -> None:
    command = sub.add_parser(
        "compress", help="say the goal, get the model: --speedup/--latency-ms/--size-mb within --max-drop points",
        description="Compress MODEL on your data to one target within --max-drop points of the fine-tuned model: "
                    "plans (depth, HAT search, token pruning, int8, binary: what the technique registry offers) are "
                    "predicted on this machine, tried on a held-out split carved from your training data, escalated "
                    "while the drop is too large; OUT gets model/ (model.onnx, model.ort, card) and "
                    "report.{md,json,png}. "
                    "Exit code 3 when the goal is not reached (nothing ships unless --accept-best).")
    command.add_argument("model", help="hub id, transformers checkpoint or compact folder; fine-tuned on your task "
                                       "or not (then compact fine-tunes it first and says so)")
    command.add_argument("out", help="output folder (resumable: the same command continues it)")
    add_data_options(command)
    command.add_argument("--data", dest="train", metavar="FILE", help="the same as --train")
    target = command.add_mutually_exclusive_group(required=True)
    target.add_argument("--speedup", type=positive_float, help="times faster than the fastest int8 peer measured here")
    target.add_argument("--latency-ms", type=positive_float, help="ms at batch 1 on your text's real lengths")
    target.add_argument("--size-mb", type=positive_float, help="MB of the shipped model.ort")
    command.add_argument("--max-drop", type=non_negative_float, required=True,
                         help="points of the task's main metric the model may lose (e.g. 1)")
    command.add_argument("--task", choices=TASKS, default=None,
                         help="say what the data is (checked against it); default: inferred from its labels. "
                              "embeddings: MODEL is a sentence-embedding model and --data unlabelled text "
                              "(--text-column names the column); the drop is in points of similarity fidelity")
    command.add_argument("--time-budget", default=None, help="wall-clock limit, e.g. 2h, 90m (default: none)")
    command.add_argument("--threads", type=at_least(1), default=1, help="threads latency is measured with")
    command.add_argument("--seeds", type=at_least(1), default=1,
                         help="seeds the chosen plan trains with; the held-out drop is their mean")
    command.add_argument("--device", choices=DEVICES, default="auto",
                         help="what trains: auto (a CUDA GPU where torch sees one), cpu, or cuda (mixed precision); "
                              "latency is always measured on this machine's CPU. Data-parallel over several "
                              "processes: start it with accelerate launch")
    command.add_argument("--dry-run", action="store_true", help="measure and print the plan; train nothing")
    command.add_argument("--accept-best", action="store_true",
                         help="when the goal is not reached, ship the best attempt anyway (exit 0)")
    command.add_argument("--restart", action="store_true", help="discard what an earlier, different job left in OUT")
    command.set_defaults(func=cmd_compress)


def cmd_compress(args) -> int:
    if not args.train:
        raise ValueError("compact compress needs your data: --data FILE (CSV, TSV, JSON, JSONL, Parquet, a saved "
                         "dataset folder or a hub id).")
    refuse_overwrite(args.out, {"data": args.train, "validation": args.validation, "test": args.test})
    embeddings = args.task == EMBEDDINGS
    if embeddings and (args.validation or args.test or args.label_column):
        raise ValueError("--task embeddings reads one file of unlabelled text (--data FILE --text-column COL); its "
                         "held-out sentences are carved from it: drop --validation/--test/--label-column.")
    data = args.train if embeddings else task_data_from_options(args, None, None)
    result = compress(args.model, data, args.out, speedup=args.speedup, latency_ms=args.latency_ms,
                      size_mb=args.size_mb, max_drop=args.max_drop, task=args.task, time_budget=args.time_budget,
                      threads=args.threads, seeds=args.seeds, dry_run=args.dry_run, accept_best=args.accept_best,
                      restart=args.restart, text_column=args.text_column if embeddings else None,
                      device=args.device)
    if is_main():  # one report on the terminal, however many processes trained
        with open(f"{args.out}/report.md") as report:
            print(report.read())
    return result.exit_code

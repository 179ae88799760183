"""The `compact` command.

    compact demo [--glue-dir DIR]                                                  the README's main job (embed)
    compact embed [--glue-dir DIR] [--layers 4] [--out DIR]                        compress a sentence-embedding model
    compact export SRC OUT [--mobile] [--target-platform arm|amd64] [--task ...]   folder + model.onnx (+ .ort)
    compact bench DIR [--glue-dir DIR]                                             latency/size of an exported folder
    compact bench --task T --fp32 DIR [--variant NAME=PATH ...] [--seeds 1 2 3]    every way to ship it, vs the peers
    compact convert SRC OUT --to hf|compact                                        change layouts, weights unchanged
    compact run --train FILE [--text-column C] [--label-column C] [--out DIR]     your data end to end
    compact compress MODEL OUT --data FILE --speedup 3 --max-drop 1               say the goal, get the model
    compact run RECIPE [--glue-dir DIR] [--out DIR] [--preset NAME] [--set k=v]   a recipe end to end
    compact search RECIPE --model DIR [--out DIR] [--set hat.budgets=[0.5]]      HAT search, extract, distil, export
    compact quantize DIR OUT (--task TASK | --train FILE) [--activations static]   int8 PTQ of an exported folder
    compact push DIR REPO [--private] [--dry-run]                                  upload to the hub

SRC is a hub id, a local transformers checkpoint or a compact folder. The offline default
"sentence-transformers/all-MiniLM-L6-v2" is read from its pip package when installed (compact-nlp[models]).
"""

from __future__ import annotations

import argparse
import sys
import traceback

from huggingface_hub.errors import StrictDataclassError  # how transformers 5 reports an invalid config

from .compress.cli import add_compress_command
from .commands import (TASKS, cmd_bench, cmd_convert, cmd_demo, cmd_embed, cmd_export, cmd_push, cmd_run,
                       cmd_search)
from .convert import UnsupportedArchitectureError
from .data.options import add_data_options, at_least, in_range, positive_float
from .distributed import DEVICES, finish
from .registry import techniques
from .export import MAX_OPSET, MIN_OPSET, ExportParityError
from .modeling import CompactConfigError
from .pretrained import CorruptWeightsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compact", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error, not only its line")
    sub = parser.add_subparsers(dest="command", required=True)
    _export_command(sub)
    _bench_command(sub)
    _run_command(sub)
    add_compress_command(sub)
    _search_command(sub)
    _embed_command(sub)
    _push_command(sub)
    _convert_command(sub)
    for technique in techniques():  # a technique may bring commands of its own (quant: compact quantize)
        technique.add_commands(sub)
    return parser


def _export_command(sub) -> None:

    export = sub.add_parser("export", help="save a model as a compact folder with model.onnx (and model.ort)")
    export.add_argument("src", help="hub id, transformers checkpoint folder or compact folder")
    export.add_argument("out", help="output folder")
    export.add_argument("--task", choices=TASKS, default="auto",
                        help="auto: text-classification if the checkpoint has a classification head")
    export.add_argument("--mobile", action="store_true", help="also write model.ort + required_operators.config")
    export.add_argument("--target-platform", choices=("arm", "amd64"), default="arm",
                        help="platform the .ort file is optimized for (arm = phones)")
    export.add_argument("--opset", type=in_range(MIN_OPSET, MAX_OPSET), default=20,
                        help=f"ONNX opset ({MIN_OPSET}..{MAX_OPSET}; 20 has a native Gelu op)")
    export.add_argument("--atol", type=positive_float, default=1e-4, help="largest allowed |ORT - PyTorch| at export")
    export.add_argument("--restart", action="store_true",
                        help="OUT holds an export with other settings: discard it and export again")
    export.add_argument("--no-fuse-attention", action="store_true",
                        help="keep attention as plain ONNX ops (for NNAPI/CoreML, which do not run the "
                             "MultiHeadAttention contrib op that the CPU execution provider runs faster)")
    export.set_defaults(func=cmd_export)


def _bench_command(sub) -> None:
    bench = sub.add_parser("bench", help="latency (batch 1, real unpadded text), size and load time of a folder, or "
                                         "(--task) every way to ship a fine-tuned model side by side with the peers")
    bench.add_argument("dir", nargs="?", help="a folder written by `compact export`")
    bench.add_argument("--glue-dir", default=None, help="glue_data folder (dev texts and labels)")
    bench.add_argument("--threads", type=at_least(1), nargs="+", default=[1, 2])
    bench.add_argument("--lengths", type=at_least(1), nargs="+", default=None,
                       help="real-token input lengths (default 16 64 128; with --task 128 256 512)")
    bench.add_argument("--rounds", type=at_least(1), default=3)
    bench.add_argument("--calls", type=at_least(1), default=None, help="calls per round (default 10; with --task 5)")
    bench.add_argument("--task", default=None, help="compare: the GLUE task whose dev set scores and times the rows")
    add_data_options(bench)
    bench.add_argument("--fp32", default=None, help="compare: the fine-tuned fp32 folder ({seed} for each seed)")
    bench.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                       help="compare: a compact folder or file to add as a row ({seed} for each seed; repeatable)")
    bench.add_argument("--seeds", type=int, nargs="+", default=[1], help="compare: seeds to average the dev metric")
    bench.add_argument("--examples", type=at_least(1), default=200, help="compare: dev inputs timed at their real lengths")
    bench.add_argument("--optimum-python", default=None, metavar="PYTHON",
                       help="compare: the python of an environment with Optimum (it does not support transformers 5); "
                            "adds Optimum's own dynamic int8 as a peer row (docs/combined.md)")
    bench.add_argument("--peers", default=None, metavar="LIST",
                       help="compare: the peer runtimes in their own environments to include, comma-separated, of "
                            "litert,ctranslate2,openvino,optimum (default: all; one not installed by "
                            "bench/peers_setup.sh is reported as skipped with the reason)")
    bench.add_argument("--no-peers", action="store_true",
                       help="compare: only the ORT dynamic int8 peers in this process (no LiteRT, CTranslate2, "
                            "OpenVINO or Optimum environment)")
    bench.add_argument("--out", default=None, help="compare: output stem (default bench/results/compare_<task>)")
    bench.set_defaults(func=cmd_bench)


def _run_command(sub) -> None:
    run = sub.add_parser("run", help="your data or a recipe end to end: train, select on held-out, export, evaluate")
    run.add_argument("recipe", nargs="?", default=None,
                     help="a recipe YAML or a shipped one (glue/sst2); default with --train: the baseline protocol")
    run.add_argument("--model", default=None, help="the model to start from (hub id or folder; a recipe's model:)")
    add_data_options(run)
    run.add_argument("--glue-dir", default=None,
                     help="local glue_data folder (else $COMPACT_GLUE_DIR, else the hub's nyu-mll/glue)")
    run.add_argument("--out", default=None, help="output folder (default out/<recipe name>)")
    run.add_argument("--preset", action="append", default=[], metavar="NAME",
                     help="merge a preset over the recipe: recipes/presets/NAME.yaml or a YAML path (repeatable)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a recipe key after the presets, e.g. --set protocol.epochs=1 (repeatable)")
    run.add_argument("--device", choices=DEVICES, default=None,
                     help="what trains (protocol.device): auto (a CUDA GPU where torch sees one), cpu, or cuda (mixed "
                          "precision); data-parallel over several processes: start it with accelerate launch")
    run.add_argument("--restart", action="store_true",
                     help="OUT holds a run of another recipe, model or data: discard it and start over")
    run.add_argument("--reuse", action="store_true",
                     help="OUT holds a run with other settings, or stage folders copied from one: keep its finished "
                          "stages (not redone, even where their settings differ) and run the rest")
    run.set_defaults(func=cmd_run)


def _search_command(sub) -> None:
    standalone = [t for t in techniques() if t.standalone]  # the techniques that produce a model on their own
    names = ", ".join(f"{t.name} ({t.description})" for t in standalone) or "none registered"
    search = sub.add_parser("search", help=f"run the search techniques on a fine-tuned model: {names}",
                            description=f"Search a fine-tuned model with each registered standalone technique, under "
                                        f"its recipe section and preset; registered: {names}.")
    search.add_argument("recipe", nargs="?", default=None,
                        help="a recipe (its protocol: train subset, held-out split, seed); default with --train: the "
                             "baseline protocol")
    add_data_options(search)
    search.add_argument("--model", required=True, help="the fine-tuned model folder the search starts from")
    search.add_argument("--glue-dir", default=None, help="local glue_data folder (else $COMPACT_GLUE_DIR, else the hub)")
    search.add_argument("--out", default=None, help="output folder (default out/<recipe name>-search); resumable")
    search.add_argument("--preset", action="append", default=[], metavar="NAME",
                        help="merge a preset over the recipe after each search technique's own (repeatable)")
    search.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the recipe or a technique's section, e.g. "
                             "--set hat.budgets=[0.5,0.33] (repeatable)")
    search.add_argument("--restart", action="store_true",
                        help="OUT holds a search with other settings, model or data: discard it and start over")
    search.add_argument("--reuse", action="store_true",
                        help="OUT holds a search with other settings, or stages copied from one (latency data, "
                             "predictor, SuperTransformer): keep them and run the rest")
    search.set_defaults(func=cmd_search)


def _embed_command(sub) -> None:
    for name, text in (("demo", "the main job: compact embed on GLUE text if it is reachable, else on Python's docs"),
                       ("embed", "compress a sentence-embedding model on unlabelled text; STS-B fidelity, latency")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--glue-dir", default=None,
                             help="glue_data folder (else $COMPACT_GLUE_DIR, ../shared, the hub)")
        command.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
        command.add_argument("--out", default=f"out/{name}")
        command.add_argument("--layers", type=at_least(1), default=4,
                             help="the student's depth (spread over the original's)")
        command.add_argument("--texts", type=at_least(1), default=40000, help="unlabelled training sentences")
        command.add_argument("--epochs", type=positive_float, default=1.0)
        command.add_argument("--restart", action="store_true",
                             help="OUT holds a run with other settings: discard it and start over")
        if name == "embed":
            command.add_argument("--text", choices=("glue", "python-docs"), default="glue",
                                 help="glue: GLUE training text, STS-B dev fidelity; python-docs: offline, Python's "
                                      "documentation (PSF License), fidelity on held-out sentences")
            command.add_argument("--train", default=None, metavar="FILE",
                                 help="your unlabelled text instead (CSV, TSV, JSON, JSONL, Parquet); fidelity on "
                                      "held-out sentences of it")
            command.add_argument("--text-column", default=None, metavar="COL",
                                 help="the text column of --train (default: its only text column)")
        command.set_defaults(func=cmd_demo if name == "demo" else cmd_embed)


def _push_command(sub) -> None:
    push = sub.add_parser("push", help="upload a compact folder to the Hugging Face hub")
    push.add_argument("dir", help="a folder written by compact export / compact run (OUT/seed-N/model)")
    push.add_argument("repo", help="hub repository id, e.g. me/minilm-sst2-compact")
    push.add_argument("--private", action="store_true")
    push.add_argument("--message", default=None, help="commit message")
    push.add_argument("--dry-run", action="store_true", help="list what would be uploaded; upload nothing")
    push.set_defaults(func=cmd_push)


def _convert_command(sub) -> None:
    convert = sub.add_parser("convert", help="write a model in the stock transformers layout or as a compact folder")
    convert.add_argument("src")
    convert.add_argument("out")
    convert.add_argument("--to", choices=("hf", "compact"), required=True)
    convert.add_argument("--task", choices=TASKS, default="auto")
    convert.set_defaults(func=cmd_convert)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return finish(args.func(args))  # under accelerate launch: the processes leave together and end here
    except (CompactConfigError, UnsupportedArchitectureError, CorruptWeightsError, ExportParityError,
            StrictDataclassError, ValueError, OSError) as error:
        if args.debug:
            traceback.print_exc()
        print(f"compact: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

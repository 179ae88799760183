"""The `compact` command.

    compact demo [--glue-dir DIR]                                                  the README's main job (embed)
    compact embed [--glue-dir DIR] [--layers 4] [--out DIR]                        compress a sentence-embedding model
    compact export SRC OUT [--mobile] [--target-platform arm|amd64] [--task ...]   folder + model.onnx (+ .ort)
    compact bench DIR [--glue-dir DIR]                                             latency/size of an exported folder
    compact bench --task T --fp32 DIR [--variant NAME=PATH ...] [--seeds 1 2 3]    every way to ship it, vs the peers
    compact convert SRC OUT --to hf|compact                                        change layouts, weights unchanged
    compact run RECIPE [--glue-dir DIR] [--out DIR] [--preset NAME] [--set k=v]   a GLUE recipe end to end
    compact search RECIPE --model DIR [--out DIR] [--set hat.budgets=[0.5]]      HAT search, extract, distil, export
    compact quantize DIR OUT --task TASK [--activations static] [--trim-vocabulary] int8 PTQ of an exported folder
    compact push DIR REPO [--private] [--dry-run]                                  upload to the hub

SRC is a hub id, a local transformers checkpoint or a compact folder. The offline default
"sentence-transformers/all-MiniLM-L6-v2" is read from its pip package when installed (compact-nlp[models]).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TASKS = ("auto", "feature-extraction", "text-classification")


def _task_of(src: str, task: str) -> str:
    if task != "auto":
        return task
    from transformers import AutoConfig

    from .pretrained import resolve_checkpoint

    architectures = AutoConfig.from_pretrained(resolve_checkpoint(src)).architectures or []
    return "text-classification" if any(a.endswith("ForSequenceClassification") for a in architectures) \
        else "feature-extraction"


def _load(src: str, task: str):
    from .auto import AUTO_CLASSES

    return AUTO_CLASSES[_task_of(src, task)].from_pretrained(src)


def cmd_export(args) -> int:
    from .export import export_model
    from .pretrained import resolve_checkpoint

    model = _load(args.src, args.task)
    report = export_model(model, args.out, tokenizer_source=resolve_checkpoint(args.src), mobile=args.mobile,
                          target_platform=args.target_platform, opset=args.opset, atol=args.atol,
                          fuse_attention=not args.no_fuse_attention)
    out = Path(args.out)
    print(f"wrote {out}/: " + ", ".join(f"{name} {mb} MB" for name, mb in report["size_mb"].items() if mb))
    print(f"parity vs PyTorch (max abs diff): model.onnx {report['onnx_parity']['max_abs_diff']:.2e}"
          + (f", model.ort {report['ort_parity']['max_abs_diff']:.2e}" if args.mobile else ""))
    if args.mobile:
        print(f"ORT Mobile ({args.target_platform}): model.ort + required_operators.config; "
              f"mobile usability: {report['mobile_usability']['verdict']}")
    print(f"report: {out / 'export_report.json'}")
    return 0


def cmd_bench(args) -> int:
    if args.task:  # every way to ship one fine-tuned model, against the peers
        return _compare(args)
    if not args.dir:
        raise ValueError("compact bench needs a folder (compact bench DIR) or a comparison "
                         "(compact bench --task sst2 --fp32 DIR [--variant NAME=PATH ...]).")
    from .bench import bench_folder

    results = bench_folder(args.dir, glue_dir=args.glue_dir, threads=args.threads, lengths=args.lengths or (16, 64, 128),
                           rounds=args.rounds, calls=args.calls or 10)
    print(results["markdown"])
    return 0


def _compare(args) -> int:
    from .compare import compare, markdown, write_report

    if not args.fp32:
        raise ValueError("compact bench --task needs --fp32: the fine-tuned fp32 folder the peers are made from "
                         "(with {seed} for each of --seeds).")
    variants = {}
    for item in args.variant:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--variant {item!r} must look like NAME=PATH, e.g. 'combined int8=out/combined/model'.")
        variants[name] = path
    out = Path(args.out or Path("bench") / "results" / f"compare_{args.task}")
    results = compare(args.task, args.fp32, variants, args.seeds, glue_dir=args.glue_dir,
                      lengths=args.lengths or (128, 256, 512), threads=args.threads, examples=args.examples,
                      rounds=args.rounds, calls=args.calls or 5, optimum_python=args.optimum_python)
    for path in write_report(results, out):
        print(f"wrote {path}")
    print(markdown(results))
    return 0


def cmd_convert(args) -> int:
    from .convert import to_hf_model
    from .io import save_pretrained_atomic
    from .pretrained import resolve_checkpoint

    model = _load(args.src, args.task)
    target = to_hf_model(model) if args.to == "hf" else model
    save_pretrained_atomic(target, args.out)
    from transformers import AutoTokenizer

    save_pretrained_atomic(AutoTokenizer.from_pretrained(resolve_checkpoint(args.src)), args.out)
    print(f"wrote {args.to} layout ({type(target).__name__}) to {args.out}")
    return 0


def cmd_run(args) -> int:
    from .recipe import load_recipe
    from .run import run_recipe

    recipe = load_recipe(args.recipe, args.set, presets=args.preset)
    out = Path(args.out or Path("out") / Path(args.recipe).stem)
    from .combined import is_combined

    if is_combined(recipe):  # hat -> token pruning -> int8/binary, one model
        return _combined(recipe, out, args.glue_dir)
    if recipe.hat:  # a hat section: the recipe's model is the fine-tuned model to search in
        return _search(recipe, recipe.model.replace("{seed}", str(recipe.protocol.seeds[0])), out, args.glue_dir)
    results = run_recipe(recipe, out, glue_dir=args.glue_dir)
    summary = {k: v for k, v in results["summary"].items() if isinstance(v, dict) and "mean" in v}
    for name, stats in summary.items():
        print(f"{recipe.task} dev {name}: {stats['mean']:.2f} +- {stats['sd']:.2f} over seeds {results['summary']['seeds']}")
    print(f"results: {out / 'results.json'}")
    return 0


def _combined(recipe, out: Path, glue_dir: str | None) -> int:
    from .combined import run_combined

    results = run_combined(recipe, out, glue_dir=glue_dir)
    hat = results["stages"]["hat"]
    print(f"hat: {hat['subtransformer']} measured {hat['measured_ms']} ms vs full {hat['full_model_ms']} ms (int8)")
    for stage, body in results["stages"].items():
        if stage == "hat":
            continue
        summary = body["summary"]
        scores = ", ".join(f"{name} {stats['mean']:.2f} +- {stats['sd']:.2f}" for name, stats in summary.items()
                           if isinstance(stats, dict) and "mean" in stats)
        print(f"{stage}: dev {scores}")
    print(f"model: {out / 'model'}  results: {out / 'results.json'}")
    return 0


def _search(recipe, model: str, out: Path, glue_dir: str | None) -> int:
    from .search import run_search

    results = run_search(recipe, model, out, glue_dir=glue_dir)
    p = results["predictor"]
    print(f"latency predictor: test MAPE {p['test'].get('mape')}% (noise floor {p['noise_floor'].get('mape')}%), "
          f"full model {results['full_model_ms']} ms")
    for fraction, entry in results["budgets"].items():
        for label in ("searched", "uniform"):
            if label in entry:
                r = entry[label]
                dev = r["dev"][next(iter(r["dev"]))]
                print(f"budget {fraction}: {label} {r['subtransformer']} predicted {r['predicted_ms']} ms, measured "
                      f"{r['measured_ms']} ms, dev {', '.join(f'{k} {100 * v:.2f}' for k, v in dev.items())}")
    if "full_reference" in results:
        r = results["full_reference"]
        dev = r["dev"][next(iter(r["dev"]))]
        print(f"full model, trained the same way: {r['measured_ms']} ms, dev "
              f"{', '.join(f'{k} {100 * v:.2f}' for k, v in dev.items())}")
    print(f"results: {out / 'search_results.json'}")
    return 0


def cmd_search(args) -> int:
    from .recipe import load_recipe

    # the search distils every SubTransformer from the model it searches in, so that model is the recipe's teacher
    recipe = load_recipe(args.recipe, [*args.set, f"model={args.model}", f"teacher={args.model}"],
                         presets=["hat", *args.preset])
    return _search(recipe, args.model, Path(args.out or Path("out") / f"{Path(args.recipe).stem}-search"),
                   args.glue_dir)


def cmd_quantize(args) -> int:
    from .glue import default_glue_dir, load_glue, task_texts
    from .quant import Int8Config, quantize_folder

    config = Int8Config(weights=args.weights, activations=args.activations, activation_type=args.activation_type,
                        calibration=args.calibration, calibration_examples=args.calibration_examples,
                        trim_vocabulary=args.trim_vocabulary, embedding_bits=args.embedding_bits)
    train = load_glue(args.task, args.glue_dir or default_glue_dir())["train"]
    # calibration: a seeded sample of training text, never dev
    calibration = task_texts(train.shuffle(seed=0), args.task, config.calibration_examples)
    report = quantize_folder(args.dir, args.out, config, texts=calibration, max_length=args.max_length,
                             mobile=not args.no_mobile, target_platform=args.target_platform,
                             vocabulary_texts=task_texts(train, args.task) if config.trim_vocabulary else None)
    print(f"wrote {args.out}: {report['size_mb']} (fp32 model.onnx {report['source_size_mb']} MB); "
          f"{report['matmuls_quantized']} MatMuls int8, embeddings {report['int8_embeddings']}"
          + (f", vocabulary {report['vocabulary']}" if "vocabulary" in report else "")
          + f"; agreement with fp32 on {report['agreement']['examples']} training examples: "
          f"argmax {report['agreement'].get('argmax_agreement')}, max abs diff {report['agreement']['max_abs_diff']:.3g}")
    return 0


def cmd_push(args) -> int:
    from .hub import push_folder

    files = push_folder(args.dir, args.repo, private=args.private, commit_message=args.message, dry_run=args.dry_run)
    verb = "would upload" if args.dry_run else "uploaded"
    print(f"{verb} {len(files)} files ({sum(size for _, size in files) / 2**20:.1f} MB) to {args.repo}:")
    for name, size in files:
        print(f"  {name}  {size / 2**20:.2f} MB")
    return 0


def cmd_embed(args) -> int:
    from .embeddings import compress_embeddings, markdown

    report = compress_embeddings(args.out, model=args.model, glue_dir=args.glue_dir, layers=args.layers,
                                 texts=args.texts, epochs=args.epochs, text=args.text)
    print(markdown(report))
    print(f"model: {Path(args.out) / 'model'}  (SentenceTransformer(...) loads it; model.ort ships)")
    return 0


def cmd_demo(args) -> int:
    """The README's main job: all-MiniLM-L6-v2 compressed as an embedding model (compact embed), on GLUE text with
    STS-B fidelity when GLUE is reachable (a local glue_data folder or the hub), else offline on Python's own
    documentation, saying what was skipped."""
    from .embeddings import PYTHON_DOCS_HELD_OUT
    from .glue import GLUE_DIR_ENV, GlueDataError, default_glue_dir, load_glue

    glue_dir = args.glue_dir or default_glue_dir()  # default_glue_dir reads $COMPACT_GLUE_DIR first
    try:
        load_glue("stsb", glue_dir)
        text = "glue"
        print(f"compact demo: {args.model} compressed as a sentence-embedding model, GLUE text from "
              f"{glue_dir or 'the hub'}")
    except GlueDataError as error:
        text = "python-docs"
        print(f"compact demo: no GLUE data here ({error}).\n"
              f"Skipped: the GLUE training text and the STS-B dev Spearman. Instead {args.model} is distilled on "
              f"Python's own documentation (real English prose in every Python install, PSF License) and its "
              f"fidelity is the cosine to the original on {PYTHON_DOCS_HELD_OUT} held-out sentences.\n"
              f"For the STS-B numbers: compact demo --glue-dir DIR, or {GLUE_DIR_ENV}=DIR, with DIR in the classic "
              f"glue_data layout.\n")
    return cmd_embed(argparse.Namespace(out=str(Path(args.out) / "embed"), model=args.model, glue_dir=glue_dir,
                                        layers=args.layers, texts=args.texts, epochs=args.epochs, text=text))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compact", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    export = sub.add_parser("export", help="save a model as a compact folder with model.onnx (and model.ort)")
    export.add_argument("src", help="hub id, transformers checkpoint folder or compact folder")
    export.add_argument("out", help="output folder")
    export.add_argument("--task", choices=TASKS, default="auto",
                        help="auto: text-classification if the checkpoint has a classification head")
    export.add_argument("--mobile", action="store_true", help="also write model.ort + required_operators.config")
    export.add_argument("--target-platform", choices=("arm", "amd64"), default="arm",
                        help="platform the .ort file is optimized for (arm = phones)")
    export.add_argument("--opset", type=int, default=20, help="ONNX opset (>= 17; 20 has a native Gelu op)")
    export.add_argument("--atol", type=float, default=1e-4, help="largest allowed |ORT - PyTorch| at export")
    export.add_argument("--no-fuse-attention", action="store_true",
                        help="keep attention as plain ONNX ops (for NNAPI/CoreML, which do not run the "
                             "MultiHeadAttention contrib op that the CPU execution provider runs faster)")
    export.set_defaults(func=cmd_export)

    bench = sub.add_parser("bench", help="latency (batch 1, real unpadded text), size and load time of a folder, or "
                                         "(--task) every way to ship a fine-tuned model side by side with the peers")
    bench.add_argument("dir", nargs="?", help="a folder written by `compact export`")
    bench.add_argument("--glue-dir", default=None, help="glue_data folder (dev texts and labels)")
    bench.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    bench.add_argument("--lengths", type=int, nargs="+", default=None,
                       help="real-token input lengths (default 16 64 128; with --task 128 256 512)")
    bench.add_argument("--rounds", type=int, default=3)
    bench.add_argument("--calls", type=int, default=None, help="calls per round (default 10; with --task 5)")
    bench.add_argument("--task", default=None, help="compare: the GLUE task whose dev set scores and times the rows")
    bench.add_argument("--fp32", default=None, help="compare: the fine-tuned fp32 folder ({seed} for each seed)")
    bench.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                       help="compare: a compact folder or file to add as a row ({seed} for each seed; repeatable)")
    bench.add_argument("--seeds", type=int, nargs="+", default=[1], help="compare: seeds to average the dev metric")
    bench.add_argument("--examples", type=int, default=200, help="compare: dev inputs timed at their real lengths")
    bench.add_argument("--optimum-python", default=None, metavar="PYTHON",
                       help="compare: the python of an environment with Optimum (it does not support transformers 5); "
                            "adds Optimum's own dynamic int8 as a peer row (docs/combined.md)")
    bench.add_argument("--out", default=None, help="compare: output stem (default bench/results/compare_<task>)")
    bench.set_defaults(func=cmd_bench)

    run = sub.add_parser("run", help="a GLUE recipe end to end: train, select on held-out, export, evaluate")
    run.add_argument("recipe", help="recipes/glue/<task>.yaml")
    run.add_argument("--glue-dir", default=None,
                     help="local glue_data folder (else $COMPACT_GLUE_DIR, else the hub's nyu-mll/glue)")
    run.add_argument("--out", default=None, help="output folder (default out/<recipe name>)")
    run.add_argument("--preset", action="append", default=[], metavar="NAME",
                     help="merge a preset over the recipe: recipes/presets/NAME.yaml or a YAML path (repeatable)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a recipe key after the presets, e.g. --set protocol.epochs=1 (repeatable)")
    run.set_defaults(func=cmd_run)

    search = sub.add_parser("search", help="HAT: search a fine-tuned model for SubTransformers under latency budgets")
    search.add_argument("recipe", help="recipes/glue/<task>.yaml (its protocol: train subset, held-out split, seed)")
    search.add_argument("--model", required=True, help="the fine-tuned model folder to build the SuperTransformer from")
    search.add_argument("--glue-dir", default=None, help="local glue_data folder (else $COMPACT_GLUE_DIR, else the hub)")
    search.add_argument("--out", default=None, help="output folder (default out/<recipe name>-search); resumable")
    search.add_argument("--preset", action="append", default=[], metavar="NAME",
                        help="merge a preset over the recipe after recipes/presets/hat.yaml (repeatable)")
    search.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set hat.budgets=[0.5,0.33] --set hat.threads=2")
    search.set_defaults(func=cmd_search)

    for name, text in (("demo", "the main job: compact embed on GLUE text if it is reachable, else on Python's docs"),
                       ("embed", "compress a sentence-embedding model on unlabelled text; STS-B fidelity, latency")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--glue-dir", default=None,
                             help="glue_data folder (else $COMPACT_GLUE_DIR, ../shared, the hub)")
        command.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
        command.add_argument("--out", default=f"out/{name}")
        command.add_argument("--layers", type=int, default=4, help="the student's depth (spread over the original's)")
        command.add_argument("--texts", type=int, default=40000, help="unlabelled training sentences")
        command.add_argument("--epochs", type=float, default=1.0)
        if name == "embed":
            command.add_argument("--text", choices=("glue", "python-docs"), default="glue",
                                 help="glue: GLUE training text, STS-B dev fidelity; python-docs: offline, Python's "
                                      "documentation (PSF License), fidelity on held-out sentences")
        command.set_defaults(func=cmd_demo if name == "demo" else cmd_embed)

    quantize = sub.add_parser("quantize", help="int8 post-training quantization of an exported folder")
    quantize.add_argument("dir", help="a folder with the fp32 model.onnx (compact export / compact run)")
    quantize.add_argument("out")
    quantize.add_argument("--task", required=True, help="GLUE task whose training text calibrates (e.g. sst2)")
    quantize.add_argument("--glue-dir", default=None, help="glue_data folder (else $COMPACT_GLUE_DIR, ../shared, hub)")
    quantize.add_argument("--weights", choices=("per_channel", "per_tensor"), default="per_channel")
    quantize.add_argument("--activations", choices=("dynamic", "static"), default="dynamic",
                          help="dynamic: fast on x86; static: QDQ, what NNAPI/CoreML run")
    quantize.add_argument("--activation-type", choices=("uint8", "int8"), default=None, help="static only")
    quantize.add_argument("--calibration", choices=("minmax", "entropy", "percentile"), default=None,
                          help="static only")
    quantize.add_argument("--calibration-examples", type=int, default=256)
    quantize.add_argument("--embedding-bits", type=int, choices=(8, 4, 2), default=8,
                          help="word-embedding width (one scale per row; 4 and 2 are packed)")
    quantize.add_argument("--trim-vocabulary", action="store_true",
                          help="keep only the wordpieces the task's training text uses")
    quantize.add_argument("--max-length", type=int, default=128)
    quantize.add_argument("--no-mobile", action="store_true", help="skip model.ort")
    quantize.add_argument("--target-platform", choices=("arm", "amd64"), default="arm")
    quantize.set_defaults(func=cmd_quantize)

    push = sub.add_parser("push", help="upload a compact folder to the Hugging Face hub")
    push.add_argument("dir", help="a folder written by compact export / compact run (OUT/seed-N/model)")
    push.add_argument("repo", help="hub repository id, e.g. me/minilm-sst2-compact")
    push.add_argument("--private", action="store_true")
    push.add_argument("--message", default=None, help="commit message")
    push.add_argument("--dry-run", action="store_true", help="list what would be uploaded; upload nothing")
    push.set_defaults(func=cmd_push)

    convert = sub.add_parser("convert", help="write a model in the stock transformers layout or as a compact folder")
    convert.add_argument("src")
    convert.add_argument("out")
    convert.add_argument("--to", choices=("hf", "compact"), required=True)
    convert.add_argument("--task", choices=TASKS, default="auto")
    convert.set_defaults(func=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from huggingface_hub.errors import StrictDataclassError  # how transformers 5 reports an invalid config

    from .convert import UnsupportedArchitectureError
    from .export import ExportParityError
    from .modeling import CompactConfigError
    from .pretrained import CorruptWeightsError

    try:
        return args.func(args)
    except (CompactConfigError, UnsupportedArchitectureError, CorruptWeightsError, ExportParityError,
            StrictDataclassError, ValueError, OSError) as error:
        print(f"compact: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""What each `compact` command does (compact_nlp.cli parses the arguments and calls these). A command's data is
a GLUE task by name (`--task`, a recipe's `task:`) or the user's own (`--train FILE` and the other data options,
a recipe's `data:` section), read and checked once, before anything trains or is written."""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from .auto import AUTO_CLASSES
from .combined import is_combined, run_combined
from .compare import compare, markdown, write_report
from .peers import ENVIRONMENTS as PEER_ENVIRONMENTS
from .bench import bench_folder
from .convert import to_hf_model
from .data import TaskData, task_data_from_options
from .distributed import on_main
from .embeddings import PYTHON_DOCS_HELD_OUT, compress_embeddings
from .embeddings import markdown as embeddings_markdown
from .export import export_model, remove_previous_export
from .glue import GLUE_DIR_ENV, GlueDataError, default_glue_dir, load_glue
from .hub import push_folder
from .io import refuse_overwrite, save_pretrained_atomic
from .pretrained import require_package, resolve_checkpoint
from .recipe import DEFAULT_RECIPE, Recipe, load_recipe
from .registry import techniques
from .run import load_data, run_recipe
from .runtime import check_folder
from .workdir import JOB_FILE, Job, claim_output, defaults_of, input_digest

TASKS = ("auto", "feature-extraction", "text-classification")

# a recipe setting added since a run's job file was written is the same job while it holds its default
RECIPE_DEFAULTS = defaults_of(Recipe, "recipe.")


def data_section(args) -> dict | None:
    """The data options as a recipe's `data:` section, or None without --train."""
    if not getattr(args, "train", None):
        for flag in ("validation", "test", "text_column", "label_column", "problem_type"):
            if getattr(args, flag, None):
                raise ValueError(f"--{flag.replace('_', '-')} describes your data, which needs --train FILE too.")
        return None
    return {"train": args.train, "validation": args.validation, "test": args.test, "text": args.text_column,
            "label": args.label_column, "problem_type": args.problem_type}


def _task_of(src: str, task: str) -> str:
    if task != "auto":
        return task
    architectures = AutoConfig.from_pretrained(resolve_checkpoint(src)).architectures or []
    return "text-classification" if any(a.endswith("ForSequenceClassification") for a in architectures) \
        else "feature-extraction"


def _load(src: str, task: str):
    return AUTO_CLASSES[_task_of(src, task)].from_pretrained(src)


def _local(source) -> str | None:
    """A source that is a path on this machine (a hub id or a GLUE name is not)."""
    return str(source) if source is not None and Path(str(source)).expanduser().exists() else None


def _claim(out: Path, command: str, arguments: dict, inputs: dict, restart: bool, reuse: bool | None = None,
           defaults: dict | None = None) -> bool:
    """OUT belongs to this job (compact_nlp.workdir): refused when it would overwrite an input, or when it holds
    another job; resumed when it holds this one. `reuse` is None for a command without finished stages to keep, else
    whether the user asked to keep them. Returns whether the claim created OUT."""
    refuse_overwrite(out, {name: _local(source) for name, source in inputs.items()})
    if out.is_dir() and [p.name for p in out.iterdir()] == [JOB_FILE]:  # an earlier job that wrote nothing (it
        (out / JOB_FILE).unlink()  # failed on its input): nothing to resume, nothing of another job's to keep
    digests = {str(source): input_digest(source) for source in set(inputs.values()) if source}  # each folder once
    job = Job(command, arguments, {name: digests[str(source)] for name, source in inputs.items() if source},
              reusable=reuse is not None, defaults=defaults or {})
    created = not out.exists()
    if claim_output(out, job, restart=restart, reuse=bool(reuse)):
        print(f"{out}: --reuse keeps the finished stages already there; they are not redone, even where this job's "
              f"settings differ from theirs" if reuse
              else f"{out}: resuming the same {command} job (--restart to start over)")
    return created


def _release(out: Path, created: bool) -> None:
    """After a job failed before writing anything: no trace of it (its job file, and OUT if the claim made it)."""
    if out.is_dir() and [p.name for p in out.iterdir()] == [JOB_FILE]:
        (out / JOB_FILE).unlink()
        if created:
            out.rmdir()


def cmd_export(args) -> int:
    refuse_overwrite(args.out, {"src": _local(args.src)})
    model = _load(args.src, args.task)  # read and checked before OUT is touched
    _claim(Path(args.out), "export", {"task": args.task, "mobile": args.mobile, "target_platform": args.target_platform,
                                      "opset": args.opset, "atol": args.atol, "fuse": not args.no_fuse_attention},
           {"src": args.src}, getattr(args, "restart", False))
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
    if args.task or args.train:  # every way to ship one fine-tuned model, against the peers
        return _compare(args)
    if not args.dir:
        raise ValueError("compact bench needs a folder (compact bench DIR) or a comparison "
                         "(compact bench --task sst2 --fp32 DIR [--variant NAME=PATH ...], or --train FILE ...).")
    if args.fp32 or args.variant:
        raise ValueError("--fp32 and --variant describe a comparison, which needs --task TASK or --train FILE; "
                         "compact bench DIR times one folder.")
    config = check_folder(args.dir)  # a corrupted file is named before any timing starts
    longest = config.max_sequence_length
    if any(length > longest for length in args.lengths or ()):
        raise ValueError(f"--lengths {max(args.lengths)}: this model's position embeddings cover {longest} tokens; "
                         f"give lengths up to {longest}.")
    results = bench_folder(args.dir, glue_dir=args.glue_dir, threads=args.threads, lengths=args.lengths or (16, 64, 128),
                           rounds=args.rounds, calls=args.calls or 10)
    print(results["markdown"])
    return 0


def _compare(args) -> int:
    if not args.fp32:
        raise ValueError("compact bench --task needs --fp32: the fine-tuned fp32 folder the peers are made from "
                         "(with {seed} for each of --seeds).")
    variants = {}
    for item in args.variant:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--variant {item!r} must look like NAME=PATH, e.g. 'combined int8=out/combined/model'.")
        variants[name] = path
    runtimes = _peer_runtimes(args)
    data = task_data_from_options(args, args.task, args.glue_dir)
    out = Path(args.out or Path("bench") / "results" / f"compare_{data.spec.name}")
    results = compare(data, args.fp32, variants, args.seeds, glue_dir=args.glue_dir,
                      lengths=args.lengths or (128, 256, 512), threads=args.threads, examples=args.examples,
                      rounds=args.rounds, calls=args.calls or 5, optimum_python=args.optimum_python,
                      runtimes=runtimes)
    for path in write_report(results, out):
        print(f"wrote {path}")
    print(markdown(results))
    return 0


def _peer_runtimes(args) -> tuple[str, ...]:
    """--peers LIST / --no-peers: the peer environments `compact bench --task` includes (default all)."""
    if args.no_peers and args.peers:
        raise ValueError("--peers and --no-peers contradict each other; give one.")
    if args.no_peers:
        return ()
    if args.peers is None:
        return PEER_ENVIRONMENTS
    chosen = tuple(dict.fromkeys(name.strip() for name in args.peers.split(",") if name.strip()))
    unknown = [name for name in chosen if name not in PEER_ENVIRONMENTS]
    if unknown:
        raise ValueError(f"--peers {','.join(unknown)}: the peers are {','.join(PEER_ENVIRONMENTS)}.")
    return chosen


def cmd_convert(args) -> int:
    refuse_overwrite(args.out, {"model": _local(args.src)})
    model = _load(args.src, args.task)
    target = to_hf_model(model) if args.to == "hf" else model
    remove_previous_export(args.out)  # an earlier model's model.onnx/.ort must not stay beside these weights
    save_pretrained_atomic(target, args.out)
    save_pretrained_atomic(AutoTokenizer.from_pretrained(resolve_checkpoint(args.src)), args.out)
    print(f"wrote {args.to} layout ({type(target).__name__}) to {args.out}")
    return 0


def cmd_run(args) -> int:
    section = data_section(args)
    if args.recipe is None and section is None:
        raise ValueError("compact run needs a recipe (a YAML file, or glue/<task>) or your data: --train FILE "
                         "[--text-column COL --label-column COL].")
    overrides = [*([f"model={args.model}"] if args.model else []),
                 *([f"protocol.device={args.device}"] if getattr(args, "device", None) else []), *args.set]
    recipe = load_recipe(args.recipe or DEFAULT_RECIPE, overrides, presets=args.preset, data=section)
    data = load_data(recipe, args.glue_dir)  # read and checked before anything trains or is written
    out = Path(args.out or Path("out") / (data.spec.name if section else Path(args.recipe).stem))
    created = on_main(_claim, out, "run", {"recipe": recipe.to_dict(), "glue_dir": args.glue_dir},  # once: accelerate
                      _recipe_inputs(recipe), getattr(args, "restart", False), getattr(args, "reuse", False),
                      RECIPE_DEFAULTS)
    try:
        return _run_claimed(recipe, out, args.glue_dir, data)
    except BaseException:
        _release(out, created)  # refused before anything was written (e.g. the model): no trace of the job
        raise


def _run_claimed(recipe, out: Path, glue_dir: str | None, data: TaskData) -> int:
    for note in data.notes:
        print(f"data: {note}")
    if is_combined(recipe):  # a standalone technique, then the others, one model
        return _combined(recipe, out, glue_dir, data)
    if recipe.standalone_techniques():  # e.g. a hat section alone: the recipe's model is the one to search in
        return _standalone(recipe, out, glue_dir, data)
    results = run_recipe(recipe, out, glue_dir=glue_dir, data=data)
    summary = {k: v for k, v in results["summary"].items() if isinstance(v, dict) and "mean" in v}
    for name, stats in summary.items():
        print(f"{data.spec.name} {name}: {stats['mean']:.2f} +- {stats['sd']:.2f} over seeds "
              f"{results['summary']['seeds']}")
    print(f"model: {out / f'seed-{recipe.protocol.seeds[0]}' / 'model'}  results: {out / 'results.json'}")
    return 0


def _combined(recipe, out: Path, glue_dir: str | None, data: TaskData) -> int:
    results = run_combined(recipe, out, glue_dir=glue_dir, data=data)
    for stage, body in results["stages"].items():
        if "headline" in body:  # the standalone step
            print(f"{stage}: {body['headline']}")
            continue
        scores = ", ".join(f"{name} {stats['mean']:.2f} +- {stats['sd']:.2f}" for name, stats in body["summary"].items()
                           if isinstance(stats, dict) and "mean" in stats)
        print(f"{stage}: dev {scores}")
    print(f"model: {out / 'model'}  results: {out / 'results.json'}")
    return 0


def _standalone(recipe, out: Path, glue_dir: str | None, data: TaskData) -> int:
    for technique in recipe.standalone_techniques():
        produced = technique.run_standalone(recipe, technique.config(recipe.sections[technique.name]), data, out,
                                            glue_dir)
        for line in produced.lines:
            print(line)
        print(f"results: {produced.results_file}")
    return 0


def cmd_search(args) -> int:
    # the search distils every SubTransformer from the model it searches in, so that model is the recipe's teacher;
    # the standalone techniques' presets come first (e.g. recipes/presets/hat.yaml)
    defaults = [t.preset for t in techniques() if t.standalone and getattr(t, "preset", None)]
    recipe = load_recipe(args.recipe or DEFAULT_RECIPE, [*args.set, f"model={args.model}", f"teacher={args.model}"],
                         presets=[*defaults, *args.preset], data=data_section(args))
    data = load_data(recipe, args.glue_dir)
    name = data.spec.name if recipe.data else Path(args.recipe).stem
    out = Path(args.out or Path("out") / f"{name}-search")
    _claim(out, "search", {"recipe": recipe.to_dict(), "glue_dir": args.glue_dir}, _recipe_inputs(recipe),
           getattr(args, "restart", False), getattr(args, "reuse", False), RECIPE_DEFAULTS)
    return _standalone(recipe, out, args.glue_dir, data)


def _recipe_inputs(recipe) -> dict:
    """The files a recipe reads: its model and teacher, and its data files (a hub id or GLUE name stands for
    itself)."""
    data = recipe.to_dict().get("data") or {}
    return {"model": recipe.model, "teacher": recipe.teacher,
            **{f"data.{split}": data.get(split) for split in ("train", "validation", "test")}}


def cmd_push(args) -> int:
    files = push_folder(args.dir, args.repo, private=args.private, commit_message=args.message, dry_run=args.dry_run)
    verb = "would upload" if args.dry_run else "uploaded"
    print(f"{verb} {len(files)} files ({sum(size for _, size in files) / 2**20:.1f} MB) to {args.repo}:")
    for name, size in files:
        print(f"  {name}  {size / 2**20:.2f} MB")
    return 0


def cmd_embed(args) -> int:
    require_package("sentence_transformers", "sentence-transformers>=3", "compact embed (it ships a "
                    "SentenceTransformer folder and checks it loads)")
    text = args.train or getattr(args, "text", "glue")
    created = _claim(Path(args.out), "embed", {"model": args.model, "layers": args.layers, "texts": args.texts,
                                               "epochs": args.epochs, "text": text, "glue_dir": args.glue_dir,
                                               "text_column": getattr(args, "text_column", None)},
                     {"model": args.model, "train": args.train}, getattr(args, "restart", False))
    try:  # the text is chosen and checked inside: a refusal there leaves no OUT behind
        report = compress_embeddings(args.out, model=args.model, glue_dir=args.glue_dir, layers=args.layers,
                                     texts=args.texts, epochs=args.epochs, text=text,
                                     text_column=getattr(args, "text_column", None))
    except BaseException:
        _release(Path(args.out), created)
        raise
    print(embeddings_markdown(report))
    print(f"model: {Path(args.out) / 'model'}  (SentenceTransformer(...) loads it; model.ort ships)")
    return 0


def cmd_demo(args) -> int:
    """The README's main job: all-MiniLM-L6-v2 compressed as an embedding model (compact embed), on GLUE text with
    STS-B fidelity when GLUE is reachable (a local glue_data folder or the hub), else offline on Python's own
    documentation, saying what was skipped."""
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
                                        layers=args.layers, texts=args.texts, epochs=args.epochs, text=text,
                                        train=None, text_column=None, restart=getattr(args, "restart", False)))

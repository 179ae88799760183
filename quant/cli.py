"""`compact quantize DIR OUT`: int8 post-training quantization of an exported folder, calibrated on training text
(a GLUE task's, or the user's with --train); the quant technique adds it to the `compact` command."""

from __future__ import annotations

from ..data import task_texts
from ..data.options import add_data_options, at_least, task_data_from_options
from ..export import remove_previous_export
from ..io import refuse_overwrite
from ..runtime import check_folder
from ..workdir import Job, claim_output, input_digest
from .config import Int8Config
from .onnx_int8 import quantize_folder


def add_quantize_command(sub) -> None:
    quantize = sub.add_parser("quantize", help="int8 post-training quantization of an exported folder")
    quantize.add_argument("dir", help="a folder with the fp32 model.onnx (compact export / compact run)")
    quantize.add_argument("out")
    quantize.add_argument("--task", default=None, help="GLUE task whose training text calibrates (e.g. sst2)")
    add_data_options(quantize)
    quantize.add_argument("--glue-dir", default=None, help="glue_data folder (else $COMPACT_GLUE_DIR, ../shared, hub)")
    quantize.add_argument("--weights", choices=("per_channel", "per_tensor"), default="per_channel")
    quantize.add_argument("--activations", choices=("dynamic", "static"), default="dynamic",
                          help="dynamic: fast on x86; static: QDQ, what NNAPI/CoreML run")
    quantize.add_argument("--activation-type", choices=("uint8", "int8"), default=None, help="static only")
    quantize.add_argument("--calibration", choices=("minmax", "entropy", "percentile"), default=None,
                          help="static only")
    quantize.add_argument("--activation-granularity", default=None,
                          choices=("per_tensor", "ffn_out_per_row", "ffn_out_per_block", "per_block"),
                          help="dynamic only; default ffn_out_per_row: one scale per token for the FFN output "
                               "projections (bench/results/int8_variants.md), per_tensor elsewhere")
    quantize.add_argument("--calibration-examples", type=at_least(1), default=256)
    quantize.add_argument("--embedding-bits", type=int, choices=(8, 4, 2), default=8,
                          help="word-embedding width (one scale per row; 4 and 2 are packed)")
    quantize.add_argument("--trim-vocabulary", action="store_true",
                          help="keep only the wordpieces the task's training text uses")
    quantize.add_argument("--max-length", type=at_least(2), default=128)
    quantize.add_argument("--no-mobile", action="store_true", help="skip model.ort")
    quantize.add_argument("--target-platform", choices=("arm", "amd64"), default="arm")
    quantize.add_argument("--restart", action="store_true",
                          help="OUT holds a quantization with other settings or inputs: discard it and start over")
    quantize.set_defaults(func=cmd_quantize)


def cmd_quantize(args) -> int:
    config = Int8Config(weights=args.weights, activations=args.activations, activation_type=args.activation_type,
                        activation_granularity=args.activation_granularity, calibration=args.calibration,
                        calibration_examples=args.calibration_examples,
                        trim_vocabulary=args.trim_vocabulary, embedding_bits=args.embedding_bits)
    refuse_overwrite(args.out, {"fp32 folder": args.dir, "training data": args.train})
    check_folder(args.dir)  # config, weights and graphs read before any work (a corrupted file is named)
    data = task_data_from_options(args, args.task, args.glue_dir)
    _claim(args, config)
    # calibration: a seeded sample of training text, never validation
    calibration = task_texts(data.train.shuffle(seed=0), data.spec, config.calibration_examples)
    report = quantize_folder(args.dir, args.out, config, texts=calibration, max_length=args.max_length,
                             mobile=not args.no_mobile, target_platform=args.target_platform,
                             vocabulary_texts=task_texts(data.train, data.spec) if config.trim_vocabulary else None)
    print(f"wrote {args.out}: {report['size_mb']} (fp32 model.onnx {report['source_size_mb']} MB); "
          f"{report['matmuls_quantized']} MatMuls int8, embeddings {report['int8_embeddings']}"
          + (f", vocabulary {report['vocabulary']}" if "vocabulary" in report else "")
          + f"; agreement with fp32 on {report['agreement']['examples']} training examples: "
          f"argmax {report['agreement'].get('argmax_agreement')}, max abs diff {report['agreement']['max_abs_diff']:.3g}")
    return 0


def _claim(args, config: Int8Config) -> None:
    """OUT belongs to this quantization (compact_nlp.workdir); what a killed run left (scratch, graphs) is removed."""
    settings = {**config.to_dict(), "task": args.task, "max_length": args.max_length, "mobile": not args.no_mobile,
                "target_platform": args.target_platform, "glue_dir": args.glue_dir}
    inputs = {"dir": input_digest(args.dir), **{name: input_digest(getattr(args, name))
                                                for name in ("train", "validation", "test") if getattr(args, name)}}
    if claim_output(args.out, Job("quantize", settings, inputs), restart=args.restart):
        print(f"{args.out}: resuming the same quantize job (--restart to start over)")
    remove_previous_export(args.out)  # a kill mid-way must not leave an earlier graph beside a new one

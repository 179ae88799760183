"""`model.onnx` -> ONNX Runtime Mobile: `model.ort` + `required_operators.config`, with onnxruntime's own tools.

The conversion is onnxruntime.tools.convert_onnx_models_to_ort (what `python -m onnxruntime.tools.
convert_onnx_models_to_ort` runs) with the "Fixed" optimization style, the one ONNX Runtime recommends for the CPU
execution provider; `required_operators.config` is the operator list a reduced ("minimal") ORT build takes through
`--include_ops_by_config`. The mobile-usability verdict is onnxruntime.tools' check_onnx_model_mobile_usability,
recorded verbatim.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..io import atomic_path

TARGET_PLATFORMS = ("arm", "amd64")


def convert_to_ort(onnx_path: str | os.PathLike, target_platform: str = "arm", fold_constants: bool = True) -> dict:
    """Write `model.ort` and `required_operators.config` next to `onnx_path`; return their paths and sizes.

    target_platform: "arm" for phones (allows int8 QDQ kernels chosen for ARM), "amd64" for x86 desktops/servers.
    fold_constants=False: for graphs that unpack packed weights in the graph (binary weights). onnxruntime's converter
    always constant-folds, which stores the unpacked weights in the .ort at full size; this path runs the same
    optimization (level "all", NCHWc layout off for arm, as the converter does) with ConstantFolding disabled.
    """
    if target_platform not in TARGET_PLATFORMS:
        raise ValueError(f"target_platform {target_platform!r} is not one of {TARGET_PLATFORMS} (arm = phones).")
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    onnx_path = Path(onnx_path)
    out_dir = onnx_path.parent
    stem = onnx_path.stem
    # The converter writes beside its input and names files after it; work in a scratch folder, then move results.
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".ort-convert-") as scratch:
        scratch = Path(scratch)
        try:
            os.link(onnx_path, scratch / onnx_path.name)  # scratch is inside out_dir: same file system
        except OSError:
            shutil.copy(onnx_path, scratch / onnx_path.name)
        if fold_constants:
            with contextlib.redirect_stdout(io.StringIO()):  # the converter prints progress; keep our CLI readable
                convert_onnx_models_to_ort(
                    scratch / onnx_path.name, output_dir=scratch, optimization_styles=[OptimizationStyle.Fixed],
                    target_platform=target_platform,
                )
        else:
            _convert_without_folding(scratch / onnx_path.name, scratch / f"{stem}.ort", target_platform)
        ort_file = scratch / f"{stem}.ort"
        config_file = next(scratch.glob("*.config"), None)
        if not ort_file.exists() or config_file is None:
            raise RuntimeError(f"onnxruntime's converter produced no .ort/.config for {onnx_path}: {os.listdir(scratch)}")
        ort_path, ops_path = out_dir / f"{stem}.ort", out_dir / "required_operators.config"
        _portable_operator_config(config_file, ort_path.name)
        for src, dst in ((ort_file, ort_path), (config_file, ops_path)):
            with atomic_path(dst) as tmp:
                shutil.move(src, tmp)
    return {
        "ort_file": ort_path.name, "ort_bytes": ort_path.stat().st_size,
        "required_operators_file": ops_path.name, "target_platform": target_platform,
        "optimization_style": "Fixed", "constant_folding": fold_constants,
    }


def _portable_operator_config(path: Path, ort_name: str) -> None:
    """The converter names the model it read by its absolute (scratch) path; a shipped file names it by file name."""
    lines = path.read_text().splitlines()
    lines = [f"# - {ort_name}" if line.startswith("# - ") else line for line in lines]
    path.write_text("\n".join(lines) + "\n")  # still in the scratch folder: moved into place atomically after


def _convert_without_folding(onnx_path: Path, ort_path: Path, target_platform: str) -> None:
    """What convert_onnx_models_to_ort does for the Fixed style (its session options, then its operator config),
    with ConstantFolding added to the disabled optimizers, which the converter does not let a caller set."""
    import onnxruntime as ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(ort_path)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.save_model_format", "ORT")
    options.log_severity_level = 3
    disabled = ["ConstantFolding"] + (["NchwcTransformer"] if target_platform != "amd64" else [])
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    create_config_from_models([ort_path], ort_path.parent / "required_operators.config", enable_type_reduction=False)


def mobile_usability(onnx_path: str | os.PathLike) -> dict:
    """onnxruntime's check_onnx_model_mobile_usability: may NNAPI/CoreML help, or is the CPU EP the one to use."""
    from onnxruntime.tools.mobile_helpers import usability_checker

    log = io.StringIO()
    logger = logging.getLogger("compact.mobile_usability")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.StreamHandler(log)
    logger.addHandler(handler)
    try:
        try_mobile_eps = usability_checker.analyze_model(Path(onnx_path), skip_optimize=False, logger=logger)
    finally:
        logger.removeHandler(handler)
    folder = str(Path(onnx_path).parent) + os.sep  # the log names the file; a shipped report names no machine path
    return {
        "nnapi_or_coreml_may_help": bool(try_mobile_eps),
        "verdict": "compare NNAPI (Android) and CoreML (iOS) against the CPU EP" if try_mobile_eps
        else "use the CPU execution provider",
        "log": log.getvalue().replace(folder, "").splitlines(),
    }

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


def convert_to_ort(onnx_path: str | os.PathLike, target_platform: str = "arm") -> dict:
    """Write `model.ort` and `required_operators.config` next to `onnx_path`; return their paths and sizes.

    target_platform: "arm" for phones (allows int8 QDQ kernels chosen for ARM), "amd64" for x86 desktops/servers.
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
        with contextlib.redirect_stdout(io.StringIO()):  # the converter prints progress; keep our CLI readable
            convert_onnx_models_to_ort(
                scratch / onnx_path.name, output_dir=scratch, optimization_styles=[OptimizationStyle.Fixed],
                target_platform=target_platform,
            )
        ort_file = scratch / f"{stem}.ort"
        config_file = next(scratch.glob("*.config"), None)
        if not ort_file.exists() or config_file is None:
            raise RuntimeError(f"onnxruntime's converter produced no .ort/.config for {onnx_path}: {os.listdir(scratch)}")
        ort_path, ops_path = out_dir / f"{stem}.ort", out_dir / "required_operators.config"
        for src, dst in ((ort_file, ort_path), (config_file, ops_path)):
            with atomic_path(dst) as tmp:
                shutil.move(src, tmp)
    return {
        "ort_file": ort_path.name, "ort_bytes": ort_path.stat().st_size,
        "required_operators_file": ops_path.name, "target_platform": target_platform,
        "optimization_style": "Fixed",
    }


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
    return {
        "nnapi_or_coreml_may_help": bool(try_mobile_eps),
        "verdict": "compare NNAPI (Android) and CoreML (iOS) against the CPU EP" if try_mobile_eps
        else "use the CPU execution provider",
        "log": log.getvalue().splitlines(),
    }

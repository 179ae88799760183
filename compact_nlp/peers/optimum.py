"""Optimum's dynamic int8 graph (avx512_vnni preset, its defaults) of a transformers folder, built by
compact_nlp/optimum_peer.py in the optimum environment (bench/peers_setup.sh); compact times it in its own process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ..optimum_peer import QUANTIZED
from .envs import peer_python

OPTIMUM = "Optimum dynamic int8 (avx512_vnni)"
SCRIPT = Path(__file__).resolve().parent.parent / "optimum_peer.py"


def optimum_graph(hf_folder: Path, out: Path, output: str, timeout: float = 900) -> tuple[Path | None, str]:
    """(Optimum's int8 graph, the versions that made it) or (None, why there is none)."""
    python, reason = peer_python("optimum")
    if python is None:
        return None, reason
    command = [str(python), str(SCRIPT), str(hf_folder), str(out), "--no-o3"]
    command += ["--feature-extraction"] if output != "logits" else []
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"optimum_peer.py ran past {timeout:.0f} s"
    if done.returncode != 0 or not (out / QUANTIZED).exists():
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return None, f"optimum_peer.py failed (exit {done.returncode}): {tail[0][:300]}"
    made = json.loads(done.stdout.strip().splitlines()[-1])
    return out / QUANTIZED, f"optimum-onnx {made['optimum-onnx']} (transformers {made['transformers']})"

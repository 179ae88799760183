"""Where the peer runtimes live: one virtual environment per peer under $COMPACT_PEER_ENVS (default
/work/peer-envs), made by `bash bench/peers_setup.sh`. A failed install leaves ROOT/<name>.skipped with the reason."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ROOT = Path("/work/peer-envs")
ENVIRONMENTS = ("litert", "ctranslate2", "openvino", "optimum")


def peer_envs_root() -> Path:
    return Path(os.environ.get("COMPACT_PEER_ENVS") or DEFAULT_ROOT)


def peer_python(name: str) -> tuple[Path | None, str]:
    """(the python of peer environment `name`, "") when it is installed, else (None, why it is not)."""
    root = peer_envs_root()
    python = root / name / "bin" / "python"
    if python.exists() and (root / name / ".installed").exists():
        return python, ""
    skipped = root / f"{name}.skipped"
    if skipped.exists():
        lines = [line for line in skipped.read_text().splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
        return None, f"install failed ({skipped}): {last.strip()[:300]}"
    return None, f"no environment at {root / name} (bash bench/peers_setup.sh installs it)"

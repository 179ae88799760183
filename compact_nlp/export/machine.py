"""The machine a latency figure was measured on: platform, CPU model and its int8 instruction sets, cores. Every
report that carries a timing (export reports, bench tables, cards) names it from here."""

from __future__ import annotations

import os
import platform
from pathlib import Path

INT8_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "asimddp", "i8mm")  # what int8 kernels use


def cpu_name() -> str:
    """The CPU's model name and the int8-relevant instruction sets it reports (/proc/cpuinfo on Linux; the
    platform's processor string elsewhere): a latency figure means little without them."""
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    name = fields.get("model name") or fields.get("Hardware") or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    found = [f for f in INT8_FEATURES if f in flags]
    return f"{name} ({', '.join(found)})" if found else name


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu": cpu_name(), "cores": os.cpu_count()}


__all__ = ["INT8_FEATURES", "cpu_name", "machine"]

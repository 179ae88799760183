"""What one int8 peer measured: the boundary between compact_nlp.peers and its callers (compact compress, bench)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class PeerResult:
    name: str                 # e.g. "ORT dynamic int8", "LiteRT int8 (ai-edge-quantizer)", "CTranslate2 int8"
    runtime: str              # library and version, e.g. "onnxruntime 1.32.0"
    available: bool
    reason: str = ""          # why it was skipped when not available
    median_ms: float | None = None   # batch 1, `threads` threads, over the given inputs at their real lengths
    size_mb: float | None = None
    fidelity: float | None = None    # argmax agreement with fp32 (classification), or mean cosine (embeddings); 0..1
    fidelity_metric: str = ""
    fidelity_min: float | None = None  # the lowest per-input cosine (embeddings only)

    def as_dict(self) -> dict:
        return asdict(self)


def fastest(results: list[PeerResult]) -> PeerResult:
    """The available peer with the lowest median latency (ValueError when none is available)."""
    timed = [r for r in results if r.available and r.median_ms is not None]
    if not timed:
        raise ValueError("no peer was measured: " + "; ".join(f"{r.name}: {r.reason}" for r in results))
    return min(timed, key=lambda r: r.median_ms)


def skipped(name: str, reason: str) -> PeerResult:
    return PeerResult(name=name, runtime="", available=False, reason=reason)

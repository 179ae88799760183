"""What one int8 peer measured: the boundary between compact_nlp.peers and its callers (compact compress, bench)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
    # {"real_{n}t" | "{length}_{n}t": {median_ms, p90_ms, noise_floor, calls}} where the peer was timed so
    latency: dict[str, dict] = field(default_factory=dict)
    load_s: float | None = None       # loading its converted files in a fresh process (None: not probed)
    peak_rss_mb: float | None = None  # VmHWM of that process after one call
    load_note: str = ""               # why load_s / peak_rss_mb are None
    files: list[str] = field(default_factory=list)  # the names of the files it runs

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

"""How faithful a peer is to the fp32 model it was made from, on the same inputs."""

from __future__ import annotations

import numpy as np


def fidelity(reference: np.ndarray, got: np.ndarray, output: str) -> tuple[float, float | None, str]:
    """(value, per-input minimum or None, metric name) of `got` against PyTorch fp32's `reference`, both (N, D):
    classifier logits -> argmax agreement (Pearson r for a single regression output); pooled embeddings -> cosine."""
    reference, got = np.asarray(reference, dtype=np.float64), np.asarray(got, dtype=np.float64)
    if reference.shape != got.shape:
        raise ValueError(f"outputs of shape {got.shape} do not match fp32's {reference.shape}")
    if output == "logits" and reference.shape[1] > 1:
        return round(float(np.mean(reference.argmax(1) == got.argmax(1))), 5), None, "argmax agreement with fp32"
    if output == "logits":
        return round(float(np.corrcoef(reference[:, 0], got[:, 0])[0, 1]), 5), None, "Pearson r with fp32"
    cosines = (reference * got).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1))
    return round(float(cosines.mean()), 5), round(float(cosines.min()), 5), "mean cosine to fp32 (mean-pooled)"

"""Calibration data for static int8 activations: real task text, one unpadded example per feed, checked against the
graph's inputs (and joined into fixed-length feeds for the histogram calibrators)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class CalibrationError(ValueError):
    pass


class TextCalibrationReader:
    """onnxruntime CalibrationDataReader over tokenized real text: one unpadded example per call."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._iter = iter(feeds)

    def get_next(self):
        return next(self._iter, None)

    @staticmethod
    def check(feeds: list[dict], input_names: list[str]) -> list[dict[str, np.ndarray]]:
        if not feeds:
            raise CalibrationError("no calibration examples: pass real task text (a few hundred examples).")
        checked = []
        for i, feed in enumerate(feeds):
            missing = sorted(set(input_names) - set(feed))
            extra = sorted(set(feed) - set(input_names))
            if missing or extra:
                raise CalibrationError(f"calibration example {i} has inputs {sorted(feed)}; the graph takes "
                                       f"{input_names} (missing {missing}, unexpected {extra}).")
            arrays = {k: np.asarray(v) for k, v in feed.items()}
            shapes = {k: a.shape for k, a in arrays.items()}
            if any(a.ndim != 2 for a in arrays.values()) or len(set(shapes.values())) != 1:
                raise CalibrationError(f"calibration example {i} has shapes {shapes}; each input must be "
                                       "(batch, sequence) and all the same shape, as the tokenizer returns them with "
                                       "return_tensors='np'.")
            checked.append({k: a.astype(np.int64) for k, a in arrays.items()})
        return checked


class _ScaleOnlyReader(TextCalibrationReader):
    """QAT: every activation has a trained scale, so calibration needs no statistics; ORT still runs the reader
    once, so give it one real example (or none when all scales are overridden)."""

    def __init__(self, feeds, input_names):
        super().__init__(TextCalibrationReader.check(feeds[:1], input_names) if feeds else [])


def calibration_feeds(tokenizer, texts: Iterable, max_length: int, input_names: list[str]) -> list[dict]:
    """Tokenize real examples (strings, or tuples for sentence pairs) one per feed, unpadded."""
    feeds = []
    for text in texts:
        pair = text if isinstance(text, (tuple, list)) else (text,)
        encoded = tokenizer(*pair, truncation=True, max_length=max_length, return_tensors="np")
        feeds.append({k: v for k, v in encoded.items() if k in input_names})
    return feeds


def fixed_length_feeds(feeds: list[dict], length: int) -> list[dict]:
    """Real examples joined back to back and cut into feeds of exactly `length` tokens. ORT's histogram calibrators
    (entropy, percentile) stack every batch into one array, so all feeds need one shape; padding would calibrate on
    pad tokens, so the text is joined instead (as the latency benchmarks make long inputs)."""
    joined = {k: np.concatenate([f[k][0] for f in feeds]) for k in feeds[0]}
    total = len(next(iter(joined.values())))
    if total < length:
        raise CalibrationError(f"the calibration text has {total} tokens in all, fewer than one input of {length}; "
                               "pass more examples.")
    return [{k: v[None, start:start + length] for k, v in joined.items()}
            for start in range(0, total - length + 1, length)]

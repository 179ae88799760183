"""What the ONNX Runtime models check and how they split a call, before any session runs.

Checks: a session given token ids outside the vocabulary, float ids, or a row whose attention mask has no token
returns numbers (ORT gathers out of range rows or averages nothing); those inputs are refused here with a line
that says what to pass instead.

Chunks: a call with many texts of mixed lengths is not run as one batch padded to its longest text: rows are
sorted by real length and run in chunks of at most `max_tokens` padded tokens, each chunk padded only to its own
longest row (memory stays bounded; a long text no longer makes the short ones pay for its padding). With
`one_row`, each row runs alone at its real length: a graph whose activations are quantized dynamically (one scale
per tensor, measured per call) then gives a text the same output whatever else is in the batch. Padding on the
left of a row (tokenizer padding_side="left") is cut as well, the row moved to start at column 0: with absolute
position embeddings that padding would shift the text's positions. Every text gets the answer it gets alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_BATCH_TOKENS = 16384  # padded tokens per session call: attention memory ~ tokens x length x heads x 4 bytes


class RuntimeInputError(ValueError):
    """Inputs a model cannot run (out of range or float ids, a row with no token, mismatched shapes)."""


def as_int64(name: str, values) -> np.ndarray:
    """`values` (numpy, torch or nested lists) as int64, refusing non-integral numbers instead of truncating them."""
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype == bool:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):  # floats would be truncated to other ids without a word
        raise RuntimeInputError(f"{name} must be an integer array (token ids from the tokenizer), got dtype "
                                f"{array.dtype}; pass tokenizer(..., return_tensors='np' or 'pt') output.")
    return array.astype(np.int64, copy=False)


def check_feed(feed: dict[str, np.ndarray], vocab_size: int, type_vocab_size: int) -> None:
    """Refuse ids out of [0, vocab_size), masks that are not 0/1 or leave a row without tokens, mismatched shapes."""
    ids = feed["input_ids"]
    for name, array in feed.items():
        if array.shape != ids.shape:
            raise RuntimeInputError(f"{name} has shape {array.shape} but input_ids has {ids.shape}; pass both from "
                                    "the same tokenizer call.")
    _in_range("input_ids", ids, vocab_size, "the model's vocabulary; use the tokenizer saved with this model")
    if "token_type_ids" in feed:
        _in_range("token_type_ids", feed["token_type_ids"], max(type_vocab_size, 1), "the model's token types")
    mask = feed["attention_mask"]
    if not np.isin(mask, (0, 1)).all():
        raise RuntimeInputError(f"attention_mask must hold 0 and 1 only, got values {sorted(set(np.unique(mask)))[:5]}.")
    empty = np.flatnonzero(mask.sum(axis=1) == 0)
    if empty.size:
        raise RuntimeInputError(f"attention_mask has no token in row(s) {empty[:5].tolist()}: every text needs at "
                                "least one real token (an empty string still tokenizes to [CLS] [SEP]).")


def _in_range(name: str, array: np.ndarray, size: int, what: str) -> None:
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= size:
        bad = low if low < 0 else high
        raise RuntimeInputError(f"{name} holds {bad}, outside 0..{size - 1} ({what}).")


@dataclass(frozen=True)
class Chunk:
    rows: np.ndarray  # indices into the batch
    firsts: np.ndarray  # each row's first real token (0 without left padding)
    spans: np.ndarray  # each row's columns from its first real token to its last

    @property
    def length(self) -> int:
        """The chunk's sequence length: its longest row, every row moved to start at column 0."""
        return int(self.spans.max())


def real_lengths(mask: np.ndarray) -> np.ndarray:
    """Per row, the position after its last real token (right padding is cut, anything inside is kept)."""
    last = mask.shape[1] - np.argmax(mask[:, ::-1] != 0, axis=1)
    return np.where(mask.any(axis=1), last, 1)


def first_tokens(mask: np.ndarray) -> np.ndarray:
    """Per row, the position of its first real token (0 without left padding)."""
    return np.argmax(mask != 0, axis=1)


def plan_chunks(mask: np.ndarray, max_tokens: int = MAX_BATCH_TOKENS, one_row: bool = False) -> list[Chunk] | None:
    """The chunks to run, shortest rows first; None when the batch runs as it is (not one_row, no row padded on the
    left, and one row or within max_tokens)."""
    batch, length = mask.shape
    ends, firsts = real_lengths(mask), first_tokens(mask)
    if not one_row and not firsts.any() and (batch == 1 or batch * length <= max_tokens):
        return None
    spans = ends - firsts
    order = np.argsort(spans, kind="stable")
    chunks, start = [], 0
    while start < batch:
        stop = start + 1
        while not one_row and stop < batch and (stop + 1 - start) * spans[order[stop]] <= max_tokens:
            stop += 1
        rows = order[start:stop]
        chunks.append(Chunk(rows=rows, firsts=firsts[rows], spans=spans[rows]))
        start = stop
    return chunks


def chunk_feed(feed: dict[str, np.ndarray], chunk: Chunk) -> dict[str, np.ndarray]:
    """The chunk's rows, each moved to start at column 0 and padded on the right to the chunk's length (ids,
    mask and token types all 0 there)."""
    rows, columns, inside = _positions(chunk)
    columns = np.minimum(columns, next(iter(feed.values())).shape[1] - 1)  # outside a row's span: any column, zeroed
    return {name: np.where(inside, values[rows, columns], 0).astype(values.dtype) for name, values in feed.items()}


def _positions(chunk: Chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns) in the whole batch of each (row, position) of the chunk, and which positions are real tokens."""
    positions = np.arange(chunk.length)[None, :]
    inside = positions < np.asarray(chunk.spans)[:, None]
    return np.asarray(chunk.rows)[:, None], np.asarray(chunk.firsts)[:, None] + positions, inside


def run_chunks(run, feed: dict[str, np.ndarray], chunks: list[Chunk], per_token: list[bool]) -> \
        list[np.ndarray] | None:
    """Run `run(feed) -> outputs` per chunk and put the rows back in order; an output with `per_token` (B, T, ...)
    is zero outside each row's real tokens (those positions are padding). None when a per-token output's
    length is not the chunk's, or another output's shape differs between chunks (a token-pruned graph's states):
    the caller runs the batch whole."""
    batch, length = feed["input_ids"].shape
    parts = [(chunk, run(chunk_feed(feed, chunk))) for chunk in chunks]
    merged = []
    for i, first in enumerate(parts[0][1]):
        along_tokens = per_token[i]
        if along_tokens and any(out[i].shape[1] != c.length for c, out in parts):
            return None
        if not along_tokens and any(out[i].shape[1:] != first.shape[1:] for _, out in parts):
            return None
        result = np.zeros((batch, length, *first.shape[2:]) if along_tokens else (batch, *first.shape[1:]),
                          dtype=first.dtype)
        for chunk, out in parts:
            if not along_tokens:
                result[chunk.rows] = out[i]
                continue
            rows, columns, inside = _positions(chunk)
            result[np.broadcast_to(rows, inside.shape)[inside], columns[inside]] = out[i][inside]
        merged.append(result)
    return merged

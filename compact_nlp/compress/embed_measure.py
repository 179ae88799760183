"""`compact compress --task embeddings`, before training: the user's unlabelled text split three ways, the score an
embedding model gets on held-out text, and the latency and size of every depth measured on this machine.

The score (points, 0-100) needs no labels: how faithfully a model ranks how similar two sentences are, as the
original ranks them. Each held-out sentence is paired with its nearest other held-out sentence under the original
and with a random one (so that the pairs span close and unrelated sentences), and the score is 100 x the Spearman
correlation between the model's cosine similarities of those pairs and the original's. The original scores 100; a
drop of 1 point is a ranking of similarities 0.99 correlated with the original's. The mean cosine between the
model's and the original's embeddings of the same sentence is reported beside it.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from ..auto import AutoCompactModel
from ..bench import time_side_by_side
from ..data.sources import describe
from ..embeddings import ship_embeddings
from ..embeddings_measure import encode_all, ort_embedder, torch_embedder
from ..embeddings_text import source_split
from ..export import export_model
from ..io import save_pretrained_atomic, write_json
from ..peers import ORT_DYNAMIC, encode_texts, fastest, measure_int8_peers
from ..peers.measure import session_call
from ..shrink import shrink
from .plans import student_layers

SELECTION_SENTENCES, FINAL_SENTENCES = 500, 500  # the held-out sentences: half choose, half report (read once)
TRAIN_LIMIT = 40000  # sentences a student distils on, at most (compact embed's default)
TIMED_EXAMPLES, PEER_EXAMPLES = 80, 200
REFERENCE, PEER = "reference", ORT_DYNAMIC
BASELINE_FILE = "embed_baseline.json"


@dataclass
class EmbeddingTexts:
    """The user's sentences: train (students distil on them), selection (every choice is made on them) and final
    (read once, for the report); all disjoint."""

    train: list[str]
    selection: list[str]
    final: list[str]
    source: str  # where they came from, portable (a file name and column, never a local path)

    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(json.dumps([self.train, self.selection, self.final]).encode()).hexdigest()


def read_texts(data, text_column: str | None, seed: int = 1) -> EmbeddingTexts:
    """The distinct sentences of one column of `data` (a file, a saved dataset folder, a hub id or a datasets object),
    shuffled with `seed`: 1,000 held out (a tenth when there are fewer than 10,000), split in two halves."""
    train, held_out, column = source_split(data, text_column, TRAIN_LIMIT, seed)
    half = len(held_out) // 2
    return EmbeddingTexts(train, held_out[:half][:SELECTION_SENTENCES], held_out[half:][:FINAL_SENTENCES],
                          f"{describe(data)}, column {column}")


def similarity_pairs(reference: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (first, second) of the scored pairs: each sentence with its nearest other sentence under the reference
    embeddings (normalized), and with a random other one."""
    n = len(reference)
    similarity = reference @ reference.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(1)
    rng = np.random.default_rng(seed)
    other = (np.arange(n) + rng.integers(1, n, size=n)) % n
    return np.concatenate([np.arange(n), np.arange(n)]), np.concatenate([nearest, other])


@dataclass
class EmbeddingScore:
    score: float  # points: 100 x Spearman of the pairs' cosines against the original's
    mean_cosine: float  # between the model's and the original's embedding of each sentence

    def to_dict(self) -> dict:
        return asdict(self)


def score_embeddings(values: np.ndarray, reference: np.ndarray) -> EmbeddingScore:
    """`values` and `reference`: normalized embeddings of the same sentences (module docstring)."""
    from scipy.stats import spearmanr

    first, second = similarity_pairs(reference)
    ours, theirs = (values[first] * values[second]).sum(-1), (reference[first] * reference[second]).sum(-1)
    return EmbeddingScore(round(float(100 * spearmanr(ours, theirs).statistic), 2),
                          round(float((values * reference).sum(-1).mean()), 4))


def original_embeddings(source: str, sentences: list[str], max_length: int) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(source)
    return encode_all(torch_embedder(AutoCompactModel.from_pretrained(source).eval()), tokenizer, sentences,
                      max_length)


def shipped_embeddings(folder: Path, sentences: list[str], max_length: int) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return encode_all(ort_embedder(folder / "model.ort", 1), tokenizer, sentences, max_length)


def full_depth_student(source: str, folder: Path) -> Path:
    """The original as a compact encoder folder (what ship_embeddings starts from when no layer is removed)."""
    if not (folder / "config.json").is_file():
        save_pretrained_atomic(AutoTokenizer.from_pretrained(source), folder)
        save_pretrained_atomic(AutoCompactModel.from_pretrained(source), folder)
    return folder


def proxy_folder(source: str, layers: int, texts: list[str], max_length: int, folder: Path) -> Path:
    """An untrained student of `layers` layers shipped as compress ships it (int8 model.ort): weights change neither
    latency nor size. Kept once written."""
    if (folder / "model" / "modules.json").is_file():
        return folder / "model"
    original = AutoCompactModel.from_pretrained(source)
    total = original.config.num_hidden_layers
    keep = student_layers(total, layers)
    model = original if keep is None else shrink(original, layers=[i for i in range(total) if i not in keep])
    student = folder / "student"
    save_pretrained_atomic(AutoTokenizer.from_pretrained(source), student)
    save_pretrained_atomic(model, student)
    return ship_embeddings(student, folder, texts, max_length)


@dataclass
class EmbeddingBaseline:
    """What was measured before training: the reference and the peers, each depth's shipped latency and size in the
    reference's timing frame, what distillation costs per sentence."""

    reference_ms: float
    reference_size_mb: float
    peers: list  # compact_nlp.peers.PeerResult, as dicts
    fastest_peer: str
    fastest_peer_ms: float
    depths: dict  # layers (str) -> [ms, MB] of the int8 model.ort
    train_seconds_per_example: float
    mean_tokens: float

    def to_dict(self) -> dict:
        return asdict(self)


def measure_baseline(source: str, texts: EmbeddingTexts, depths: list[int], max_length: int, threads: int,
                     folder: Path, log) -> EmbeddingBaseline:
    """The reference (fp32 model.ort), the peers (measure_int8_peers, on the encoder), and each depth's int8 proxy,
    all timed side by side on the selection sentences; read back from `folder` when measured."""
    if (folder / BASELINE_FILE).is_file():
        return EmbeddingBaseline(**json.loads((folder / BASELINE_FILE).read_text()))
    reference = folder / "reference"
    if not (reference / "model.ort").is_file():
        export_model(AutoCompactModel.from_pretrained(source).eval(), reference, tokenizer_source=source, mobile=True)
    log(f"measuring the int8 peers on {min(PEER_EXAMPLES, len(texts.selection))} held-out sentences")
    peers = measure_int8_peers(source, texts.selection[:PEER_EXAMPLES], threads=threads, workdir=folder / "peers",
                               output="last_hidden_state", max_length=max_length)
    proxies = {}
    for layers in depths:
        log(f"measuring a {layers}-layer int8 proxy")
        proxies[str(layers)] = proxy_folder(source, layers, texts.train[:256], max_length,
                                            folder / "proxies" / f"L{layers}") / "model.ort"
    files = {PEER: folder / "peers" / "ort" / "peer_dynamic.onnx", **proxies}
    timed = time_beside_reference(source, files, folder, texts.selection, max_length, threads)
    peer = fastest(peers)
    ort_row = next(p for p in peers if p.name == ORT_DYNAMIC and p.available)
    baseline = EmbeddingBaseline(
        round(timed[REFERENCE], 3), _mb(reference / "model.ort"), [p.as_dict() for p in peers], peer.name,
        round(timed[PEER] * peer.median_ms / ort_row.median_ms, 3),  # another process's peer, placed through ORT's
        {k: [round(timed[k], 3), _mb(path)] for k, path in proxies.items()},
        distillation_seconds_per_example(source, texts.train, max_length),
        mean_tokens(source, texts.selection[:TIMED_EXAMPLES], max_length))
    write_json(folder / BASELINE_FILE, baseline.to_dict())
    for measured in ("peers", "proxies"):  # 100s of MB of graphs, measured now; the reference stays for the end
        shutil.rmtree(folder / measured, ignore_errors=True)
    return baseline


def time_beside_reference(source: str, files: dict[str, Path], folder: Path, sentences: list[str], max_length: int,
                          threads: int) -> dict[str, float]:
    """Median ms at batch 1 of each encoder graph and of the reference (folder/reference/model.ort, under REFERENCE),
    interleaved in rounds (compact_nlp.bench's loop) over the first TIMED_EXAMPLES sentences at their real lengths."""
    inputs = encode_texts(source, sentences[:TIMED_EXAMPLES], max_length)
    paths = {REFERENCE: folder / "reference" / "model.ort", **files}
    calls = {name: session_call(path, threads, inputs, "last_hidden_state")[0] for name, path in paths.items()}
    timed = time_side_by_side(calls, rounds=3, calls=len(inputs), warmup=min(10, len(inputs)))
    return {name: stats["median_ms"] for name, stats in timed.items()}


def mean_tokens(source: str, sentences: list[str], max_length: int) -> float:
    return round(float(np.mean([x["input_ids"].shape[1] for x in encode_texts(source, sentences, max_length)])), 1)


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 3)


def distillation_seconds_per_example(source: str, sentences: list[str], max_length: int, batch: int = 32,
                                     batches: int = 4) -> float:
    """Seconds per sentence of one distillation step of the full-depth student (the teacher's forward pass, the
    student's forward and backward, the optimizer): the fastest of `batches`, since a shared machine only slows a
    step down."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    teacher, student = AutoCompactModel.from_pretrained(source).eval(), AutoCompactModel.from_pretrained(source)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
    rows = random.Random(0).sample(sentences, min(len(sentences), batch * batches))
    times = []
    for start in range(0, len(rows), batch):
        encoded = tokenizer(rows[start:start + batch], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
        began = time.perf_counter()
        with torch.no_grad():
            target = teacher.sentence_embedding(**encoded, normalize=True)
        loss = (student.sentence_embedding(**encoded, normalize=True) - target).pow(2).sum(-1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append((time.perf_counter() - began) / len(rows[start:start + batch]))
    return round(min(times[1:] if len(times) > 1 else times), 5)

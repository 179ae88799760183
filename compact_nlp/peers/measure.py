"""measure_int8_peers: the int8 runtimes a user could pick instead of compact, measured on the user's own inputs.

ORT dynamic int8 (onnxruntime's quantize_dynamic of transformers' own exported graph) is always measured, in this
process, with compact's own timing loop (compact_nlp.bench.time_side_by_side: variants interleaved in rounds); so is
Optimum's avx512_vnni dynamic int8 graph when its environment is installed (Optimum builds it in its environment,
this process times it beside ORT's). LiteRT, CTranslate2 and OpenVINO run in their own environments
(compact_nlp.peers.workers) and time themselves on the same token ids: those timings are not interleaved with the
ORT rows, so read them as one run's figures on an otherwise idle machine.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..auto import AutoCompactModel, AutoCompactModelForSequenceClassification
from ..bench import dir_size_mb, time_side_by_side
from ..compare_peers import ort_dynamic_int8, save_hf_folder
from ..runtime import session_options
from .fidelity import fidelity
from .optimum import OPTIMUM, optimum_graph
from .result import PeerResult
from .workers import WORKERS, WorkerRequest, run_workers

ORT_DYNAMIC = "ORT dynamic int8"


def encode_texts(fp32_folder, texts, max_length: int = 512) -> list[dict[str, np.ndarray]]:
    """Each text (or (a, b) pair) alone, batch 1, unpadded, as int64 arrays with token_type_ids."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(fp32_folder)
    encoded = []
    for text in texts:
        pair = (text,) if isinstance(text, str) else tuple(text)
        x = tokenizer(*pair, truncation=True, max_length=max_length, return_tensors="np", return_token_type_ids=True)
        encoded.append({k: x[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})
    return encoded


def reference_outputs(fp32_folder, inputs: list[dict], output: str) -> np.ndarray:
    """PyTorch fp32's (N, D) outputs: logits, or last_hidden_state mean-pooled over each input's tokens."""
    import torch

    auto = AutoCompactModelForSequenceClassification if output == "logits" else AutoCompactModel
    model = auto.from_pretrained(fp32_folder).eval()
    rows = []
    with torch.inference_mode():
        for x in inputs:
            y = getattr(model(**{k: torch.from_numpy(v) for k, v in x.items()}), output)[0]
            rows.append((y if output == "logits" else y.mean(0)).float().numpy().reshape(-1))
    return np.stack(rows)


def session_call(path: Path, threads: int, inputs: list[dict], output: str):
    """A zero-argument callable that runs the next input (cycling) on an ORT session, and one that runs them all."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    state = {"i": 0}

    def run(x):
        y = session.run(None, {k: v for k, v in x.items() if k in names})[0][0]
        return y if output == "logits" else y.mean(0)

    def next_input():
        x = inputs[state["i"] % len(inputs)]
        state["i"] += 1
        return run(x)

    return next_input, lambda: np.stack([np.asarray(run(x), dtype=np.float32).reshape(-1) for x in inputs])


def ort_rows(graphs: dict[str, Path], inputs: list[dict], reference: np.ndarray, threads: int, rounds: int,
             output: str, made_by: dict[str, str] | None = None) -> list[PeerResult]:
    """The ORT graphs (ORT dynamic int8, Optimum's), timed side by side by compact.bench's loop over every input;
    made_by: what made a graph (its versions), named in its runtime beside onnxruntime's."""
    import onnxruntime as ort

    calls = {name: session_call(path, threads, inputs, output) for name, path in graphs.items()}
    timed = time_side_by_side({name: c[0] for name, c in calls.items()}, rounds=rounds, calls=len(inputs),
                              warmup=min(10, len(inputs)))
    results = []
    for name, path in graphs.items():
        value, minimum, metric = fidelity(reference, calls[name][1](), output)
        runtime = ", ".join(filter(None, [(made_by or {}).get(name), f"onnxruntime {ort.__version__}"]))
        results.append(PeerResult(name, runtime, True, median_ms=timed[name]["median_ms"],
                                  size_mb=dir_size_mb(path), fidelity=value, fidelity_min=minimum,
                                  fidelity_metric=metric))
    return results


def measure_int8_peers(fp32_folder, texts, threads: int = 1, workdir=None, output: str = "logits",
                       rounds: int = 3, include: tuple[str, ...] | None = None,
                       timeout: float = 900, max_length: int = 512) -> list[PeerResult]:
    """fp32_folder: a compact/transformers model folder (fine-tuned classifier when output == "logits", an encoder
    when output == "last_hidden_state"). texts: the user's real inputs, strings or (a, b) pairs. Always includes ORT
    dynamic int8 (ORT quantize_dynamic of transformers' own exported graph); adds each other peer whose environment
    under /work/peer-envs (or $COMPACT_PEER_ENVS) is installed, skipped with the reason otherwise. `include` limits
    the other peers to these environment names (litert, ctranslate2, openvino, optimum; () for ORT only); each input
    is cut at `max_length` tokens.
    Latency: batch 1, `threads` threads, median over `rounds` passes over every input at its real length. Peers in
    other processes time themselves: their timings are not interleaved with the ORT rows (module docstring)."""
    if output not in ("logits", "last_hidden_state"):
        raise ValueError(f"output must be 'logits' or 'last_hidden_state', not {output!r}")
    if not texts:
        raise ValueError("measure_int8_peers needs at least one input text")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(workdir) if workdir else Path(tmp)
        scratch.mkdir(parents=True, exist_ok=True)
        inputs = encode_texts(fp32_folder, texts, max_length)
        reference = reference_outputs(fp32_folder, inputs, output)
        hf_graph, int8 = ort_dynamic_int8(Path(fp32_folder), scratch / "ort", output)
        wanted = set(include) if include is not None else None
        others = [w for w in WORKERS if wanted is None or w.env in wanted]
        with_optimum = wanted is None or "optimum" in wanted
        hf_folder = save_hf_folder(Path(fp32_folder), scratch / "hf", output) if others or with_optimum else None
        graphs, extra, made = {ORT_DYNAMIC: int8}, [], {}
        if with_optimum:
            graph, made_by = optimum_graph(hf_folder, scratch / "optimum", output)
            graphs.update({OPTIMUM: graph} if graph else {})
            made[OPTIMUM] = made_by
            extra += [] if graph else [PeerResult(OPTIMUM, "", False, reason=made_by)]
        results = ort_rows(graphs, inputs, reference, threads, rounds, output, made) + extra
        if others:
            request = WorkerRequest(hf_folder, hf_graph, inputs, reference, threads=(threads,), rounds=rounds,
                                    output=output, timeout=timeout)
            results += [run.result for run in run_workers(request, scratch, tuple(w.env for w in others))]
    return results

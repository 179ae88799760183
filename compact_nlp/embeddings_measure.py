"""Step 3 of `compact embed` (compact_nlp.embeddings): the fidelity and latency of the compressed embedding model side
by side with the original and the peers, the sentence-transformers check of the shipped folder, and the report."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .auto import AutoCompactModel
from .bench import REAL_LENGTH_ROUNDS, real_length_latency
from .compare_peers import peers, save_hf_folder
from .peers import PeerRun, WorkerRequest, encode_texts, reference_outputs, run_workers
from .convert import to_hf_model
from .export import export_model
from .modeling import mean_pool
from .runtime import session_options
from .ship import machine, versions

ORIGINAL_TORCH = "original, PyTorch fp32 (transformers BertModel)"
STUDENT_TORCH = "compact: distilled student, PyTorch fp32"


def encode_all(embed, tokenizer, sentences: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    out = []
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer(sentences[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        with torch.inference_mode():
            out.append(np.asarray(embed(batch)))
    return np.concatenate(out)


def spearman_of_cosine(a: np.ndarray, b: np.ndarray, scores) -> float:
    from scipy.stats import spearmanr

    cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(100 * spearmanr(cosine, scores).statistic)


def ort_embedder(path: Path, threads: int):
    """batch -> normalized mean-pooled embeddings, from a graph whose first output is last_hidden_state."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), session_options(threads, spinning=False),
                                   providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def embed(batch):
        feed = {k: np.asarray(v, dtype=np.int64) for k, v in batch.items() if k in names}
        states = torch.from_numpy(session.run(None, feed)[0])
        return F.normalize(mean_pool(states, torch.as_tensor(np.asarray(batch["attention_mask"]))), dim=-1)

    return embed


def torch_embedder(model):
    def embed(batch):
        states = model(**{k: torch.as_tensor(v) for k, v in batch.items()}).last_hidden_state
        return F.normalize(mean_pool(states, torch.as_tensor(batch["attention_mask"])), dim=-1)

    return embed


def _fidelity(embeddings: dict, sentences: list[str], pairs: tuple | None) -> dict:
    """Per row: mean and min cosine to the original's embeddings, and with `pairs` the STS-B Spearman."""
    reference = embeddings[ORIGINAL_TORCH]
    index = {s: i for i, s in enumerate(sentences)}
    rows = {}
    for name, values in embeddings.items():
        rows[name] = {"mean_cosine_to_original": round(float((values * reference).sum(-1).mean()), 4),
                      "min_cosine_to_original": round(float((values * reference).sum(-1).min()), 4)}
        if pairs is not None:
            first, second, scores = pairs
            a, b = values[[index[s] for s in first]], values[[index[s] for s in second]]
            rows[name]["stsb_spearman"] = round(spearman_of_cosine(a, b, scores), 2)
    return rows


def _latency(rows: dict, embedders: dict, files: dict, inputs: list[dict], threads) -> None:
    """Adds real_{n}t (batch 1, real lengths) to every row but the student's PyTorch one, for each thread count."""
    timed = {name: embedder for name, embedder in embedders.items() if "student" not in name}
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        callers = {name: (ort_embedder(files[name], n_threads) if name in files else embedder)
                   for name, embedder in timed.items()}
        with torch.inference_mode():
            for name, stats in real_length_latency(callers, {name: inputs for name in callers}).items():
                rows[name][f"real_{n_threads}t"] = stats


def measure(original: str, shipped: Path, student: Path, sentences: list[str], text: str, max_length: int,
            pairs: tuple | None = None, examples: int = 300, threads=(1, 2)) -> dict:
    """Step 3 (compact_nlp.embeddings): fidelity and latency of every row, side by side, on `sentences` (named
    `text`); `pairs` = (first sentences, second sentences, gold scores) adds the Spearman of their cosine."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(original)
    original_model = to_hf_model(AutoCompactModel.from_pretrained(original)).eval()
    student_model = AutoCompactModel.from_pretrained(student).eval()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        export_model(AutoCompactModel.from_pretrained(original).eval(), scratch / "fp32", tokenizer_source=original,
                     mobile=True)
        files = {"original, ORT fp32 (model.ort)": scratch / "fp32" / "model.ort",
                 **peers(scratch / "fp32", scratch / "peers", output="last_hidden_state"),
                 f"compact: {student_model.config.num_hidden_layers}-layer distilled, int8 (model.ort, ships)":
                     shipped / "model.ort"}
        torch.set_num_threads(2)
        embedders = {ORIGINAL_TORCH: torch_embedder(original_model),
                     **{name: ort_embedder(path, 2) for name, path in files.items()},
                     STUDENT_TORCH: torch_embedder(student_model)}
        embeddings = {name: encode_all(embed, tokenizer, sentences, max_length) for name, embed in embedders.items()}
        outside = _outside_peers(original, scratch, sentences, max_length, examples, threads)
        embeddings.update({run.result.name: _normalized(run.score_outputs) for run in outside
                           if run.result.available})
        rows = _fidelity(embeddings, sentences, pairs)
        sizes = {name: round(path.stat().st_size / 2**20, 2) for name, path in files.items()}
        inputs = [{k: v.numpy() for k, v in tokenizer(s, truncation=True, max_length=max_length,
                                                       return_tensors="pt").items()} for s in sentences[:examples]]
        _latency(rows, embedders, files, inputs, threads)
        for name, size in sizes.items():
            rows[name]["size_mb"] = size
        rows.update(_outside_rows(outside, rows))
    return {"original": original, "text": text, "sentences": len(sentences),
            "timed_sentences": len(inputs), "mean_tokens": round(float(np.mean([x["input_ids"].shape[1]
                                                                              for x in inputs])), 1),
            "threads": list(threads), "rows": rows, "machine": machine(), "versions": versions()}


def _outside_peers(original: str, scratch: Path, sentences: list[str], max_length: int, examples: int,
                   threads) -> list[PeerRun]:
    """The peers that run in their own environments (LiteRT, CTranslate2, OpenVINO; compact_nlp.peers), each
    converting the original encoder by its own recipe, timed on the first `examples` sentences at their real lengths
    by compact's loop and statistic, and embedding every sentence (for the fidelity columns). A peer not installed is
    a run saying why."""
    timed = encode_texts(original, sentences[:examples], max_length)
    request = WorkerRequest(save_hf_folder(original, scratch / "hf", "last_hidden_state"), scratch / "peers" / "hf.onnx",
                            timed, reference_outputs(original, timed, "last_hidden_state"), threads=tuple(threads),
                            rounds=REAL_LENGTH_ROUNDS, output="last_hidden_state", real_rounds=REAL_LENGTH_ROUNDS,
                            score_inputs=encode_texts(original, sentences, max_length))
    return run_workers(request, scratch / "workers")


def _normalized(pooled: np.ndarray) -> np.ndarray:
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def _outside_rows(runs: list[PeerRun], rows: dict) -> dict:
    """The outside peers' rows: fidelity (already in `rows`), latency at each thread count and size, or the reason a
    peer was skipped."""
    out = {}
    for run in runs:
        peer = run.result
        out[peer.name] = ({**rows[peer.name], **peer.latency, "size_mb": peer.size_mb, "timed": "own process",
                           "runtime": peer.runtime} if peer.available else {"skipped": peer.reason})
    return out


def sentence_transformers_check(folder: Path, sentences: list[str], max_length: int) -> dict:
    """Load the shipped folder with sentence-transformers and compare its embeddings with compact's own: the PyTorch
    weights (the same function: max abs difference) and the int8 model.ort that ships (mean and min cosine)."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    loaded = SentenceTransformer(str(folder), device="cpu")
    theirs = loaded.encode(sentences, convert_to_numpy=True, normalize_embeddings=False)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ours = encode_all(torch_embedder(AutoCompactModel.from_pretrained(folder).eval()), tokenizer, sentences, max_length)
    shipped = encode_all(ort_embedder(folder / "model.ort", 2), tokenizer, sentences, max_length)
    cosine = (theirs * shipped).sum(-1)
    return {"sentences": len(sentences), "max_abs_diff_vs_compact_pytorch": float(np.abs(theirs - ours).max()),
            "mean_cosine_vs_shipped_ort": round(float(cosine.mean()), 4),
            "min_cosine_vs_shipped_ort": round(float(cosine.min()), 4)}


def _row_line(name: str, r: dict, threads, original_ms: float, peer_ms: float, spearman: bool) -> str:
    if "skipped" in r:
        return f"| {name} | skipped: {r['skipped']} |"
    cells = [f"{r[f'real_{t}t']['median_ms']} ({r[f'real_{t}t']['p90_ms']})" if f"real_{t}t" in r else "-"
             for t in threads]
    first = r.get(f"real_{threads[0]}t")
    speeds = [f"{original_ms / first['median_ms']:.2f}x", f"{peer_ms / first['median_ms']:.2f}x"] if first else ["-"] * 2
    mark = " †" if r.get("timed") == "own process" else ""
    return (f"| {name}{mark} | " + (f"{r['stsb_spearman']:.2f} | " if spearman else "")
            + f"{r['mean_cosine_to_original']:.4f} | {r.get('size_mb', '-')} | " + " | ".join(cells + speeds) + " |")


def markdown(report: dict) -> str:
    rows = report["rows"]
    original = next(n for n in rows if n.startswith("original, ORT"))
    first = f"real_{report['threads'][0]}t"
    spearman = any("stsb_spearman" in r for r in rows.values())
    peer = min((name for name, r in rows.items() if first in r and (name.startswith("peer:")
                                                                   or r.get("timed") == "own process")),
               key=lambda name: rows[name][first]["median_ms"])
    lines = [
        f"# Compressed sentence embeddings: {report['model']}",
        "",
        f"Student: {report['layers']} layers distilled on {report['training_sentences']} unlabelled sentences "
        f"({report['training_text']}), {report['epochs']} epoch(s); shipped as int8 model.ort. Fidelity on "
        f"{report['sentences']} {report['text']} sentences. Latency: batch 1, median (p90) ms on the first "
        f"{report['timed_sentences']} of them at their real lengths ({report['mean_tokens']} tokens on average, "
        "unpadded): each row runs a pass over them in turn, the rows interleaved by round, and its median is over "
        "each sentence's fastest pass. Rows marked † are peers timed in their own process and environment "
        "(compact_nlp.peers), by the same loop and statistic, not interleaved with the others. Machine: "
        f"{report['machine'].get('cpu') or report['machine']['platform']}, {report['machine']['cores']} cores.",
        "",
        *([] if spearman else ["No STS-B here, so no STS-B Spearman: fidelity is the cosine between the original's "
                               "and each row's embeddings of sentences the student never trained on.", ""]),
        f"The fastest peer at real lengths, {report['threads'][0]} thread(s), is **{peer}**.", "",
        "| row | " + ("STS-B dev Spearman (cosine) | " if spearman else "") + "mean cosine to the original | MB | "
        + " | ".join(f"real, {t} thread(s)" for t in report["threads"])
        + f" | x faster than {original} | x faster than the fastest peer |",
        "|---|" + ("---|" if spearman else "") + "---|---|" + "---|" * len(report["threads"]) + "---|---|",
    ]
    lines += [_row_line(name, r, report["threads"], rows[original][first]["median_ms"],
                        rows[peer][first]["median_ms"], spearman) for name, r in rows.items()]
    st = report["sentence_transformers"]
    lines += ["", f"sentence-transformers loads the shipped folder: on {st['sentences']} sentences its embeddings differ "
                  f"from compact's PyTorch model by at most {st['max_abs_diff_vs_compact_pytorch']:.1e}, and their "
                  f"cosine with the int8 model.ort that ships is {st['mean_cosine_vs_shipped_ort']} on average "
                  f"(min {st['min_cosine_vs_shipped_ort']}).", ""]
    return "\n".join(lines)

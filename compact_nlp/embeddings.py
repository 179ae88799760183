"""`compact embed`: compress a sentence-embedding model (all-MiniLM-L6-v2) without labels, and measure its fidelity.

In OUT/ (each step is skipped when its result is there; training resumes from its last Trainer checkpoint):
    1. student/    the teacher with fewer layers (`layers` of them, spread over the depth as HAT's layer selection
                   does: for 4 of 6, layers 1, 2, 3, 5), distilled on unlabelled text only: the student's normalized
                   mean-pooled embedding learns the teacher's (squared distance, as Reimers & Gurevych 2020 distil
                   sentence embeddings), through CompactTrainer with EmbeddingDistillationHook;
    2. model/      what ships: int8 (compact_nlp.quant, dynamic activations, per-channel weights, int8 word
                   embeddings) model.onnx + model.ort, plus the student's PyTorch weights and the sentence-transformers
                   files (modules.json, 1_Pooling, 2_Normalize), so `SentenceTransformer(OUT/model)` loads it;
    3. report.json / report.md   fidelity on real pairs (STS-B dev: Spearman of cosine similarity, before and after,
                   and the mean cosine between original and compressed embeddings) and latency at batch 1 on the dev
                   sentences' real, unpadded lengths, side by side with the original (PyTorch and ORT fp32) and the
                   peer int8 (quantize_dynamic of the original's graph).
The training text (`text="glue"`) never includes STS-B dev: it is the train splits of STS-B, SST-2, MRPC and CoLA.
Without GLUE data, `text="python-docs"` (what `compact demo` runs offline) distils on real English prose that every
CPython install carries under the PSF License: Python's Language Reference topics and its standard library's
docstrings. Fidelity is then the cosine to the original on 1,000 of those sentences held out of training; STS-B
Spearman needs STS-B dev and is left out, and the report says so.

Of compact's three techniques this uses depth reduction and int8: the HAT search needs a fitness, and for an embedding
model without labels that would be the held-out cosine of a trained SuperTransformer, not built yet; token pruning
changes which tokens the mean pools over.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .io import write_json, write_text
from .trainer import CompactHook

SENTENCE_TRANSFORMERS_FILES = {  # written in this order; modules.json, last, marks the folder complete
    "sentence_bert_config.json": {"max_seq_length": None, "do_lower_case": False},  # None: the job's max_length
    "modules.json": [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ],
}


class EmbeddingDistillationHook(CompactHook):
    """The student's normalized mean-pooled embedding learns the teacher's: the squared distance between them
    (2 - 2 cos), averaged over the batch. Unlabelled text is all it needs."""

    def __init__(self, teacher, weight: float = 1.0):
        self.teacher = teacher.eval()
        self.weight = weight

    def loss_terms(self, model, inputs, outputs) -> dict:
        from .modeling import mean_pool

        features = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        device = outputs.last_hidden_state.device
        if next(self.teacher.parameters()).device != device:  # the Trainer moves the student, not the hook's teacher
            self.teacher.to(device)
        with torch.no_grad():
            target = self.teacher.sentence_embedding(**features, normalize=True)
        student = F.normalize(mean_pool(outputs.last_hidden_state, inputs["attention_mask"]), dim=-1)
        return {"embedding": self.weight * (student - target).pow(2).sum(-1).mean()}


def training_texts(glue_dir: str | None, limit: int, seed: int) -> tuple[list[str], str]:
    """Unlabelled sentences to distil on, never STS-B dev: the train splits of STS-B, SST-2, MRPC and CoLA that are
    reachable. Returns (texts, where they came from)."""
    import random

    from .glue import GLUE_DIR_ENV, GlueDataError, get_task, load_glue

    texts, sources = [], []
    for name in ("stsb", "sst2", "mrpc", "cola"):
        try:
            train = load_glue(name, glue_dir)["train"]
        except GlueDataError:
            continue
        for column in get_task(name).text_columns:
            texts += train[column]
        sources.append(f"{name} train")
    if not texts or "stsb train" not in sources:
        raise GlueDataError(f"compact embed distils on GLUE's training text and measures on STS-B dev, and found no "
                            f"STS-B in {glue_dir or 'the default places or the hub'}: pass --glue-dir DIR (or set "
                            f"{GLUE_DIR_ENV}) with DIR in the classic glue_data layout.")
    texts = list(dict.fromkeys(t.strip() for t in texts if t.strip()))
    random.Random(seed).shuffle(texts)
    return texts[:limit], ", ".join(sources)


PYTHON_DOCS_SOURCE = ("Python's documentation (the Language Reference topics behind help(), pydoc_data.topics, and the "
                      "standard library's docstrings) read from this Python's own install; (c) Python Software "
                      "Foundation, PSF License Agreement (copying and redistribution permitted with its notice)")
PYTHON_DOCS_HELD_OUT = 1000  # sentences kept out of training: the fidelity measure when there is no STS-B


def python_docs_sentences() -> list[str]:
    """Real English prose that needs no download and may lawfully ship (PYTHON_DOCS_SOURCE), split into sentences:
    about 15,000 from CPython 3.11. Code, grammar rules and tables are left out by requiring mostly letters. The
    splitter is a regular expression: a tokenizer library (nltk's punkt) would need a data download. Sentences
    start with a capital letter: a docstring's first words are often a parameter's name, which reads as code."""
    import ast
    import re
    import sysconfig

    documents = []
    try:
        import pydoc_data.topics

        documents += pydoc_data.topics.topics.values()
    except ImportError:  # some distributions split it out; the docstrings below still count
        pass
    skipped = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    for folder, subfolders, files in os.walk(sysconfig.get_paths()["stdlib"]):
        subfolders[:] = sorted(d for d in subfolders if d not in skipped)
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            try:
                tree = ast.parse(Path(folder, name).read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):  # test fixtures with deliberate errors
                continue
            documents += [doc for node in ast.walk(tree)
                          if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                          and (doc := ast.get_docstring(node))]
    sentences = []
    for document in documents:
        for paragraph in re.split(r"\n\s*\n", document):
            paragraph = " ".join(line.strip() for line in paragraph.splitlines())
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z\"(])", paragraph):
                sentence = re.sub(r"^[*-]\s+", "", sentence).replace("**", "")  # list bullets, reST emphasis
                prose = sum(c.isalpha() or c in " ,." for c in sentence) > 0.9 * len(sentence)
                if (6 <= len(sentence.split()) <= 60 and sentence[0].isupper() and sentence[-1] in ".!?"
                        and prose):
                    sentences.append(sentence)
    return list(dict.fromkeys(sentences))


def python_docs_split(limit: int, seed: int) -> tuple[list[str], list[str]]:
    """(training sentences, held-out sentences) of Python's documentation, shuffled with `seed`."""
    import random

    sentences = python_docs_sentences()
    if len(sentences) < 2 * PYTHON_DOCS_HELD_OUT:
        raise ValueError(f"this Python install has only {len(sentences)} sentences of documentation (its standard "
                         "library sources or pydoc_data are missing), too few to distil on: point compact at GLUE "
                         "data instead (--glue-dir DIR in the classic glue_data layout).")
    random.Random(seed).shuffle(sentences)
    return sentences[PYTHON_DOCS_HELD_OUT:][:limit], sentences[:PYTHON_DOCS_HELD_OUT]


def sts_pairs(glue_dir: str | None):
    """STS-B dev (sentence1, sentence2, score)."""
    from .glue import load_glue

    dev = load_glue("stsb", glue_dir)["validation"]
    return list(dev["sentence1"]), list(dev["sentence2"]), list(dev["label"])


def distil_student(teacher_source: str, texts: list[str], out: Path, layers: int, epochs: float, batch_size: int,
                   learning_rate: float, max_length: int, seed: int) -> Path:
    """Step 1: the shallower student distilled on `texts`; returns its folder (skipped when it exists)."""
    import datasets
    from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from .auto import AutoCompactModel
    from .hat import SearchSpace
    from .io import save_pretrained_atomic
    from .shrink import shrink
    from .trainer import CompactTrainer

    folder = out / "student"
    if (folder / "config.json").is_file():
        return folder
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(teacher_source)
    teacher = AutoCompactModel.from_pretrained(teacher_source).eval()
    total = teacher.config.num_hidden_layers
    if not 1 <= layers <= total:
        raise ValueError(f"layers={layers}: the model has {total}; keep between 1 and {total}.")
    keep = SearchSpace.from_model(teacher.config).layers_for(layers)  # HAT's spread selection
    student = shrink(AutoCompactModel.from_pretrained(teacher_source), layers=[i for i in range(total) if i not in keep])
    rows = datasets.Dataset.from_dict({"text": texts}).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_length), batched=True, remove_columns=["text"])
    args = TrainingArguments(
        str(out / "checkpoints"), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, warmup_steps=0.1, weight_decay=0.01, save_strategy="steps", save_steps=200,
        save_total_limit=1, logging_steps=50, report_to=[], use_cpu=not torch.cuda.is_available(), seed=seed,
        train_sampling_strategy="group_by_length", remove_unused_columns=False)
    trainer = CompactTrainer(model=student, args=args, train_dataset=rows, hooks=[EmbeddingDistillationHook(teacher)],
                             data_collator=DataCollatorWithPadding(tokenizer))
    interrupted = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
    trainer.train(resume_from_checkpoint=True if interrupted else None)
    save_pretrained_atomic(tokenizer, folder)
    save_pretrained_atomic(trainer.model, folder)  # config.json last: a restart skips this step only when it is there
    return folder


def ship_embeddings(student: Path, out: Path, texts: list[str], max_length: int) -> Path:
    """Step 2: int8 model.onnx + model.ort, the PyTorch weights and the sentence-transformers files in OUT/model."""
    import shutil
    import tempfile

    from .auto import AutoCompactModel
    from .export import export_model
    from .modeling import CompactBertConfig
    from .quant import Int8Config, quantize_folder

    folder = out / "model"
    if (folder / "modules.json").is_file():
        return folder
    with tempfile.TemporaryDirectory() as scratch:
        export_model(AutoCompactModel.from_pretrained(student).eval(), scratch, tokenizer_source=student, mobile=False)
        quantize_folder(scratch, folder, Int8Config(), texts=texts[:256], max_length=max_length, mobile=True)
    shutil.copyfile(student / "model.safetensors", folder / "model.safetensors")  # what sentence-transformers loads
    hidden = CompactBertConfig.from_pretrained(student).hidden_size
    write_json(folder / "1_Pooling" / "config.json", {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True})
    (folder / "2_Normalize").mkdir(exist_ok=True)
    for name, content in SENTENCE_TRANSFORMERS_FILES.items():  # modules.json last: a restart skips this step on it
        if name == "sentence_bert_config.json":  # sentence-transformers truncates where compact's runtime does
            content = {**content, "max_seq_length": max_length}
        write_json(folder / name, content)
    return folder


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


def _ort_embedder(path: Path, threads: int):
    """batch -> normalized mean-pooled embeddings, from a graph whose first output is last_hidden_state."""
    import onnxruntime as ort

    from .modeling import mean_pool
    from .runtime import session_options

    session = ort.InferenceSession(str(path), session_options(threads, spinning=False),
                                   providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def embed(batch):
        feed = {k: np.asarray(v, dtype=np.int64) for k, v in batch.items() if k in names}
        states = torch.from_numpy(session.run(None, feed)[0])
        return F.normalize(mean_pool(states, torch.as_tensor(np.asarray(batch["attention_mask"]))), dim=-1)

    return embed


def _torch_embedder(model):
    from .modeling import mean_pool

    def embed(batch):
        states = model(**{k: torch.as_tensor(v) for k, v in batch.items()}).last_hidden_state
        return F.normalize(mean_pool(states, torch.as_tensor(batch["attention_mask"])), dim=-1)

    return embed


def measure(original: str, shipped: Path, student: Path, sentences: list[str], text: str, max_length: int,
            pairs: tuple | None = None, examples: int = 300, threads=(1, 2)) -> dict:
    """Step 3 (module docstring): fidelity and latency of every row, side by side, on `sentences` (named `text`);
    `pairs` = (first sentences, second sentences, gold scores) adds the Spearman of their cosine."""
    import tempfile

    from transformers import AutoTokenizer

    from .auto import AutoCompactModel
    from .compare import peers, real_length_latency
    from .convert import to_hf_model
    from .export import export_model
    from .ship import machine, versions

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
        embedders = {"original, PyTorch fp32 (transformers BertModel)": _torch_embedder(original_model),
                     **{name: _ort_embedder(path, 2) for name, path in files.items()},
                     "compact: distilled student, PyTorch fp32": _torch_embedder(student_model)}
        embeddings = {name: encode_all(embed, tokenizer, sentences, max_length) for name, embed in embedders.items()}
        reference = embeddings["original, PyTorch fp32 (transformers BertModel)"]
        rows = {}
        index = {s: i for i, s in enumerate(sentences)}
        for name, values in embeddings.items():
            rows[name] = {"mean_cosine_to_original": round(float((values * reference).sum(-1).mean()), 4),
                          "min_cosine_to_original": round(float((values * reference).sum(-1).min()), 4)}
            if pairs is not None:
                first, second, scores = pairs
                a, b = values[[index[s] for s in first]], values[[index[s] for s in second]]
                rows[name]["stsb_spearman"] = round(spearman_of_cosine(a, b, scores), 2)
        sizes = {name: round(path.stat().st_size / 2**20, 2) for name, path in files.items()}
        inputs = [{k: v.numpy() for k, v in tokenizer(s, truncation=True, max_length=max_length,
                                                       return_tensors="pt").items()} for s in sentences[:examples]]
        timed = {name: embedder for name, embedder in embedders.items() if "student" not in name}
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            callers = {name: (_ort_embedder(files[name], n_threads) if name in files else embedder)
                       for name, embedder in timed.items()}
            with torch.inference_mode():
                for name, stats in real_length_latency(callers, {name: inputs for name in callers}).items():
                    rows[name][f"real_{n_threads}t"] = stats
        for name, size in sizes.items():
            rows[name]["size_mb"] = size
    return {"original": original, "text": text, "sentences": len(sentences),
            "timed_sentences": len(inputs), "mean_tokens": round(float(np.mean([x["input_ids"].shape[1]
                                                                              for x in inputs])), 1),
            "threads": list(threads), "rows": rows, "machine": machine(), "versions": versions()}


def sentence_transformers_check(folder: Path, sentences: list[str], max_length: int) -> dict:
    """Load the shipped folder with sentence-transformers and compare its embeddings with compact's own: the PyTorch
    weights (the same function: max abs difference) and the int8 model.ort that ships (mean and min cosine)."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from .auto import AutoCompactModel

    loaded = SentenceTransformer(str(folder), device="cpu")
    theirs = loaded.encode(sentences, convert_to_numpy=True, normalize_embeddings=False)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ours = encode_all(_torch_embedder(AutoCompactModel.from_pretrained(folder).eval()), tokenizer, sentences, max_length)
    shipped = encode_all(_ort_embedder(folder / "model.ort", 2), tokenizer, sentences, max_length)
    cosine = (theirs * shipped).sum(-1)
    return {"sentences": len(sentences), "max_abs_diff_vs_compact_pytorch": float(np.abs(theirs - ours).max()),
            "mean_cosine_vs_shipped_ort": round(float(cosine.mean()), 4),
            "min_cosine_vs_shipped_ort": round(float(cosine.min()), 4)}


def compress_embeddings(out: str | os.PathLike, model: str = "sentence-transformers/all-MiniLM-L6-v2",
                        glue_dir: str | None = None, layers: int = 4, texts: int = 40000, epochs: float = 1.0,
                        batch_size: int = 64, learning_rate: float = 1e-4, max_length: int = 128,
                        seed: int = 1, text: str = "glue") -> dict:
    """The whole job (module docstring); returns the report, also written to OUT/report.{json,md}. `max_length` is
    held to what the model's position embeddings cover. `text`: "glue"
    (GLUE training text, STS-B dev fidelity) or "python-docs" (offline: Python's documentation, held-out fidelity)."""
    from .pretrained import resolve_checkpoint

    out = Path(out)
    started = time.perf_counter()
    source = str(resolve_checkpoint(model))
    from .auto import AutoCompactModel

    max_length = min(max_length, AutoCompactModel.from_pretrained(source).config.max_sequence_length)
    if text == "glue":
        train, text_source = training_texts(glue_dir, texts, seed)
        first, second, scores = sts_pairs(glue_dir)
        pairs, sentences, text_name = (first, second, scores), list(dict.fromkeys(first + second)), "STS-B dev"
    elif text == "python-docs":
        train, sentences = python_docs_split(texts, seed)
        pairs, text_source, text_name = None, PYTHON_DOCS_SOURCE, "held-out Python documentation"
    else:
        raise ValueError(f"text must be 'glue' or 'python-docs', got {text!r}.")
    student = distil_student(source, train, out, layers, epochs, batch_size, learning_rate, max_length, seed)
    shipped = ship_embeddings(student, out, train, max_length)
    report = measure(source, shipped, student, sentences, text_name, max_length, pairs=pairs)
    check = sentences[:200]
    report.update(model=model, layers=layers, training_text=text_source, training_sentences=len(train),
                  epochs=epochs, sentence_transformers=sentence_transformers_check(shipped, check, max_length),
                  wall_minutes=round((time.perf_counter() - started) / 60, 1))
    write_json(out / "report.json", report)
    write_text(out / "report.md", markdown(report))
    return report


def markdown(report: dict) -> str:
    rows = report["rows"]
    original = next(n for n in rows if n.startswith("original, ORT"))
    first = f"real_{report['threads'][0]}t"
    spearman = any("stsb_spearman" in r for r in rows.values())
    lines = [
        f"# Compressed sentence embeddings: {report['model']}",
        "",
        f"Student: {report['layers']} layers distilled on {report['training_sentences']} unlabelled sentences "
        f"({report['training_text']}), {report['epochs']} epoch(s); shipped as int8 model.ort. Fidelity on "
        f"{report['sentences']} {report['text']} sentences. Latency: batch 1, median (p90) ms on the first "
        f"{report['timed_sentences']} of them at their real lengths ({report['mean_tokens']} tokens on average, "
        f"unpadded), every sentence on every row back to back. Machine: {report['machine']['platform']}, "
        f"{report['machine']['cores']} cores.",
        "",
        *([] if spearman else ["No STS-B here, so no STS-B Spearman: fidelity is the cosine between the original's "
                               "and each row's embeddings of sentences the student never trained on.", ""]),
        "| row | " + ("STS-B dev Spearman (cosine) | " if spearman else "") + "mean cosine to the original | MB | "
        + " | ".join(f"real, {t} thread(s)" for t in report["threads"]) + f" | x faster than {original} |",
        "|---|" + ("---|" if spearman else "") + "---|---|" + "---|" * len(report["threads"]) + "---|",
    ]
    for name, r in rows.items():
        cells = [f"{r[f'real_{t}t']['median_ms']} ({r[f'real_{t}t']['p90_ms']})" if f"real_{t}t" in r else "-"
                 for t in report["threads"]]
        speed = (f"{rows[original][first]['median_ms'] / r[first]['median_ms']:.2f}x" if first in r else "-")
        lines.append(f"| {name} | " + (f"{r['stsb_spearman']:.2f} | " if spearman else "")
                     + f"{r['mean_cosine_to_original']:.4f} | {r.get('size_mb', '-')} | " + " | ".join(cells)
                     + f" | {speed} |")
    st = report["sentence_transformers"]
    lines += ["", f"sentence-transformers loads the shipped folder: on {st['sentences']} sentences its embeddings differ "
                  f"from compact's PyTorch model by at most {st['max_abs_diff_vs_compact_pytorch']:.1e}, and their "
                  f"cosine with the int8 model.ort that ships is {st['mean_cosine_vs_shipped_ort']} on average "
                  f"(min {st['min_cosine_vs_shipped_ort']}).", ""]
    return "\n".join(lines)

"""The text `compact embed` distils on and measures with (compact_nlp.embeddings): GLUE's training text with STS-B dev
pairs, Python's own documentation with held-out sentences, or the user's own text with held-out sentences."""

from __future__ import annotations

import ast
import os
import random
import re
import sysconfig
from pathlib import Path

from .data import DataError
from .data.sources import describe, read_source, split_of
from .glue import GLUE_DIR_ENV, GlueDataError, get_task, load_glue

PYTHON_DOCS_SOURCE = ("Python's documentation (the Language Reference topics behind help(), pydoc_data.topics, and the "
                      "standard library's docstrings) read from this Python's own install; (c) Python Software "
                      "Foundation, PSF License Agreement (copying and redistribution permitted with its notice)")
PYTHON_DOCS_HELD_OUT = 1000  # sentences kept out of training: the fidelity measure when there is no STS-B
HELD_OUT_FRACTION_BELOW = 10 * PYTHON_DOCS_HELD_OUT  # own text with fewer sentences holds out a tenth of them
OWN_TEXT_MINIMUM = 20  # distinct sentences: a held-out tenth of at least 2


def training_texts(glue_dir: str | None, limit: int | None, seed: int) -> tuple[list[str], str]:
    """Unlabelled sentences to distil on, never STS-B dev: the train splits of STS-B, SST-2, MRPC and CoLA that are
    reachable. Returns (texts, where they came from)."""
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


def sts_pairs(glue_dir: str | None):
    """STS-B dev (sentence1, sentence2, score)."""
    dev = load_glue("stsb", glue_dir)["validation"]
    return list(dev["sentence1"]), list(dev["sentence2"]), list(dev["label"])


def _stdlib_docstrings() -> list[str]:
    documents = []
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
    return documents


def python_docs_sentences() -> list[str]:
    """Real English prose that needs no download and may lawfully ship (PYTHON_DOCS_SOURCE), split into sentences:
    about 15,000 from CPython 3.11. Code, grammar rules and tables are left out by requiring mostly letters. The
    splitter is a regular expression: a tokenizer library (nltk's punkt) would need a data download. Sentences
    start with a capital letter: a docstring's first words are often a parameter's name, which reads as code."""
    documents = []
    try:
        import pydoc_data.topics

        documents += pydoc_data.topics.topics.values()
    except ImportError:  # some distributions split it out; the docstrings below still count
        pass
    documents += _stdlib_docstrings()
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


def held_out_split(sentences: list[str], held_out: int, limit: int, seed: int) -> tuple[list[str], list[str]]:
    """(training sentences, held-out sentences): `sentences` shuffled with `seed`, the first `held_out` kept out of
    training, at most `limit` of the rest to train on."""
    sentences = list(sentences)
    random.Random(seed).shuffle(sentences)
    return sentences[held_out:][:limit], sentences[:held_out]


def python_docs_split(limit: int, seed: int) -> tuple[list[str], list[str]]:
    """(training sentences, held-out sentences) of Python's documentation, shuffled with `seed`."""
    sentences = python_docs_sentences()
    if len(sentences) < 2 * PYTHON_DOCS_HELD_OUT:
        raise ValueError(f"this Python install has only {len(sentences)} sentences of documentation (its standard "
                         "library sources or pydoc_data are missing), too few to distil on: point compact at GLUE "
                         "data instead (--glue-dir DIR in the classic glue_data layout).")
    return held_out_split(sentences, PYTHON_DOCS_HELD_OUT, limit, seed)


def _is_text(feature) -> bool:
    return getattr(feature, "dtype", None) in ("string", "large_string")


def _kind(feature) -> str:
    return "text" if _is_text(feature) else getattr(feature, "dtype", type(feature).__name__)


def text_column(data, column: str | None, source) -> str:
    """The column of `data` (a datasets.Dataset) to read sentences from: `column` when given, else its only string
    column; a DataError that lists the columns otherwise."""
    columns = ", ".join(f"{name} ({_kind(feature)})" for name, feature in data.features.items())
    if column is not None:
        if column not in data.column_names:
            raise DataError(f"{describe(source)} has no column {column!r}; its columns: {columns}.")
        if not _is_text(data.features[column]):
            raise DataError(f"column {column!r} of {describe(source)} is not text; its columns: {columns}.")
        return column
    texts = [name for name, feature in data.features.items() if _is_text(feature)]
    if len(texts) != 1:
        found = "no text column" if not texts else f"{len(texts)} text columns"
        raise DataError(f"{describe(source)} has {found}; name the one to distil on with text_column= "
                        f"(--text-column). Its columns: {columns}.")
    return texts[0]


def source_sentences(source, column: str | None = None) -> tuple[list[str], str]:
    """The distinct, non-empty sentences of one column of the user's text (a file, a saved dataset folder, a hub id
    or a datasets object, as compact_nlp.data.load_task_data takes), in their order; and the column's name."""
    data = split_of(read_source(source, "train"), "train", source)
    column = text_column(data, column, source)
    sentences = [s.strip() for s in data[column] if isinstance(s, str) and s.strip()]
    return list(dict.fromkeys(sentences)), column


def source_split(source, column: str | None, limit: int, seed: int) -> tuple[list[str], list[str], str]:
    """(training sentences, held-out sentences, the column read) of the user's own text: shuffled with `seed`, 1,000
    held out (a tenth when there are fewer than 10,000) as Python's documentation is."""
    sentences, column = source_sentences(source, column)
    if len(sentences) < OWN_TEXT_MINIMUM:
        raise DataError(f"{describe(source)} has {len(sentences)} distinct sentences in column {column!r}; compact "
                        f"embed needs at least {OWN_TEXT_MINIMUM} (a tenth is held out to measure fidelity).")
    held_out = (PYTHON_DOCS_HELD_OUT if len(sentences) >= HELD_OUT_FRACTION_BELOW else len(sentences) // 10)
    train, held = held_out_split(sentences, held_out, limit, seed)
    return train, held, column

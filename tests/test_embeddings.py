"""`compact embed` on your own text: which column is read, what is held out to measure fidelity, and the errors that
name the fix (no training: the split is checked before any model is loaded)."""

import csv
from pathlib import Path

import datasets
import pytest

from compact_nlp.data import DataError
from compact_nlp.embeddings import job_texts
from compact_nlp.embeddings_text import OWN_TEXT_MINIMUM, source_sentences, source_split

SST2_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue_data" / "SST-2" / "train.tsv"
SAMPLE = Path(__file__).resolve().parents[1] / "compact_nlp" / "data" / "sample_sentences.txt"


def real_sentences(count: int = 300) -> list[str]:
    """Real English: SST-2's first training sentences when the shared GLUE copy is here, else compact's samples."""
    if SST2_TRAIN.is_file():
        with SST2_TRAIN.open(encoding="utf-8") as rows:
            return [row["sentence"].strip() for _, row in zip(range(count), csv.DictReader(rows, delimiter="\t",
                                                                                            quoting=csv.QUOTE_NONE))]
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")][:count]


@pytest.fixture
def own_text(tmp_path) -> tuple[Path, list[str]]:
    """A CSV of real sentences with a numeric column beside them, one sentence twice and one row without text."""
    sentences = real_sentences()
    path = tmp_path / "my_sentences.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "text"])
        writer.writerows([(i, s) for i, s in enumerate(sentences)] + [(len(sentences), sentences[0]),
                                                                      (len(sentences) + 1, "")])
    return path, list(dict.fromkeys(sentences))


def test_own_text_holds_out_a_tenth_and_trains_on_the_rest(own_text):
    path, sentences = own_text
    chosen = job_texts(str(path), None, None, limit=10**6, seed=1)  # the one string column is found by itself
    train, held_out = chosen["train"], chosen["sentences"]
    assert len(held_out) == len(sentences) // 10 and not set(train) & set(held_out)
    assert sorted(train + held_out) == sorted(sentences)  # empty and repeated sentences dropped, nothing else
    assert chosen["pairs"] is None
    assert chosen["source"] == "my_sentences.csv, column text" and chosen["name"] == "held-out my_sentences.csv"
    assert str(path.parent) not in chosen["source"] + chosen["name"]  # a file name, never a local path
    again = job_texts(str(path), "text", None, limit=10, seed=1)
    assert again["train"] == train[:10] and again["sentences"] == held_out  # seeded and stable, as python-docs
    other = job_texts(str(path), "text", None, limit=10**6, seed=2)["sentences"]
    assert other != held_out and len(other) == len(held_out)


def test_a_large_text_holds_out_a_thousand_sentences():
    texts = [f"Sentence number {i} of the corpus." for i in range(12_000)]
    train, held_out, column = source_split(datasets.Dataset.from_dict({"line": texts}), None, 10**6, seed=1)
    assert column == "line" and len(held_out) == 1000 and len(train) == 11_000


def test_the_text_column_must_exist_be_text_and_be_chosen_when_there_are_several(own_text, tmp_path):
    path, sentences = own_text
    with pytest.raises(DataError, match=r"my_sentences.csv has no column 'sentence'; its columns: id \(int64\), "
                                        r"text \(text\)"):
        source_sentences(str(path), "sentence")
    with pytest.raises(DataError, match="column 'id' of my_sentences.csv is not text"):
        source_sentences(str(path), "id")
    two = datasets.Dataset.from_dict({"title": sentences, "body": sentences[::-1]})
    with pytest.raises(DataError, match=r"2 text columns; name the one to distil on with text_column=.*title \(text\), "
                                        r"body \(text\)"):
        job_texts(two, None, None, limit=100, seed=1)
    assert source_sentences(two, "body") == (sentences[::-1], "body")
    numbers = datasets.Dataset.from_dict({"label": list(range(50))})
    with pytest.raises(DataError, match="no text column"):
        source_sentences(numbers)
    with pytest.raises(DataError, match=f"needs at least {OWN_TEXT_MINIMUM}"):
        source_split(datasets.Dataset.from_dict({"text": sentences[:5]}), None, 100, seed=1)
    with pytest.raises(DataError, match="no such file or folder"):
        job_texts(str(tmp_path / "missing.csv"), None, None, limit=100, seed=1)

"""Task data from the user's files: real GLUE rows reshaped as user files (other column names, string labels, other
formats; read through compact_nlp.data, never the GLUE loader), metrics by problem type, and one-line errors for
bad data that leave nothing behind."""

import json

import datasets
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import f1_score

from compact_nlp.cli import main
from compact_nlp.data import DataError, glue_task_data, load_task_data
from compact_nlp.glue import load_glue
from compact_nlp.metrics import compute_metrics
from conftest import GLUE_DIR, requires_glue

SST2_NAMES = ("negative", "positive")
MRPC_NAMES = ("not_equivalent", "equivalent")


def sst2_csv(folder, rows: int = 400):
    """SST-2 training rows as a user's review file: columns review/sentiment, labels as words."""
    train = load_glue("sst2", GLUE_DIR)["train"].select(range(rows))
    path = folder / "reviews.csv"
    pd.DataFrame({"review": train["sentence"], "sentiment": [SST2_NAMES[i] for i in train["label"]]}).to_csv(
        path, index=False)
    return path, train


def stsb_bins(scores) -> list[str]:
    """A derived 3-class task: STS-B similarity binned into low (< 2), medium (< 4) and high."""
    return ["low" if s < 2 else "medium" if s < 4 else "high" for s in scores]


@requires_glue
@pytest.mark.real_data
def test_sst2_as_a_csv_with_string_labels_and_its_own_column_names(tmp_path):
    path, train = sst2_csv(tmp_path)
    data = load_task_data(path, text="review", label="sentiment")
    spec = data.spec
    assert (spec.text_columns, spec.label_names, spec.problem_type) == (("review",), SST2_NAMES,
                                                                       "single_label_classification")
    assert spec.source == "reviews.csv" and spec.name == "reviews" and spec.glue is None
    assert spec.main_metric == "accuracy" and spec.metrics == ("accuracy", "macro_f1")
    # no validation file: 10% of train carved with a fixed seed, and the notes say so
    assert (len(data.splits["train"]), len(data.splits["validation"])) == (360, 40)
    assert any("carved from train" in note for note in data.notes)
    again = load_task_data(path, text="review", label="sentiment")
    assert again.splits["validation"]["idx"] == data.splits["validation"]["idx"]
    # every row kept its text and its label, as ids of the sorted label names
    by_text = dict(zip(train["sentence"], train["label"]))
    for split in data.splits.values():
        assert all(by_text[t] == label for t, label in zip(split["review"], split["label"]))
    # the model learns the user's names: pipeline() returns them
    assert data.spec.model_labels()["id2label"] == {0: "negative", 1: "positive"}


@requires_glue
@pytest.mark.real_data
def test_mrpc_as_jsonl_sentence_pairs_with_a_validation_file(tmp_path):
    glue = load_glue("mrpc", GLUE_DIR)
    for split, name in (("train", "train.jsonl"), ("validation", "dev.jsonl")):
        rows = glue[split]
        pd.DataFrame({"first": rows["sentence1"], "second": rows["sentence2"],
                      "paraphrase": [MRPC_NAMES[i] for i in rows["label"]]}).to_json(
            tmp_path / name, orient="records", lines=True)
    data = load_task_data(tmp_path / "train.jsonl", tmp_path / "dev.jsonl", label="paraphrase")
    assert data.spec.text_columns == ("first", "second")  # inferred: the two text columns
    assert data.spec.label_names == ("equivalent", "not_equivalent")  # sorted: ids differ from GLUE's, names agree
    assert (len(data.splits["train"]), len(data.splits["validation"])) == (3668, 408)
    dev = data.splits["validation"]
    assert [data.spec.label_names[i] for i in dev["label"]] == [MRPC_NAMES[i] for i in glue["validation"]["label"]]


@requires_glue
@pytest.mark.real_data
def test_stsb_as_a_regression_csv_scored_by_spearman(tmp_path):
    train = load_glue("stsb", GLUE_DIR)["train"]
    pd.DataFrame({"a": train["sentence1"], "b": train["sentence2"], "similarity": train["label"]}).to_csv(
        tmp_path / "sts.csv", index=False)
    data = load_task_data(tmp_path / "sts.csv", label="similarity")
    assert data.spec.problem_type == "regression" and data.spec.label_names is None
    assert data.spec.main_metric == "spearmanr" and data.spec.model_labels()["num_labels"] == 1
    gold = np.asarray(data.splits["validation"]["label"])
    noisy = gold + np.random.default_rng(0).normal(0, 1, len(gold))
    scores = compute_metrics(data.spec, noisy.reshape(-1, 1), gold)
    assert scores["spearmanr"] == pytest.approx(spearmanr(noisy, gold)[0])


@requires_glue
@pytest.mark.real_data
def test_a_three_class_parquet_derived_from_stsb(tmp_path):
    train = load_glue("stsb", GLUE_DIR)["train"]
    pd.DataFrame({"premise": train["sentence1"], "hypothesis": train["sentence2"],
                  "label": stsb_bins(train["label"])}).to_parquet(tmp_path / "sts3.parquet")
    data = load_task_data(tmp_path / "sts3.parquet")
    assert data.spec.label_names == ("high", "low", "medium") and data.spec.num_labels == 3
    labels = np.asarray(data.splits["validation"]["label"])
    logits = np.eye(3)[np.roll(labels, 1)]
    scores = compute_metrics(data.spec, logits, labels)
    assert scores["macro_f1"] == pytest.approx(f1_score(labels, logits.argmax(-1), average="macro"))


@requires_glue
@pytest.mark.real_data
def test_a_datasets_object_through_the_python_api():
    glue = load_glue("rte", GLUE_DIR)
    names = ("entailment", "not_entailment")
    given = datasets.DatasetDict({split: datasets.Dataset.from_dict({
        "claim": glue[split]["sentence1"], "evidence": glue[split]["sentence2"],
        "verdict": [names[i] for i in glue[split]["label"]]}) for split in ("train", "validation")})
    data = load_task_data(given, text=["claim", "evidence"], label="verdict")
    assert data.spec.source == "a datasets.DatasetDict object"
    assert (len(data.splits["train"]), len(data.splits["validation"])) == (2490, 277)
    assert data.splits["validation"]["label"] == glue["validation"]["label"]


@requires_glue
@pytest.mark.real_data
def test_glue_by_name_is_one_source_among_the_others():
    data = glue_task_data("mrpc", GLUE_DIR)
    assert data.spec.glue == "mrpc" and data.spec.main_metric == "combined_score"
    assert data.spec.source == "GLUE MRPC" and data.spec.hub_dataset == "nyu-mll/glue"


def test_multi_label_lists_become_multi_hot_rows_and_f1(tmp_path):
    rows = [{"text": f"row {i}", "tags": [["a"], ["b"], ["a", "c"], ["b", "c"]][i % 4]} for i in range(40)]
    (tmp_path / "tags.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = load_task_data(tmp_path / "tags.jsonl", label="tags")
    assert data.spec.problem_type == "multi_label_classification" and data.spec.label_names == ("a", "b", "c")
    first = data.splits["train"][0]
    assert sorted(first) == ["idx", "label", "text"] and len(first["label"]) == 3
    labels = np.asarray(data.splits["validation"]["label"])
    scores = compute_metrics(data.spec, np.where(labels > 0, 3.0, -3.0), labels)
    assert scores == {"micro_f1": 1.0, "macro_f1": 1.0}


def write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("content, kwargs, message", [
    ("", {}, "is empty"),
    ("review,label\n", {}, "has a header but no rows"),
    ("review,label\nfine,good\nokay,good\n", {}, "every row has the label 'good'"),
    ("review,label\nfine,good\nokay,\nbad,bad\n", {}, r"1 row\(s\) have no 'label' \(first: data row 2\)"),
    ("review,label\nfine,good\n", {"label": "stars"}, r"no column 'stars' \(--label-column\); its columns are review"),
    ("review,label\nfine,good\n", {"text": "body"}, r"no column 'body' \(--text-column\)"),
    ("a,b,c,label\nx,y,z,1\n", {}, "cannot tell which of a, b, c hold the text"),
    ("review,stars\nfine,5\n", {}, "no label column found among review, stars"),
    ("caf\xe9,label\n".encode("latin-1"), {}, r"is not UTF-8 \(byte 0xe9 on line 1\)"),
])
def test_bad_files_get_one_line_that_names_the_fix(tmp_path, content, kwargs, message):
    path = write(tmp_path / "data.csv", content)
    with pytest.raises(DataError, match=message):
        load_task_data(path, **kwargs)


def test_mixed_label_kinds_and_unseen_validation_labels(tmp_path):
    mixed = write(tmp_path / "mixed.jsonl", '{"text": "a", "label": "good"}\n{"text": "b", "label": 3}\n')
    with pytest.raises(DataError):  # pyarrow refuses a column of two types; either way, one line naming the file
        load_task_data(mixed)
    train = write(tmp_path / "train.csv", "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(20)))
    dev = write(tmp_path / "dev.csv", "text,label\nx,a\ny,c\n")
    with pytest.raises(DataError, match=r"label\(s\) 'c' in 'label' never occur in train \(train has a, b\)"):
        load_task_data(train, dev)
    with pytest.raises(DataError, match="no such file or folder"):
        load_task_data(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="unknown format .xlsx"):
        load_task_data(write(tmp_path / "data.xlsx", "x"))


def test_the_cli_refuses_bad_data_before_anything_is_written(tmp_path, capsys):
    path = write(tmp_path / "data.csv", "review,sentiment\nfine,good\nokay,good\n")
    out = tmp_path / "out"
    status = main(["run", "--train", str(path), "--text-column", "review", "--label-column", "sentiment",
                   "--out", str(out)])
    error = capsys.readouterr().err.strip()
    assert status == 2 and "Traceback" not in error and error.splitlines()[-1].startswith("compact: error: train")
    assert "every row has the label 'good'" in error
    assert not out.exists()
    assert main(["run", "--text-column", "review"]) == 2
    assert "needs --train FILE" in capsys.readouterr().err


def test_a_multi_label_file_fine_tunes_ships_and_answers_with_its_label_names(tmp_path, tiny_tokenizer, capsys):
    import transformers as tf
    from transformers import pipeline

    from compact_nlp import AutoCompactModelForSequenceClassification
    from conftest import tiny_hf_config

    model = tmp_path / "tiny-bert"
    tf.AutoModel.from_config(tiny_hf_config("bert")).save_pretrained(model)
    tiny_tokenizer.save_pretrained(model)
    words = "good bad great dull charming boring funny sad warm cold".split()
    tags = [["plot"], ["acting"], ["plot", "acting"], ["music"]]
    rows = [{"text": f"{words[i % 10]} film {words[(i * 3) % 10]}", "tags": tags[i % 4]} for i in range(48)]
    (tmp_path / "tags.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    status = main(["run", "--train", str(tmp_path / "tags.jsonl"), "--label-column", "tags", "--model", str(model),
                   "--out", str(out), "--set", "protocol.epochs=1", "--set", "protocol.batch_size=8",
                   "--set", "protocol.max_length=16", "--set", "export.mobile=false"])
    assert status == 0, capsys.readouterr().err
    result = json.loads((out / "results.json").read_text())["per_seed"][0]
    assert set(result["dev"]["validation"]) == {"micro_f1", "macro_f1"}
    folder = out / "seed-1" / "model"
    onnx = AutoCompactModelForSequenceClassification.from_pretrained(folder, backend="onnxruntime")
    assert onnx.config.problem_type == "multi_label_classification"
    answer = pipeline("text-classification", model=onnx, tokenizer=str(folder), top_k=None)(["good film"])[0]
    assert {a["label"] for a in answer} == {"acting", "music", "plot"}  # the user's names, a sigmoid score each

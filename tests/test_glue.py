"""GLUE tasks, loaders (local glue_data layout and hub, same objects), metrics, held-out split and bad data."""


import time

import datasets
import numpy as np
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef

import compact_nlp.glue as glue
from compact_nlp.glue import (
    TASKS,
    GlueDataError,
    carve_heldout,
    carve_unseen_heldout,
    features,
    get_task,
    heldout_overlap,
    load_glue,
    read_split,
)
from compact_nlp.metrics import compute_glue_metrics, glue_metric, glue_score
from conftest import GLUE_DIR, requires_glue

def test_registry_covers_all_nine_tasks_with_hub_names():
    assert list(TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    assert get_task("SST-2") is TASKS["sst2"] and get_task("STS-B").is_regression
    assert TASKS["mnli"].dev_splits == ("validation_matched", "validation_mismatched")
    assert TASKS["mnli"].num_labels == 3 and TASKS["stsb"].num_labels == 1
    with pytest.raises(GlueDataError, match="unknown GLUE task 'squad'; the tasks are cola, sst2"):
        get_task("squad")


def test_mnli_and_qqp_in_the_real_format(glue_dir):
    mnli = load_glue("mnli", glue_dir)
    assert list(mnli) == ["train", "validation_matched", "validation_mismatched"]
    assert mnli["train"].features == features(TASKS["mnli"])
    assert mnli["train"][2] == {"premise": "A man is playing football.", "hypothesis": "Someone plays football.",
                                "label": 2, "idx": 2}
    assert mnli["validation_matched"][0]["premise"] == 'The cat sat "quietly" on the mat.'  # quotes kept as text
    qqp = load_glue("qqp", glue_dir)
    assert qqp["train"].features["label"].names == ["not_duplicate", "duplicate"]
    assert qqp["validation"]["label"] == [0, 1, 0, 1, 0, 1]


def test_the_environment_variable_points_at_the_data(glue_dir, monkeypatch):
    monkeypatch.setenv("COMPACT_GLUE_DIR", str(glue_dir))
    assert len(load_glue("qqp")["train"]) == 6


def test_hub_failure_says_how_to_use_local_data(monkeypatch):
    monkeypatch.delenv("COMPACT_GLUE_DIR", raising=False)
    real_probe = glue.hub_reachable

    def offline(*args, **kwargs):  # no test contacts a hub
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(glue, "hub_reachable", lambda: True)  # the endpoint answers but the download fails
    with pytest.raises(GlueDataError, match="could not load .*--glue-dir DIR or COMPACT_GLUE_DIR=DIR"):
        load_glue("sst2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(glue, "hub_reachable", real_probe)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    started = time.perf_counter()
    with pytest.raises(GlueDataError, match="not reachable from here.*--glue-dir DIR"):
        load_glue("sst2")
    assert time.perf_counter() - started < 5  # fails at once instead of retrying for minutes


def test_missing_file_malformed_row_and_bad_label(glue_dir):
    (glue_dir / "MNLI" / "dev_mismatched.tsv").unlink()
    with pytest.raises(GlueDataError, match="dev_mismatched.tsv is missing.*glue_data layout"):
        load_glue("mnli", glue_dir)
    lines = (glue_dir / "QQP" / "train.tsv").read_text().splitlines()
    (glue_dir / "QQP" / "train.tsv").write_text("\n".join(lines[:3] + ["7\t8\tHow do I?"] + lines[3:]))
    with pytest.raises(GlueDataError, match="train.tsv:4: expected 6 tab-separated fields, found 3"):
        load_glue("qqp", glue_dir)
    (glue_dir / "QQP" / "train.tsv").write_text("\n".join(lines[:2] + ["9\t1\t2\tA?\tB?\t2"]))
    with pytest.raises(GlueDataError, match="label '2' is outside qqp's labels"):
        load_glue("qqp", glue_dir)
    (glue_dir / "QQP" / "train.tsv").write_text("question\tanswer\n")
    with pytest.raises(GlueDataError, match="lacks a column"):
        load_glue("qqp", glue_dir)
    with pytest.raises(GlueDataError, match="does not exist"):
        load_glue("qqp", glue_dir / "nowhere")


@requires_glue
@pytest.mark.real_data
@pytest.mark.parametrize("task", ["cola", "sst2", "mrpc", "stsb", "rte", "wnli"])
def test_local_files_yield_the_official_sizes(task):
    data = load_glue(task, GLUE_DIR)
    assert {split: len(rows) for split, rows in data.items()} == TASKS[task].sizes
    assert data["train"].features == features(TASKS[task])


@requires_glue
@pytest.mark.real_data
def test_qnli_dev_yields_the_official_size():  # QNLI train is not available here
    task = TASKS["qnli"]
    assert len(read_split(task, GLUE_DIR, task.local["validation"])["label"]) == task.sizes["validation"]


def test_heldout_is_seeded_stratified_and_disjoint(glue_dir):
    mnli = load_glue("mnli", glue_dir)
    train = datasets.concatenate_datasets([mnli["train"]] * 10).map(lambda row, i: {"idx": i}, with_indices=True)
    a_train, a_held = carve_heldout(train, size=15, seed=3)
    b_train, b_held = carve_heldout(train, size=15, seed=3)
    assert a_held["idx"] == b_held["idx"] and len(a_held) == 15 and len(a_train) == 45
    assert not set(a_held["idx"]) & set(a_train["idx"])
    assert sorted(np.bincount(a_held["label"])) == [5, 5, 5]  # stratified by label
    assert carve_heldout(train, size=15, seed=4)[1]["idx"] != a_held["idx"]


def test_an_unseen_heldout_holds_whole_texts_and_drops_every_row_inside_them():
    sentences = [f"movie{i} was very good ." for i in range(12)]
    phrases = [f"movie{i} was" for i in range(12)] + ["very good .", "good", "movie1", "goodness"]
    train = datasets.Dataset.from_dict({"sentence": sentences + phrases, "label": [1] * 28})
    shuffled = train.shuffle(seed=0)
    pool, heldout = carve_unseen_heldout(shuffled, 4, ["sentence"])
    whole = set(sentences) | {"goodness"}  # inside no other row
    assert heldout["sentence"] == [t for t in shuffled["sentence"] if t in whole][:4]  # first in the seeded order

    def inside(row, texts):  # as whole words
        return any(f" {row} " in f" {text} " for text in texts)

    kept = set(pool["sentence"])
    dropped = set(train["sentence"]) - kept - set(heldout["sentence"])
    assert not any(inside(row, heldout["sentence"]) for row in kept)
    assert all(inside(row, heldout["sentence"]) for row in dropped) and {"very good .", "good"} <= dropped
    # this seed holds out movie10 or movie11 but not movie1: "movie1" stays, as a word inside none of them
    assert "movie1" in kept and any(t.startswith(("movie10 ", "movie11 ")) for t in heldout["sentence"])
    assert carve_unseen_heldout(shuffled, 4, ["sentence"])[1]["sentence"] == heldout["sentence"]  # seeded
    with pytest.raises(GlueDataError, match="only 13 training rows are whole texts.*lower protocol.heldout"):
        carve_unseen_heldout(shuffled, 14, ["sentence"])


def test_heldout_overlap_counts_heldout_rows_inside_training_rows():
    heldout = datasets.Dataset.from_dict({"sentence": ["a fine film ", "dull", "brand new words", "  "]})
    learned_from = ["it is a fine film .", "dull and slow", "words"]
    overlap = heldout_overlap(heldout, learned_from, "sentence")
    assert overlap == {"rows_checked": 3, "column": "sentence", "inside_training_rows": 66.7}  # blank rows skipped
    assert heldout_overlap(heldout, learned_from, "sentence", checked=1)["inside_training_rows"] == 100.0
    assert heldout_overlap(heldout, [], "sentence")["inside_training_rows"] == 0.0
    # rows are joined with newlines: a held-out row never matches across two training rows
    assert heldout_overlap(heldout, ["brand new", "words"], "sentence")["inside_training_rows"] == 0.0


@pytest.mark.slow
@requires_glue
@pytest.mark.real_data
def test_sst2_heldout_rows_are_mostly_phrases_of_training_rows_and_runs_warn():
    from compact_nlp.protocol import protocol_splits, seen_heldout, transfer_set
    from compact_nlp.recipe import load_recipe
    from compact_nlp.run import load_data

    recipe = load_recipe("recipes/glue/sst2.yaml", ["transfer=[rest_of_train]", "teacher=a-fine-tuned-model"])
    data = load_data(recipe, str(GLUE_DIR))
    splits, task = protocol_splits(recipe.protocol, data, 1), data.spec
    train, heldout = splits.train, splits.heldout
    with pytest.warns(UserWarning, match=r"held-out rows checked have their 'sentence' inside a training"):
        overlap = seen_heldout(task, heldout, train, None)
    assert overlap["inside_training_rows"] > 50  # SST-2 lists each sentence's phrases as rows of their own
    transfer = transfer_set(recipe.transfer, task, splits, str(GLUE_DIR), 1)
    with pytest.warns(UserWarning):
        assert seen_heldout(task, heldout, train, transfer)["inside_training_rows"] > 80  # the rest of train too
    assert heldout_overlap(data.splits["validation"], train["sentence"], "sentence")["inside_training_rows"] < 2


@pytest.mark.slow
@requires_glue
@pytest.mark.real_data
def test_sst2_unseen_heldout_is_whole_sentences_as_dev_is(recwarn):
    from compact_nlp.protocol import protocol_splits, seen_heldout, transfer_set
    from compact_nlp.recipe import load_recipe
    from compact_nlp.run import load_data

    recipe = load_recipe("recipes/glue/sst2.yaml", ["transfer=[rest_of_train]", "teacher=a-fine-tuned-model",
                                                    "protocol.heldout_unseen=true"])
    data = load_data(recipe, str(GLUE_DIR))
    splits, task = protocol_splits(recipe.protocol, data, 1), data.spec
    train, heldout = splits.train, splits.heldout
    assert (len(train), len(heldout)) == (18000, 2000)  # the protocol's sizes
    transfer = transfer_set(recipe.transfer, task, splits, str(GLUE_DIR), 1)
    assert seen_heldout(task, heldout, train, transfer)["inside_training_rows"] < 1  # was 89% (test above)
    assert not [w for w in recwarn if "held-out rows checked" in str(w.message)]

    def median_words(split):
        return float(np.median([len(text.split()) for text in split["sentence"]]))

    assert median_words(heldout) == median_words(data.splits["validation"]) == 19  # sentences, as dev holds

def test_metrics_per_task_match_scikit_learn_and_scipy():
    labels = np.array([0, 1, 1, 0, 1, 1, 0, 1])
    logits = np.array([[2, 1], [0, 3], [1, 0], [3, 1], [0, 2], [0, 5], [1, 2], [0, 1]], dtype=float)
    predictions = logits.argmax(-1)
    mrpc = compute_glue_metrics("mrpc", logits, labels)
    assert mrpc["f1"] == pytest.approx(f1_score(labels, predictions))
    assert mrpc["combined_score"] == pytest.approx((mrpc["accuracy"] + mrpc["f1"]) / 2)
    cola = compute_glue_metrics("cola", logits, labels)
    assert cola["matthews_correlation"] == pytest.approx(matthews_corrcoef(labels, predictions))
    assert compute_glue_metrics("sst2", logits, labels) == {"accuracy": 0.75}
    scores = np.array([0.0, 1.5, 3.0, 4.5, 5.0])
    stsb = compute_glue_metrics("stsb", (scores * 2 + 1).reshape(-1, 1), scores)
    assert stsb["pearson"] == pytest.approx(1.0) and stsb["spearmanr"] == pytest.approx(1.0)
    assert glue_metric("sst2") is glue_metric("sst2")  # loaded once per task


def test_glue_score_averages_tasks_and_mnli_halves():
    score = glue_score({"sst2": {"accuracy": 0.9}, "mrpc": {"accuracy": 0.8, "f1": 0.9, "combined_score": 0.85},
                        "mnli_matched": {"accuracy": 0.8}, "mnli_mismatched": {"accuracy": 0.7}})
    assert score == pytest.approx(100 * (0.9 + 0.85 + 0.75) / 3)

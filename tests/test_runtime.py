"""ONNX Runtime-backed models: same call and outputs as PyTorch, accepted by transformers pipelines."""

import gc

import numpy as np
import pytest
import torch
import transformers as tf
from transformers import pipeline

from compact_nlp import (
    AutoCompactModel,
    AutoCompactModelForSequenceClassification,
    ORTModelForFeatureExtraction,
    ORTModelForSequenceClassification,
    export_model,
)
from compact_nlp.convert import from_hf_model
from conftest import padded_batch, tiny_hf_config

TEXTS = ["a charming journey", "the film was very slow and the ending was dull", "best movie", "no"]


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory, tiny_tokenizer):
    config = tiny_hf_config("bert")
    config.num_labels = 2
    config.id2label, config.label2id = {0: "NEGATIVE", 1: "POSITIVE"}, {"NEGATIVE": 0, "POSITIVE": 1}
    model = from_hf_model(tf.AutoModelForSequenceClassification.from_config(config)).eval()
    folder = tmp_path_factory.mktemp("classifier")
    export_model(model, folder, tokenizer_source=tiny_tokenizer, mobile=True)
    return folder


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory, tiny_tokenizer):
    model = from_hf_model(tf.AutoModel.from_config(tiny_hf_config("bert"))).eval()
    folder = tmp_path_factory.mktemp("encoder")
    export_model(model, folder, tokenizer_source=tiny_tokenizer, mobile=True)
    return folder


def test_classification_pipeline_with_both_backends(classifier_folder, tiny_tokenizer, parity):
    torch_model = AutoCompactModelForSequenceClassification.from_pretrained(classifier_folder)
    fast = AutoCompactModelForSequenceClassification.from_pretrained(classifier_folder, backend="onnxruntime")
    assert isinstance(fast, ORTModelForSequenceClassification)
    expected = pipeline("text-classification", model=torch_model, tokenizer=tiny_tokenizer, top_k=None)(TEXTS)
    got = pipeline("text-classification", model=fast, tokenizer=tiny_tokenizer, top_k=None)(TEXTS)
    worst = 0.0
    for e, g in zip(expected, got):
        assert [x["label"] for x in e] == [x["label"] for x in g]
        assert {x["label"] for x in e} == {"NEGATIVE", "POSITIVE"}
        worst = max(worst, max(abs(a["score"] - b["score"]) for a, b in zip(e, g)))
    assert parity("bert", "text-classification pipeline scores, ORT vs PyTorch", worst) <= 1e-5


@pytest.mark.parametrize("file_name", ["model.onnx", "model.ort"])
def test_feature_extraction_pipeline_with_both_backends(encoder_folder, tiny_tokenizer, file_name, parity):
    torch_model = AutoCompactModel.from_pretrained(encoder_folder)
    fast = AutoCompactModel.from_pretrained(encoder_folder, backend="onnxruntime", file_name=file_name)
    assert isinstance(fast, ORTModelForFeatureExtraction)
    expected = pipeline("feature-extraction", model=torch_model, tokenizer=tiny_tokenizer)(TEXTS)
    got = pipeline("feature-extraction", model=fast, tokenizer=tiny_tokenizer)(TEXTS)
    worst = max(float(np.abs(np.array(e) - np.array(g)).max()) for e, g in zip(expected, got))
    assert parity("bert", f"feature-extraction pipeline, ORT ({file_name}) vs PyTorch", worst) <= 1e-4


def test_ort_file_runs_through_the_same_class(classifier_folder, tiny_tokenizer):
    fast = ORTModelForSequenceClassification.from_pretrained(classifier_folder, file_name="model.ort", threads=1)
    batch = tiny_tokenizer(TEXTS, padding=True, return_tensors="pt")
    reference = AutoCompactModelForSequenceClassification.from_pretrained(classifier_folder).eval()
    with torch.no_grad():
        expected = reference(**batch).logits
    assert torch.allclose(fast(**batch).logits, expected, atol=1e-5)
    numpy_logits = fast(**tiny_tokenizer(TEXTS, padding=True, return_tensors="np")).logits
    assert isinstance(numpy_logits, np.ndarray) and np.allclose(numpy_logits, expected.numpy(), atol=1e-5)


def test_same_outputs_as_pytorch_including_pooler_and_sentence_embedding(encoder_folder):
    reference = AutoCompactModel.from_pretrained(encoder_folder).eval()
    fast = AutoCompactModel.from_pretrained(encoder_folder, backend="onnxruntime")
    ids, mask = padded_batch(99, 0)
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask)
        embedding = reference.sentence_embedding(ids, mask, normalize=True)
    got = fast(ids, attention_mask=mask)
    assert torch.allclose(got.last_hidden_state, expected.last_hidden_state, atol=1e-5)
    assert torch.allclose(got.pooler_output, expected.pooler_output, atol=1e-5)
    assert torch.allclose(fast.sentence_embedding(ids, mask, normalize=True), embedding, atol=1e-5)


def test_export_on_the_fly_from_a_transformers_checkpoint(tmp_path, tiny_tokenizer):
    tf.AutoModel.from_config(tiny_hf_config("distilbert")).save_pretrained(tmp_path / "hf")
    with pytest.raises(FileNotFoundError, match="pass export=True"):
        AutoCompactModel.from_pretrained(tmp_path / "hf", backend="onnxruntime")
    fast = AutoCompactModel.from_pretrained(tmp_path / "hf", backend="onnxruntime", export=True)
    fast.save_pretrained(tmp_path / "saved")
    again = ORTModelForFeatureExtraction.from_pretrained(tmp_path / "saved")
    ids, mask = padded_batch(99, 0)
    assert torch.equal(fast(ids, attention_mask=mask).last_hidden_state, again(ids, attention_mask=mask).last_hidden_state)
    scratch = fast.model_path.parent
    del fast
    gc.collect()
    assert not scratch.exists()  # the export's temporary folder goes with the model, not left in /tmp


@pytest.mark.parametrize("input_ids, message", [
    (np.zeros((0, 4), dtype=np.int64), "empty batch"),
    (np.ones((1, 65), dtype=np.int64), "truncation=True, max_length=64"),
])
def test_bad_inputs_are_clear_errors(encoder_folder, input_ids, message):
    fast = ORTModelForFeatureExtraction.from_pretrained(encoder_folder)
    with pytest.raises(ValueError, match=message):
        fast(input_ids)


def test_runs_on_cpu_only(encoder_folder):
    fast = ORTModelForFeatureExtraction.from_pretrained(encoder_folder)
    assert fast.to("cpu") is fast
    with pytest.raises(ValueError, match="CPU execution provider"):
        fast.to("cuda")


def test_a_graph_loaded_with_the_wrong_task_names_the_right_class(classifier_folder, encoder_folder):
    with pytest.raises(ValueError, match="text-classification graph .* load it with ORTModelForSequenceClassification"):
        AutoCompactModel.from_pretrained(classifier_folder, backend="onnxruntime")
    with pytest.raises(ValueError, match="feature-extraction graph .* load it with ORTModelForFeatureExtraction"):
        ORTModelForSequenceClassification.from_pretrained(encoder_folder)



def test_latency_times_the_session_on_the_feed_the_runtime_builds(classifier_folder):
    """latency_side_by_side times InferenceSession.run (as compact bench and the peers' workers do) on ORTModel.feed:
    a tokenizer without token_type_ids (RoBERTa's) gets zeros, and the timed feed gives the call's own logits."""
    from datasets import Dataset

    from compact_nlp.ship import latency_side_by_side

    fast = ORTModelForSequenceClassification.from_pretrained(classifier_folder, threads=1)
    feed = fast.feed(np.array([[2, 11, 3]], dtype=np.int32))
    assert feed["token_type_ids"].tolist() == [[0, 0, 0]] and feed["attention_mask"].tolist() == [[1, 1, 1]]
    assert all(v.dtype == np.int64 for v in feed.values())
    np.testing.assert_allclose(fast.session.run(None, feed)[0], fast(**feed).logits, rtol=1e-6)
    rows = Dataset.from_dict({"sentence": TEXTS, "label": [0, 1, 1, 0]})  # SST-2's columns
    timed = latency_side_by_side({"model": classifier_folder / "model.ort"}, rows, "sst2", 64, examples=4)
    assert timed["model"]["examples"] == 4 and timed["model"]["median"] > 0 and timed["model"]["rounds"] == 3


def test_files_timed_side_by_side_each_run_a_whole_pass_before_the_next():
    """Interleaving files input by input started every call from another model's cache, which slowed the small
    models most: each file now runs a pass over the inputs in turn, the files interleaved by round."""
    from compact_nlp.bench import real_length_latency

    calls = []
    rows = {name: (lambda x, name=name: calls.append((name, x))) for name in ("big", "small")}
    timed = real_length_latency(rows, {"big": [1, 2, 3], "small": [4, 5, 6]}, rounds=2)
    passes = [name for name, _ in calls[::3]]
    assert passes == ["big", "small"] * 3, "a warm-up pass each, then one pass each per round"
    assert [x for name, x in calls if name == "small"] == [4, 5, 6] * 3
    assert set(timed) == {"big", "small"} and all(t["median_ms"] >= 0 for t in timed.values())


def test_a_round_slowed_by_another_process_moves_the_median_over_all_calls_not_the_median():
    """Another process taking the core slows some rounds of a call, rarely all: the median is over each call's
    fastest round, in compact's loop and in the peers' copy of it alike."""
    import time

    from compact_nlp.bench import Timing
    from compact_nlp.peers.worker_common import time_inputs

    summary = Timing("x", ms=[1, 2, 3, 10, 20, 30, 1, 2, 3], round_medians=[2, 20, 2]).summary()
    assert summary["median_ms"] == 2 and summary["median_all_ms"] == 3 and summary["p90_ms"] > 10
    seconds = iter([0, 0] + [0.001, 0.002, 0.003] + [0.010, 0.020, 0.030] + [0.001, 0.002, 0.003])
    peer = time_inputs(lambda x: time.sleep(next(seconds)), [1, 2, 3], rounds=3, warmup=2)
    assert 2 <= peer["median_ms"] < peer["median_all_ms"] and peer["median_all_ms"] >= 3

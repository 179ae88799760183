"""compact_nlp.peers: the int8 runtimes a user could pick instead of compact, measured on the user's inputs (a tiny
random classifier and encoder; the peers in other environments only where bench/peers_setup.sh installed them)."""

import numpy as np
import pytest

from compact_nlp.peers import (CTRANSLATE2, LITERT, OPTIMUM, ORT_DYNAMIC, PeerResult, fastest, measure_int8_peers,
                               peer_python)
from compact_nlp.peers.fidelity import fidelity

TEXTS = ["the film was good", "a dull and boring story", ("the actor is funny", "it was not funny"),
         "very slow , very long and very sad", "great ending"]


@pytest.fixture
def classifier_folder(tmp_path, tiny_tokenizer, tiny_bert_classifier):
    tiny_bert_classifier.save_pretrained(tmp_path / "clf")
    tiny_tokenizer.save_pretrained(tmp_path / "clf")
    return tmp_path / "clf"


@pytest.fixture
def no_peer_envs(tmp_path, monkeypatch):
    root = tmp_path / "peer-envs"
    root.mkdir()
    monkeypatch.setenv("COMPACT_PEER_ENVS", str(root))
    return root


def test_ort_dynamic_int8_is_measured_on_the_inputs_with_its_fidelity(classifier_folder, tmp_path, no_peer_envs):
    results = measure_int8_peers(classifier_folder, TEXTS, threads=1, workdir=tmp_path / "work", rounds=2,
                                 include=())
    assert [r.name for r in results] == [ORT_DYNAMIC]
    ort = results[0]
    assert ort.available and ort.runtime.startswith("onnxruntime ")
    assert ort.median_ms > 0 and ort.size_mb > 0
    assert ort.fidelity_metric == "argmax agreement with fp32" and 0.0 <= ort.fidelity <= 1.0
    assert (tmp_path / "work" / "ort" / "peer_dynamic.onnx").exists()
    assert fastest(results) is ort


def test_an_encoder_is_scored_by_the_cosine_of_its_pooled_embeddings(classifier_folder, no_peer_envs):
    (ort,) = measure_int8_peers(classifier_folder, TEXTS[:3], rounds=1, output="last_hidden_state", include=())
    assert ort.fidelity_metric.startswith("mean cosine")
    assert 0.5 < ort.fidelity <= 1.0 and ort.fidelity_min <= ort.fidelity


def test_a_peer_without_its_environment_is_skipped_with_the_reason(classifier_folder, no_peer_envs):
    (no_peer_envs / "litert.skipped").write_text("pip install litert failed:\nERROR: No matching distribution\n")
    results = measure_int8_peers(classifier_folder, TEXTS[:2], rounds=1, include=("ctranslate2", "litert", "optimum"))
    by_name = {r.name: r for r in results}
    assert by_name[ORT_DYNAMIC].available
    for name in (CTRANSLATE2, LITERT, OPTIMUM):
        assert not by_name[name].available and by_name[name].median_ms is None
    assert "no environment at" in by_name[CTRANSLATE2].reason
    assert "No matching distribution" in by_name[LITERT].reason
    assert fastest(results).name == ORT_DYNAMIC


def test_fastest_is_the_available_one_with_the_lowest_median():
    rows = [PeerResult("a", "x 1", True, median_ms=3.0), PeerResult("b", "y 1", True, median_ms=2.0),
            PeerResult("c", "", False, reason="not installed")]
    assert fastest(rows).name == "b"
    with pytest.raises(ValueError, match="not installed"):
        fastest([rows[2]])


def test_fidelity_counts_flipped_predictions_and_pooled_cosines():
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.5, 0.4]])
    flipped = reference.copy()
    flipped[3] = [0.4, 0.5]
    assert fidelity(reference, reference, "logits")[0] == 1.0
    assert fidelity(reference, flipped, "logits")[0] == 0.75
    value, minimum, _ = fidelity(reference, flipped, "last_hidden_state")
    assert minimum < value < 1.0
    with pytest.raises(ValueError, match="do not match"):
        fidelity(reference, reference[:2], "logits")


@pytest.mark.slow
@pytest.mark.parametrize("env", ["ctranslate2", "openvino", "litert", "optimum"])
def test_each_installed_peer_runs_and_agrees_with_fp32(env, classifier_folder, tmp_path):
    if peer_python(env)[0] is None:
        pytest.skip(peer_python(env)[1])
    results = measure_int8_peers(classifier_folder, TEXTS * 4, rounds=1, include=(env,), workdir=tmp_path / "w",
                                 output="last_hidden_state")
    peers = [r for r in results if r.name != ORT_DYNAMIC]
    assert peers, results
    for peer in peers:
        assert peer.available, peer.reason
        assert peer.median_ms > 0 and peer.size_mb > 0 and peer.fidelity > 0.9, peer

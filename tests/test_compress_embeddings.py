"""`compact compress --task embeddings`: the label-free score, the depth plans and their budget as code, bad input
refused in one line, and (slow) a tiny sentence-embedding compress on real SST-2 sentences end to end: plan, distil,
ship a folder sentence-transformers loads, resume."""

import csv
import json

import numpy as np
import pytest

from compact_nlp.cli import main
from compact_nlp.compress.embed_job import EmbedPlan, embed_plans, embed_training
from compact_nlp.compress.embed_measure import EmbeddingBaseline, EmbeddingTexts, score_embeddings
from compact_nlp.ship import machine
from compact_nlp.compress.goal import Goal, GoalError
from compact_nlp.compress.planner import target_of
from conftest import GLUE_DIR, requires_glue


def _normalized(values):
    return values / np.linalg.norm(values, axis=-1, keepdims=True)


def test_the_original_scores_100_and_a_blurred_copy_less():
    rng = np.random.default_rng(0)
    reference = _normalized(rng.normal(size=(200, 16)))
    assert score_embeddings(reference, reference).score == 100.0
    slightly, badly = (_normalized(reference + s * rng.normal(size=reference.shape)) for s in (0.05, 0.5))
    near, far = score_embeddings(slightly, reference), score_embeddings(badly, reference)
    assert 100.0 > near.score > far.score and near.mean_cosine > far.mean_cosine
    unrelated = _normalized(rng.normal(size=reference.shape))
    assert abs(score_embeddings(unrelated, reference).score) < 30  # no better than chance, give or take


def _baseline(depths):
    return EmbeddingBaseline(4.0, 87.0, [], "LiteRT", 0.9, depths, 0.02, 15.0)


def test_depths_predicted_to_meet_the_target_are_tried_deepest_first():
    baseline = _baseline({"6": [1.2, 23.0], "4": [0.8, 19.6], "3": [0.65, 17.9], "2": [0.47, 16.1]})
    target = target_of(Goal("speedup", 1.0, 1.0), "LiteRT", 0.9)
    assert [p.layers for p in embed_plans(baseline, 6, target)] == [4, 3, 2]  # 6 layers is slower than the peer
    assert [p.layers for p in embed_plans(baseline, 6, target_of(Goal("size_mb", 18.0, 1.0), "x", 1.0))] == [3, 2]
    assert embed_plans(baseline, 6, target_of(Goal("latency_ms", 0.1, 1.0), "x", 1.0)) == []


def test_the_budget_cuts_sentences_and_refuses_a_budget_too_small_to_distil():
    texts = EmbeddingTexts([f"sentence {i}" for i in range(40000)], [], [], "t.csv")
    plan = EmbedPlan(6, 4, 0.8, 19.6)
    assert embed_training(texts, plan, 0.02, None).train_subset == 40000
    cut = embed_training(texts, plan, 0.02, 600)
    assert 1000 <= cut.train_subset < 40000 and plan.seconds(cut.train_subset, 0.02) <= 300 + 1
    assert "affords" in cut.note
    with pytest.raises(GoalError, match="--time-budget"):
        embed_training(texts, plan, 0.02, 100)
    assert EmbedPlan(6, 6, 1.2, 23.0).seconds(40000, 0.02) < 120  # full depth: nothing to distil


def test_labels_or_validation_files_with_embeddings_exit_2_in_one_line(tmp_path, capsys):
    text = tmp_path / "t.csv"
    text.write_text("text\n" + "".join(f"sentence {i}\n" for i in range(40)))
    for extra in (["--label-column", "x"], ["--validation", str(text)]):
        code = main(["compress", "m", str(tmp_path / "out"), "--task", "embeddings", "--data", str(text),
                     "--speedup", "2", "--max-drop", "1", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "unlabelled text" in err[0]


@pytest.fixture
def sst2_sentences(tmp_path):
    """800 real SST-2 training sentences as a user's one-column CSV."""
    if GLUE_DIR is None:
        pytest.skip("GLUE data not found")
    with open(GLUE_DIR / "SST-2" / "train.tsv") as source:
        rows = list(csv.reader(source, delimiter="\t", quoting=csv.QUOTE_NONE))[1:801]
    path = tmp_path / "sentences.csv"
    with open(path, "w", newline="") as target:
        csv.writer(target).writerows([["sentence"], *[[text] for text, _ in rows]])
    return path


@requires_glue
@pytest.mark.slow
def test_a_tiny_embedding_compress_distils_ships_and_resumes(sst2_sentences, tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("COMPACT_PEER_ENVS", str(tmp_path / "no-peers"))  # ORT dynamic int8 only
    out = tmp_path / "out"
    base = ["compress", str(tiny_model), str(out), "--task", "embeddings", "--data", str(sst2_sentences),
            "--max-drop", "100"]
    assert main([*base, "--size-mb", "1000", "--dry-run"]) == 0
    depths = json.loads((out / "report.json").read_text())["baseline"]["depths"]
    assert set(depths) == {"2", "1"} and depths["1"][1] < depths["2"][1]
    size = round((depths["1"][1] + depths["2"][1]) / 2, 3)  # only the 1-layer student fits: it must distil
    args = [*base, "--size-mb", str(size), "--restart"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "met" and report["chosen"][0]["plan"]["layers"] == 1
    assert report["final"]["sentences"] > 0 and report["final"]["size_mb"] <= size
    assert report["final"]["sentence_transformers_max_abs_diff"] < 1e-4  # SentenceTransformer(OUT/model) loads it
    assert (out / "model" / "model.ort").is_file() and (out / "model" / "modules.json").is_file()
    card = (out / "model" / "README.md").read_text()
    assert "library_name: sentence-transformers" in card and str(tmp_path) not in card
    assert f"| {machine()['cpu']} |" in card, "the card names the CPU its latency ratios were measured on"
    assert main(args[:-1]) == 0  # the same command resumes: every attempt is read back
    assert json.loads((out / "report.json").read_text())["attempts"] == report["attempts"]

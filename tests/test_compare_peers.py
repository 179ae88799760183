"""`compact bench --task` with the peers that run in their own environments (LiteRT, CTranslate2, OpenVINO, Optimum;
compact_nlp.peers): each adds its rows when bench/peers_setup.sh installed it, and is skipped with the reason when
not; every row has its fidelity to PyTorch fp32 (tiny random models, QQP format)."""

import json
from pathlib import Path

import pytest

from compact_nlp.bench import REAL_LENGTH_ROUNDS
from compact_nlp.cli import main
from compact_nlp.compare import OPTIMUM, ORT_FP32, PEER, PEER_FUSED, PYTORCH
from compact_nlp.export import export_model
from compact_nlp.peers import CTRANSLATE2, LITERT, OPENVINO_DEFAULT, OPENVINO_F32, peer_python
from compact_nlp.peers.envs import DEFAULT_ROOT

OUTSIDE = (LITERT, CTRANSLATE2, OPENVINO_DEFAULT, OPENVINO_F32)


@pytest.fixture
def finetuned(tmp_path, tiny_tokenizer, tiny_bert_classifier):
    export_model(tiny_bert_classifier, tmp_path / "seed-1" / "model", tokenizer_source=tiny_tokenizer, mobile=True)
    return str(tmp_path / "seed-{seed}" / "model")


def bench(finetuned, glue_dir, out: Path, *extra: str) -> dict:
    args = ["bench", "--task", "qqp", "--fp32", finetuned, "--glue-dir", str(glue_dir), "--seeds", "1",
            "--examples", "4", "--lengths", "16", "--threads", "1", "--rounds", "1", "--calls", "2",
            "--out", str(out), *extra]
    assert main(args) == 0
    return json.loads(out.with_name(out.name + ".json").read_text())


def test_peers_without_their_environment_are_skipped_with_the_reason(finetuned, glue_dir, tmp_path, monkeypatch):
    (tmp_path / "no-envs").mkdir()
    monkeypatch.setenv("COMPACT_PEER_ENVS", str(tmp_path / "no-envs"))
    out = tmp_path / "report" / "compare_qqp"
    results = bench(finetuned, glue_dir, out)
    rows = results["rows"]
    assert list(rows) == [PYTORCH, ORT_FP32, PEER, PEER_FUSED, OPTIMUM, *OUTSIDE]
    for name in (OPTIMUM, *OUTSIDE):
        assert rows[name]["skipped"].startswith("no environment at " + str(tmp_path / "no-envs")), name
    for name in (PYTORCH, ORT_FP32, PEER, PEER_FUSED):  # every measured row has its fidelity to fp32
        assert 0.0 <= rows[name]["fidelity"] <= 1.0 and rows[name]["fidelity_metric"] == "argmax agreement with fp32"
    assert rows[PYTORCH]["fidelity"] == rows[ORT_FP32]["fidelity"] == 1.0
    table = out.with_name("compare_qqp.md").read_text()
    assert f"| {LITERT} | skipped: no environment at" in table and "Skipped peers:" in table
    assert "agrees with fp32" in table and "x faster than fastest peer" in table
    for kind in ("pareto", "size", "length"):
        assert out.with_name(f"compare_qqp_{kind}.png").exists()


def test_only_the_peers_asked_for_are_included(finetuned, glue_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPACT_PEER_ENVS", str(tmp_path))
    rows = bench(finetuned, glue_dir, tmp_path / "compare_qqp", "--peers", "ctranslate2")["rows"]
    assert list(rows) == [PYTORCH, ORT_FP32, PEER, PEER_FUSED, CTRANSLATE2] and "skipped" in rows[CTRANSLATE2]


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_ROOT.exists(), reason=f"no peer environments at {DEFAULT_ROOT} "
                                                      "(bash bench/peers_setup.sh installs them)")
def test_installed_peers_are_rows_with_latency_fidelity_and_dev_metric(finetuned, glue_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPACT_PEER_ENVS", str(DEFAULT_ROOT))
    if peer_python("litert")[0] is None:
        pytest.skip(f"LiteRT is not installed: {peer_python('litert')[1]}")
    out = tmp_path / "compare_qqp"
    results = bench(finetuned, glue_dir, out, "--peers", "litert,ctranslate2,openvino")
    litert = results["rows"][LITERT]
    assert "skipped" not in litert, litert
    assert litert["timed"] == "own process" and litert["runtime"].startswith("ai-edge-litert ")
    assert set(litert["latency"]) == {"real_1t", "16_1t"} and litert["latency"]["real_1t"]["median_ms"] > 0
    assert litert["latency"]["real_1t"]["calls"] == REAL_LENGTH_ROUNDS * results["real_length_examples"], \
        "a peer takes as many passes over the real-length inputs as the interleaved rows: the same statistic"
    assert litert["fidelity_metric"] == "argmax agreement with fp32" and 0.5 <= litert["fidelity"] <= 1.0
    assert len(litert["dev_all_metrics"]) == 1 and 0 <= litert["dev"]["mean"] <= 100  # its own dev predictions
    assert litert["load_s"] > 0 and litert["peak_rss_mb"] > 0 and litert["size_mb"] > 0
    for name in (CTRANSLATE2, OPENVINO_DEFAULT, OPENVINO_F32):  # measured where installed, else the reason
        row = results["rows"][name]
        assert "skipped" in row or (row["fidelity"] is not None and row["latency"]["real_1t"]["median_ms"] > 0)
    table = out.with_name("compare_qqp.md").read_text()
    assert f"| {LITERT} † |" in table and "NOT interleaved" in table

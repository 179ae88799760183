"""`compact bench --task`: every way to ship a fine-tuned model, side by side with the peers (tiny models, QQP format)."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from compact_nlp.cli import main
from compact_nlp.compare import ORT_FP32, PEER, PEER_FUSED, PYTORCH, OptimumEnvironmentError, optimum_peer
from compact_nlp.export import export_model


@pytest.fixture
def finetuned(tmp_path, tiny_tokenizer, tiny_bert_classifier):
    """Two seeds of a (tiny, random) fine-tuned classifier, exported as `compact run` leaves them."""
    import torch

    for seed in (1, 2):
        torch.manual_seed(seed)
        model = type(tiny_bert_classifier)(tiny_bert_classifier.config).eval()
        export_model(model, tmp_path / f"seed-{seed}" / "model", tokenizer_source=tiny_tokenizer, mobile=True)
    return str(tmp_path / "seed-{seed}" / "model")


@pytest.mark.slow
def test_the_comparison_measures_every_row_and_writes_the_report(finetuned, glue_dir, tmp_path, capsys):
    out = tmp_path / "report" / "compare_qqp"
    args = ["bench", "--task", "qqp", "--fp32", finetuned, "--glue-dir", str(glue_dir), "--seeds", "1", "2",
            "--variant", f"same graph as a variant={finetuned}/model.onnx",
            "--variant", f"seed 1 only={finetuned.replace('{seed}', '1')}", "--examples", "4", "--lengths", "16", "48",
            "--threads", "1", "--rounds", "2", "--calls", "2", "--no-peers", "--out", str(out)]
    status, printed = main(args), capsys.readouterr()
    assert status == 0, printed.err
    results = json.loads(out.with_name("compare_qqp.json").read_text())
    rows = results["rows"]
    assert list(rows) == [PYTORCH, ORT_FP32, PEER, PEER_FUSED, "same graph as a variant", "seed 1 only"]
    for name, row in rows.items():
        # one score per seed (the peers are rebuilt from each seed); a path without {seed} is one model, scored once
        assert len(row["dev"]["values"]) == (1 if name == "seed 1 only" else 2), name
        assert set(row["latency"]) == {"real_1t", "16_1t", "48_1t"} and row["latency"]["real_1t"]["median_ms"] > 0
        assert row["size_mb"] > 0 and row["load_s"] > 0 and row["peak_rss_mb"] > 0
    # the same model in every form scores the same (int8 peers may flip a borderline example, not on these)
    assert rows[ORT_FP32]["dev_all_metrics"] == rows["same graph as a variant"]["dev_all_metrics"]
    assert rows[PYTORCH]["dev"]["values"] == rows[ORT_FP32]["dev"]["values"]
    assert rows[ORT_FP32]["file"] == "model.ort" and rows["same graph as a variant"]["file"] == "model.onnx"
    table = out.with_name("compare_qqp.md").read_text()
    assert "x faster than fastest peer" in table and "| same graph as a variant |" in table
    assert rows["seed 1 only"]["dev"]["values"] == rows[ORT_FP32]["dev"]["values"][:1]
    assert "| seed 1 only | " in table and "(seed 1) |" in table
    for kind in ("pareto", "size", "length"):
        assert out.with_name(f"compare_qqp_{kind}.png").stat().st_size > 10_000
    assert results["mean_real_tokens"] > 0 and results["real_length_examples"] == 4


def test_a_comparison_needs_its_fp32_model_and_well_formed_variants(capsys):
    assert main(["bench", "--task", "sst2"]) == 2
    assert "needs --fp32" in capsys.readouterr().err
    assert main(["bench", "--task", "sst2", "--fp32", "x", "--variant", "no-equals-sign"]) == 2
    assert "must look like NAME=PATH" in capsys.readouterr().err
    assert main(["bench"]) == 2
    assert "needs a folder" in capsys.readouterr().err
    assert main(["bench", "--task", "sst2", "--fp32", "x", "--peers", "litert,tflite"]) == 2
    assert "--peers tflite: the peers are litert,ctranslate2,openvino,optimum" in capsys.readouterr().err
    assert main(["bench", "--task", "sst2", "--fp32", "x", "--peers", "litert", "--no-peers"]) == 2
    assert "contradict" in capsys.readouterr().err


@pytest.mark.slow
def test_the_optimum_row_says_what_is_wrong_with_its_environment(finetuned, glue_dir, tmp_path, capsys):
    # Optimum itself cannot be installed in CI's environment (it does not support transformers 5); what compact
    # controls is that a wrong --optimum-python stops with the fix instead of a traceback from the subprocess
    folder = Path(finetuned.replace("{seed}", "1"))
    with pytest.raises(OptimumEnvironmentError, match="does not exist; point it at the python of an environment with"):
        optimum_peer(folder, tmp_path / "a", "/no/such/python")
    with pytest.raises(OptimumEnvironmentError, match=r"Optimum failed in .*optimum-onnx\[onnxruntime\] installed"):
        optimum_peer(folder, tmp_path / "b", sys.executable)  # compact's own environment has no Optimum
    assert (tmp_path / "b" / "hf" / "config.json").exists()  # the seed's model, saved for transformers 4
    assert main(["bench", "--task", "qqp", "--fp32", finetuned, "--glue-dir", str(glue_dir), "--optimum-python",
                 "/no/such/python", "--out", str(tmp_path / "c" / "compare_qqp")]) == 2  # no traceback from the CLI
    assert "--optimum-python /no/such/python does not exist" in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get("COMPACT_OPTIMUM_PYTHON"),
                    reason="set COMPACT_OPTIMUM_PYTHON to the python of an environment with Optimum (docs/combined.md)")
def test_the_optimum_row_is_optimums_own_int8_graph(finetuned, tmp_path):
    import onnx

    from compact_nlp.compare import OPTIMUM, OPTIMUM_FUSED, OrtRow

    folder = Path(finetuned.replace("{seed}", "1"))
    graphs, versions = optimum_peer(folder, tmp_path, os.environ["COMPACT_OPTIMUM_PYTHON"])
    assert versions["optimum"] and versions["transformers"] < "5"  # made where Optimum runs, not in compact's env
    inputs = {"input_ids": np.array([[2, 7, 9, 11, 3]]), "attention_mask": np.ones((1, 5), np.int64),
              "token_type_ids": np.zeros((1, 5), np.int64)}
    fp32 = OrtRow(folder / "model.onnx", 1)(inputs)
    for name in (OPTIMUM, OPTIMUM_FUSED):
        int8 = OrtRow(graphs[name], 1)(inputs)
        assert int8.shape == fp32.shape == (1, 2) and np.abs(int8 - fp32).max() < 0.1  # the same model, quantized
    fused_ops = {node.op_type for node in onnx.load(str(graphs[OPTIMUM_FUSED])).graph.node}
    assert "QAttention" in fused_ops, "O3 fused each layer's attention and the quantizer made it int8"

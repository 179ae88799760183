"""Export: one ONNX file with dynamic axes, parity at export, the exporter's reach, and ORT Mobile (.ort)."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import transformers as tf

from compact_nlp import CompactBertConfig, CompactBertForSequenceClassification, CompactBertModel, export_model, shrink
from compact_nlp.convert import from_hf_model
from compact_nlp.export import ExportParityError, check_parity, convert_to_ort, export_onnx
from conftest import tiny_hf_config


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("family, with_head", [("bert", False), ("roberta", True), ("distilbert", True),
                                                ("electra", False)])
def test_export_has_dynamic_axes_and_matches_pytorch(family, with_head, tmp_path, parity):
    config = tiny_hf_config(family)
    auto = tf.AutoModelForSequenceClassification if with_head else tf.AutoModel
    model = from_hf_model(auto.from_config(config))
    report = export_onnx(model, tmp_path / "model.onnx")
    graph = onnx.load(tmp_path / "model.onnx")
    assert graph.opset_import[0].version >= 17
    assert [i.name for i in graph.graph.input][:2] == ["input_ids", "attention_mask"]
    for graph_input in graph.graph.input:
        assert [d.dim_param for d in graph_input.type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert not list(tmp_path.glob("*.data")), "one file: no external data"
    assert any(case.get("pad_from") for case in report.cases), "padded inputs are part of the check"
    parity(family, f"{'classifier' if with_head else 'base'}: ONNX Runtime vs PyTorch (at export)",
           report.max_abs_diff)
    assert report.max_abs_diff <= 1e-4


def test_per_layer_widths_export_exactly(tmp_path, parity):
    config = CompactBertConfig(vocab_size=99, hidden_size=48, head_dim=16, num_heads_per_layer=[3, 3, 3],
                               intermediate_size_per_layer=[64, 64, 64], max_position_embeddings=128, num_labels=2)
    model = shrink(CompactBertForSequenceClassification(config), heads={0: [0, 1], 2: [2]}, ffn={1: range(50)},
                   hidden=[0, 1, 2, 3])
    assert model.config.num_heads_per_layer == [1, 3, 2] and model.config.hidden_size == 44
    cases = [dict(batch=1, length=n) for n in (1, 2, 7, 64, 127)] + [dict(batch=3, length=40, pad_from=[40, 9, 1])]
    export_onnx(model, tmp_path / "model.onnx", check=False)
    report = check_parity(model, session(tmp_path / "model.onnx"), cases=cases)
    assert parity("compact", "per-layer widths [1, 3, 2] heads: ORT vs PyTorch", report.max_abs_diff) <= 1e-4


def test_attention_exports_as_one_multi_head_attention_node_per_layer(tmp_path, parity):
    config = CompactBertConfig(vocab_size=99, hidden_size=48, head_dim=16, num_heads_per_layer=[3, 3, 3],
                               intermediate_size_per_layer=[64, 64, 64], max_position_embeddings=128, num_labels=2)
    model = shrink(CompactBertForSequenceClassification(config), heads={0: [0, 1], 2: [2]})
    cases = [dict(batch=1, length=n) for n in (1, 2, 7, 64)] + [dict(batch=3, length=40, pad_from=[40, 9, 1])]
    fused, plain = tmp_path / "fused.onnx", tmp_path / "plain.onnx"
    export_onnx(model, fused, check=False)
    export_onnx(model, plain, check=False, fuse_attention=False)
    nodes = onnx.load(fused).graph.node
    attention = [n for n in nodes if n.op_type == "MultiHeadAttention"]
    assert [onnx.helper.get_attribute_value(n.attribute[0]) for n in attention] == model.config.num_heads_per_layer
    assert model.config.num_heads_per_layer == [1, 3, 2]
    assert not [n for n in nodes if n.op_type in ("Softmax", "Transpose")]
    assert len(nodes) < len(onnx.load(plain).graph.node) - 3 * 15, "about 20 nodes per layer become 6"
    assert sum(n.op_type == "Softmax" for n in onnx.load(plain).graph.node) == 3
    report = check_parity(model, session(fused), cases=cases)  # padded rows included
    assert parity("compact", "fused MultiHeadAttention export vs PyTorch", report.max_abs_diff) <= 1e-4
    convert_to_ort(fused)
    assert "MultiHeadAttention" in (tmp_path / "required_operators.config").read_text()
    assert check_parity(model, session(fused.with_suffix(".ort")), cases=cases).max_abs_diff <= 1e-4


class KeepTopTokens(torch.nn.Module):
    """The pattern token pruning exports (compact_nlp.modeling.TokenPruner; tested in test_token_pruning.py), reduced
    to its core: top ceil(ratio * real length) tokens by a data-dependent score, k by tensor ops, original order."""

    def __init__(self, model: CompactBertModel, ratio: float):
        super().__init__()
        self.model, self.ratio = model, ratio

    def forward(self, input_ids, attention_mask):
        states = self.model(input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        position = torch.arange(states.shape[1]).to(states.dtype).unsqueeze(0)
        # padding gets distinct negative scores, so no ties: ONNX TopK and torch.topk then pick the same tokens
        # (a LayerNorm output's norm is the same for every token, so score by one channel: no structural ties)
        score = torch.where(attention_mask == 0, -1.0 - position, states[..., 0])  # (B, T)
        k = torch.ceil(attention_mask.sum(-1).to(torch.float32) * self.ratio).to(torch.int64).max().clamp(min=1)
        keep = torch.topk(score, k, dim=-1).indices.sort(dim=-1).values  # (B, k)
        kept = torch.gather(states, 1, keep.unsqueeze(-1).expand(-1, -1, states.shape[-1]))  # (B, k, H)
        return kept, keep


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_data_dependent_token_gather_exports_with_dynamic_lengths(dynamo, tmp_path, parity):
    """The exporter choice for token pruning: both exporters keep the same tokens as PyTorch at every length."""
    config = CompactBertConfig(vocab_size=99, hidden_size=16, head_dim=8, num_heads_per_layer=[2],
                               intermediate_size_per_layer=[20], max_position_embeddings=512)
    wrapper = KeepTopTokens(CompactBertModel(config), ratio=0.5).eval()
    example = (torch.randint(1, 99, (2, 16)), torch.ones(2, 16, dtype=torch.long))
    names = dict(input_names=["input_ids", "attention_mask"], output_names=["kept", "indices"])
    path = tmp_path / "prune.onnx"
    if dynamo:
        batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("sequence", min=1, max=512)
        torch.onnx.export(wrapper, example, str(path), dynamo=True, external_data=False, opset_version=20,
                          dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
                          **names)
    else:
        torch.onnx.export(wrapper, example, str(path), dynamo=False, opset_version=17,
                          dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}}, **names)
    runner, worst = session(path), 0.0
    for length in (1, 2, 7, 64, 255, 512):
        ids = torch.randint(1, 99, (3, length))
        mask = torch.ones_like(ids)
        mask[1, max(1, length // 3):] = 0  # a shorter example in the same batch (padding)
        ids[mask == 0] = 0
        with torch.no_grad():
            kept, keep = wrapper(ids, mask)
        got_kept, got_keep = runner.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        assert got_keep.shape == (3, max(1, -(-length // 2)))  # the sequence really got shorter
        assert np.array_equal(got_keep, keep.numpy()), f"different tokens kept at length {length}"
        worst = max(worst, float(np.abs(got_kept - kept.numpy()).max()))
    parity("compact", f"top-k token gather, {'dynamo' if dynamo else 'TorchScript'} exporter, 1..512 tokens", worst)
    assert worst <= 1e-4


def test_parity_check_fails_loudly(tmp_path):
    model = CompactBertModel(CompactBertConfig(vocab_size=99, hidden_size=16, head_dim=8, num_heads_per_layer=[2],
                                               intermediate_size_per_layer=[20], max_position_embeddings=64))
    export_onnx(model, tmp_path / "model.onnx")
    with torch.no_grad():
        model.layers[0].attention.value.weight.mul_(3)  # the graph no longer computes what the model computes
    with pytest.raises(ExportParityError, match="differs from PyTorch"):
        check_parity(model, session(tmp_path / "model.onnx"))
    with pytest.raises(ValueError, match="opset 13 is too old"):
        export_onnx(model, tmp_path / "old.onnx", opset=13)


def test_export_model_writes_the_mobile_folder(tmp_path, tiny_bert_classifier, tiny_tokenizer, parity):
    out = tmp_path / "out"
    report = export_model(tiny_bert_classifier, out, tokenizer_source=tiny_tokenizer, mobile=True,
                          target_platform="arm")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "model.onnx", "model.ort", "required_operators.config",
            "export_report.json", "tokenizer.json"} <= names
    assert not [n for n in names if n.startswith(".")], "no scratch files left behind"
    assert json.loads((out / "export_report.json").read_text()) == report
    assert report["ort_mobile"]["target_platform"] == "arm" and report["mobile_usability"]["verdict"]
    assert report["machine"]["cpu"] and report["machine"]["cores"] >= 1  # the machine its parity was checked on
    assert "ai.onnx;" in (out / "required_operators.config").read_text()
    parity("bert", "classifier: .ort file vs PyTorch", report["ort_parity"]["max_abs_diff"])
    assert report["ort_parity"]["max_abs_diff"] <= 1e-4
    assert not tiny_bert_classifier.training


def test_ort_conversion_for_desktop_and_a_bad_platform(tmp_path, tiny_bert_classifier):
    export_onnx(tiny_bert_classifier, tmp_path / "model.onnx")
    info = convert_to_ort(tmp_path / "model.onnx", target_platform="amd64")
    assert info["ort_bytes"] == (tmp_path / "model.ort").stat().st_size > 0
    check_parity(tiny_bert_classifier, session(tmp_path / "model.ort"))
    with pytest.raises(ValueError, match="arm = phones"):
        convert_to_ort(tmp_path / "model.onnx", target_platform="riscv")


def test_export_leaves_a_training_model_in_training_mode(tmp_path, tiny_bert_classifier):
    tiny_bert_classifier.train()
    export_onnx(tiny_bert_classifier, tmp_path / "model.onnx")
    assert tiny_bert_classifier.training


def test_failed_export_leaves_no_file_and_the_mode_unchanged(tmp_path, tiny_bert_classifier, monkeypatch):
    import compact_nlp.export.onnx as onnx_export

    def diverging(*args, **kwargs):
        raise ExportParityError("injected")

    monkeypatch.setattr(onnx_export, "check_parity", diverging)
    tiny_bert_classifier.train()
    with pytest.raises(ExportParityError, match="injected"):
        export_onnx(tiny_bert_classifier, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == [] and tiny_bert_classifier.training

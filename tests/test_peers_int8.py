"""compact's int8 activation granularity (Int8Config.activation_granularity), measured against the peers by
bench/int8_variants.py: per_block puts every quantized MatMul on MatMulNBits 8-bit (accuracy_level 4),
ffn_out_per_block only the FFN output projections; both stay close to fp32 on a tiny random encoder."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compact_nlp.export import export_model
from compact_nlp.quant import Int8Config
from compact_nlp.quant.config import QuantConfigError
from compact_nlp.quant.onnx_int8 import quantize_graph


def test_a_granularity_needs_dynamic_activations_and_a_known_block_size():
    with pytest.raises(QuantConfigError, match="needs activations='dynamic'"):
        Int8Config(activation_granularity="per_block", activations="static")
    with pytest.raises(QuantConfigError, match="block_size"):
        Int8Config(activation_granularity="per_block", block_size=48)
    assert Int8Config().activation_granularity == "ffn_out_per_row"  # the post-training dynamic default


@pytest.mark.parametrize("granularity", ["per_tensor", "ffn_out_per_block", "per_block"])
def test_each_granularity_quantizes_the_matmuls_it_names(granularity, tmp_path, tiny_tokenizer, tiny_bert_classifier):
    export_model(tiny_bert_classifier, tmp_path / "fp32", tokenizer_source=tiny_tokenizer)
    layers = tiny_bert_classifier.config.num_hidden_layers
    report = quantize_graph(tmp_path / "fp32" / "model.onnx", tmp_path / "int8.onnx",
                            Int8Config(activation_granularity=granularity, block_size=16))
    ops = [n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node]
    expected = {"per_tensor": 0, "ffn_out_per_block": layers, "per_block": 6 * layers}[granularity]
    assert ops.count("MatMulNBits") == expected == report["matmuls_per_block"]
    assert report["matmuls_quantized"] == 6 * layers  # classifier and pooler stay fp32 in every case
    feed = {k: v.astype(np.int64) for k, v in tiny_tokenizer("the film was good", return_tensors="np").items()}
    run = lambda path: ort.InferenceSession(str(path)).run(None, {i.name: feed[i.name] for i in
                                                                  ort.InferenceSession(str(path)).get_inputs()})[0]
    assert np.abs(run(tmp_path / "int8.onnx") - run(tmp_path / "fp32" / "model.onnx")).max() < 0.05

"""The `.ort` files compact ships pass onnxruntime's mobile usability check (python -m
onnxruntime.tools.check_onnx_model_mobile_usability) and run as ORT Mobile runs them: fp32, int8 (both activation
granularities) and token-pruned exports of a tiny random classifier, each exported with mobile=True.

The checker reads the ONNX graph the `.ort` was converted from; it fails (non-zero exit, a traceback) on graphs ORT
Mobile's tooling cannot analyse. We also load each `.ort` (the file a phone loads), check that it computes what the
`.onnx` computes, and that every operator it uses is listed in the required_operators.config written beside it,
which is what a reduced-operator onnxruntime-android/-objc build is compiled from (docs/deploy.md)."""

import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compact_nlp.export import export_model
from compact_nlp.quant import Int8Config, quantize_folder
from compact_nlp.token_pruning import TokenPruningConfig, prepare_token_pruning

# an op (after ORT's .ort-time optimizations) each variant cannot do without
KEY_OPS = {"fp32": {"MultiHeadAttention", "Attention", "Softmax"},
           "int8": {"DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat"},
           "int8-per-block": {"MatMulNBits"}, "pruned": {"TopK"}}
TEXTS = ["the film was good", "a dull and boring story", "very slow , very long and very sad", "great ending"]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, tiny_tokenizer):
    import tests.conftest as fixtures  # the tiny classifier fixture's own builder, used outside a test function
    from compact_nlp.convert import from_hf_model
    import transformers as tf

    root = tmp_path_factory.mktemp("mobile")
    config = fixtures.tiny_hf_config("bert")
    config.num_labels = 2

    def classifier():
        return from_hf_model(tf.AutoModelForSequenceClassification.from_config(config)).eval()

    export_model(classifier(), root / "fp32", tokenizer_source=tiny_tokenizer, mobile=True)
    quantize_folder(root / "fp32", root / "int8", Int8Config(), texts=TEXTS, mobile=True)
    quantize_folder(root / "fp32", root / "int8-per-block", Int8Config(activation_granularity="per_block",
                                                                       block_size=16), texts=TEXTS, mobile=True)
    pruned = classifier()
    prepare_token_pruning(pruned, TokenPruningConfig(keep_ratio=0.7), tiny_tokenizer)
    export_model(pruned, root / "pruned", tokenizer_source=tiny_tokenizer, mobile=True)
    return root, tiny_tokenizer


def required_operators(folder) -> set[tuple[str, str]]:
    """(domain, op) pairs in required_operators.config: lines `domain;opset;Op1,Op2`."""
    configs = sorted(folder.glob("required_operators*.config"))
    assert configs, f"no required_operators.config in {folder}"
    pairs = set()
    for line in configs[0].read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            domain, _, ops = line.split(";")
            pairs |= {(domain, op.strip()) for op in ops.split(",")}
    return pairs


@pytest.mark.parametrize("variant", ["fp32", "int8", "int8-per-block", "pruned"])
def test_each_shipped_ort_passes_the_mobile_usability_check(shipped, variant):
    root, tokenizer = shipped
    folder = root / variant
    ort_file = folder / "model.ort"
    assert ort_file.exists(), f"{variant}: no model.ort shipped"
    done = subprocess.run([sys.executable, "-m", "onnxruntime.tools.check_onnx_model_mobile_usability",
                           "--log_level", "info", str(folder / "model.onnx")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    verdicts = re.findall(r"Model should perform well with (NNAPI|CoreML \w+) as is: (\w+)", done.stderr)
    assert [ep for ep, _ in verdicts] == ["NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram"], done.stderr[-3000:]
    # the kernels that make each variant what it is are in the config a reduced build is compiled from
    ops = {op for _, op in required_operators(folder)}
    assert KEY_OPS[variant] & ops, f"{variant}: none of {KEY_OPS[variant]} in required_operators ({sorted(ops)})"
    # the .ort loads in ORT and computes what the .onnx computes
    session = ort.InferenceSession(str(ort_file), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    for text in TEXTS:
        feed = {k: v.astype(np.int64) for k, v in tokenizer(text, return_tensors="np").items()}
        feed = {i.name: feed[i.name] for i in session.get_inputs()}
        assert np.allclose(session.run(None, feed)[0], reference.run(None, feed)[0], atol=1e-4), variant

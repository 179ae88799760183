"""int8 quantization: configs, post-training quantization through onnxruntime (dynamic and static QDQ), QAT with
both exports, and the errors a user can run into. Tiny random models; every export path is checked against the
model it came from."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import AutoTokenizer

from compact_nlp.export import export_model
from compact_nlp.quant.binary import BinaryLinear, TwoStageDistillationHook, export_binary, prepare_binary
from compact_nlp.quant.config import BinaryConfig, Int8Config, QuantConfigError
from compact_nlp.quant.onnx_int8 import (
    AlreadyQuantizedError,
    CalibrationError,
    TextCalibrationReader,
    quantize_folder,
)
from compact_nlp.quant.qat import QATLinear, QuantizationHook, activation_scales, export_qat, prepare_qat, strip_qat
from conftest import TINY_WORDS

rng = np.random.default_rng(0)
TEXTS = [" ".join(rng.choice(TINY_WORDS, size=int(rng.integers(3, 14)))) for _ in range(40)]


@pytest.fixture
def fp32_folder(tmp_path, tiny_bert_classifier, tiny_tokenizer):
    folder = tmp_path / "fp32"
    export_model(tiny_bert_classifier, folder, tokenizer_source=tiny_tokenizer, mobile=False)
    return folder


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def logits(sess, tokenizer, texts):
    names = {i.name for i in sess.get_inputs()}
    return np.concatenate([sess.run(None, {k: v for k, v in tokenizer(t, return_tensors="np").items() if k in names})[0]
                           for t in texts])


@pytest.mark.parametrize("kwargs, message", [
    (dict(activations="dynamic", calibration="entropy"), "calibration applies to static activations only"),
    (dict(activations="dynamic", activation_type="int8"), "activation_type applies to static activations only"),
    (dict(mode="qat", activations="static", calibration="minmax"), "calibration does not apply to QAT"),
    (dict(weights="per_row"), "weights must be one of"),
    (dict(keep_fp32=["layernorm"]), "LayerNorm, softmax and GELU are always fp32"),
    (dict(calibration_examples=0), "calibration_examples must be >= 1"),
    (dict(embedding_bits=1), "embedding_bits must be one of"),
    (dict(mode="ptq", fallback_to_ptq=True), "fallback_to_ptq .* needs mode='qat'"),
])
def test_impossible_int8_configs_are_refused(kwargs, message):
    with pytest.raises(QuantConfigError, match=message):
        Int8Config(**kwargs)


def test_int8_config_round_trips_and_names_unknown_keys():
    config = Int8Config(activations="static", calibration="percentile")
    assert Int8Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.activation_type == "uint8"  # U8S8: the fast static form on x86
    with pytest.raises(ValueError, match=r"unknown Int8Config keys \['bits'\]"):
        Int8Config.from_dict({"bits": 4})


@pytest.mark.parametrize("activations", ["dynamic", "static"])
def test_ptq_follows_the_fp32_model_and_runs_from_ort(activations, fp32_folder, tiny_tokenizer, tmp_path):
    out = tmp_path / activations
    report = quantize_folder(fp32_folder, out, Int8Config(activations=activations), texts=TEXTS, max_length=32)
    assert report["matmuls_quantized"] == 12 and report["int8_embeddings"]  # 2 layers x 6 Linears; word embeddings
    graph = onnx.load(str(out / "model.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert ("DynamicQuantizeLinear" in ops) if activations == "dynamic" else ("QuantizeLinear" in ops)
    reference = logits(session(fp32_folder / "model.onnx"), tiny_tokenizer, TEXTS)
    for name in ("model.onnx", "model.ort"):
        got = logits(session(out / name), tiny_tokenizer, TEXTS)
        assert np.abs(got - reference).max() < 0.05  # int8 error on a tiny random model, not a parity bound
    saved = json.loads((out / "config.json").read_text())
    assert saved["quant"]["int8"]["activations"] == activations
    assert report["agreement"]["examples"] == len(TEXTS)


def test_qdq_quantizes_matmul_inputs_only_for_the_matmul(fp32_folder, tmp_path):
    # ORT's QDQ quantizer routes every consumer through DequantizeLinear; the residual Add must read the float
    # LayerNorm output (as the fp32 model and QAT do), while a bias Add reads its MatMul's quantized product
    from compact_nlp.quant.onnx_int8 import is_quantized_product

    quantize_folder(fp32_folder, tmp_path / "q", Int8Config(activations="static"), texts=TEXTS, mobile=False)
    graph = onnx.load(str(tmp_path / "q" / "model.onnx")).graph
    produced_by = {out: n for n in graph.node for out in n.output}
    checked = {"input": 0, "product": 0}
    for node in graph.node:
        for name in node.input:
            dq = produced_by.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in produced_by:
                continue  # not a dequantized activation (weights are initializers)
            if is_quantized_product(produced_by[dq.input[0]].input[0], produced_by):
                checked["product"] += 1  # a quantized product stays quantized for whatever reads it (bias Add)
            else:
                assert node.op_type == "MatMul", f"{node.op_type} {node.name} reads a quantized activation"
                checked["input"] += 1
    assert checked["input"] and checked["product"]


def test_the_classifier_stays_fp32_and_the_embeddings_int8(fp32_folder, tmp_path):
    quantize_folder(fp32_folder, tmp_path / "q", Int8Config(), texts=TEXTS, mobile=False)
    stored = {i.name: i.data_type for i in onnx.load(str(tmp_path / "q" / "model.onnx")).graph.initializer}
    assert stored["model.compact_bert.embeddings.word_embeddings.weight"] == onnx.TensorProto.INT8
    assert stored["model.classifier.out_proj.weight"] == onnx.TensorProto.FLOAT
    assert stored["model.compact_bert.embeddings.position_embeddings.weight"] == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("activations", ["dynamic", "static"])
def test_a_trimmed_vocabulary_tokenizes_training_text_as_before(activations, fp32_folder, tiny_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    train, unseen = TEXTS[:30], "zebra quokka film"
    config = Int8Config(activations=activations, trim_vocabulary=True)
    report = quantize_folder(fp32_folder, tmp_path / "q", config, texts=train, vocabulary_texts=train, max_length=32)
    trimmed = AutoTokenizer.from_pretrained(tmp_path / "q")
    assert report["vocabulary"] == len(trimmed) < len(tiny_tokenizer)
    saved = json.loads((tmp_path / "q" / "config.json").read_text())
    assert saved["vocab_size"] == len(trimmed) and saved["pad_token_id"] == trimmed.pad_token_id
    stored = {i.name: i for i in onnx.load(str(tmp_path / "q" / "model.onnx")).graph.initializer}
    assert stored["model.compact_bert.embeddings.word_embeddings.weight"].dims[0] == len(trimmed)
    for text in train:  # the same pieces, renumbered
        assert trimmed.convert_ids_to_tokens(trimmed(text)["input_ids"]) == tiny_tokenizer.convert_ids_to_tokens(
            tiny_tokenizer(text)["input_ids"])
    assert trimmed.unk_token in trimmed.convert_ids_to_tokens(trimmed(unseen)["input_ids"])
    full = logits(session(fp32_folder / "model.onnx"), tiny_tokenizer, train)
    assert np.abs(logits(session(tmp_path / "q" / "model.ort"), trimmed, train) - full).max() < 0.05
    with pytest.raises(ValueError, match="needs the task's training text"):
        quantize_folder(fp32_folder, tmp_path / "r", config, texts=train, mobile=False)


@pytest.mark.parametrize("bits", [4, 2])
def test_low_bit_embeddings_unpack_exactly_from_ort(bits, fp32_folder, tiny_tokenizer, tmp_path):
    from compact_nlp.quant.onnx_int8 import symmetric_codes

    report = quantize_folder(fp32_folder, tmp_path / "q", Int8Config(embedding_bits=bits), texts=TEXTS,
                             max_length=32)
    packed = {i.name: i for i in onnx.load(str(tmp_path / "q" / "model.onnx")).graph.initializer}[
        "model.compact_bert.embeddings.word_embeddings.weight"]
    assert packed.data_type == onnx.TensorProto.UINT8 and packed.dims[1] == 32 * bits // 8  # hidden 32, packed
    assert report["size_mb"]["model.ort"] > 0
    # the .ort graph's embedding output is exactly codes * scale: run just the unpacking on a few ids
    table = onnx.numpy_helper.to_array(
        {i.name: i for i in onnx.load(str(fp32_folder / "model.onnx")).graph.initializer}[
            "model.compact_bert.embeddings.word_embeddings.weight"])
    codes, scale = symmetric_codes(table, bits)
    assert np.abs(codes).max() <= 2 ** (bits - 1) - 1
    full = logits(session(fp32_folder / "model.onnx"), tiny_tokenizer, TEXTS)
    got = logits(session(tmp_path / "q" / "model.ort"), tiny_tokenizer, TEXTS)
    assert np.abs(got - full).max() < (0.05 if bits == 4 else 0.2)


def test_embedding_unpacking_is_exact(tmp_path):
    from onnx import helper

    from compact_nlp.quant.onnx_int8 import quantize_embeddings, symmetric_codes

    table = np.random.default_rng(0).normal(size=(50, 12)).astype(np.float32)
    for bits in (8, 4, 2):
        graph = helper.make_graph(
            [helper.make_node("Gather", ["m.word_embeddings.weight", "ids"], ["out"], name="g", axis=0)], "g",
            [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["b", "t"])],
            [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["b", "t", 12])],
            [onnx.numpy_helper.from_array(table, "m.word_embeddings.weight")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
        quantize_embeddings(model, keep_fp32=[], bits=bits)
        onnx.save(model, str(tmp_path / f"e{bits}.onnx"))
        ids = np.array([[0, 7, 49], [3, 3, 12]], dtype=np.int64)
        codes, scale = symmetric_codes(table, bits)
        got = session(tmp_path / f"e{bits}.onnx").run(None, {"ids": ids})[0]
        assert np.array_equal(got, (codes * scale)[ids])  # bit-exact dequantization of the stored codes


def test_quantizing_twice_is_refused(fp32_folder, tmp_path):
    quantize_folder(fp32_folder, tmp_path / "q", Int8Config(), texts=TEXTS, mobile=False)
    with pytest.raises(AlreadyQuantizedError, match="already quantized"):
        quantize_folder(tmp_path / "q", tmp_path / "qq", Int8Config(), texts=TEXTS, mobile=False)
    (tmp_path / "q" / "config.json").write_text((fp32_folder / "config.json").read_text())  # hide it in the config
    with pytest.raises(AlreadyQuantizedError, match="the graph is already quantized|already quantized"):
        quantize_folder(tmp_path / "q", tmp_path / "qq", Int8Config(), texts=TEXTS, mobile=False)


def test_static_calibration_needs_text_of_the_right_shape(fp32_folder, tmp_path):
    with pytest.raises(CalibrationError, match="need calibration text"):
        quantize_folder(fp32_folder, tmp_path / "q", Int8Config(activations="static"), texts=[], mobile=False)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with pytest.raises(CalibrationError, match=r"missing \['token_type_ids'\]"):
        TextCalibrationReader.check([{"input_ids": [[1, 2]], "attention_mask": [[1, 1]]}], names)
    with pytest.raises(CalibrationError, match=r"must be \(batch, sequence\)"):
        TextCalibrationReader.check([{n: [1, 2, 3] for n in names}], names)


def qat_model(tiny_bert_classifier, steps=5):
    return train_a_few_steps(prepare_qat(tiny_bert_classifier, Int8Config(mode="qat")), steps)


def train_a_few_steps(model, steps):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        ids = torch.randint(5, 90, (4, 12))
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.randint(0, 2, (4,))).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def test_qat_fake_quantizes_what_the_export_quantizes(tiny_bert_classifier):
    model = qat_model(tiny_bert_classifier)
    assert sum(isinstance(m, QATLinear) for m in model.modules()) == 12
    assert len(activation_scales(model)) == 12
    with pytest.raises(QuantConfigError, match="already prepared for QAT"):
        prepare_qat(model, Int8Config(mode="qat"))
    plain = strip_qat(model)  # weights on the grid: the plain model equals the fake-quantized one's weight path
    ids = torch.randint(5, 90, (2, 9))
    with torch.no_grad():
        grid = plain(input_ids=ids).logits
    assert not any(isinstance(m, QATLinear) for m in plain.modules()) and torch.isfinite(grid).all()


@pytest.mark.slow
def test_qat_exports_use_the_trained_scales_and_follow_pytorch(tiny_bert_classifier, tiny_tokenizer, tmp_path):
    model = qat_model(tiny_bert_classifier)
    report = export_qat(model, tmp_path / "qat", tiny_tokenizer, texts=TEXTS, max_length=32)
    assert report["weights_match_training"]  # the int8 codes in model.onnx are round(w / trained scale)
    qdq = onnx.load(str(tmp_path / "qat" / "qdq" / "model.onnx"))
    stored = {i.name: onnx.numpy_helper.to_array(i) for i in qdq.graph.initializer}
    trained = activation_scales(model)
    first = "compact_bert.layers.0.attention.query"
    q_nodes = [n for n in qdq.graph.node if n.op_type == "QuantizeLinear"]
    placed = [float(stored[n.input[1]]) for n in q_nodes if n.input[1] in stored]
    assert any(np.isclose(s, trained[first]["input"][0]) for s in placed)  # the Linear's input range
    assert any(np.isclose(s, trained[first]["output"][0]) for s in placed)  # its product's range (QLinearMatMul)
    with torch.no_grad():  # the QDQ graph computes what the fake-quantized PyTorch model computes
        fake = torch.cat([model(**tiny_tokenizer(t, return_tensors="pt")).logits for t in TEXTS]).numpy()
    for name in ("qdq/model.onnx", "qdq/model.ort"):
        got = logits(session(tmp_path / "qat" / name), tiny_tokenizer, TEXTS)
        assert np.abs(got - fake).max() < 2e-2
    dynamic = logits(session(tmp_path / "qat" / "model.ort"), tiny_tokenizer, TEXTS)
    assert np.abs(dynamic - fake).max() < 5e-2  # dynamic activation ranges differ from the trained ones
    # the PyTorch weights ship too, on their int8 grid: AutoCompactModel loads exactly the weights that were exported
    from compact_nlp import AutoCompactModelForSequenceClassification
    from compact_nlp.quant.qat import strip_qat

    loaded = AutoCompactModelForSequenceClassification.from_pretrained(tmp_path / "qat").eval()
    assert loaded.config.quant["int8"]["mode"] == "qat"
    for name, weight in strip_qat(model).state_dict().items():
        assert torch.equal(loaded.state_dict()[name], weight), name


def test_the_hook_freezes_observers(tiny_bert_classifier):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    model = prepare_qat(tiny_bert_classifier, Int8Config(mode="qat"))
    hook, state = QuantizationHook(freeze_after=0.5), TrainerState(global_step=4, max_steps=10)
    hook.on_step_begin(TrainingArguments("x", report_to=[]), state, TrainerControl(), model=model)
    assert all(m.input_observer.observing for m in model.modules() if isinstance(m, QATLinear))
    state.global_step = 5
    hook.on_step_begin(TrainingArguments("x", report_to=[]), state, TrainerControl(), model=model)
    assert not any(m.input_observer.observing for m in model.modules() if isinstance(m, QATLinear))


# --- binary weights ---------------------------------------------------------------------------------------------

def binary_model(tiny_bert_classifier, steps=5, **kwargs):
    return train_a_few_steps(prepare_binary(tiny_bert_classifier, BinaryConfig(**kwargs)), steps)


@pytest.mark.parametrize("kwargs, message", [
    (dict(activation_bits=1, calibration="minmax"), "binary activations .* have no int8 range to calibrate"),
    (dict(activation_bits=1, activation_type="uint8"), "activation_type applies to int8 activations"),
    (dict(activation_scale="per_channel"), "a scale per channel cannot be taken out"),
    (dict(activation_bits=4), "activation_bits must be one of"),
    (dict(embedding_bits=3), "embedding_bits must be one of"),
    (dict(calibration="entropy"), "calibration must be one of"),
    (dict(intermediate_fraction=1.0), "intermediate_fraction"),
])
def test_impossible_binary_configs_are_refused(kwargs, message):
    with pytest.raises(QuantConfigError, match=message):
        BinaryConfig(**kwargs)


def test_binary_config_round_trips():
    config = BinaryConfig(activation_bits=1, weight_scale="learned", trim_vocabulary=True)
    assert BinaryConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert BinaryConfig().activation_type == "uint8"  # W1A8 default: U8 activations


def test_binary_linear_computes_with_signs_and_row_scales(tiny_bert_classifier):
    model = binary_model(tiny_bert_classifier)
    query = model.compact_bert.layers[0].attention.query
    weight = query.binary_weight().detach()
    alpha = query.weight.detach().abs().mean(dim=1, keepdim=True)
    assert torch.equal(weight.abs(), alpha.expand_as(weight))  # exactly two values per row: +-mean|W|
    assert torch.equal(torch.sign(weight), torch.where(query.weight.detach() >= 0, 1.0, -1.0))
    assert type(model.classifier.out_proj) is torch.nn.Linear  # keep_fp32: the classifier
    table = model.compact_bert.embeddings.word_embeddings.table().detach()
    assert torch.equal(table.abs(), table.abs().max(dim=1, keepdim=True).values.expand_as(table))  # 1-bit rows


def test_straight_through_gradients_reach_latent_weights_and_learned_scales(tiny_bert_classifier):
    model = prepare_binary(tiny_bert_classifier, BinaryConfig(weight_scale="learned", activation_bits=1)).train()
    ids = torch.randint(5, 90, (2, 8))
    model(input_ids=ids, labels=torch.tensor([0, 1])).loss.backward()
    query = model.compact_bert.layers[0].attention.query
    assert query.weight.grad.abs().sum() > 0 and query.weight_scale.grad.abs().sum() > 0
    assert query.input_quantizer.alpha.grad is not None  # BiT: the activation scale trains too


@pytest.mark.parametrize("kwargs", [dict(), dict(activation_bits=1), dict(weight_scale="learned", weights="per_tensor"),
                                    dict(embedding_bits=2, trim_vocabulary=True)])
def test_binary_export_is_packed_and_follows_pytorch_exactly(kwargs, tiny_bert_classifier, tiny_tokenizer, tmp_path):
    model = binary_model(tiny_bert_classifier, **kwargs)
    report = export_binary(model, tmp_path / "b", tiny_tokenizer, texts=TEXTS, max_length=32, vocabulary_texts=TEXTS)
    assert report["binary_matmuls"] == 12 and report["weights_match_training"]
    graph = onnx.load(str(tmp_path / "b" / "model.onnx"))
    packed = {i.name: i for i in graph.graph.initializer}["model.compact_bert.layers.0.attention.query.weight"]
    assert packed.data_type == onnx.TensorProto.UINT8 and list(packed.dims) == [32 * 32 // 8]  # 1 bit per weight
    positions = {i.name: i for i in graph.graph.initializer}["model.compact_bert.embeddings.position_embeddings.weight"]
    assert positions.data_type == onnx.TensorProto.INT8  # trained on the 8-bit grid it is stored on
    assert report["embeddings"] == {"model.compact_bert.embeddings.word_embeddings.weight": model.config.quant[
        "binary"]["embedding_bits"], "model.compact_bert.embeddings.position_embeddings.weight": 8}
    assert max(report["parity_vs_pytorch"].values()) <= 1e-4  # the bar, on model.onnx and model.ort
    trimmed = kwargs.get("trim_vocabulary")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "b") if trimmed else tiny_tokenizer
    with torch.no_grad():
        expected = torch.cat([model(**tiny_tokenizer(t, return_tensors="pt")).logits for t in TEXTS]).numpy()
    for name in ("model.onnx", "model.ort"):
        assert np.abs(logits(session(tmp_path / "b" / name), tokenizer, TEXTS) - expected).max() <= 1e-4


def test_the_ort_file_keeps_binary_weights_packed(tiny_tokenizer, tmp_path):
    """onnxruntime's converter constant-folds in-graph unpacking; ours must not, or the .ort is full size again."""
    import transformers as tf

    from compact_nlp.convert import from_hf_model
    from compact_nlp.export import convert_to_ort
    from conftest import tiny_hf_config

    config = tiny_hf_config("bert")  # wide enough that the weights, not the graph, decide the file size
    config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.num_labels = 256, 1024, 1, 2
    model = binary_model(from_hf_model(tf.AutoModelForSequenceClassification.from_config(config)).eval())
    export_binary(model, tmp_path / "b", tiny_tokenizer, texts=TEXTS[:4], max_length=32)
    packed = (tmp_path / "b" / "model.ort").stat().st_size
    shutil.copytree(tmp_path / "b", tmp_path / "folded")
    convert_to_ort(tmp_path / "folded" / "model.onnx", fold_constants=True)
    # 786k binary weights: 98 kB packed, 786 kB once folded to int8 codes
    assert (tmp_path / "folded" / "model.ort").stat().st_size - packed > 600_000
    logits(session(tmp_path / "b" / "model.ort"), tiny_tokenizer, TEXTS[:2])  # and it runs


@pytest.mark.parametrize("kind", ["qat", "binary"])
def test_quantized_exports_keep_plain_attention_when_asked(kind, tiny_bert_classifier, tiny_tokenizer, tmp_path):
    """fuse_attention=False (a recipe's export.fuse_attention: false, for NNAPI/CoreML) reaches the QAT and binary
    exports: their graphs keep the Softmax and still follow PyTorch."""
    model = qat_model(tiny_bert_classifier) if kind == "qat" else binary_model(tiny_bert_classifier)
    export = export_qat if kind == "qat" else export_binary
    report = export(model, tmp_path / kind, tiny_tokenizer, texts=TEXTS, max_length=32, fuse_attention=False)
    layers = model.config.num_hidden_layers
    files = ["model.onnx", "qdq/model.onnx"] if kind == "qat" else ["model.onnx"]
    for name in files:
        ops = [n.op_type for n in onnx.load(str(tmp_path / kind / name)).graph.node]
        assert ("MultiHeadAttention" not in ops, ops.count("Softmax")) == (True, layers), name
    assert max(report["parity_vs_pytorch"].values()) <= (1e-4 if kind == "binary" else 5e-2)


def test_binarizing_twice_is_refused(tiny_bert_classifier):
    model = prepare_binary(tiny_bert_classifier, BinaryConfig())
    with pytest.raises(QuantConfigError, match="already binarized"):
        prepare_binary(model, BinaryConfig())
    with pytest.raises(QuantConfigError, match="already quantized"):
        prepare_qat(model, Int8Config(mode="qat"))


def test_minmax_calibration_replaces_the_trained_ranges(tiny_bert_classifier, tiny_tokenizer, tmp_path):
    model = binary_model(tiny_bert_classifier, calibration="minmax")
    query = model.compact_bert.layers[0].attention.query
    trained = (float(query.input_quantizer.low), float(query.input_quantizer.high))
    report = export_binary(model, tmp_path / "b", tiny_tokenizer, texts=TEXTS, max_length=32)
    assert (float(query.input_quantizer.low), float(query.input_quantizer.high)) != trained
    assert max(report["parity_vs_pytorch"].values()) <= 1e-4


def test_two_stage_distillation_trains_intermediate_layers_then_logits(tiny_bert_classifier, tmp_path):
    import copy

    from transformers import TrainingArguments

    from compact_nlp.distill import DistillationConfig
    from compact_nlp.trainer import CompactConfig, CompactTrainer

    teacher = copy.deepcopy(tiny_bert_classifier)
    student = prepare_binary(tiny_bert_classifier, BinaryConfig())
    distillation = DistillationConfig(logits_weight=1.0, hidden_weight=1.0, attention_weight=1.0, attention_loss="mse")
    trainer = CompactTrainer(model=student, args=TrainingArguments(str(tmp_path), report_to=[], use_cpu=True),
                             teacher_model=teacher, hooks=[TwoStageDistillationHook(0.5)],
                             compact_config=CompactConfig(distillation=distillation))
    ids = torch.randint(5, 90, (2, 8))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1])}
    student.train()
    seen = []
    for step in (4, 5):  # of 10: stage one, then stage two
        trainer.state.global_step, trainer.state.max_steps = step, 10
        trainer._terms.clear()
        trainer.compute_loss(student, batch).backward()
        seen.append(set(trainer._terms))
    assert seen == [{"hidden", "attention"}, {"task", "logits"}]


@pytest.mark.slow
@pytest.mark.parametrize("better", ["qat", "ptq"])
def test_fallback_to_ptq_ships_the_export_that_scores_higher_on_heldout(better, tiny_bert_classifier, tiny_tokenizer,
                                                                         tmp_path):
    import copy

    import datasets

    from compact_nlp.quant.recipes import export_qat_or_ptq, exporter

    good = tiny_bert_classifier
    mirrored = copy.deepcopy(good)  # the fp32 classifier negated: every prediction flips
    with torch.no_grad():
        mirrored.classifier.out_proj.weight.neg_()
        mirrored.classifier.out_proj.bias.neg_()
    with torch.no_grad():  # held-out labels are the good model's own predictions: it scores high, its mirror low
        labels = good(**tiny_tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    heldout = datasets.Dataset.from_dict({"sentence": TEXTS, "label": labels})
    config = Int8Config(mode="qat", fallback_to_ptq=True)
    qat_source, start = (good, mirrored) if better == "qat" else (mirrored, good)
    qat = prepare_qat(copy.deepcopy(qat_source), config).train()
    with torch.no_grad():  # the observers see real activations, as in training, without changing a weight
        qat(**tiny_tokenizer(TEXTS, padding=True, return_tensors="pt"))

    def exporter_for(candidate):
        return exporter(candidate, tiny_tokenizer, TEXTS, 32, mobile=False, target_platform="arm")

    report, choice = export_qat_or_ptq(qat, start, config, exporter_for, tmp_path / "model", heldout, "sst2", 32)
    other = "ptq" if better == "qat" else "qat"
    assert choice["shipped"] == better and choice["metric"] == "accuracy"
    assert choice["heldout"][better]["accuracy"] > choice["heldout"][other]["accuracy"]
    shipped = json.loads((tmp_path / "model" / "config.json").read_text())["quant"]["int8"]
    assert shipped["mode"] == better and report["facts"]["quant"]["config"]["mode"] == better
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the other candidate is gone


@pytest.mark.parametrize("per_row_layers", [0, 1])
def test_ffn_out_per_row_scales_each_token_and_follows_fp32(per_row_layers, fp32_folder, tiny_tokenizer, tmp_path):
    """activation_granularity='ffn_out_per_row' (quant/per_row.py): the FFN output projections (all, or the last
    layer's) become QuantizeLinear with one scale per row + MatMulIntegerToFloat, the rest stays per-tensor; the
    graph runs, loads from .ort, and follows the fp32 model."""
    from compact_nlp.export import convert_to_ort
    from compact_nlp.quant.onnx_int8 import calibration_feeds, quantize_graph

    config = Int8Config(activation_granularity="ffn_out_per_row", per_row_layers=per_row_layers)
    feeds = calibration_feeds(tiny_tokenizer, TEXTS[:8], 64, ["input_ids", "attention_mask", "token_type_ids"])
    report = quantize_graph(fp32_folder / "model.onnx", tmp_path / "int8.onnx", config, feeds=feeds)
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    ops = [n.op_type for n in graph.node]
    layers = 2 if per_row_layers == 0 else 1
    assert report["matmuls_per_row"] == layers == ops.count("QuantizeLinear") == ops.count("MatMulIntegerToFloat")
    assert report["matmuls_quantized"] == 12 and report["activations_smoothed"] > 0
    per_row_inputs = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert all(next(a.i for a in n.attribute if a.name == "axis") == 0 for n in per_row_inputs)
    fp32 = logits(session(fp32_folder / "model.onnx"), tiny_tokenizer, TEXTS)
    int8 = logits(session(tmp_path / "int8.onnx"), tiny_tokenizer, TEXTS)
    assert np.abs(int8 - fp32).max() < 0.05
    convert_to_ort(tmp_path / "int8.onnx")
    from_ort = logits(session(tmp_path / "int8.ort"), tiny_tokenizer, TEXTS)
    assert np.abs(from_ort - int8).max() < 1e-4


def _gelu_matmul(weight, bias):
    """Gelu -> MatMul -> Add (compact's FFN output projection after gemm_to_matmul), and the Gelu alone."""
    from onnx import TensorProto, helper, numpy_helper

    opsets = [helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)]
    rows = lambda name, width: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["rows", width])
    gelu = helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft", name="gelu")
    full = helper.make_graph(
        [gelu, helper.make_node("MatMul", ["g", "layers.0.ffn_out.weight"], ["p"], name="ffn_out"),
         helper.make_node("Add", ["p", "layers.0.ffn_out.bias"], ["y"], name="ffn_out_bias")],
        "ffn_out", [rows("x", weight.shape[0])], [rows("y", weight.shape[1])],
        [numpy_helper.from_array(weight, "layers.0.ffn_out.weight"),
         numpy_helper.from_array(bias, "layers.0.ffn_out.bias")])
    alone = helper.make_graph([gelu], "gelu", [rows("x", weight.shape[0])], [rows("g", weight.shape[0])])
    return helper.make_model(full, opset_imports=opsets), helper.make_model(alone, opset_imports=opsets)


@pytest.mark.parametrize("per_channel", [True, False])
def test_per_row_rewrite_errs_by_at_most_half_a_step_of_each_row(per_channel):
    """The shift by GELU's lower bound and its fold into the bias are exact algebra: with a weight already on the
    int8 grid, the per-row product differs from fp32 only by rounding each activation to its own row's step
    ((max + 0.17) / 255): at most half a step times sum|W| per output, however different the rows' ranges."""
    from compact_nlp.quant.per_row import rewrite_per_row

    rng_ = np.random.default_rng(1)
    weight = (rng_.integers(-127, 128, size=(24, 5)) / 127.0).astype(np.float32)
    weight[0] = 1.0  # every column's max is 127 steps: the int8 codes (per channel or per tensor) are exact
    bias = rng_.standard_normal(5).astype(np.float32)
    x = (rng_.standard_normal((7, 24)) * np.array([[1], [10], [0.1], [3], [1], [5], [0.01]])).astype(np.float32)
    model, gelu_model = _gelu_matmul(weight, bias)
    run = lambda m, name: ort.InferenceSession(m.SerializeToString()).run([name], {"x": x})[0]
    fp32, gelu = run(model, "y"), run(gelu_model, "g")
    assert rewrite_per_row(model, ["ffn_out"], per_channel) == 1
    int8 = run(model, "y")
    step = (gelu.max(axis=1) + 0.17) / 255
    bound = step[:, None] / 2 * np.abs(weight).sum(axis=0)[None, :] + 1e-4
    assert (np.abs(int8 - fp32) <= bound).all()
    assert "layers.0.ffn_out.weight" not in {i.name for i in model.graph.initializer}  # the fp32 copy is dropped


def test_per_row_settings_are_checked(fp32_folder, tmp_path):
    """per_row_layers only means something for ffn_out_per_row; a MatMul whose input is not a GELU/ReLU output has
    no known lower bound to shift by, and is refused rather than quantized wrongly."""
    from compact_nlp.quant.per_row import rewrite_per_row

    with pytest.raises(QuantConfigError, match="per_row_layers"):
        Int8Config(activation_granularity="per_tensor", per_row_layers=2)
    with pytest.raises(QuantConfigError, match="per_row_layers"):
        Int8Config(activation_granularity="ffn_out_per_row", per_row_layers=-1)
    assert Int8Config(activation_granularity="ffn_out_per_row").smoothing == 0.8
    model = onnx.load(str(fp32_folder / "model.onnx"))
    first = next(n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul"))  # reads a LayerNorm output
    with pytest.raises(QuantConfigError, match="GELU or ReLU"):
        rewrite_per_row(model, [first])


def test_compact_quantize_takes_the_activation_granularity(fp32_folder, glue_dir, tmp_path):
    """`compact quantize --activation-granularity`: per_tensor (the previous default) stays one flag away, and the
    folder's config.json says which was used."""
    from compact_nlp.cli import main

    for granularity, per_row in ((None, 2), ("per_tensor", 0)):
        out = tmp_path / f"int8-{granularity}"
        flag = ["--activation-granularity", granularity] if granularity else []
        assert main(["quantize", str(fp32_folder), str(out), "--task", "qqp", "--glue-dir", str(glue_dir),
                     "--no-mobile", *flag]) == 0
        saved = json.loads((out / "config.json").read_text())["quant"]["int8"]
        assert saved["activation_granularity"] == (granularity or "ffn_out_per_row")
        ops = [n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node]
        assert ops.count("QuantizeLinear") == per_row  # one per-row quantization per FFN output projection
        assert json.loads((out / "quant_report.json").read_text())["matmuls_per_row"] == per_row

"""token_pruning/: tokens really leave the sequence (PyTorch and ONNX Runtime keep the same ones), heads leave through
shrink, LTP thresholds train through CompactTrainer, and bad settings fail with a message that names the fix."""

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import TrainingArguments

from compact_nlp import CompactBertConfig, CompactBertForSequenceClassification, CompactBertModel
from compact_nlp.export import convert_to_ort, export_onnx
from huggingface_hub.errors import StrictDataclassClassValidationError
from compact_nlp.shrink import shrink
from compact_nlp.token_pruning import (
    TokenPruningConfig,
    TokenPruningConfigError,
    encoder_flops,
    geometric_schedule,
    head_importance,
    plot_token_survival,
    prepare_token_pruning,
    prune_heads,
    remove_token_pruning,
    token_survival,
)
from compact_nlp.token_pruning.analysis import layer_flops
from compact_nlp.trainer import CompactConfig, CompactTrainer, DistillationConfig

CLS, SEP, PAD = 2, 3, 0


def tiny(layers=4, heads=2, max_positions=512, **kwargs) -> CompactBertConfig:
    return CompactBertConfig(vocab_size=99, hidden_size=16, head_dim=8, num_heads_per_layer=[heads] * layers,
                             intermediate_size_per_layer=[24] * layers, max_position_embeddings=max_positions,
                             num_labels=2, attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0, **kwargs)


def classifier(layers=4, heads=2, **kwargs):
    torch.manual_seed(0)
    return CompactBertForSequenceClassification(tiny(layers, heads, **kwargs)).eval()


def batch(lengths, total=None, pair_at=None, seed=0):
    """Rows of real tokens [CLS] ... [SEP] (plus a second [SEP] at pair_at), right-padded to `total`."""
    g = torch.Generator().manual_seed(seed)
    total = total or max(lengths)
    ids = torch.full((len(lengths), total), PAD)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(5, 99, (n,), generator=g)
        ids[b, 0] = CLS
        if n > 1:
            ids[b, n - 1] = SEP
        if pair_at is not None and pair_at < n - 1:
            ids[b, pair_at] = SEP
            types[b, pair_at + 1:n] = 1
        mask[b, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


class SepTokenizer:  # what prepare_token_pruning reads from a tokenizer
    sep_token_id, pad_token_id, all_special_ids = SEP, PAD, [PAD, 1, CLS, SEP, 4]


# --- config ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(keep_ratio=0.0), r"keep_ratio must be in \(0, 1\]"),
    (dict(keep_ratio=1.5), r"keep_ratio must be in \(0, 1\]"),
    (dict(keep_ratios=[1.0, 0.5, 0.0]), r"keep_ratios must all be in \(0, 1\]"),
    (dict(keep_ratios=[1.0, 0.5, 0.7]), "must not rise"),
    (dict(keep_ratios=[0.8, 0.5]), "keep_ratios\\[0\\] must be 1"),
    (dict(unpruned_layers=0), "unpruned_layers must be >= 1"),
    (dict(protect="none"), "protect must be one of"),
    (dict(head_keep_ratio=0), r"head_keep_ratio must be in \(0, 1\]"),
    (dict(mode="random"), "mode must be"),
    (dict(mode="threshold", keep_ratios=[1.0, 0.5]), "threshold mode learns how many"),
])
def test_impossible_settings_fail_with_the_fix(kwargs, message):
    with pytest.raises(TokenPruningConfigError, match=message):
        TokenPruningConfig(**kwargs)


def test_a_schedule_must_fit_the_model():
    with pytest.raises(TokenPruningConfigError, match="keep_ratios has 5 entries but the model has 4 layers"):
        prepare_token_pruning(classifier(), TokenPruningConfig(keep_ratios=[1, .8, .6, .4, .2], protect="cls"))
    with pytest.raises(TokenPruningConfigError, match="unpruned_layers is 6 but the model has 4"):
        prepare_token_pruning(classifier(), TokenPruningConfig(unpruned_layers=6, protect="cls"))
    with pytest.raises(TokenPruningConfigError, match="out of reach with 2 of 4 layers unpruned"):
        TokenPruningConfig(keep_ratio=0.4, unpruned_layers=2).resolved(4)
    with pytest.raises(ValueError, match="unknown TokenPruningConfig keys \\['keep'\\]"):
        TokenPruningConfig.from_dict({"keep": 0.5})


@pytest.mark.parametrize("keep_ratio, layers, unpruned", [(0.5, 6, 1), (0.45, 6, 1), (0.7, 12, 3), (1.0, 4, 1)])
def test_the_geometric_schedule_meets_its_average_and_falls(keep_ratio, layers, unpruned):
    ratios = geometric_schedule(keep_ratio, layers, unpruned)
    assert len(ratios) == layers and ratios[:unpruned] == [1.0] * unpruned
    assert all(b <= a for a, b in zip(ratios, ratios[1:]))
    assert sum(ratios) / layers == pytest.approx(keep_ratio, abs=1e-5)


def test_config_round_trips_and_is_stored_with_the_model(tmp_path):
    config = TokenPruningConfig(keep_ratio=0.5)
    assert TokenPruningConfig.from_dict(config.to_dict()) == config
    model = classifier()
    prepare_token_pruning(model, config, SepTokenizer())
    stored = model.config.token_pruning
    assert stored["protected_token_ids"] == [SEP] and len(stored["keep_ratios"]) == 4
    model.save_pretrained(tmp_path)
    loaded = CompactBertForSequenceClassification.from_pretrained(tmp_path).eval()
    inputs = batch([9, 5, 2])
    with torch.no_grad():
        a, b = model(**inputs, output_hidden_states=True), loaded(**inputs, output_hidden_states=True)
    assert torch.equal(a.logits, b.logits) and a.hidden_states[-1].shape == b.hidden_states[-1].shape


def test_pruning_twice_is_an_error_and_can_be_undone():
    model = classifier()
    prepare_token_pruning(model, TokenPruningConfig(keep_ratio=0.5, protect="cls"))
    with pytest.raises(TokenPruningConfigError, match="already prunes tokens.*remove_token_pruning"):
        prepare_token_pruning(model, TokenPruningConfig(keep_ratio=0.6, protect="cls"))
    remove_token_pruning(model)
    assert model.config.token_pruning is None
    prepare_token_pruning(model, TokenPruningConfig(keep_ratio=0.6, protect="cls"))


def test_a_hand_written_section_that_does_not_fit_is_refused():
    with pytest.raises(StrictDataclassClassValidationError, match="3 keep ratios but the model has 4 layers"):
        tiny(token_pruning={"mode": "top_k", "keep_ratios": [1, 1, 1], "unpruned_layers": 1,
                            "protected_token_ids": []})
    with pytest.raises(StrictDataclassClassValidationError, match="write it with"):
        tiny(token_pruning={"keep_ratios": [1, 1, 1, 1]})


# --- tokens leave ----------------------------------------------------------------------------------------------------
def test_tokens_really_leave_with_k_from_each_real_length():
    model = classifier()
    prepare_token_pruning(model, TokenPruningConfig(keep_ratios=[1.0, 0.5, 0.5, 0.25]), SepTokenizer())
    inputs = batch([20, 9, 3], total=24)  # mixed lengths, padding
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    lengths = [h.shape[1] for h in out.hidden_states]
    assert lengths == [24, 24, 10, 10, 5]  # the batch's longest k: ceil(0.5 * 20), ceil(0.25 * 20)
    for layer, ratio in ((2, 0.5), (4, 0.25)):
        kept, real = out.kept_indices[layer], out.kept_masks[layer]
        for b, n in enumerate([20, 9, 3]):
            k = max(1, math.ceil(ratio * n))
            assert int(real[b].sum()) == k and bool(real[b, :k].all())  # exactly k real tokens, first
            positions = kept[b, :k].tolist()
            assert positions == sorted(positions) and max(positions) < n  # original order; never padding
            assert positions[0] == 0  # [CLS] stays first
    # [SEP] is protected: the last real token of every row survives to the last layer when k allows
    assert 19 in out.kept_indices[4][0].tolist() and 8 in out.kept_indices[4][1].tolist()


def test_the_top_k_are_the_tokens_with_the_most_accumulated_attention():
    model = classifier()
    prepare_token_pruning(model, TokenPruningConfig(keep_ratios=[1.0, 0.5, 0.5, 0.5], protect="cls"))
    inputs = batch([12])
    unpruned = classifier()
    with torch.no_grad():
        probs = unpruned(**inputs, output_attentions=True).attentions[0]  # layer 0, identical weights
        out = model(**inputs, output_hidden_states=True)
    received = probs.sum(dim=(1, 2))[0] / probs.shape[1]
    received[0] = math.inf  # [CLS]
    expected = sorted(torch.topk(received, 6).indices.tolist())
    assert out.kept_indices[2][0].tolist() == expected


def test_sentence_pairs_keep_both_separators():
    model = classifier()
    prepare_token_pruning(model, TokenPruningConfig(keep_ratios=[1.0, 0.3, 0.3, 0.3]), SepTokenizer())
    inputs = batch([16, 11], pair_at=6)
    with torch.no_grad():
        out = model(**inputs)
    for b, n in enumerate([16, 11]):
        kept = out.kept_indices[-1][b][out.kept_masks[-1][b]].tolist()
        assert {0, 6, n - 1} <= set(kept)


def test_length_one_and_all_padding_rows_have_a_defined_result():
    model = classifier()
    prepare_token_pruning(model, TokenPruningConfig(keep_ratio=0.5), SepTokenizer())
    one = batch([1])
    with torch.no_grad():
        out = model(**one, output_hidden_states=True)
    assert [h.shape[1] for h in out.hidden_states] == [1] * 5 and torch.isfinite(out.logits).all()
    padded = batch([7, 1], total=7)
    padded["attention_mask"][1] = 0  # an all-padding row next to a real one
    padded["input_ids"][1] = PAD
    with torch.no_grad():
        out = model(**padded)
        alone = model(**batch([7]))
    assert torch.isfinite(out.logits).all()
    assert not out.kept_masks[-1][1].any()  # it stays all padding
    assert torch.allclose(out.logits[0], alone.logits[0], atol=1e-5)  # and does not disturb its neighbour


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, 14), min_size=1, max_size=3), extra=st.integers(0, 4),
       pair=st.booleans(), seed=st.integers(0, 10_000))
def test_keeping_every_token_equals_the_unpruned_model(lengths, extra, pair, seed):
    """The gather path with nothing to drop (thresholds at -inf) computes exactly what the unpruned model does."""
    inputs = batch(lengths, total=max(lengths) + extra, pair_at=3 if pair else None, seed=seed)
    unpruned = classifier()
    pruned = classifier()
    prepare_token_pruning(pruned, TokenPruningConfig(mode="threshold", thresholds=[-1e9] * 4), SepTokenizer())
    with torch.no_grad():
        a = unpruned(**inputs, output_hidden_states=True)
        b = pruned(**inputs, output_hidden_states=True)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    real = inputs["attention_mask"].bool()
    kept, kept_real = b.kept_indices[-1], b.kept_masks[-1]
    for row in range(len(lengths)):
        assert kept[row][kept_real[row]].tolist() == real[row].nonzero().flatten().tolist()
        torch.testing.assert_close(b.hidden_states[-1][row][kept_real[row]], a.hidden_states[-1][row][real[row]],
                                   atol=1e-5, rtol=1e-5)


@settings(max_examples=15, deadline=None)
@given(lengths=st.lists(st.integers(1, 14), min_size=1, max_size=3), seed=st.integers(0, 10_000))
def test_keep_ratio_one_is_the_unpruned_model(lengths, seed):
    inputs = batch(lengths, seed=seed)
    unpruned, pruned = classifier(), classifier()
    prepare_token_pruning(pruned, TokenPruningConfig(keep_ratio=1.0), SepTokenizer())
    with torch.no_grad():
        torch.testing.assert_close(unpruned(**inputs).logits, pruned(**inputs).logits, atol=1e-6, rtol=1e-6)


# --- ONNX Runtime keeps the same tokens ------------------------------------------------------------------------------
class KeptTokens(torch.nn.Module):
    """Logits plus, for every pruned layer, the positions and mask of what it kept: what ORT must reproduce."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        kept = [k for k in out.kept_indices if k is not None]
        masks = [m.to(torch.int64) for m in out.kept_masks if m is not None]
        return (out.logits, *kept, *masks)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["top_k", "threshold"])
def test_onnx_runtime_keeps_the_same_tokens_at_every_layer_and_length(mode, tmp_path, parity):
    model = classifier(heads=3)
    config = (TokenPruningConfig(keep_ratio=0.5) if mode == "top_k"
              else TokenPruningConfig(mode="threshold", thresholds=[0.0, 0.8, 0.9, 1.0]))
    prepare_token_pruning(model, config, SepTokenizer())
    wrapper = KeptTokens(model).eval()
    example = batch([16, 9])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dims = {0: torch.export.Dim("batch", min=1, max=64), 1: torch.export.Dim("sequence", min=1, max=512)}
    path = tmp_path / "pruned.onnx"
    torch.onnx.export(wrapper, tuple(example[n] for n in names), str(path), dynamo=True, external_data=False,
                      opset_version=20, input_names=names, dynamic_shapes=tuple(dims for _ in names))
    convert_to_ort(path)
    worst = 0.0
    for file in (path, path.with_suffix(".ort")):
        runner = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        for length in (1, 2, 7, 64, 255, 512):
            inputs = batch([length, max(1, length // 3), 1], pair_at=length // 2 if length > 4 else None,
                           seed=length)
            with torch.no_grad():
                expected = [t.numpy() for t in wrapper(*(inputs[n] for n in names))]
            got = runner.run(None, {n: inputs[n].numpy() for n in names})
            for e, g in zip(expected[1:], got[1:]):
                assert np.array_equal(e, g), f"{file.name}: different tokens kept at length {length}"
            worst = max(worst, float(np.abs(expected[0] - got[0]).max()))
    assert worst <= parity("compact", f"token pruning ({mode}), ORT and .ort vs PyTorch, 1..512 tokens", worst) <= 1e-4


@pytest.mark.slow
def test_the_standard_export_carries_the_pruning(tmp_path):
    model = classifier()
    prepare_token_pruning(model, TokenPruningConfig(keep_ratio=0.5), SepTokenizer())
    report = export_onnx(model, tmp_path / "model.onnx")  # checks ORT against PyTorch, padding included
    assert report.max_abs_diff <= 1e-4
    ops = [node.op_type for node in __import__("onnx").load(str(tmp_path / "model.onnx")).graph.node]
    assert {"TopK", "GatherElements"} <= set(ops) or {"TopK", "Gather"} <= set(ops)
    # the pruning scores tokens with the attention probabilities, so no layer's attention is fused away
    assert ops.count("Softmax") == model.config.num_hidden_layers and "MultiHeadAttention" not in ops


# --- heads -----------------------------------------------------------------------------------------------------------
def test_heads_are_ranked_by_output_magnitude_and_really_removed():
    model = classifier(heads=4)
    batches = [batch([10, 6], seed=s) for s in range(3)]
    importance = head_importance(model, batches)
    assert [tuple(t.shape) for t in importance] == [(4,)] * 4 and all((t > 0).all() for t in importance)
    # silence head 2 of layer 1: its output is zero, so it must be the one removed
    with torch.no_grad():
        model.compact_bert.layers[1].attention.value.weight[16:24] = 0
        model.compact_bert.layers[1].attention.value.bias[16:24] = 0
    importance = head_importance(model, batches)
    assert int(importance[1].argmin()) == 2
    smaller = prune_heads(model, TokenPruningConfig(head_keep_ratios=[1.0, 0.75, 0.5, 0.5]), batches)
    assert smaller.config.num_heads_per_layer == [4, 3, 2, 2]
    assert smaller.compact_bert.layers[1].attention.query.out_features == 3 * 8
    assert sum(p.numel() for p in smaller.parameters()) < sum(p.numel() for p in model.parameters())
    inputs = batch([10, 6])
    with torch.no_grad():  # removing a silent head changes nothing
        only_silent = prune_heads(model, TokenPruningConfig(head_keep_ratios=[1.0, 0.75, 1.0, 1.0]), batches)
        torch.testing.assert_close(only_silent(**inputs).logits, model(**inputs).logits, atol=1e-5, rtol=1e-5)
    prepare_token_pruning(smaller, TokenPruningConfig(keep_ratio=0.5), SepTokenizer())
    with pytest.raises(TokenPruningConfigError, match="rank heads before switching token pruning on"):
        head_importance(smaller, batches)


def test_shrinking_a_pruned_model_keeps_its_schedule_per_layer():
    model = classifier()
    prepare_token_pruning(model, TokenPruningConfig(mode="threshold", thresholds=[0, .5, .6, .7]), SepTokenizer())
    smaller = shrink(model, layers=[1])
    assert smaller.config.token_pruning["thresholds"] == [0, .6, .7]
    assert smaller.compact_bert.token_pruner.thresholds.tolist() == pytest.approx([0, .6, .7])


# --- analysis --------------------------------------------------------------------------------------------------------
def test_flops_count_real_tokens_per_layer_and_fall_with_pruning():
    model = classifier()
    inputs = batch([20, 9], total=24)
    full = encoder_flops(model, **inputs)
    one_layer = layer_flops(20, 16, 2, 8, 24)["total"] + layer_flops(9, 16, 2, 8, 24)["total"]
    assert full["per_layer"] == [one_layer] * 4 and full["tokens_per_layer"] == [29] * 4  # padding not counted
    prepare_token_pruning(model, TokenPruningConfig(keep_ratios=[1.0, 0.5, 0.5, 0.25]), SepTokenizer())
    pruned = encoder_flops(model, **inputs)
    assert pruned["tokens_per_layer"] == [29, 10 + 5, 10 + 5, 5 + 3]
    assert pruned["total"] < full["total"] / 1.8


def test_the_survival_picture_is_written(tmp_path, tiny_tokenizer):
    model = classifier()
    prepare_token_pruning(model, TokenPruningConfig(keep_ratio=0.5), tiny_tokenizer)
    tokens, alive = token_survival(model, tiny_tokenizer, "a charming journey, not a dull film")
    assert tokens[0] == "[CLS]" and alive.shape == (4, len(tokens))
    assert alive[0].all() and alive[-1].sum() < len(tokens) and alive[:, 0].all()
    assert all((alive[i + 1] <= alive[i]).all() for i in range(3))  # a pruned token never comes back
    path = plot_token_survival(model, tiny_tokenizer, ["a good film", ("the plot is slow", "it was boring")],
                               tmp_path / "survival.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# --- training --------------------------------------------------------------------------------------------------------
class Rows(torch.utils.data.Dataset):
    def __init__(self, n=32):
        self.rows = []
        for i in range(n):
            row = {k: v[0] for k, v in batch([6 + i % 7], total=12, seed=i).items()}
            row["labels"] = torch.tensor(i % 2)
            self.rows.append(row)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def test_learned_thresholds_train_soft_then_prune_hard(tmp_path):
    teacher = classifier()
    student = classifier()
    config = TokenPruningConfig(mode="threshold", initial_threshold=0.98, sparsity_weight=1.0, soft_fraction=0.5,
                                threshold_lr=0.05, temperature=0.2)
    hooks = prepare_token_pruning(student, config, SepTokenizer())
    thresholds = student.compact_bert.token_pruner.thresholds
    start = thresholds.detach().clone()
    args = TrainingArguments(str(tmp_path), max_steps=8, per_device_train_batch_size=8, learning_rate=1e-3,
                             logging_steps=2, report_to=[], use_cpu=True, save_strategy="no")
    trainer = CompactTrainer(model=student, args=args, train_dataset=Rows(), teacher_model=teacher, hooks=hooks,
                             compact_config=CompactConfig(distillation=DistillationConfig(hidden_weight=1.0)))
    groups = trainer.create_optimizer().param_groups
    assert any(g["lr"] == 0.05 and thresholds in g["params"] for g in groups)  # their own rate
    trainer.train()
    logged = [e for e in trainer.state.log_history if "loss_sparsity" in e]
    assert logged and logged[0]["loss_sparsity"] > 0  # the soft stage ran with the penalty
    moved = thresholds.detach() - start
    assert (moved[1:] > 0).all() and moved[0] == 0  # the penalty raised every pruned layer's threshold
    assert not student.compact_bert.token_pruner.soft  # hard after training: tokens really leave
    assert student.config.token_pruning["thresholds"] == pytest.approx(thresholds.tolist(), abs=1e-6)  # config.json
    with torch.no_grad():
        out = student.eval()(**batch([12, 7]), output_hidden_states=True)
    assert out.hidden_states[-1].shape[1] < 12


def test_a_pruned_student_distils_from_the_unpruned_teacher(tmp_path):
    teacher, student = classifier(), classifier()
    prepare_token_pruning(student, TokenPruningConfig(keep_ratio=0.5), SepTokenizer())
    args = TrainingArguments(str(tmp_path), max_steps=3, per_device_train_batch_size=8, learning_rate=1e-3,
                             logging_steps=1, report_to=[], use_cpu=True, save_strategy="no")
    distillation = DistillationConfig(hidden_weight=1.0, attention_weight=1.0, attention_loss="mse")
    trainer = CompactTrainer(model=student, args=args, train_dataset=Rows(), teacher_model=teacher,
                             compact_config=CompactConfig(distillation=distillation))
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss_hidden" in e]
    assert logs and all(math.isfinite(e["loss_hidden"]) and math.isfinite(e["loss_attention"]) for e in logs)


def test_a_base_model_prunes_and_pools_what_survives():
    torch.manual_seed(0)
    model = CompactBertModel(tiny()).eval()
    prepare_token_pruning(model, TokenPruningConfig(keep_ratio=0.5), SepTokenizer())
    inputs = batch([10, 4])
    with torch.no_grad():
        out = model(**inputs)
        embedding = model.sentence_embedding(inputs["input_ids"], inputs["attention_mask"])
    last, real = out.last_hidden_state, out.kept_masks[-1].unsqueeze(-1).float()
    torch.testing.assert_close(embedding, (last * real).sum(1) / real.sum(1))

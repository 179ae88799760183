"""CompactBert itself: config validation, per-layer widths, both attention paths, heads, losses, save/load, bad input."""

import json

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from compact_nlp import (
    CompactBertConfig,
    CompactBertForSequenceClassification,
    CompactBertModel,
    CompactConfigError,
    mean_pool,
)
from conftest import padded_batch


def tiny_config(**overrides) -> CompactBertConfig:
    fields = dict(vocab_size=99, hidden_size=32, head_dim=8, num_heads_per_layer=[4, 3],
                  intermediate_size_per_layer=[37, 20], max_position_embeddings=64)
    return CompactBertConfig(**{**fields, **overrides})


@pytest.mark.parametrize("bad, message", [
    (dict(num_heads_per_layer=[4, 4, 4]), "give exactly one entry per layer"),
    (dict(num_heads_per_layer=[4, -1]), "must be >= 0"),
    (dict(hidden_act="swish7"), "not supported"),
    (dict(classifier_head="pooler", add_pooler=False), "needs add_pooler=True"),
    (dict(head_dim=0), "head_dim must be positive"),
    (dict(position_offset=70), "position_offset"),
])
def test_inconsistent_config_is_a_clear_error(bad, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        tiny_config(**bad)


def test_config_json_round_trip_and_auto_registration(tmp_path):
    config = tiny_config(num_labels=3, token_pruning={"mode": "top_k", "keep_ratios": [1.0, 0.5], "unpruned_layers": 1,
                                                      "protected_token_ids": [3]})
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "compact-bert" and saved["num_heads_per_layer"] == [4, 3]
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, CompactBertConfig)
    assert {**loaded.to_dict(), "_name_or_path": ""} == config.to_dict()
    assert loaded.num_hidden_layers == 2 and loaded.num_labels == 3
    assert isinstance(AutoModel.from_config(config), CompactBertModel)
    assert isinstance(AutoModelForSequenceClassification.from_config(config), CompactBertForSequenceClassification)


def test_per_layer_widths_and_explicit_head_dim():
    # 7 heads in one layer and 12 in the next; hidden 256 carrying 8 heads of 64 in a third
    config = tiny_config(hidden_size=256, head_dim=64, num_heads_per_layer=[7, 12, 8],
                         intermediate_size_per_layer=[100, 300, 50])
    model = CompactBertModel(config).eval()
    assert model.layers[0].attention.query.weight.shape == (7 * 64, 256)
    assert model.layers[1].attention.out_proj.weight.shape == (256, 12 * 64)
    assert model.layers[2].ffn_in.weight.shape == (50, 256)
    ids, mask = padded_batch(99, 0)
    out = model(ids, attention_mask=mask, output_attentions=True)
    assert out.last_hidden_state.shape == (3, 9, 256)
    assert [a.shape[1] for a in out.attentions] == [7, 12, 8]


def test_layer_without_heads_or_ffn_runs():
    model = CompactBertModel(tiny_config(num_heads_per_layer=[0, 3], intermediate_size_per_layer=[37, 0])).eval()
    ids, mask = padded_batch(99, 0)
    assert torch.isfinite(model(ids, attention_mask=mask).last_hidden_state).all()


def test_sdpa_and_attention_probability_paths_agree():
    model = CompactBertModel(tiny_config()).eval()
    ids, mask = padded_batch(99, 0)
    fast = model(ids, attention_mask=mask)
    slow = model(ids, attention_mask=mask, output_attentions=True)
    assert torch.allclose(fast.last_hidden_state, slow.last_hidden_state, atol=1e-6)
    for probs in slow.attentions:  # (B, nh, T, T): rows are distributions that ignore padded keys
        assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-6)
        assert probs[1, :, :, 5:].abs().max() < 1e-12 and probs[2, :, :, 2:].abs().max() < 1e-12


def test_padding_does_not_change_real_tokens():
    model = CompactBertModel(tiny_config()).eval()
    ids = torch.randint(1, 99, (1, 5))
    alone = model(ids).last_hidden_state
    padded = model(torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1),
                   attention_mask=torch.tensor([[1] * 5 + [0] * 4])).last_hidden_state
    assert torch.allclose(alone, padded[:, :5], atol=1e-5)


def test_sentence_embedding_is_masked_mean():
    model = CompactBertModel(tiny_config()).eval()
    ids, mask = padded_batch(99, 0)
    states = model(ids, attention_mask=mask).last_hidden_state
    expected = torch.stack([states[b, : int(mask[b].sum())].mean(0) for b in range(3)])
    assert torch.allclose(model.sentence_embedding(ids, mask), expected, atol=1e-6)
    assert torch.allclose(mean_pool(states, mask), expected, atol=1e-6)
    assert torch.allclose(model.sentence_embedding(ids, mask, normalize=True).norm(dim=-1), torch.ones(3))


@pytest.mark.parametrize("head", ["pooler", "roberta", "electra", "distilbert"])
def test_classification_heads_and_losses(head):
    model = CompactBertForSequenceClassification(tiny_config(num_labels=3, classifier_head=head)).eval()
    ids, mask = padded_batch(99, 0)
    labels = torch.tensor([0, 2, 1])
    out = model(ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (3, 3) and model.config.problem_type == "single_label_classification"
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, labels))

    multi = CompactBertForSequenceClassification(tiny_config(num_labels=3, classifier_head=head)).eval()
    targets = torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0]])
    out = multi(ids, attention_mask=mask, labels=targets)
    assert multi.config.problem_type == "multi_label_classification"
    assert torch.allclose(out.loss, F.binary_cross_entropy_with_logits(out.logits, targets))

    regression = CompactBertForSequenceClassification(tiny_config(num_labels=1, classifier_head=head)).eval()
    scores = torch.tensor([0.5, 3.0, 4.2])
    out = regression(ids, attention_mask=mask, labels=scores)
    assert regression.config.problem_type == "regression"
    assert torch.allclose(out.loss, F.mse_loss(out.logits.squeeze(-1), scores))


def test_tuple_outputs_match_return_dict():
    model = CompactBertForSequenceClassification(tiny_config(num_labels=2)).eval()
    ids, mask = padded_batch(99, 0)
    loss, logits = model(ids, attention_mask=mask, labels=torch.tensor([0, 1, 1]), return_dict=False)[:2]
    assert torch.equal(logits, model(ids, attention_mask=mask).logits)


def test_save_load_is_safetensors_only(tmp_path):
    model = CompactBertForSequenceClassification(tiny_config(num_labels=2)).eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask = padded_batch(99, 0)
    assert torch.equal(model(ids, attention_mask=mask).logits, loaded(ids, attention_mask=mask).logits)
    # a base model loads from the same folder (shared "compact_bert." prefix)
    assert isinstance(AutoModel.from_pretrained(tmp_path), CompactBertModel)


def test_head_dim_that_does_not_match_the_weights(tmp_path):
    CompactBertModel(tiny_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["head_dim"] = 16
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CompactConfigError, match="does not describe the weights.*head_dim"):
        CompactBertModel.from_pretrained(tmp_path)


def test_missing_weights_file(tmp_path):
    CompactBertModel(tiny_config()).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(OSError, match="model.safetensors"):
        CompactBertModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("input_ids, message", [
    (torch.zeros(0, 5, dtype=torch.long), "empty batch"),
    (torch.zeros(2, 0, dtype=torch.long), "empty batch"),
    (torch.ones(2, 65, dtype=torch.long), "truncation=True, max_length=64"),
    (torch.ones(5, dtype=torch.long), "shape \\(batch, sequence\\)"),
])
def test_bad_inputs_are_clear_errors(input_ids, message):
    with pytest.raises(ValueError, match=message):
        CompactBertModel(tiny_config())(input_ids)


def test_roberta_positions_count_real_tokens_only():
    config = tiny_config(position_offset=2, pad_token_id=1, type_vocab_size=1)
    embeddings = CompactBertModel(config).embeddings
    ids = torch.tensor([[5, 6, 7, 1, 1]])
    assert embeddings.position_ids(ids).tolist() == [[2, 3, 4, 1, 1]]
    assert config.max_sequence_length == 62

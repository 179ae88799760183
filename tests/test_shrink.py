"""`shrink` removes structure for real: parameter counts drop and outputs equal the masked original."""

import copy

import pytest
import torch
from torch import nn

from compact_nlp import CompactBertConfig, CompactBertForSequenceClassification, CompactBertModel, shrink
from conftest import padded_batch


def config(**overrides):
    fields = dict(vocab_size=99, hidden_size=32, head_dim=8, num_heads_per_layer=[4, 4, 4],
                  intermediate_size_per_layer=[37, 37, 37], max_position_embeddings=64, num_labels=3)
    return CompactBertConfig(**{**fields, **overrides})


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def run(model, ids, mask):
    with torch.no_grad():
        out = model.eval()(ids, attention_mask=mask)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.fixture
def inputs():
    return padded_batch(99, 0)


def test_removing_heads_equals_masking_their_outputs(inputs):
    model = CompactBertModel(config()).eval()
    removed = {0: [1, 3], 2: [0]}
    small = shrink(model, heads=removed)
    assert small.config.num_heads_per_layer == [2, 4, 3]
    # each head: 3 x (H*hd + hd) for q/k/v, hd*H for out_proj columns
    assert params(model) - params(small) == 3 * (3 * (32 * 8 + 8) + 8 * 32)
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for layer, heads in removed.items():
            for h in heads:
                masked.layers[layer].attention.out_proj.weight[:, h * 8:(h + 1) * 8] = 0
    assert torch.allclose(run(small, *inputs), run(masked, *inputs), atol=1e-6)
    assert run(small, *inputs).abs().sum() > 0 and not torch.allclose(run(small, *inputs), run(model, *inputs))


def test_removing_ffn_neurons_equals_masking_them(inputs):
    model = CompactBertModel(config()).eval()
    removed = {1: list(range(0, 37, 2))}
    small = shrink(model, ffn=removed)
    assert small.config.intermediate_size_per_layer == [37, 18, 37]
    assert params(model) - params(small) == 19 * (32 + 1 + 32)
    masked = copy.deepcopy(model)
    with torch.no_grad():
        masked.layers[1].ffn_out.weight[:, removed[1]] = 0
    assert torch.allclose(run(small, *inputs), run(masked, *inputs), atol=1e-6)


def test_removing_a_layer_equals_skipping_it(inputs):
    model = CompactBertModel(config()).eval()
    small = shrink(model, layers=[1])
    assert small.config.num_hidden_layers == 2

    class Identity(nn.Module):
        def forward(self, x, *args):
            return x, None

    masked = copy.deepcopy(model)
    masked.layers[1] = Identity()
    assert torch.allclose(run(small, *inputs), run(masked, *inputs), atol=1e-6)
    assert params(model) - params(small) == params(model.layers[1])


class MaskedLayerNorm(nn.Module):
    """LayerNorm over the kept channels only, zero on removed ones: what a narrower hidden size computes."""

    def __init__(self, norm: nn.LayerNorm, keep: torch.Tensor):
        super().__init__()
        self.norm, self.keep = norm, keep

    def forward(self, x):
        kept = x[..., self.keep]
        normed = nn.functional.layer_norm(kept, (len(self.keep),), self.norm.weight[self.keep],
                                          self.norm.bias[self.keep], self.norm.eps)
        out = torch.zeros_like(x)
        out[..., self.keep] = normed
        return out


@pytest.mark.parametrize("head", ["pooler", "roberta", "distilbert"])
def test_removing_hidden_channels_equals_the_masked_model(inputs, head):
    model = CompactBertForSequenceClassification(config(classifier_head=head)).eval()
    removed = [0, 5, 6, 31]
    small = shrink(model, hidden=removed)
    assert small.config.hidden_size == 28
    keep = torch.tensor([c for c in range(32) if c not in removed])
    masked = copy.deepcopy(model)
    for name, module in list(masked.named_modules()):
        if isinstance(module, nn.LayerNorm):
            parent = masked.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, name.rsplit(".", 1)[1], MaskedLayerNorm(module, keep))
    with torch.no_grad():  # the pooler/head outputs on removed channels must not reach the logits
        for linear in [m for n, m in masked.named_modules() if n in ("compact_bert.pooler", "classifier.dense")]:
            linear.weight[removed] = 0
            linear.bias[removed] = 0
    assert torch.allclose(run(small, *inputs), run(masked, *inputs), atol=1e-5)
    assert params(small) < params(model)


def test_everything_at_once_on_a_classifier_with_an_embedding_projection(inputs):
    model = CompactBertForSequenceClassification(config(embedding_size=16, classifier_head="electra")).eval()
    small = shrink(model, heads={0: [0], 2: [1, 2]}, ffn={0: [3, 4]}, layers=[1], hidden=[7])
    assert small.config.num_heads_per_layer == [3, 2]
    assert small.config.intermediate_size_per_layer == [35, 37]
    assert small.config.hidden_size == 31 and small.config.embedding_size == 16
    assert small.compact_bert.embeddings.word_embeddings.weight.shape == (99, 16)  # tables untouched
    assert run(small, *inputs).shape == (3, 3)
    assert model.config.num_heads_per_layer == [4, 4, 4]  # the original is untouched


def test_shrunk_model_saves_and_loads(tmp_path, inputs):
    small = shrink(CompactBertModel(config()), heads={1: [0, 1]}, ffn={2: [0]})
    small.save_pretrained(tmp_path)
    again = CompactBertModel.from_pretrained(tmp_path)
    assert torch.equal(run(small, *inputs), run(again, *inputs))


@pytest.mark.parametrize("kwargs, message", [
    (dict(heads={0: [4]}), "valid indices are 0..3"),
    (dict(heads={5: [0]}), "no layer \\[5\\]"),
    (dict(layers=[3]), "valid indices are 0..2"),
    (dict(hidden=list(range(32))), "every hidden channel"),
])
def test_bad_indices_are_clear_errors(kwargs, message):
    with pytest.raises((IndexError, ValueError), match=message):
        shrink(CompactBertModel(config()), **kwargs)


def test_take_reorders_structure_without_changing_the_function(inputs):
    from compact_nlp.shrink import take

    model = CompactBertForSequenceClassification(config()).eval()
    shuffled = take(model, heads=[[3, 1, 0, 2], [0, 1, 2, 3], [2, 3, 1, 0]], ffn=[list(range(36, -1, -1))] * 3,
                    hidden=list(range(31, -1, -1)))
    torch.testing.assert_close(run(shuffled, *inputs), run(model, *inputs), atol=1e-5, rtol=0)
    assert shuffled.compact_bert.layers[0].attention.query.weight[0:8].equal(
        model.compact_bert.layers[0].attention.query.weight[24:32].flip(1))  # head 3 first, channels reversed
    with pytest.raises(IndexError, match=r"heads of layer 0: \[1, 1\] must be distinct indices in 0..3"):
        take(model, heads=[[1, 1], [0], [0]])
    with pytest.raises(IndexError, match="one list of heads and of FFN neurons per layer"):
        take(model, heads=[[0]])

"""Hugging Face <-> CompactBert: parity on every family, the reverse direction, and what cannot be converted."""

import pytest
import torch
import transformers as tf

from compact_nlp import AutoCompactModel, AutoCompactModelForSequenceClassification, shrink
from compact_nlp.convert import UnsupportedArchitectureError, from_hf_model, to_hf_model
from compact_nlp.modeling import CompactConfigError
from conftest import FAMILIES, padded_batch, requires_minilm, tiny_hf_config

TOLERANCE = 1e-5


def max_diff(a, b) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("with_head", [False, True], ids=["base", "classifier"])
def test_parity_with_the_hf_model(family, with_head, parity):
    config = tiny_hf_config(family)
    config.num_labels = 3
    auto = tf.AutoModelForSequenceClassification if with_head else tf.AutoModel
    hf_model = auto.from_config(config).eval()
    compact = from_hf_model(hf_model)
    ids, mask = padded_batch(config.vocab_size, config.pad_token_id)
    with torch.no_grad():
        expected = hf_model(ids, attention_mask=mask, output_hidden_states=True)
        got = compact(ids, attention_mask=mask, output_hidden_states=True)
    hidden = max(max_diff(a, b) for a, b in zip(expected.hidden_states, got.hidden_states, strict=True))
    parity(family, f"{'classifier' if with_head else 'base'}: hidden states vs transformers", hidden)
    assert hidden <= TOLERANCE
    key = "logits" if with_head else "last_hidden_state"
    output = parity(family, f"{'classifier' if with_head else 'base'}: {key} vs transformers",
                    max_diff(expected[key], got[key]))
    assert output <= TOLERANCE
    if not with_head and getattr(expected, "pooler_output", None) is not None:
        assert max_diff(expected.pooler_output, got.pooler_output) <= TOLERANCE


@pytest.mark.parametrize("family", FAMILIES)
def test_written_back_to_the_stock_layout(family, tmp_path, parity):
    config = tiny_hf_config(family)
    config.num_labels = 2
    original = tf.AutoModelForSequenceClassification.from_config(config).eval()
    back = to_hf_model(from_hf_model(original))
    assert type(back) is type(original)
    back.save_pretrained(tmp_path)
    reloaded = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()  # stock transformers
    ids, mask = padded_batch(config.vocab_size, config.pad_token_id)
    with torch.no_grad():
        diff = max_diff(original(ids, attention_mask=mask).logits, reloaded(ids, attention_mask=mask).logits)
    parity(family, "classifier: written back to HF layout, reloaded", diff)
    assert diff <= TOLERANCE


def test_non_uniform_widths_cannot_be_written_back():
    model = from_hf_model(tf.AutoModel.from_config(tiny_hf_config("bert")))
    with pytest.raises(CompactConfigError, match="same width in every layer"):
        to_hf_model(shrink(model, heads={0: [1]}))


def test_unsupported_architecture_lists_what_is_supported(tmp_path):
    gpt2 = tf.GPT2Model(tf.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedArchitectureError, match="Supported: bert, roberta, xlm-roberta, electra, distilbert"):
        from_hf_model(gpt2)
    gpt2.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="cannot convert model_type 'gpt2'"):
        AutoCompactModel.from_pretrained(tmp_path)


def test_auto_wrapper_takes_hf_folders_and_compact_folders(tmp_path, parity):
    config = tiny_hf_config("roberta")
    tf.AutoModel.from_config(config).save_pretrained(tmp_path / "hf")
    # a head the checkpoint does not have is created, as transformers does; num_labels passes through
    classifier = AutoCompactModelForSequenceClassification.from_pretrained(tmp_path / "hf", num_labels=4)
    assert classifier.config.num_labels == 4 and classifier.config.classifier_head == "roberta"
    classifier.save_pretrained(tmp_path / "compact")
    again = AutoCompactModelForSequenceClassification.from_pretrained(tmp_path / "compact").eval()
    ids, mask = padded_batch(config.vocab_size, config.pad_token_id)
    with torch.no_grad():
        assert torch.equal(classifier.eval()(ids, attention_mask=mask).logits, again(ids, attention_mask=mask).logits)
    with pytest.raises(ValueError, match="backend 'tensorflow' is not one of"):
        AutoCompactModel.from_pretrained(tmp_path / "hf", backend="tensorflow")


@requires_minilm
def test_real_minilm_parity_and_sentence_transformers_round_trip(minilm_path, tmp_path, parity):
    tokenizer = tf.AutoTokenizer.from_pretrained(minilm_path)
    hf_model = tf.AutoModel.from_pretrained(minilm_path).eval()
    compact = AutoCompactModel.from_pretrained("sentence-transformers/all-MiniLM-L6-v2").eval()
    assert sum(p.numel() for p in compact.parameters()) == 22_713_216
    batch = tokenizer(["A charming and often affecting journey.", "Unflinchingly bleak and desperate.", "Yes"],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = hf_model(**batch, output_hidden_states=True)
        got = compact(**batch, output_hidden_states=True)
    hidden = max(max_diff(a, b) for a, b in zip(expected.hidden_states, got.hidden_states, strict=True))
    assert parity("all-MiniLM-L6-v2", "base: hidden states vs transformers (real weights)", hidden) <= TOLERANCE

    # the written-back folder is what sentence-transformers loads (with its mean pooling) and embeds identically
    from sentence_transformers import SentenceTransformer, models

    to_hf_model(compact).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    word = models.Transformer(str(tmp_path))
    st = SentenceTransformer(modules=[word, models.Pooling(compact.config.hidden_size, "mean")], device="cpu")
    sentences = ["A charming and often affecting journey.", "Unflinchingly bleak and desperate."]
    ours = compact.sentence_embedding(**tokenizer(sentences, padding=True, return_tensors="pt"))
    diff = max_diff(torch.from_numpy(st.encode(sentences)), ours.detach())
    assert parity("all-MiniLM-L6-v2", "sentence-transformers on written-back folder", diff) <= 1e-5

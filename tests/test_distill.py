"""Distillation terms: each against its definition, across depth, width, head count and dropped tokens."""

import copy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from compact_nlp.distill import (
    DistillationConfig,
    Distiller,
    gather_tokens,
    relation_kl,
    soft_cross_entropy,
    uniform_layer_map,
)

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from tiny import tiny_classifier  # noqa: E402


def batch(rows=3, length=10):
    ids = torch.randint(1, 99, (rows, length))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def run(model, inputs, **flags):
    with torch.no_grad():
        return model.eval()(**inputs, **flags)


def test_soft_cross_entropy_is_the_tempered_cross_entropy_times_t_squared():
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    expected = -(F.softmax(teacher / 2, -1) * F.log_softmax(student / 2, -1)).sum(-1).mean() * 4
    assert torch.allclose(soft_cross_entropy(student, teacher, 2.0), expected)
    # minimised where the student matches the teacher
    assert soft_cross_entropy(teacher, teacher, 2.0) < soft_cross_entropy(student, teacher, 2.0)


def test_uniform_layer_map():
    assert uniform_layer_map(2, 4) == [0, 2, 4]
    assert uniform_layer_map(6, 6) == list(range(7))
    assert uniform_layer_map(4, 6) == [0, 2, 3, 4, 6]


def test_self_distillation_terms_vanish():
    teacher = tiny_classifier(layers=2)
    student = copy.deepcopy(teacher)
    inputs = batch()
    for attention_loss in ("mse", "relation"):
        config = DistillationConfig(hidden_weight=1, attention_weight=1, attention_loss=attention_loss)
        distiller = Distiller(config, student, teacher)
        flags = dict(output_hidden_states=True, output_attentions=attention_loss == "mse")
        terms = distiller.losses(run(student, inputs, **flags), run(teacher, inputs, **flags), inputs["attention_mask"])
        assert terms["hidden"] < 1e-10 and terms["attention"] < 1e-6, terms


def test_relation_loss_compares_different_head_counts_and_widths():
    teacher, student = tiny_classifier(hidden=32, heads=4, layers=4), tiny_classifier(hidden=24, heads=3, layers=2)
    config = DistillationConfig(hidden_weight=1, attention_weight=1, attention_loss="relation")
    distiller = Distiller(config, student, teacher)
    assert distiller.layer_map == [0, 2, 4] and distiller.relation_heads == 4
    assert distiller.projection.weight.shape == (32, 24)  # learned projection for the hidden-size gap
    inputs = batch()
    terms = distiller.losses(run(student, inputs, output_hidden_states=True),
                             run(teacher, inputs, output_hidden_states=True), inputs["attention_mask"])
    assert terms["attention"] > 0 and terms["hidden"] > 0
    with pytest.raises(ValueError, match="use attention_loss='relation'"):
        Distiller(DistillationConfig(attention_weight=1, attention_loss="mse"), student, teacher)
    with pytest.raises(ValueError, match="must divide the attention widths"):
        Distiller(DistillationConfig(attention_weight=1, relation_heads=5), student, teacher)


def test_relation_kl_ignores_padding():
    x = torch.randn(1, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 8)  # only padded tokens differ
    assert relation_kl(x, y, heads=2, mask=mask) < 1e-6
    assert relation_kl(x, y, heads=2, mask=None) > 1e-3


def test_a_student_that_dropped_tokens_is_compared_at_the_kept_positions():
    teacher = tiny_classifier(layers=2)
    inputs = batch()
    teacher_out = run(teacher, inputs, output_hidden_states=True, output_attentions=True)
    kept = torch.tensor([[0, 2, 5], [0, 1, 3], [0, 4, 9]])  # (B, k) surviving positions in every layer
    # a student whose every state is exactly the teacher's at the kept tokens
    student_out = SimpleNamespace(
        logits=teacher_out.logits,
        hidden_states=[gather_tokens(h, kept) for h in teacher_out.hidden_states],
        attentions=[torch.gather(gather_tokens(a.transpose(1, 2), kept).transpose(1, 2), 3,
                                 kept[:, None, None, :].expand(-1, a.shape[1], 3, -1)) for a in teacher_out.attentions],
    )
    distiller = Distiller(DistillationConfig(hidden_weight=1, attention_weight=1, attention_loss="mse"),
                          copy.deepcopy(teacher), teacher)
    terms = distiller.losses(student_out, teacher_out, inputs["attention_mask"], kept=[kept] * 3)
    assert terms["hidden"] < 1e-12 and terms["attention"] < 1e-12


def test_config_validation_and_round_trip():
    config = DistillationConfig(temperature=3.0, hidden_weight=0.5, layer_map=[0, 3, 6])
    assert DistillationConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="temperature must be positive"):
        DistillationConfig(temperature=0)
    with pytest.raises(ValueError, match="not all 0"):
        DistillationConfig(task_weight=0, logits_weight=0)
    with pytest.raises(ValueError, match="unknown DistillationConfig keys \\['temprature'\\]"):
        DistillationConfig.from_dict({"temprature": 2})
    with pytest.raises(ValueError, match="layer_map needs one teacher hidden-state index"):
        Distiller(DistillationConfig(layer_map=[0, 9]), tiny_classifier(layers=2), tiny_classifier(layers=2))

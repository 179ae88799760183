"""compact_nlp.hat: the search space, the elastic SuperTransformer, extraction parity, sandwich training, latency
data and predictor, the evolutionary search, and the errors a user can run into."""

import functools
import json
import random
import statistics

import pytest
import torch
import transformers as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from compact_nlp import CompactBertConfig, CompactBertForSequenceClassification
from compact_nlp.convert import from_hf_model
from compact_nlp.hat import (
    HatConfig,
    HatConfigError,
    LatencyData,
    LatencyPredictor,
    LatencyRecord,
    LatencySpec,
    LatencySpecMismatch,
    SandwichHook,
    SearchSpace,
    SearchSpaceError,
    SubTransformer,
    SuperTransformer,
    collect_latency,
    evolutionary_search,
    extract,
    given_subtransformer,
    importance,
    pareto_front,
    plot_search,
    rewire,
)
from compact_nlp.hat.measure import latency_spec, typical_length
from conftest import padded_batch, tiny_hf_config


def tiny_model(layers=4, heads=6, ffn=64, hidden=48) -> CompactBertForSequenceClassification:
    config = CompactBertConfig(vocab_size=99, hidden_size=hidden, head_dim=8, num_heads_per_layer=[heads] * layers,
                               intermediate_size_per_layer=[ffn] * layers, max_position_embeddings=64, num_labels=2)
    return CompactBertForSequenceClassification(config).eval()


def tiny_space(model, selection="spread") -> SearchSpace:
    return SearchSpace(max_layers=model.config.num_hidden_layers, hidden=[48, 40, 32], heads=[6, 4, 2],
                       ffn=[64, 48, 32], depth=[4, 3, 2, 1], layer_selection=selection)


def batch(labels=True, pad_token_id=0):
    ids, mask = padded_batch(99, pad_token_id, batch=3, length=9, pad_from=(9, 5, 2))
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": (torch.arange(9) > 4).long().expand(3, 9)}
    if labels:
        out["labels"] = torch.tensor([0, 1, 1])
    return out


class ParameterCountMeasurer:
    """A measurer whose "milliseconds" are the encoder's parameter count / 1000: deterministic, so the collection,
    resume and predictor mechanics are testable exactly (the ONNX Runtime measurer is tested on its own below)."""

    spec = LatencySpec(precision="fp32", threads=1, batch=1, sequence_length=8, hardware="parameter count")

    def measure(self, model):
        return [sum(p.numel() for n, p in model.named_parameters() if ".layers." in n) / 1000]


# --- the space -----------------------------------------------------------------------------------------------------
def test_the_default_space_for_minilm_is_hat_like():
    config = CompactBertConfig(hidden_size=384, head_dim=32, num_heads_per_layer=[12] * 6,
                               intermediate_size_per_layer=[1536] * 6)
    space = SearchSpace.from_model(config)
    assert space.heads == [12, 8, 6, 4] and space.ffn == [1536, 1024, 768, 512]
    assert space.hidden == [384, 320, 256] and space.depth == [6, 5, 4, 3, 2]
    assert space.largest() == SubTransformer(384, (12,) * 6, (1536,) * 6)
    assert space.smallest() == SubTransformer(256, (4,) * 2, (512,) * 2)
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space


@pytest.mark.parametrize("selection, depth, layers", [
    ("spread", 6, [0, 1, 2, 3, 4, 5]), ("spread", 3, [1, 3, 5]), ("spread", 2, [2, 5]), ("spread", 1, [5]),
    ("first", 3, [0, 1, 2]), ("first", 2, [0, 1]),
])
def test_which_layers_a_shallower_subtransformer_keeps(selection, depth, layers):
    space = SearchSpace(max_layers=6, hidden=[8], heads=[1], ffn=[8], depth=[6, 3, 2, 1], layer_selection=selection)
    assert space.layers_for(depth) == layers


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden=[]), "hidden choices are empty"),
    (dict(heads=[0, 4]), "heads choices must be positive"),
    (dict(depth=[5]), r"depth choices \[5\] exceed the SuperTransformer's 4 layers"),
    (dict(layer_selection="last"), "layer_selection must be 'spread' or 'first'"),
])
def test_an_empty_or_inconsistent_space_is_refused(kwargs, message):
    base = dict(max_layers=4, hidden=[48], heads=[6], ffn=[64], depth=[4])
    with pytest.raises(SearchSpaceError, match=message):
        SearchSpace(**{**base, **kwargs})


def test_a_space_wider_than_the_model_or_a_foreign_subtransformer_is_refused():
    model = tiny_model()
    with pytest.raises(SearchSpaceError, match="head choice 8 > the model's 6 heads.*SearchSpace.from_model"):
        SuperTransformer(model, SearchSpace(max_layers=4, hidden=[48], heads=[8], ffn=[64], depth=[4]))
    with pytest.raises(SearchSpaceError, match="the space is for 6 layers, the model has 4"):
        SuperTransformer(model, SearchSpace(max_layers=6, hidden=[48], heads=[6], ffn=[64], depth=[4]))
    supernet = SuperTransformer(model, tiny_space(model))
    with pytest.raises(SearchSpaceError, match="is not in the search space"):
        supernet(**batch(), sub=SubTransformer(48, (5,), (64,)))
    with pytest.raises(SearchSpaceError, match="one head count and one FFN width per layer"):
        SubTransformer(48, (6, 6), (64,))
    uneven = tiny_model()
    uneven.config.num_heads_per_layer = [6, 5, 6, 6]
    with pytest.raises(SearchSpaceError, match="same width in every layer"):
        SearchSpace.from_model(uneven.config)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0, 1))
def test_evolution_never_leaves_the_space(seed, probability):
    space = tiny_space(tiny_model())
    rng = random.Random(seed)
    a, b = space.random_gene(rng), space.random_gene(rng)
    for gene in (a, space.mutate(a, rng, probability), space.crossover(a, b, rng)):
        sub = space.decode(gene)
        space.check(sub)
        assert space.decode(space.encode(sub)) == sub


# --- rewiring, the SuperTransformer and extraction -------------------------------------------------------------------
def test_rewiring_puts_the_important_first_and_computes_the_same_function():
    model = tiny_model()
    batches = [batch(), batch()]
    ranks = importance(model, batches)
    assert all(r.shape == (6,) for r in ranks["heads"]) and ranks["hidden"].shape == (48,)
    rewired = rewire(model, ranks)
    inputs = batch()
    with torch.no_grad():
        before, after = model(**inputs).logits, rewired(**inputs).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    again = importance(rewired, batches)  # the same batches rank the rewired model in decreasing order
    for scores in (*again["heads"], *again["ffn"], again["hidden"]):
        assert torch.all(scores[:-1] >= scores[1:] - 1e-4 * scores.max())


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
def test_extraction_parity(family):
    """The extracted model equals the SuperTransformer running that SubTransformer (same code, same weights)."""
    config = tiny_hf_config(family)
    config.num_hidden_layers, config.num_labels = 3, 2
    model = from_hf_model(tf.AutoModelForSequenceClassification.from_config(config)).eval()
    space = SearchSpace(max_layers=3, hidden=[32, 24, 16], heads=[4, 2, 1], ffn=[37, 20], depth=[3, 2, 1])
    supernet = SuperTransformer(model, space).eval()
    rng = random.Random(0)
    inputs = batch(pad_token_id=config.pad_token_id)
    if family == "roberta":  # a single token type
        inputs.pop("token_type_ids")
    for sub in [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(6))]:
        small = extract(supernet, sub).eval()
        with torch.no_grad():
            expected = supernet(**inputs, sub=sub)
            got = small(**inputs)
        assert torch.equal(got.logits, expected.logits) and torch.equal(got.loss, expected.loss)
        # physically smaller: its own config, and exactly the parameters that config describes
        assert small.config.hidden_size == sub.hidden and small.config.num_heads_per_layer == list(sub.heads)
        assert small.config.intermediate_size_per_layer == list(sub.ffn)
        assert small.config.search["subtransformer"] == sub.to_dict()
        fresh = type(small)(small.config)
        assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in fresh.parameters())
    with torch.no_grad():  # the largest SubTransformer is the whole model
        torch.testing.assert_close(supernet(**inputs, sub=space.largest()).logits, model(**inputs).logits)


def test_a_subtransformer_trains_the_front_slices_of_the_shared_weights_without_copying():
    model = tiny_model()
    supernet = SuperTransformer(model, tiny_space(model)).train()
    sub = SubTransformer(32, (2, 4), (32, 48))  # layers [1, 3] ("spread")
    views = supernet.shared_weights(sub)
    assert views["compact_bert.layers.0.ffn_in.weight"].data_ptr() == model.compact_bert.layers[1].ffn_in.weight.data_ptr()
    supernet(**batch(), sub=sub).loss.backward()
    grad = model.compact_bert.layers[1].ffn_in.weight.grad  # (64, 48): only the first 32 neurons x 32 channels
    assert grad[:32, :32].abs().sum() > 0 and grad[32:].abs().sum() == 0 and grad[:, 32:].abs().sum() == 0
    assert model.compact_bert.layers[0].ffn_in.weight.grad is None  # layer 0 is not part of this SubTransformer


def test_the_extracted_model_saves_loads_and_exports(tmp_path):
    from compact_nlp.export.onnx import export_onnx

    model = tiny_model()
    supernet = SuperTransformer(model, tiny_space(model))
    small = extract(supernet, SubTransformer(40, (4, 2), (48, 32)))
    small.save_pretrained(tmp_path / "small")
    loaded = CompactBertForSequenceClassification.from_pretrained(tmp_path / "small").eval()
    assert loaded.config.search["subtransformer"] == {"hidden": 40, "heads": [4, 2], "ffn": [48, 32]}
    inputs = batch()
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, small.eval()(**inputs).logits)
    report = export_onnx(loaded, tmp_path / "small.onnx")  # checks ONNX Runtime against PyTorch itself
    assert report.max_abs_diff <= 1e-4


# --- sandwich training through CompactTrainer ------------------------------------------------------------------------
def _train(supernet, teacher, folder, hook, steps=4, accumulation=3, resume=None):
    import datasets
    from transformers import TrainingArguments

    from compact_nlp.trainer import CompactTrainer

    with torch.random.fork_rng():  # the same rows in every run (an interrupted and a resumed run see the same data)
        torch.manual_seed(123)
        fixed = batch()
    rows = [{k: v[i].tolist() for k, v in fixed.items()} for i in range(3)] * 8
    args = TrainingArguments(str(folder), max_steps=steps, per_device_train_batch_size=2,
                             gradient_accumulation_steps=accumulation, learning_rate=1e-3, save_steps=2,
                             report_to=[], use_cpu=True, logging_steps=1, seed=0, disable_tqdm=True)
    trainer = CompactTrainer(model=supernet, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             teacher_model=teacher, hooks=[hook])
    trainer.train(resume_from_checkpoint=resume)
    return trainer


@pytest.mark.slow
def test_the_sandwich_rule_trains_largest_smallest_and_random_each_step(tmp_path):
    model, teacher = tiny_model(), tiny_model()
    space = tiny_space(model)
    supernet = SuperTransformer(model, space)
    seen = []
    original = SuperTransformer.forward

    @functools.wraps(original)  # Trainer reads the forward signature to keep the dataset's columns
    def spy(self, *args, **kwargs):
        if self.training:
            seen.append(self.active)
        return original(self, *args, **kwargs)

    SuperTransformer.forward = spy
    try:
        hook = SandwichHook(space, random_subs=1, seed=3)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        trainer = _train(supernet, teacher, tmp_path / "a", hook)
    finally:
        SuperTransformer.forward = original
    assert len(seen) == 4 * 3
    for step in range(4):
        assert seen[3 * step:3 * step + 3] == hook.sandwich(step)  # largest, smallest, one random draw
    assert seen[0] == space.largest() and seen[1] == space.smallest()
    assert supernet.active is None  # between steps (evaluation, checkpoints) the whole model runs
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "loss_logits" in trainer.state.log_history[0]  # distilled from the teacher


def test_the_sandwich_needs_one_micro_batch_per_subtransformer(tmp_path):
    model = tiny_model()
    supernet = SuperTransformer(model, tiny_space(model))
    with pytest.raises(ValueError, match="set gradient_accumulation_steps to a multiple of 3"):
        _train(supernet, tiny_model(), tmp_path, SandwichHook(supernet.space), accumulation=2)


@pytest.mark.slow
def test_supernet_training_resumes_from_a_checkpoint_with_nothing_lost(tmp_path):
    import shutil

    torch.manual_seed(0)
    start, teacher = tiny_model(), tiny_model()

    def supernet():
        fresh = SuperTransformer(CompactBertForSequenceClassification(start.config), tiny_space(start))
        fresh.model.load_state_dict(start.state_dict())
        return fresh

    straight = supernet()
    _train(straight, teacher, tmp_path / "straight", SandwichHook(straight.space))
    # an interrupted run: only its first checkpoint survives, then a fresh process resumes from it
    shutil.copytree(tmp_path / "straight" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    resumed = supernet()
    _train(resumed, teacher, tmp_path / "resumed", SandwichHook(resumed.space), resume=True)
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, atol=1e-6, rtol=0)


# --- latency data and the predictor --------------------------------------------------------------------------------
def test_latency_collection_is_append_only_and_resumes(tmp_path):
    model = tiny_model()
    supernet = SuperTransformer(model, tiny_space(model))
    path = tmp_path / "latency.jsonl"
    data = collect_latency(supernet, ParameterCountMeasurer(), path, count=5, noise_models=2, noise_repeats=2)
    assert len(data.records) == 9 and data.noise_floor()["mape"] == 0.0  # a deterministic measurer has no noise
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:10])  # interrupted mid-line
    calls = []
    measurer = ParameterCountMeasurer()
    measurer.measure = lambda m, real=measurer.measure: calls.append(1) or real(m)
    resumed = collect_latency(supernet, measurer, path, count=5, noise_models=2, noise_repeats=2)
    assert len(calls) == 2 and [r.sub for r in resumed.records] == [r.sub for r in data.records]
    more = collect_latency(supernet, ParameterCountMeasurer(), path, count=8, noise_models=2, noise_repeats=2)
    assert len(more.records) == 12 and [r.sub for r in more.records[:9]] == [r.sub for r in data.records]


def test_a_noisy_machine_is_reported_before_the_long_part_of_the_collection(tmp_path, capsys):
    from compact_nlp.hat.pipeline import report_noise_floor

    model = tiny_model()
    supernet = SuperTransformer(model, tiny_space(model))
    noisy = ParameterCountMeasurer()
    calls = []  # every other call 20% slower: repeats of one model differ by 10% from their mean
    noisy.measure = lambda m, real=noisy.measure: [v * (1.2 if calls.append(1) or len(calls) % 2 else 1.0)
                                                  for v in real(m)]
    floors = []
    collect_latency(supernet, noisy, tmp_path / "l.jsonl", count=5, noise_models=2, noise_repeats=2,
                    on_noise_floor=lambda floor: floors.append((len(calls), floor)))
    assert len(floors) == 1 and floors[0][0] == 4  # once, right after the 2 x 2 noise measurements
    floor = floors[0][1]
    assert floor["models"] == 2 and floor["mape"] == pytest.approx(100 * 0.1 / 1.1, abs=0.01)
    report_noise_floor(floor)
    assert "WARNING" in capsys.readouterr().out
    report_noise_floor({**floor, "mape": 2.0})
    logged = capsys.readouterr().out
    assert "noise floor: 2.0%" in logged and "WARNING" not in logged


def test_latency_data_for_another_setting_or_space_is_refused(tmp_path):
    model = tiny_model()
    space = tiny_space(model)
    collect_latency(SuperTransformer(model, space), ParameterCountMeasurer(), tmp_path / "l.jsonl", count=2,
                    noise_models=1, noise_repeats=1)
    two_threads = LatencySpec(precision="fp32", threads=2, batch=1, sequence_length=8)
    with pytest.raises(LatencySpecMismatch, match="threads: 1 vs 2.*collect latency data"):
        LatencyData(tmp_path / "l.jsonl", two_threads, space)
    with pytest.raises(LatencySpecMismatch, match="another search space"):
        LatencyData(tmp_path / "l.jsonl", ParameterCountMeasurer.spec, tiny_space(model, selection="first"))


@pytest.mark.slow
def test_the_predictor_learns_measured_latency_and_refuses_other_settings(tmp_path):
    model = tiny_model()
    space = tiny_space(model)
    data = collect_latency(SuperTransformer(model, space), ParameterCountMeasurer(), tmp_path / "l.jsonl", count=120,
                           noise_models=1, noise_repeats=1)
    predictor = LatencyPredictor.fit(data, epochs=1500)  # auto: HAT's MLP and the cost model, chosen on validation
    kinds = predictor.metrics["kinds"]
    assert set(kinds) == {"mlp", "cost"} and kinds["mlp"]["test"]["count"] == 18
    assert kinds["mlp"]["test"]["mape"] < 10  # parameter count is close to a function of HAT's features
    # ... and exactly linear in the cost terms, so the cost model fits it and "auto" keeps it
    assert predictor.kind == predictor.metrics["kind"] == "cost" and kinds["cost"]["test"]["mape"] < 0.5
    assert predictor.metrics["test"] == kinds["cost"]["test"]
    mlp = LatencyPredictor.fit(data, epochs=50, kind="mlp")
    assert mlp.kind == "mlp" and set(mlp.metrics["kinds"]) == {"mlp"}
    sub = space.sample(random.Random(1))
    for fitted, folder in ((mlp, tmp_path / "mlp"), (predictor, tmp_path / "p")):
        fitted.save(folder)
        assert LatencyPredictor.load(folder).predict(sub) == pytest.approx(fitted.predict(sub), rel=1e-6)
    loaded = LatencyPredictor.load(tmp_path / "p")
    with pytest.raises(ValueError, match="predictor kind must be one of"):
        LatencyPredictor.fit(data, kind="gbm")
    loaded.check(ParameterCountMeasurer.spec, space)
    for field, value in (("precision", "int8-dynamic"), ("threads", 2), ("sequence_length", 128), ("batch", 4),
                         ("attention", "decomposed")):
        other = LatencySpec(**{**ParameterCountMeasurer.spec.to_dict(), field: value})
        with pytest.raises(LatencySpecMismatch, match=f"the latency predictor was made for .*{field}"):
            loaded.check(other, space)
    # data written before the fused-attention export has no such field: it measured decomposed graphs
    legacy = {k: v for k, v in ParameterCountMeasurer.spec.to_dict().items() if k != "attention"}
    assert LatencySpec.from_dict(legacy).attention == "decomposed"
    with pytest.raises(ValueError, match="attention must be 'fused' or 'decomposed'"):
        LatencySpec(attention="fast")
    with pytest.raises(LatencySpecMismatch, match="another search space"):
        loaded.check(ParameterCountMeasurer.spec, tiny_space(model, "first"))
    with pytest.raises(ValueError, match="collect at least 10"):
        LatencyPredictor.fit(LatencyData(tmp_path / "few.jsonl", ParameterCountMeasurer.spec, space))


def test_resuming_with_another_predictor_kind_is_refused(tmp_path):
    from dataclasses import replace

    from compact_nlp.hat import HatConfig, HatConfigError
    from compact_nlp.hat.pipeline import latency_stage

    model = tiny_model()
    supernet = SuperTransformer(model, tiny_space(model))
    config = HatConfig(latency_models=12, noise_models=1, noise_repeats=1, latency_predictor="cost")
    assert latency_stage(supernet, ParameterCountMeasurer(), config, tmp_path)[1].kind == "cost"
    with pytest.raises(HatConfigError, match="holds a 'cost' latency predictor.*Delete that folder"):
        latency_stage(supernet, ParameterCountMeasurer(), replace(config, latency_predictor="mlp"), tmp_path)
    assert latency_stage(supernet, ParameterCountMeasurer(), replace(config, latency_predictor="auto"),
                         tmp_path)[1].kind == "cost"  # auto takes the predictor it finds
    with pytest.raises(HatConfigError, match="latency_predictor must be"):
        HatConfig(latency_predictor="xgboost")


@pytest.mark.slow
def test_a_null_sequence_length_times_budgets_at_the_tasks_mean_length(tiny_tokenizer):
    """Short inputs make a layer's fixed cost weigh more than its width: a budget timed at 32 tokens does not hold on
    13-token reviews, so compress's searches time at the texts' mean length."""
    texts = ["a good film", "the plot was slow and the ending was very long and dull"]
    mean = typical_length(tiny_tokenizer, texts, max_length=64)
    assert mean == round(sum(len(tiny_tokenizer(t)["input_ids"]) for t in texts) / 2)
    assert typical_length(tiny_tokenizer, ["a"], 64) == 8, "never below 8 tokens"
    assert latency_spec(HatConfig(sequence_length=None), typical=mean).sequence_length == mean
    assert latency_spec(HatConfig(sequence_length=48), typical=mean).sequence_length == 48
    with pytest.raises(HatConfigError, match="sequence_length must be positive, or null"):
        HatConfig(sequence_length=0)


def test_the_onnx_runtime_measurer_times_the_int8_form_that_ships(tiny_tokenizer, tmp_path):
    import onnx
    from datasets import Dataset

    from compact_nlp.hat.measure import OnnxRuntimeMeasurer, latency_spec, measuring_texts

    spec = LatencySpec(precision="int8-dynamic", threads=1, batch=2, sequence_length=12)
    measurer = OnnxRuntimeMeasurer(spec, tiny_tokenizer, ["the cat sat on the mat .", "a dog ran"], calls=5, warmup=1)
    assert measurer.inputs["input_ids"].shape == (2, 12) and measurer.inputs["attention_mask"].all()
    times = measurer.measure(tiny_model())
    assert len(times) == measurer.rounds and all(t > 0 for t in times)  # one median per round
    # the same timing loop on a session made elsewhere (a shipped file)
    session = measurer.session(tiny_model(), tmp_path)
    assert len(measurer.time_session(session)) == measurer.rounds

    config = HatConfig(threads=2, sequence_length=16)
    assert (latency_spec(config).threads, latency_spec(config).sequence_length,
            latency_spec(config).precision, latency_spec(config).attention) == (2, 16, config.precision, "fused")
    # a recipe that ships plain attention (export.fuse_attention: false) times plain attention
    plain = OnnxRuntimeMeasurer(latency_spec(config, fuse_attention=False), tiny_tokenizer, ["a dog ran"])
    assert plain.spec.attention == "decomposed"
    plain.session(tiny_model(), tmp_path)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert "Softmax" in ops and "MultiHeadAttention" not in ops
    pairs = Dataset.from_dict({"sentence1": ["a cat", "the dog"], "sentence2": ["sat down", "ran"], "label": [0, 1]})
    assert measuring_texts(pairs, "mrpc") == ["a cat sat down", "the dog ran"]


# --- the search ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    model = tiny_model()
    space = tiny_space(model)
    data = collect_latency(SuperTransformer(model, space), ParameterCountMeasurer(),
                           tmp_path_factory.mktemp("latency") / "l.jsonl", count=60, noise_models=1, noise_repeats=1)
    return space, LatencyPredictor.fit(data, kind="cost")  # exact for parameter counts, and fast


def _params(sub):  # a fitness that rewards capacity: the search must push against the budget
    return sum(h * 8 * sub.hidden * 4 + f * sub.hidden * 2 for h, f in zip(sub.heads, sub.ffn)) / 1000


def test_the_search_finds_fit_subtransformers_under_the_budget(fitted, tmp_path):
    space, predictor = fitted
    budget = 0.5 * predictor.predict(space.largest())
    result = evolutionary_search(space, predictor, budget, _params, population=12, parents=4, mutations=4,
                                 crossovers=4, iterations=5, seed=0)
    assert all(c.predicted_ms <= budget for c in result.history)
    assert result.best.fitness == max(c.fitness for c in result.history)
    assert result.best_per_generation == sorted(result.best_per_generation)  # parents survive: never worse
    randoms = [_params(space.sample(random.Random(i))) for i in range(50)]
    assert result.best.fitness > statistics.median(randoms)
    front = pareto_front(result.history)
    assert front[-1] == result.best  # the chosen one is on the front: ties go to the faster
    assert all(a.predicted_ms <= b.predicted_ms and a.fitness < b.fitness for a, b in zip(front, front[1:]))
    plot_search(result, tmp_path / "pareto.png", reference=(predictor.predict(space.largest()), 1.0, "full"))
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_given_subtransformer_is_scored_like_a_searched_one_and_checked_against_the_space(fitted):
    space, predictor = fitted
    sub = space.largest()
    result = given_subtransformer(space, predictor, 1.0, _params, sub.to_dict())
    assert result.given and result.to_dict()["given"] and result.best.sub == sub
    assert result.best.fitness == _params(sub) and result.best.predicted_ms == predictor.predict(sub)
    with pytest.raises(SearchSpaceError, match="not in the search space"):
        given_subtransformer(space, predictor, 1.0, _params, {**sub.to_dict(), "hidden": sub.hidden + 1})
    with pytest.raises(HatConfigError, match=r"hat.subtransformer names one architecture"):
        HatConfig(subtransformer={"hidden": 384, "heads": [12]})


def test_the_search_resumes_and_refuses_a_changed_setting(fitted, tmp_path):
    space, predictor = fitted
    budget = 0.6 * predictor.predict(space.largest())
    kwargs = dict(population=8, parents=3, mutations=3, crossovers=2, seed=1)
    straight = evolutionary_search(space, predictor, budget, _params, iterations=4, **kwargs)
    state = tmp_path / "state.json"
    evolutionary_search(space, predictor, budget, _params, iterations=2, state_path=state, **kwargs)
    scored_before = len(json.loads(state.read_text())["history"])
    calls = []
    resumed = evolutionary_search(space, predictor, budget, lambda s: calls.append(s) or _params(s), iterations=4,
                                  state_path=state, **kwargs)
    assert [c.sub for c in resumed.history] == [c.sub for c in straight.history]
    assert len(calls) == len(straight.history) - scored_before  # nothing scored twice
    assert resumed.best == straight.best
    with pytest.raises(SearchSpaceError, match="budget_ms changed"):
        evolutionary_search(space, predictor, budget * 0.9, _params, iterations=4, state_path=state, **kwargs)
    with pytest.raises(SearchSpaceError, match="mutation_probability changed"):
        evolutionary_search(space, predictor, budget, _params, iterations=4, state_path=state,
                            **{**kwargs, "mutation_probability": 0.5})
    wider = SearchSpace(**{**space.to_dict(), "ffn": [64, 48, 32, 16]})  # the predictor knows another space
    with pytest.raises(LatencySpecMismatch, match="another search space"):
        evolutionary_search(wider, predictor, budget, _params, iterations=4, state_path=state, **kwargs)


def test_a_search_state_from_before_the_attention_field_reads_as_decomposed(fitted, tmp_path):
    import copy
    import dataclasses

    space, predictor = fitted
    assert predictor.spec.attention == "fused"
    budget = 0.6 * predictor.predict(space.largest())
    kwargs = dict(population=8, parents=3, mutations=3, crossovers=2, seed=1)
    state = tmp_path / "state.json"
    evolutionary_search(space, predictor, budget, _params, iterations=1, state_path=state, **kwargs)
    written = json.loads(state.read_text())
    del written["settings"]["spec"]["attention"]  # as compact wrote it before the fused export
    state.write_text(json.dumps(written))
    with pytest.raises(SearchSpaceError, match="spec changed"):  # its latencies were of the decomposed graph
        evolutionary_search(space, predictor, budget, _params, iterations=2, state_path=state, **kwargs)
    decomposed = copy.copy(predictor)
    decomposed.spec = dataclasses.replace(predictor.spec, attention="decomposed")
    resumed = evolutionary_search(space, decomposed, budget, _params, iterations=2, state_path=state, **kwargs)
    assert len(resumed.best_per_generation) == 2


def test_a_budget_below_the_smallest_subtransformer_is_refused(fitted):
    space, predictor = fitted
    smallest = predictor.predict(space.smallest())
    with pytest.raises(SearchSpaceError, match="below the smallest SubTransformer's predicted latency"):
        evolutionary_search(space, predictor, 0.5 * smallest, _params)


@pytest.mark.parametrize("kwargs, message", [
    (dict(budgets=[0.0]), "budgets are fractions"),
    (dict(parents=50), "cannot exceed hat.population"),
    (dict(mutations=1, crossovers=1), "must refill the population"),
    (dict(supernet_batch_size=32), "make it a multiple"),
    (dict(threads=0), "hat.threads must be positive"),
    (dict(measurer="my_phone.py"), "'module:callable'"),
    (dict(distillation={"hiden_weight": 1.0}), r"hat.distillation: unknown DistillationConfig keys \['hiden_weight'\]"),
    (dict(distillation={"temperature": 0}), "hat.distillation: temperature must be positive"),
    (dict(distillation="hidden"), "hat.distillation is a mapping"),
])
def test_bad_hat_settings_are_refused(kwargs, message):
    with pytest.raises(HatConfigError, match=message):
        HatConfig(**kwargs)


# --- compact search, end to end ------------------------------------------------------------------------------------
@pytest.fixture
def finetuned(tmp_path, tiny_tokenizer):
    """A (tiny, random) fine-tuned classifier folder, as `compact run` leaves one."""
    folder = tmp_path / "finetuned"
    model = tiny_model(layers=3, heads=8, ffn=256, hidden=64)  # wide enough for latency to scale with width
    model.config.id2label, model.config.label2id = {0: "no", 1: "yes"}, {"no": 0, "yes": 1}
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


SEARCH_SETTINGS = ["protocol.heldout=3", "protocol.batch_size=3", "protocol.max_length=32", "export.mobile=true",
                   "hat.budgets=[0.6]", "hat.supernet_steps=2", "hat.supernet_batch_size=3",
                   "hat.importance_batches=1", "hat.latency_models=10", "hat.noise_models=2", "hat.noise_repeats=2",
                   "hat.population=4", "hat.parents=2", "hat.mutations=1", "hat.crossovers=1", "hat.iterations=2",
                   "hat.fitness_examples=3", "hat.distill_epochs=1", "hat.sequence_length=48"]


@pytest.mark.slow
def test_compact_search_runs_every_stage_ships_and_resumes(finetuned, glue_dir, tmp_path, user_measurer, capsys):
    from compact_nlp.cli import main

    out = tmp_path / "search"
    # with a transfer set: the swapped training pairs join what the SuperTransformer and the SubTransformers learn from;
    # the SubTransformers also learn the fine-tuned model's hidden states
    settings = SEARCH_SETTINGS + [user_measurer, "transfer=[swapped]", "hat.distillation={hidden_weight: 1.0}"]
    args = ["search", "recipes/glue/qqp.yaml", "--model", str(finetuned), "--glue-dir", str(glue_dir), "--out",
            str(out)] + [x for s in settings for x in ("--set", s)]
    status, printed = main(args), capsys.readouterr()
    assert status == 0, printed.err
    printed = printed.out
    assert "latency predictor: test MAPE" in printed and "budget 0.6: searched" in printed
    results = json.loads((out / "search_results.json").read_text())
    entry = results["budgets"]["0.6"]
    searched = entry["searched"]
    assert searched["predicted_ms"] <= entry["search"]["budget_ms"]
    assert searched["distill_seeds"] == [1] and len(searched["dev_per_seed"]["validation"]["accuracy"]) == 1
    assert searched["transfer_examples"] == searched["train_examples"] > 0  # every training pair, swapped
    assert results["full_reference"]["subtransformer"]["heads"] == [8, 8, 8]  # the full model, trained the same way
    assert searched["artifact"] == "model.ort" and searched["quant"]["config"]["mode"] == "ptq"  # int8, as budgeted
    shipped = CompactBertForSequenceClassification.from_pretrained(out / "sub-0.6-searched" / "pytorch")
    assert shipped.config.num_heads_per_layer == searched["subtransformer"]["heads"]  # physically that size
    assert shipped.config.search["subtransformer"] == searched["subtransformer"]
    # each of its layers imitated the teacher layer it was cut from (hidden state 0 is the embeddings)
    assert searched["distillation"]["hidden_weight"] == 1.0 and searched["distillation"]["temperature"] == 1.0
    assert searched["distillation"]["layer_map"] == [0] + [i + 1 for i in shipped.config.search["layers"]]
    assert "found by hardware-aware search (HAT)" in (out / "sub-0.6-searched" / "model" / "README.md").read_text()
    assert (out / "search-0.6" / "pareto.png").is_file() and (out / "predictor" / "latency_predictor.json").is_file()
    header, *rows = (out / "latency.jsonl").read_text().splitlines()
    spec = json.loads(header)["spec"]
    assert spec["precision"] == "int8-dynamic" and spec["runtime"] == "parameter-count" and len(rows) == 14
    assert results["spec"] == spec  # the user's measurer says what its numbers are

    (out / "search_results.json").unlink()  # run again: every stage is found and skipped, nothing measured again
    # (without the hand-picked model this time: its SubTransformer is still named, as one that was not distilled)
    assert main(args + ["--set", "hat.uniform_reference=false"]) == 2  # another job: refused, nothing lost
    assert "--reuse to keep its finished stages" in capsys.readouterr().err
    assert main(args + ["--set", "hat.uniform_reference=false", "--reuse"]) == 0  # the user says so
    assert len((out / "latency.jsonl").read_text().splitlines()) == 15
    again = json.loads((out / "search_results.json").read_text())["budgets"]["0.6"]
    assert again["searched"]["subtransformer"] == searched["subtransformer"]
    assert again["searched"]["dev"] == searched["dev"]
    assert "uniform" not in again and again["uniform_subtransformer"] == entry["uniform"]["subtransformer"]
    assert "budget 0.6: searched" in capsys.readouterr().out

    capsys.readouterr()
    assert main(args + ["--set", "hat.threads=2", "--reuse"]) == 2  # the stored latency data is for 1 thread
    assert "threads: 1 vs 2" in capsys.readouterr().err


@pytest.mark.parametrize("measurer, message", [
    ("no_such_module:Timer", "cannot be loaded"),
    ("user_measurer:NoSuchFactory", "cannot be loaded"),
    ("builtins:slice", "lacks a `spec`"),  # slice(spec, tokenizer, texts) is no measurer
])
def test_a_user_measurer_that_cannot_work_is_refused_before_anything_is_measured(
        finetuned, glue_dir, tmp_path, user_measurer, capsys, measurer, message):
    from compact_nlp.cli import main

    out = tmp_path / "search"
    args = ["search", "recipes/glue/qqp.yaml", "--model", str(finetuned), "--glue-dir", str(glue_dir), "--out",
            str(out)] + [x for s in SEARCH_SETTINGS + [f"hat.measurer={measurer}"] for x in ("--set", s)]
    assert main(args) == 2
    assert message in capsys.readouterr().err and not (out / "latency.jsonl").exists()


def test_the_hand_picked_comparison_is_uniform_as_wide_then_as_deep_as_the_budget_allows(fitted):
    from compact_nlp.hat.pipeline import uniform_baseline

    space, predictor = fitted
    full = predictor.predict(space.largest())
    roomy = uniform_baseline(space, predictor, 0.8 * full)
    assert roomy.hidden == 48 and set(roomy.heads) == {6} and roomy.depth < 4  # full width, fewer layers
    tight = uniform_baseline(space, predictor, 1.05 * predictor.predict(space.uniform(1, 40, 4, 48)))
    assert tight is not None and len(set(tight.heads)) == 1 and tight.hidden < 48  # narrower, still uniform
    assert predictor.predict(tight) <= 1.05 * predictor.predict(space.uniform(1, 40, 4, 48))
    assert uniform_baseline(space, predictor, 0.0) is None


def test_more_passes_measure_every_model_again_and_the_predictor_learns_the_mean(tmp_path):
    model = tiny_model()
    supernet = SuperTransformer(model, tiny_space(model))
    one = collect_latency(supernet, ParameterCountMeasurer(), tmp_path / "l.jsonl", count=4, noise_models=1,
                          noise_repeats=2)
    three = collect_latency(supernet, ParameterCountMeasurer(), tmp_path / "l.jsonl", count=4, noise_models=1,
                            noise_repeats=2, passes=3)  # resumes: only the two new passes are measured
    assert len(one.records) == 6 and len(three.records) == 6 + 8
    assert [r.repeat for r in three.records[6:]] == [1] * 4 + [2] * 4
    assert [r.sub for r in three.records[6:10]] == [r.sub for r in three.records[2:6]]  # the same models, again
    assert three.noise_floor()["models"] == 5  # every model measured more than once counts towards the floor

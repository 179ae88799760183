"""The combined pipeline (compact_nlp.combined): hat -> token pruning -> int8 QAT or binary, one folder, resumable."""

import json

import pytest
from huggingface_hub import ModelCard

from compact_nlp import CompactBertConfig, CompactBertForSequenceClassification
from compact_nlp.cli import main
from compact_nlp.recipe import RecipeError, load_recipe

# the hat stage as small as tests/test_hat.py runs it; the later steps one epoch on three examples
TINY = ["protocol.heldout=3", "protocol.batch_size=3", "protocol.max_length=32", "protocol.seeds=[1]",
        "hat.supernet_steps=2", "hat.supernet_batch_size=3", "hat.importance_batches=1", "hat.latency_models=10",
        "hat.noise_models=2", "hat.noise_repeats=2", "hat.population=4", "hat.parents=2", "hat.mutations=1",
        "hat.crossovers=1", "hat.iterations=2", "hat.fitness_examples=3", "hat.distill_epochs=1",
        "hat.sequence_length=48", "hat.budgets=[0.6]", "token_pruning.keep_ratio=0.8",
        "stages.token_pruning.protocol.epochs=1", "stages.quant.protocol.epochs=1"]


@pytest.fixture
def finetuned(tmp_path, tiny_tokenizer):
    """A (tiny, random) fine-tuned classifier folder, as `compact run` leaves one."""
    folder = tmp_path / "finetuned"
    config = CompactBertConfig(vocab_size=99, hidden_size=64, head_dim=8, num_heads_per_layer=[8] * 3,
                               intermediate_size_per_layer=[256] * 3, max_position_embeddings=64, num_labels=2,
                               id2label={0: "no", 1: "yes"}, label2id={"no": 0, "yes": 1})
    CompactBertForSequenceClassification(config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def run_args(finetuned, glue_dir, out, *presets):
    args = ["run", "recipes/glue/qqp.yaml", "--glue-dir", str(glue_dir), "--out", str(out), "--preset", "combined"]
    for preset in presets:
        args += ["--preset", preset]
    for setting in [f"model={finetuned}", f"teacher={finetuned}", *TINY]:
        args += ["--set", setting]
    return args


@pytest.mark.slow
def test_one_recipe_searches_prunes_quantizes_and_ships_one_folder(finetuned, glue_dir, tmp_path, capsys,
                                                                    monkeypatch):
    out = tmp_path / "combined"
    status, printed = main(run_args(finetuned, glue_dir, out)), capsys.readouterr()
    assert status == 0, printed.err
    assert "hat: {" in printed.out and "quant: dev validation/accuracy" in printed.out

    results = json.loads((out / "results.json").read_text())
    assert list(results["stages"]) == ["hat", "token_pruning", "quant"]
    searched = results["stages"]["hat"]["subtransformer"]
    hat_folders = {p.name for p in (out / "hat").iterdir()}  # only the searched SubTransformer was distilled
    assert any(n.endswith("-searched") for n in hat_folders) and not any(n.endswith("-uniform") for n in hat_folders)
    model = out / "model"
    for name in ("model.onnx", "model.ort", "required_operators.config", "README.md"):
        assert (model / name).is_file(), name
    config = json.loads((model / "config.json").read_text())
    # every step left its mark on the one model: the searched widths, the pruning schedule, the int8 weights
    assert config["num_heads_per_layer"] == searched["heads"] and config["search"]["subtransformer"] == searched
    assert config["token_pruning"]["mode"] == "top_k" and len(config["token_pruning"]["keep_ratios"]) == len(
        searched["heads"])  # the schedule was made for the searched depth
    final = results["per_seed"][0]
    shipped = final["quant_choice"]["shipped"]  # the preset lets the held-out split choose QAT or PTQ
    assert config["quant"]["int8"]["mode"] == final["quant"]["config"]["mode"] == shipped
    assert final["artifact"] == "model.ort" and final["teacher"] == str(finetuned)
    assert results["stages"]["quant"]["recipe"]["protocol"]["split_seed"] == 1
    card = (model / "README.md").read_text()
    quantized = "int8 by quantization-aware" if shipped == "qat" else "int8 by post-training quantization"
    for step in ("found by hardware-aware search (HAT)", "cascade token pruning", quantized):
        assert step in card
    assert ModelCard.load(model / "README.md").data.base_model is not None
    # PyTorch weights ship with QAT (they sit on the int8 grid); dynamic PTQ has no PyTorch form
    assert (model / "model.safetensors").is_file() == (shipped == "qat")

    # run again after losing the final folder: every stage is found and skipped, nothing trains again
    import shutil

    import compact_nlp.run

    shutil.rmtree(model)
    (out / "results.json").unlink()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished stage was trained again")

    monkeypatch.setattr(compact_nlp.run, "run_seed", no_training)
    assert main(run_args(finetuned, glue_dir, out)) == 0
    assert (model / "model.ort").is_file()
    assert json.loads((out / "results.json").read_text())["per_seed"][0]["dev"] == final["dev"]
    monkeypatch.undo()

    # binary weights as the last step instead: the same searched and pruned model, only the last step runs
    binary = tmp_path / "combined-binary"
    binary.mkdir()
    for stage in ("hat", "token_pruning"):
        shutil.copytree(out / stage, binary / stage)
    status, printed = main(run_args(finetuned, glue_dir, binary, "combined-binary") + ["--reuse"]), capsys.readouterr()
    assert status == 0, printed.err
    config = json.loads((binary / "model" / "config.json").read_text())
    assert config["quant"]["binary"]["activation_bits"] == 8 and config["search"]["subtransformer"] == searched
    assert config["token_pruning"] == json.loads((model / "config.json").read_text())["token_pruning"]
    assert "binary weights (W1A8" in (binary / "model" / "README.md").read_text()
    assert (binary / "model" / "model.safetensors").is_file()


COMBINED = ["model=m", "teacher=m", "hat={budgets: [0.5]}", "token_pruning={keep_ratio: 0.6}"]


@pytest.mark.parametrize("overrides, message", [
    (["model=m", "hat={budgets: [0.5]}", "quant={int8: {mode: qat}}"], "distils every step .* set teacher"),
    (["model=m", "teacher=m", "hat={budgets: [0.5, 0.33]}", "quant={int8: {}}"], "takes one budget"),
    ([*COMBINED, "stages={quant: {protocol: {epochs: 1}}}"], r"steps this recipe runs after hat are \['token_"),
    ([*COMBINED, "stages={token_pruning: {model: x}}"], r"may only change \['protocol'"),
    ([*COMBINED, "stages={token_pruning: {protocol: {epochs: 0}}}"], "stages.token_pruning: protocol.epochs must be"),
    (["stages={quant: {protocol: {epochs: 1}}}"], r"starts with a standalone technique \(hat\)"),
])
def test_bad_combined_recipes_fail_before_training(overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("recipes/glue/mrpc.yaml", overrides)


def test_every_seed_of_a_combined_run_trains_and_chooses_on_the_first_seeds_split(glue_dir):
    """The search trains once, on the first seed's split; another seed's held-out rows would be rows it trained on."""
    from compact_nlp.protocol import protocol_splits
    from compact_nlp.run import load_data

    recipe = load_recipe("recipes/glue/qqp.yaml", [*COMBINED, "protocol.seeds=[3, 4]", "protocol.heldout=3"])
    for stage in ("token_pruning", "quant"):
        staged = recipe.stage(stage, "m")
        assert staged.protocol.split_seed == 3 and staged.protocol.seeds == [3, 4]
    staged = recipe.stage("quant", "m")
    data = load_data(recipe, str(glue_dir))
    heldouts = [protocol_splits(staged.protocol, data, seed).heldout["idx"] for seed in (3, 4)]
    assert heldouts[0] == heldouts[1]
    plain = [protocol_splits(recipe.protocol, data, seed).heldout["idx"] for seed in (3, 4)]
    assert plain[0] != plain[1]  # without split_seed each seed carves its own

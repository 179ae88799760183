"""`compact run`: recipes validated before training, end to end on MNLI/QQP in the real format, and resumable."""

import json

import pytest
import transformers as tf
import yaml
from huggingface_hub import ModelCard

from compact_nlp.cli import main
from compact_nlp.recipe import RecipeError, load_recipe
from compact_nlp.run import run_recipe
from conftest import tiny_hf_config

RECIPES = "recipes/glue"


def quick(tiny_model, *extra):
    return [f"model={tiny_model}", "protocol.epochs=1", "protocol.seeds=[1]", "protocol.batch_size=4",
            "protocol.max_length=32", "protocol.heldout=3", "export.mobile=false", *extra]


@pytest.mark.parametrize("task", ["mnli", "qqp"])
def test_recipe_runs_end_to_end_on_real_format_data(task, tiny_model, glue_dir, tmp_path):
    recipe = load_recipe(f"{RECIPES}/{task}.yaml", quick(tiny_model, "protocol.train_subset=null"))
    results = run_recipe(recipe, tmp_path / "out", glue_dir=str(glue_dir))
    seed = results["per_seed"][0]
    expected_splits = ["validation_matched", "validation_mismatched"] if task == "mnli" else ["validation"]
    assert list(seed["dev"]) == expected_splits and seed["artifact"] == "model.onnx"
    assert seed["train_examples"] == 3 and seed["heldout_examples"] == 3  # held-out carved from train
    assert seed["latency_ms_batch1"]["median"] > 0 and seed["export_parity"] <= 1e-4
    assert (tmp_path / "out" / "seed-1" / "model" / "model.onnx").exists()
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["summary"]["seeds"] == [1] and f"{expected_splits[0]}/accuracy" in saved["summary"]
    card = ModelCard.load(tmp_path / "out" / "seed-1" / "model" / "README.md")  # the card ships with the model
    # a local path is named by its folder: a card is uploaded, and a machine's paths mean nothing elsewhere
    assert card.data.base_model == tiny_model.name and card.data.eval_results[0].dataset_config == task


@pytest.mark.slow
def test_a_shallower_student_distilled_from_a_teacher(tiny_model, glue_dir, tmp_path):
    teacher = load_recipe(f"{RECIPES}/qqp.yaml", quick(tiny_model))
    run_recipe(teacher, tmp_path / "teacher", glue_dir=str(glue_dir))
    student = load_recipe(f"{RECIPES}/qqp.yaml", quick(
        tiny_model, "student_layers=[1]", f"teacher={tmp_path / 'teacher' / 'seed-1' / 'model'}",
        "distillation={temperature: 2.0, hidden_weight: 1.0}"))
    results = run_recipe(student, tmp_path / "student", glue_dir=str(glue_dir))
    assert results["per_seed"][0]["layers"] == 1 and results["per_seed"][0]["teacher"].endswith("model")
    original = results["summary"]["original"]  # the teacher, measured beside the student on the same dev inputs
    assert original["artifact"] == "model.onnx" and original["latency_ms_batch1_median"] > 0
    assert "validation/accuracy" in original
    card = (tmp_path / "student" / "seed-1" / "model" / "README.md").read_text()
    assert "Against the original" in card and "x faster" in card and "x smaller" in card
    with pytest.raises(ValueError, match="names layers the model does not have"):
        run_recipe(load_recipe(f"{RECIPES}/qqp.yaml", quick(tiny_model, "student_layers=[5]")), tmp_path / "x",
                   glue_dir=str(glue_dir))


@pytest.mark.slow
def test_a_transfer_set_adds_unlabelled_text_the_teacher_labels(tiny_model, glue_dir, tmp_path):
    teacher = load_recipe(f"{RECIPES}/qqp.yaml", quick(tiny_model))
    run_recipe(teacher, tmp_path / "teacher", glue_dir=str(glue_dir))
    student = load_recipe(f"{RECIPES}/qqp.yaml", quick(
        tiny_model, "student_layers=[1]", f"teacher={tmp_path / 'teacher' / 'seed-1' / 'model'}",
        "protocol.train_subset=5", "protocol.heldout=2", "protocol.steps=7",
        "transfer=[swapped, rest_of_train, mnli, 'augmented:2']", "distillation={temperature: 2.0}"))
    first = run_recipe(student, tmp_path / "student", glue_dir=str(glue_dir))["per_seed"][0]
    # 3 training pairs swapped, the 1 QQP row outside the subset, MNLI's 6 training pairs, 2 perturbed copies of the 3
    # training pairs; exactly the steps asked
    assert first["train_examples"] == 3 and first["transfer_examples"] == 3 + 1 + 6 + 2 * 3
    assert first["train_steps"] == 7
    assert first["heldout_overlap"]["rows_checked"] == 2 and first["heldout_overlap"]["column"] == "question1"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["qat", "ptq"])
def test_an_int8_recipe_trains_exports_and_measures_what_ships(mode, tiny_model, glue_dir, tmp_path):
    fp32 = load_recipe(f"{RECIPES}/qqp.yaml", quick(tiny_model, "protocol.seeds=[1, 2]"))
    run_recipe(fp32, tmp_path / "fp32", glue_dir=str(glue_dir))
    start = tmp_path / "fp32" / "seed-{seed}" / "model"  # each seed starts from the fp32 model of that seed
    recipe = load_recipe(f"{RECIPES}/qqp.yaml", quick(
        tiny_model, f"model={start}", f"teacher={start}", "protocol.seeds=[1, 2]", "export.mobile=true",
        f"quant={{int8: {{mode: {mode}}}}}", *(["distillation={logits_weight: 1.0}"] if mode == "qat" else [])))
    results = run_recipe(recipe, tmp_path / mode, glue_dir=str(glue_dir))
    first = results["per_seed"][0]
    assert first["model"].endswith("seed-1/model") and results["per_seed"][1]["teacher"].endswith("seed-2/model")
    assert first["artifact"] == "model.ort" and first["quant"]["config"]["mode"] == mode
    assert first["size_mb"]["model.ort"] < results["summary"]["original"]["size_mb"]  # against the fp32 original
    folder = tmp_path / mode / "seed-1" / "model"
    assert json.loads((folder / "config.json").read_text())["quant"]["int8"]["mode"] == mode
    if mode == "qat":
        assert first["quant"]["weights_match_training"] and (folder / "qdq" / "model.ort").exists()
        assert first["export_parity"] < 0.1  # model.ort vs the PyTorch QAT model (dynamic activations)
    else:  # dynamic int8 has no PyTorch form: the folder is ONNX only, and says how to load it
        from compact_nlp import AutoCompactModelForSequenceClassification

        with pytest.raises(OSError, match="no PyTorch weights .* backend='onnxruntime'"):
            AutoCompactModelForSequenceClassification.from_pretrained(folder)
        assert AutoCompactModelForSequenceClassification.from_pretrained(folder, backend="onnxruntime") is not None


@pytest.mark.slow
def test_qat_with_fallback_to_ptq_ships_what_the_heldout_split_chose(tiny_model, glue_dir, tmp_path):
    run_recipe(load_recipe(f"{RECIPES}/qqp.yaml", quick(tiny_model)), tmp_path / "fp32", glue_dir=str(glue_dir))
    start = tmp_path / "fp32" / "seed-1" / "model"
    recipe = load_recipe(f"{RECIPES}/qqp.yaml", quick(
        tiny_model, f"model={start}", f"teacher={start}", "quant={int8: {mode: qat, fallback_to_ptq: true}}",
        "distillation={logits_weight: 1.0}"))
    first = run_recipe(recipe, tmp_path / "int8", glue_dir=str(glue_dir))["per_seed"][0]
    choice = first["quant_choice"]
    assert set(choice["heldout"]) == {"qat", "ptq"} and choice["metric"] == "combined_score"  # QQP: acc and F1
    assert first["quant"]["config"]["mode"] == choice["shipped"]  # dev was measured on the chosen file only
    folder = tmp_path / "int8" / "seed-1" / "model"
    assert json.loads((folder / "config.json").read_text())["quant"]["int8"]["mode"] == choice["shipped"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["checkpoints", "model", "results.json"]
    assert "on the held-out split (combined_score" in (folder / "README.md").read_text()
    with pytest.raises(RecipeError, match="fallback_to_ptq quantizes the starting model as it is"):
        load_recipe(f"{RECIPES}/qqp.yaml", quick(tiny_model, f"teacher={start}", "student_layers=[1]",
                                                 "quant={int8: {mode: qat, fallback_to_ptq: true}}"))


@pytest.mark.slow
@pytest.mark.parametrize("qat", [False, True])
def test_save_compact_ships_a_folder_with_a_card_against_a_pytorch_original(qat, tiny_model, glue_dir, tmp_path):
    from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments

    from compact_nlp import AutoCompactModelForSequenceClassification
    from compact_nlp.glue import load_glue
    from compact_nlp.data import glue_spec
    from compact_nlp.protocol import tokenize
    from compact_nlp.trainer import CompactTrainer

    data, task = load_glue("qqp", str(glue_dir)), glue_spec("qqp")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    teacher_dir = tmp_path / "teacher"  # a PyTorch checkpoint only: save_compact exports it to compare
    AutoCompactModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    student = AutoCompactModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    if qat:
        from compact_nlp.quant import Int8Config, prepare_qat

        prepare_qat(student, Int8Config(mode="qat"))
    trainer = CompactTrainer(
        model=student,
        args=TrainingArguments(str(tmp_path / "ckpt"), max_steps=2, per_device_train_batch_size=2, report_to=[],
                               use_cpu=True, save_strategy="no"),
        train_dataset=tokenize(data["train"], tokenizer, task, 32),
        teacher_model=AutoCompactModelForSequenceClassification.from_pretrained(teacher_dir),
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
    trainer.train()
    results = trainer.save_compact(tmp_path / "shipped", task="qqp", dev=data["validation"], max_length=32,
                                   mobile=False, original=teacher_dir, base_model="tiny-bert")
    assert results["per_seed"][0]["artifact"] == "model.onnx" and results["summary"]["original"]["size_mb"] > 0
    assert results["summary"]["train_minutes_per_seed"] is not None
    card = ModelCard.load(tmp_path / "shipped" / "README.md")
    assert card.data.base_model == "tiny-bert" and "Against the original" in card.text
    assert json.loads((tmp_path / "shipped" / "results.json").read_text())["summary"] == results["summary"]
    assert not (teacher_dir / "model.onnx").exists()  # the original's export went to a scratch folder
    if qat:  # the int8 exports ship, with the trained scales
        assert results["per_seed"][0]["quant"]["weights_match_training"]
        assert (tmp_path / "shipped" / "qdq" / "model.onnx").exists()


@pytest.mark.slow
def test_a_binary_recipe_trains_in_two_stages_and_ships_packed_weights(tiny_model, glue_dir, tmp_path):
    fp32 = load_recipe(f"{RECIPES}/qqp.yaml", quick(tiny_model))
    run_recipe(fp32, tmp_path / "fp32", glue_dir=str(glue_dir))
    start = tmp_path / "fp32" / "seed-{seed}" / "model"
    recipe = load_recipe(f"{RECIPES}/qqp.yaml", quick(tiny_model, f"model={start}", f"teacher={start}",
                                                       "export.mobile=true", "protocol.epochs=2"), presets=["binary"])
    assert recipe.quant == {"binary": {"weights": "per_channel", "activation_bits": 8, "embedding_bits": 1}}
    results = run_recipe(recipe, tmp_path / "binary", glue_dir=str(glue_dir))
    first = results["per_seed"][0]
    assert first["artifact"] == "model.ort" and first["quant"]["weights_match_training"]
    assert first["export_parity"] <= 1e-4  # model.ort vs the PyTorch binary model
    assert first["size_mb"]["model.ort"] > 0 and results["summary"]["original"]["size_mb"] > 0  # (tiny: graph-bound)
    folder = tmp_path / "binary" / "seed-1" / "model"
    assert json.loads((folder / "config.json").read_text())["quant"]["binary"]["activation_bits"] == 8
    assert "binary weights (W1A8" in (folder / "README.md").read_text()


@pytest.mark.slow
def test_a_token_pruning_recipe_removes_heads_and_tokens_and_ships_them(tiny_model, glue_dir, tmp_path):
    fp32 = load_recipe(f"{RECIPES}/qqp.yaml", quick(tiny_model))
    run_recipe(fp32, tmp_path / "fp32", glue_dir=str(glue_dir))
    start = tmp_path / "fp32" / "seed-{seed}" / "model"
    recipe = load_recipe(f"{RECIPES}/qqp.yaml", quick(tiny_model, f"model={start}", f"teacher={start}",
                                                       "export.mobile=true", "token_pruning.head_keep_ratio=0.5",
                                                       "token_pruning.keep_ratio=0.7"),  # 2 layers: 1.0, 0.4
                         presets=["token-pruning"])
    assert recipe.token_pruning == {"keep_ratio": 0.7, "head_keep_ratio": 0.5}
    results = run_recipe(recipe, tmp_path / "pruned", glue_dir=str(glue_dir))
    first = results["per_seed"][0]
    heads = tiny_hf_config("bert").num_attention_heads
    assert first["heads_per_layer"] == [heads // 2] * tiny_hf_config("bert").num_hidden_layers  # really removed
    assert first["token_pruning"]["keep_ratios"][0] == 1.0 and first["token_pruning"]["keep_ratios"][-1] < 1
    assert first["artifact"] == "model.ort" and first["export_parity"] <= 1e-4  # the .ort prunes like PyTorch
    folder = tmp_path / "pruned" / "seed-1" / "model"
    assert json.loads((folder / "config.json").read_text())["token_pruning"]["mode"] == "top_k"
    assert "cascade token pruning (SpAtten top-k" in (folder / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("fuse", [True, False])
def test_export_fuse_attention_decides_the_attention_every_shipped_file_has(fuse, tiny_model, glue_dir, tmp_path):
    import onnx

    run_recipe(load_recipe(f"{RECIPES}/qqp.yaml", quick(tiny_model)), tmp_path / "fp32", glue_dir=str(glue_dir))
    start = tmp_path / "fp32" / "seed-1" / "model"
    recipe = load_recipe(f"{RECIPES}/qqp.yaml", quick(tiny_model, f"model={start}", f"teacher={start}",
                                                       "quant={int8: {mode: ptq}}", f"export.fuse_attention={fuse}"))
    run_recipe(recipe, tmp_path / "int8", glue_dir=str(glue_dir))
    ops = [n.op_type for n in onnx.load(str(tmp_path / "int8" / "seed-1" / "model" / "model.onnx")).graph.node]
    layers = tiny_hf_config("bert").num_hidden_layers
    # fused: one ONNX Runtime MultiHeadAttention per layer; not: the plain Softmax that NNAPI/CoreML run
    assert (ops.count("MultiHeadAttention"), ops.count("Softmax")) == ((layers, 0) if fuse else (0, layers))


def test_presets_merge_over_the_recipe_before_set():
    recipe = load_recipe(f"{RECIPES}/mrpc.yaml", ["protocol.epochs=2"], presets=["smoke"])
    assert recipe.protocol.train_subset == 512 and recipe.protocol.seeds == [1]  # from the preset
    assert recipe.protocol.epochs == 2.0 and recipe.protocol.learning_rate == 5e-5  # --set wins; the rest is kept
    with pytest.raises(RecipeError, match="unknown preset 'fast'; the presets are: .*smoke"):
        load_recipe(f"{RECIPES}/mrpc.yaml", presets=["fast"])


def test_every_task_has_a_valid_recipe():
    for task in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"):
        assert load_recipe(f"{RECIPES}/{task}.yaml").task == task


def test_scientific_notation_is_a_float_as_in_yaml_1_2():
    # PyYAML alone reads `1e-4` as the string '1e-4'; users write learning rates that way.
    recipe = load_recipe(f"{RECIPES}/mrpc.yaml", ["protocol.learning_rate=1e-4", "protocol.epochs=5",
                                                  "teacher=t", "distillation={temperature: 2e0}"])
    assert recipe.protocol.learning_rate == 1e-4 and recipe.protocol.epochs == 5.0
    assert recipe.distillation == {"temperature": 2.0}


@pytest.mark.parametrize("overrides, message", [
    (["protocol.epoch=2"], "unknown key protocol.epoch; protocol.keys are"),
    (["learning_rate=1e-4"], "unknown key learning_rate"),
    (["protocol.epochs=three"], "protocol.epochs must be float, got 'three'"),
    (["protocol.seeds=[1, 1]"], "distinct integers"),
    (["protocol.batch_size=true"], "protocol.batch_size must be int"),
    (["task=squad"], "unknown GLUE task 'squad'"),
    (["export.target_platform=riscv"], "arm or amd64"),
    (["export.fuse_attention=maybe"], "export.fuse_attention must be bool"),
    (["distillation={temperature: 2}"], "need a teacher"),
    (["quant={bits: 8}"], r"quant section has unknown keys \['bits'\]"),
    (["quant={int8: {mode: qat, activations: static, calibration: minmax}}"], "calibration does not apply to QAT"),
    (["student_layers=[1, 1]"], "distinct layer indices"),
    (["quant={binary: {}}"], "binary training distils intermediate layers first"),
    (["teacher=t", "distillation={logits_weight: 1.0}", "quant={binary: {}}"], "hidden_weight or attention_weight"),
    (["quant={binary: {activation_bits: 1, calibration: minmax}}"], "binary activations .* no int8 range"),
    (["quant={int8: {}, binary: {}}"], "either int8 or binary"),
    (["transfer=[swapped]"], "transfer needs a teacher"),
    (["teacher=t", "transfer=[mrpc]"], "must be another task with 2 sentence"),
    (["teacher=t", "transfer=[sst2]"], "must be another task with 2 sentence"),
    (["teacher=t", "transfer=[squad]"], r"is not 'swapped', 'rest_of_train', 'augmented\[:N\]' or a GLUE task"),
    (["teacher=t", "transfer=[augmented:0]"], "must be a whole number >= 1, e.g. 'augmented:8'"),
    (["teacher=t", "transfer=[augmented:many]"], "must be a whole number >= 1"),
    (["teacher=t", "transfer=[rest_of_train]"], "this recipe trains on all of them"),
    (["protocol.steps=0"], "protocol.steps must be positive"),
    (["protocol.heldout_unseen=sometimes"], "protocol.heldout_unseen must be bool, got 'sometimes'"),
    (["token_pruning={keep: 0.5}"], r"unknown TokenPruningConfig keys \['keep'\]"),
    (["token_pruning={keep_ratio: 1.5}"], r"keep_ratio must be in \(0, 1\]"),
    (["hat={space: small}"], r"hat: unknown HatConfig keys \['space'\]"),
    (["hat={budgets: [1.5]}"], r"budgets are fractions of the full model's latency in \(0, 1\]"),
    (["hat={supernet_batch_size: 32}"], "split into 3 micro-batches"),
    (["hat={budgets: [0.5]}", "quant={int8: {}}"], "combined pipeline distils every step"),
    (["protocol.epochs"], "must look like key=value"),
])
def test_bad_recipes_fail_before_training(overrides, message):
    with pytest.raises((RecipeError, ValueError), match=message):
        load_recipe(f"{RECIPES}/mrpc.yaml", overrides)


def test_bad_recipe_file_and_data_errors_through_the_cli(tmp_path, glue_dir, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"task": "mrpc", "protocol": {"epochs": 1, "lr": 1}}))
    assert main(["run", str(bad)]) == 2
    assert "unknown key protocol.lr" in capsys.readouterr().err
    assert main(["run", f"{RECIPES}/mrpc.yaml", "--glue-dir", str(glue_dir)]) == 2  # glue_dir has no MRPC
    assert "MRPC/train.tsv is missing" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_an_interrupted_run_resumes(tiny_model, glue_dir, tmp_path, monkeypatch):
    """The run dies in seed 2's second epoch; run again, seed 1 is not redone and seed 2 continues from its
    epoch-1 checkpoint (3 training rows, batch 4: one step per epoch)."""
    from compact_nlp.trainer import CompactTrainer

    recipe = load_recipe(f"{RECIPES}/qqp.yaml", quick(tiny_model, "protocol.seeds=[1, 2]", "protocol.epochs=2"))
    real_step, crash, steps = CompactTrainer.training_step, {"armed": True}, []

    def training_step(self, *args, **kwargs):
        if crash["armed"] and "seed-2" in self.args.output_dir and self.state.global_step == 1:
            raise KeyboardInterrupt
        steps.append(self.args.output_dir)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(CompactTrainer, "training_step", training_step)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, tmp_path / "out", glue_dir=str(glue_dir))
    seed1 = (tmp_path / "out" / "seed-1" / "results.json").read_text()
    assert not (tmp_path / "out" / "seed-2" / "results.json").exists()
    assert (tmp_path / "out" / "seed-2" / "checkpoints" / "checkpoint-1").is_dir()  # kept: seed 2 resumes from it
    assert not list((tmp_path / "out" / "seed-1" / "checkpoints").glob("checkpoint-*"))  # done: nothing to resume

    crash["armed"], steps[:] = False, []
    results = run_recipe(recipe, tmp_path / "out", glue_dir=str(glue_dir))
    assert (tmp_path / "out" / "seed-1" / "results.json").read_text() == seed1  # finished seed not redone
    assert len(steps) == 1 and "seed-2" in steps[0]  # only the step that was left
    assert [r["seed"] for r in results["per_seed"]] == [1, 2]
    assert not list((tmp_path / "out" / "seed-2" / "checkpoints").glob("checkpoint-*"))

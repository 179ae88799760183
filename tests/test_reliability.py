"""Faults and bad input (issue 30): each case refused in one line with what to do, or handled so that nothing is
lost and nothing silently wrong. The runtime and data-loader property tests are in test_reliability_props.py, the
kill-and-resume campaign in test_reliability_kill.py."""

import errno
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import transformers as tf
from transformers import modeling_utils

from compact_nlp import AutoCompactModelForSequenceClassification, ORTModelForSequenceClassification, export_model
from compact_nlp.cli import build_parser, main
from compact_nlp.configuration import CompactConfigError
from compact_nlp.convert import from_hf_model
from compact_nlp.hat.pipeline import run_search
from compact_nlp.io import remove_scratch, save_pretrained_atomic, write_json
from compact_nlp.pretrained import (CorruptFileError, CorruptWeightsError, MissingDependencyError, NoSuchFolderError,
                                    resolve_checkpoint)
from compact_nlp.quant.config import Int8Config
from compact_nlp.quant.onnx_int8 import quantize_folder
from compact_nlp.recipe import load_recipe
from compact_nlp.workdir import Job, claim_output
from conftest import TINY_WORDS, tiny_hf_config

TEXTS = ["good film", "the plot was slow and the ending was dull and very long and sad", "a charming journey", "no"]


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_tokenizer) -> Path:
    """A tiny classifier exported with compact (config, weights, tokenizer, model.onnx)."""
    config = tiny_hf_config("bert")
    config.num_labels = 2
    model = from_hf_model(tf.AutoModelForSequenceClassification.from_config(config)).eval()
    folder = tmp_path_factory.mktemp("exported") / "model"
    export_model(model, folder, tokenizer_source=tiny_tokenizer)
    return folder


@pytest.fixture
def copy_of(exported, tmp_path):
    def make(name: str = "copy") -> Path:
        return Path(shutil.copytree(exported, tmp_path / name))
    return make


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    rows = ["text,label"] + [" ".join(rng.choice(TINY_WORDS, rng.integers(2, 12))) + f",{i % 2}" for i in range(60)]
    path = tmp_path_factory.mktemp("data") / "train.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


# --- load: config against weights, corrupted files, foreign folders, missing paths ---------------------------------

def test_config_naming_more_layers_than_the_weights_hold_is_refused(copy_of):
    folder = copy_of()
    config = json.loads((folder / "config.json").read_text())
    config["num_heads_per_layer"], config["intermediate_size_per_layer"] = [4] * 6, [37] * 6
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CompactConfigError, match="describes 6 layers but its weights hold 2.*Restore the config"):
        AutoCompactModelForSequenceClassification.from_pretrained(folder)


@pytest.mark.parametrize("layers", [-2, 6, 0])
def test_a_derived_layer_count_that_disagrees_is_refused(copy_of, layers):
    folder = copy_of()
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers}))
    with pytest.raises(CompactConfigError, match=f"num_hidden_layers={layers} but its per-layer lists give 2"):
        AutoCompactModelForSequenceClassification.from_pretrained(folder)


def test_a_stock_checkpoint_whose_config_names_other_layers_is_refused(tmp_path):
    model = tf.AutoModelForSequenceClassification.from_config(tiny_hf_config("bert"))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 6}))
    with pytest.raises(CompactConfigError, match="describes 6 layers but its weights hold 2"):
        AutoCompactModelForSequenceClassification.from_pretrained(tmp_path)


@pytest.mark.parametrize("keep", [0, 7, 3000, -4000])  # empty, inside the header, truncated data
def test_corrupted_safetensors_are_named(copy_of, keep):
    folder = copy_of()
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[:keep])
    with pytest.raises(CorruptWeightsError, match="model.safetensors is not a readable safetensors file"):
        AutoCompactModelForSequenceClassification.from_pretrained(folder)


@pytest.mark.parametrize("content", [b"", b"not an onnx file", None])
def test_corrupted_onnx_is_named(copy_of, content):
    folder = copy_of()
    graph = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(graph[: len(graph) // 2] if content is None else content)
    with pytest.raises(CorruptFileError, match="model.onnx cannot be loaded by ONNX Runtime.*export it again"):
        ORTModelForSequenceClassification.from_pretrained(folder)
    assert main(["bench", str(folder), "--threads", "1"]) == 2


def test_a_folder_in_the_stock_layout_is_told_apart(copy_of):
    """What Optimum's exporter writes: model.onnx beside a stock transformers config.json."""
    folder = copy_of()
    tf.BertConfig(**{k: v for k, v in tiny_hf_config("bert").to_dict().items() if k != "model_type"}) \
        .save_pretrained(folder)
    with pytest.raises(CompactConfigError, match="describes a 'bert' model, not a compact folder.*compact export"):
        ORTModelForSequenceClassification.from_pretrained(folder)


@pytest.mark.parametrize("path", ["/no/such/folder", "./nope", "../nope/model", "~/nope-compact-x", "a/b/c"])
def test_a_missing_local_path_is_no_such_folder(path):
    with pytest.raises(NoSuchFolderError, match="no such folder"):
        resolve_checkpoint(path)


def test_hub_ids_still_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("owner/model") == "owner/model"
    assert resolve_checkpoint("bert-base-uncased") == "bert-base-uncased"
    (tmp_path / "out").mkdir()  # under an existing local folder: a path after all
    with pytest.raises(NoSuchFolderError):
        resolve_checkpoint("out/model")


# --- the command line: ranges, one line and exit 2 ----------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["bench", "d", "--threads", "0"], ["bench", "d", "--lengths", "0"], ["bench", "d", "--calls", "0"],
    ["bench", "d", "--rounds", "-1"], ["export", "a", "b", "--opset", "99"], ["export", "a", "b", "--opset", "16"],
    ["export", "a", "b", "--atol", "-1"], ["embed", "--epochs", "-1"], ["embed", "--epochs", "nan"],
    ["embed", "--layers", "0"], ["demo", "--texts", "0"], ["quantize", "a", "b", "--calibration-examples", "0"],
    ["quantize", "a", "b", "--max-length", "0"], ["bench", "d", "--threads", "two"],
])
def test_numbers_no_run_can_use_are_refused_when_parsed(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_optional_dependency_is_checked_before_any_work(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as on a plain pip install
    assert main(["embed", "--model", str(exported), "--out", str(tmp_path / "out"), "--text", "python-docs"]) == 2
    assert "pip install 'sentence-transformers" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_search_checks_matplotlib_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    recipe = load_recipe("glue/sst2", presets=["hat"])
    with pytest.raises(MissingDependencyError, match="pip install 'matplotlib"):
        run_search(recipe, "unused", tmp_path / "out", data=None)
    assert not (tmp_path / "out").exists()


# --- outputs: never onto an input, one job per folder, no stale artifacts -------------------------------------------

def test_quantize_onto_its_input_is_refused_and_changes_nothing(copy_of, train_csv, capsys):
    folder = copy_of()
    before = digest(folder)
    assert main(["quantize", str(folder), str(folder), "--train", str(train_csv)]) == 2
    assert "would overwrite the fp32 folder" in capsys.readouterr().err
    assert digest(folder) == before
    assert main(["quantize", str(folder), str(folder / "int8"), "--train", str(train_csv)]) == 2
    assert digest(folder) == before


def test_export_or_convert_onto_its_source_is_refused(copy_of, capsys):
    folder = copy_of()
    before = digest(folder)
    assert main(["export", str(folder), str(folder)]) == 2
    assert "would overwrite the src" in capsys.readouterr().err
    assert main(["convert", str(folder), str(folder / "hf"), "--to", "hf"]) == 2
    assert "would overwrite the model" in capsys.readouterr().err
    assert digest(folder) == before


def test_an_output_folder_belongs_to_one_export(exported, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(exported), str(out)]) == 0
    assert main(["export", str(exported), str(out), "--opset", "21"]) == 2
    assert "holds a different export job (argument opset: 20 -> 21)" in capsys.readouterr().err
    assert main(["export", str(exported), str(out), "--opset", "21", "--restart"]) == 0
    assert json.loads((out / "export_report.json").read_text())["exporter"]["opset"] == 21


def test_a_run_into_a_folder_of_another_recipe_is_refused_before_training(train_csv, tmp_path, capsys):
    out = tmp_path / "run"
    claim_output(out, Job("run", {"recipe": {"model": "another"}}, {}))
    write_json(out / "results.json", {"from": "the other recipe"})
    assert main(["run", "--train", str(train_csv), "--out", str(out), "--set", "protocol.epochs=1"]) == 2
    assert "holds a different run job" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".compact-job.json", "results.json"]


def test_reuse_keeps_another_jobs_stages_only_when_asked_and_records_the_new_job(tmp_path):
    out = tmp_path / "search"
    earlier, changed = Job("search", {"budgets": [0.5]}, reusable=True), Job("search", {"budgets": [0.4]}, reusable=True)
    claim_output(out, earlier)
    write_json(out / "latency.jsonl", {"kept": True})
    with pytest.raises(ValueError, match="--reuse to keep its finished stages"):
        claim_output(out, changed)
    with pytest.raises(ValueError, match="give one of them"):
        claim_output(out, changed, restart=True, reuse=True)
    assert claim_output(out, changed, reuse=True) is True  # kept, and the folder now says which job it holds
    assert (out / "latency.jsonl").is_file() and claim_output(out, changed) is True
    copied = tmp_path / "copied"  # stage folders copied in by hand: refused unless the user says so
    shutil.copytree(out, copied, ignore=shutil.ignore_patterns(".compact-job.json"))
    with pytest.raises(ValueError, match="--reuse to keep stage folders copied"):
        claim_output(copied, changed)
    assert claim_output(copied, changed, reuse=True) is True and (copied / "latency.jsonl").is_file()


def test_an_export_removes_what_an_earlier_export_left(exported, tmp_path, tiny_tokenizer):
    out = Path(shutil.copytree(exported, tmp_path / "out"))
    (out / "model.ort").write_bytes(b"a model.ort of an earlier export")
    (out / "required_operators.config").write_text("# an earlier export\n")
    (out / ".ort-convert-abc123").mkdir()
    (out / ".ort-convert-abc123" / "model.ort").write_bytes(b"x" * 1000)
    (out / ".model.onnx.xyz.tmp").write_bytes(b"half a file")
    model = AutoCompactModelForSequenceClassification.from_pretrained(exported)
    export_model(model, out, tokenizer_source=tiny_tokenizer, mobile=False)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".") or ".ort" in p.name or
                  p.name.endswith(".config")) == []
    assert (out / "model.onnx").is_file() and (out / "export_report.json").is_file()


def test_a_convert_into_an_exported_folder_removes_its_graphs(exported, copy_of, tmp_path):
    out = copy_of("out")
    (out / "model.ort").write_bytes(b"an earlier model's .ort")
    assert main(["convert", str(exported), str(out), "--to", "hf"]) == 0
    assert not (out / "model.onnx").exists() and not (out / "model.ort").exists()
    assert json.loads((out / "config.json").read_text())["model_type"] == "bert"


def test_an_export_that_fails_leaves_no_half_folder(exported, tmp_path):
    model = AutoCompactModelForSequenceClassification.from_pretrained(exported)
    with pytest.raises(ValueError, match="opset 99 is too new: compact exports opsets 17..22"):
        export_model(model, tmp_path / "new", opset=99)
    assert not (tmp_path / "new").exists()


def test_mobile_files_name_no_machine_path(exported, tmp_path, tiny_tokenizer):
    model = AutoCompactModelForSequenceClassification.from_pretrained(exported)
    out = tmp_path / "mobile"
    export_model(model, out, tokenizer_source=tiny_tokenizer, mobile=True)
    for name in ("required_operators.config", "export_report.json"):
        assert str(tmp_path) not in (out / name).read_text(), name
    assert "# - model.ort" in (out / "required_operators.config").read_text()


# --- atomic writes under a full disk ------------------------------------------------------------------------------

def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_a_json_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_json(path, {"version": 1})
    original_write_text = Path.write_text

    def half_then_full(self, text, *args, **kwargs):  # writes part of the file, then the disk is full
        original_write_text(self, text[: len(text) // 2])
        _disk_full()
    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(OSError) as error:
        write_json(path, {"version": 2, "padding": "x" * 1000})
    assert error.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_full_disk_during_a_model_save_keeps_the_old_model(exported, tmp_path, monkeypatch):
    out = Path(shutil.copytree(exported, tmp_path / "out"))
    before = digest(out)
    model = AutoCompactModelForSequenceClassification.from_pretrained(exported)
    original = modeling_utils.safe_save_file  # what save_pretrained writes the weights with

    def half_then_full(tensors, filename, *args, **kwargs):
        original(tensors, filename, *args, **kwargs)
        with open(filename, "r+b") as handle:
            handle.truncate(Path(filename).stat().st_size // 2)
        _disk_full()
    monkeypatch.setattr(modeling_utils, "safe_save_file", half_then_full)
    with pytest.raises(OSError):
        save_pretrained_atomic(model, out)
    monkeypatch.undo()
    assert digest(out) == before
    AutoCompactModelForSequenceClassification.from_pretrained(out)  # still loads


def test_scratch_of_killed_writes_is_recognised_and_nothing_else(tmp_path):
    for name in (".model.onnx.abc.tmp", ".ort-convert-x1", ".saving-y2", "keep.tmp", "model.onnx", ".gitignore"):
        (tmp_path / name).mkdir() if "-" in name else (tmp_path / name).write_text("x")
    assert remove_scratch(tmp_path) == [".model.onnx.abc.tmp", ".ort-convert-x1", ".saving-y2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gitignore", "keep.tmp", "model.onnx"]


# --- the runtime: batches by length, int8 answers that do not depend on the batch ---------------------------------

def test_a_big_batch_runs_in_chunks_by_length(exported, tiny_tokenizer):
    model = ORTModelForSequenceClassification.from_pretrained(exported)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(TINY_WORDS, n)) for n in rng.integers(1, 60, 300)]
    batch = tiny_tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="np")
    model.max_batch_tokens = None
    whole = model(**batch).logits
    shapes, run = [], model.session.run
    model.session.run = lambda names, feed: shapes.append(feed["input_ids"].shape) or run(names, feed)
    model.max_batch_tokens = 1024
    chunked = model(**batch).logits
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    assert sum(b for b, _ in shapes) == len(texts) and len(shapes) > 1
    assert max(b * t for b, t in shapes) <= 1024  # no call padded past the bound
    assert sum(b * t for b, t in shapes) < 0.7 * batch["input_ids"].size  # short rows are not padded to the longest


def test_int8_answers_do_not_depend_on_the_batch(exported, tmp_path, tiny_tokenizer):
    out = tmp_path / "int8"
    quantize_folder(exported, out, Int8Config(), texts=TEXTS * 8, max_length=64, mobile=False)
    model = ORTModelForSequenceClassification.from_pretrained(out)
    assert model.one_row
    alone = [model(**tiny_tokenizer([text], return_tensors="np")).logits[0] for text in TEXTS]
    together = model(**tiny_tokenizer(TEXTS, padding=True, return_tensors="np")).logits
    np.testing.assert_array_equal(np.stack(alone), together)
    tiny_tokenizer.padding_side = "left"  # the padding comes first: cut there too, not fed to the scale
    try:
        left = model(**tiny_tokenizer(TEXTS, padding=True, return_tensors="np")).logits
    finally:
        tiny_tokenizer.padding_side = "right"
    np.testing.assert_array_equal(np.stack(alone), left)


@pytest.mark.slow
def test_the_same_run_resumes_a_changed_one_is_refused_and_restart_starts_over(exported, train_csv, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--train", str(train_csv), "--model", str(exported), "--out", str(out), "--set", "protocol.epochs=1"]
    assert main(argv) == 0
    first = json.loads((out / "results.json").read_text())
    assert main(argv) == 0
    assert "resuming the same run job" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["summary"] == first["summary"]
    changed = [*argv[:-1], "protocol.epochs=2"]
    assert main(changed) == 2
    assert "holds a different run job" in capsys.readouterr().err
    assert main([*changed, "--restart"]) == 0
    assert json.loads((out / "results.json").read_text())["recipe"]["protocol"]["epochs"] == 2


def test_bench_refuses_what_it_would_time_as_nothing(exported, capsys):
    assert main(["bench", str(exported), "--lengths", "1000"]) == 2
    assert "position embeddings cover 64 tokens" in capsys.readouterr().err
    assert main(["bench", str(exported), "--variant", "int8=x"]) == 2
    assert "needs --task TASK or --train FILE" in capsys.readouterr().err


def test_a_run_refused_on_its_model_leaves_no_output_folder(train_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--train", str(train_csv), "--model", str(tmp_path / "no-model"), "--out", str(out)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not out.exists()

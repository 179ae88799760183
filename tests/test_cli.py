"""The `compact` command: export (with --mobile), convert both ways, bench, and errors without tracebacks."""

import json

import pytest
import transformers as tf

from compact_nlp.cli import main
from compact_nlp.glue import GLUE_DIR_ENV
from compact_nlp.peers import CTRANSLATE2, LITERT, OPENVINO_DEFAULT, OPENVINO_F32
from conftest import tiny_hf_config


@pytest.fixture
def hf_folder(tmp_path, tiny_tokenizer):
    config = tiny_hf_config("bert")
    config.num_labels = 2
    tf.AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "hf")
    tiny_tokenizer.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


@pytest.mark.slow
def test_export_mobile_then_bench(hf_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(hf_folder), str(out), "--mobile", "--target-platform", "arm"]) == 0
    printed = capsys.readouterr().out
    assert "model.ort" in printed and "parity vs PyTorch" in printed and "mobile usability" in printed
    report = json.loads((out / "export_report.json").read_text())
    assert report["model_class"] == "CompactBertForSequenceClassification"  # task detected from the checkpoint
    assert (out / "tokenizer.json").exists() and (out / "required_operators.config").exists()

    assert main(["bench", str(out), "--threads", "1", "--lengths", "8", "16", "--rounds", "1", "--calls", "2"]) == 0
    bench = json.loads((out / "bench.json").read_text())
    assert {row["variant"] for row in bench["latency"]} == {"PyTorch fp32", "ORT model.onnx", "ORT model.ort"}
    assert {row["tokens"] for row in bench["latency"]} == {8, 16}
    assert all(v["peak_rss_mb"] > 0 and v["load_s"] > 0 for v in bench["variants"].values())


def test_convert_to_the_stock_layout_and_back(hf_folder, tmp_path):
    assert main(["convert", str(hf_folder), str(tmp_path / "compact"), "--to", "compact"]) == 0
    assert json.loads((tmp_path / "compact" / "config.json").read_text())["model_type"] == "compact-bert"
    assert main(["convert", str(tmp_path / "compact"), str(tmp_path / "hf_again"), "--to", "hf"]) == 0
    model = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf_again")
    assert type(model).__name__ == "BertForSequenceClassification"


def test_errors_are_one_line_with_the_fix(tmp_path, capsys):
    tf.GPT2Model(tf.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path / "gpt2")
    assert main(["export", str(tmp_path / "gpt2"), str(tmp_path / "out")]) == 2
    assert "compact: error: compact cannot convert model_type 'gpt2'. Supported:" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "missing")]) == 2
    assert "compact: error:" in capsys.readouterr().err


def test_an_inconsistent_config_is_an_error_not_a_traceback(hf_folder, tmp_path, capsys):
    assert main(["convert", str(hf_folder), str(tmp_path / "compact"), "--to", "compact"]) == 0
    config = json.loads((tmp_path / "compact" / "config.json").read_text())
    config["intermediate_size_per_layer"] = config["intermediate_size_per_layer"][:1]
    (tmp_path / "compact" / "config.json").write_text(json.dumps(config))
    assert main(["export", str(tmp_path / "compact"), str(tmp_path / "out")]) == 2
    assert "give exactly one entry per layer" in capsys.readouterr().err


def write_sst2(folder, rows=12):
    (folder / "SST-2").mkdir(parents=True)
    words = ["good", "bad", "great", "dull", "charming", "boring"]
    lines = ["sentence\tlabel"] + [f"a {words[i % 6]} film \t{int(words[i % 6] in ('good', 'great', 'charming'))}"
                                   for i in range(rows)]
    for name in ("train.tsv", "dev.tsv"):
        (folder / "SST-2" / name).write_text("\n".join(lines) + "\n")


def write_stsb(folder, rows=24):
    (folder / "STS-B").mkdir(parents=True)
    words = ["good", "bad", "great", "dull", "charming", "boring"]
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    lines = [header] + [f"{i}\tmain\tf\t2012\t{i}\tnone\tnone\ta {words[i % 6]} film\tthe {words[(i * 5) % 6]} "
                        f"story\t{(i * 7) % 6}.0" for i in range(rows)]
    for name in ("train.tsv", "dev.tsv"):
        (folder / "STS-B" / name).write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_demo_compresses_the_embedding_model_when_glue_is_there(tmp_path, tiny_tokenizer, capsys, monkeypatch):
    tf.AutoModel.from_config(tiny_hf_config("bert")).save_pretrained(tmp_path / "encoder")
    tiny_tokenizer.save_pretrained(tmp_path / "encoder")
    write_stsb(tmp_path / "glue")
    monkeypatch.setenv(GLUE_DIR_ENV, str(tmp_path / "glue"))  # found as `make demo` finds it: no --glue-dir
    assert main(["demo", "--model", str(tmp_path / "encoder"), "--out", str(tmp_path / "o"), "--layers", "1",
                 "--texts", "40"]) == 0
    printed = capsys.readouterr().out
    assert "STS-B dev Spearman" in printed and "sentence-transformers loads the shipped folder" in printed
    report = json.loads((tmp_path / "o" / "embed" / "report.json").read_text())
    assert report["training_text"] == "stsb train" and 0 < report["training_sentences"] <= 40  # distinct ones
    shipped = next(r for name, r in report["rows"].items() if name.endswith("(model.ort, ships)"))
    assert "stsb_spearman" in shipped and shipped["real_1t"]["median_ms"] > 0
    original = report["rows"]["original, PyTorch fp32 (transformers BertModel)"]
    assert original["mean_cosine_to_original"] == pytest.approx(1.0, abs=1e-4)
    for name in (LITERT, CTRANSLATE2, OPENVINO_DEFAULT, OPENVINO_F32):  # every peer: measured, or why not
        row = report["rows"][name]
        assert "skipped" in row or (row["timed"] == "own process" and "stsb_spearman" in row
                                    and row["real_1t"]["median_ms"] > 0 and row["mean_cosine_to_original"] > 0.9), row
    assert report["sentence_transformers"]["max_abs_diff_vs_compact_pytorch"] < 1e-4  # it loads the same model
    folder = tmp_path / "o" / "embed" / "model"
    for name in ("model.ort", "model.safetensors", "modules.json", "1_Pooling/config.json"):
        assert (folder / name).is_file(), name
    assert len(json.loads((folder / "config.json").read_text())["num_heads_per_layer"]) == 1  # one layer left


def test_embed_without_sts_b_says_where_to_point_it(tmp_path, capsys):
    write_sst2(tmp_path / "glue")  # GLUE text, but no STS-B to measure on: no training on text it would be scored on
    assert main(["embed", "--glue-dir", str(tmp_path / "glue"), "--out", str(tmp_path / "o")]) == 2
    assert "found no STS-B" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_demo_without_glue_distils_on_python_docs_and_says_what_it_skipped(tmp_path, tiny_tokenizer, capsys):
    tf.AutoModel.from_config(tiny_hf_config("bert")).save_pretrained(tmp_path / "encoder")
    tiny_tokenizer.save_pretrained(tmp_path / "encoder")
    assert main(["demo", "--glue-dir", str(tmp_path / "no-glue"), "--model", str(tmp_path / "encoder"),
                 "--out", str(tmp_path / "o"), "--layers", "1", "--texts", "40"]) == 0
    printed = capsys.readouterr().out
    assert "Skipped: the GLUE training text and the STS-B dev Spearman" in printed
    assert "--glue-dir DIR, or COMPACT_GLUE_DIR=DIR" in printed and "no STS-B Spearman" in printed
    report = json.loads((tmp_path / "o" / "embed" / "report.json").read_text())
    assert "PSF License" in report["training_text"] and report["training_sentences"] == 40
    assert report["text"] == "held-out Python documentation" and report["sentences"] == 1000
    shipped = next(r for name, r in report["rows"].items() if name.endswith("(model.ort, ships)"))
    assert "stsb_spearman" not in shipped and 0 < shipped["mean_cosine_to_original"] <= 1
    assert report["sentence_transformers"]["max_abs_diff_vs_compact_pytorch"] < 1e-4


@pytest.mark.slow
def test_python_docs_are_real_prose_and_training_never_sees_the_held_out_sentences():
    from compact_nlp.embeddings import PYTHON_DOCS_HELD_OUT, python_docs_sentences, python_docs_split

    sentences = python_docs_sentences()
    assert len(sentences) > 5000 and len(set(sentences)) == len(sentences)
    assert all(s[0].isupper() and s[-1] in ".!?" and "**" not in s for s in sentences)
    train, held_out = python_docs_split(limit=10**6, seed=1)
    assert len(held_out) == PYTHON_DOCS_HELD_OUT and not set(train) & set(held_out)
    assert len(train) + len(held_out) == len(sentences)
    assert python_docs_split(limit=10, seed=1) == (train[:10], held_out)  # a seeded, stable split


def test_quantize_an_exported_folder_with_task_text(hf_folder, glue_dir, tmp_path, capsys):
    assert main(["export", str(hf_folder), str(tmp_path / "fp32")]) == 0
    assert main(["quantize", str(tmp_path / "fp32"), str(tmp_path / "int8"), "--task", "qqp", "--glue-dir",
                 str(glue_dir), "--activations", "static", "--trim-vocabulary", "--no-mobile"]) == 0
    printed = capsys.readouterr().out
    assert "MatMuls int8" in printed and "vocabulary" in printed
    saved = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert saved["quant"]["int8"]["activations"] == "static" and saved["quant"]["int8"]["trim_vocabulary"]
    assert main(["quantize", str(tmp_path / "int8"), str(tmp_path / "again"), "--task", "qqp", "--glue-dir",
                 str(glue_dir)]) == 2
    assert "already quantized" in capsys.readouterr().err
    assert main(["quantize", str(tmp_path / "fp32"), str(tmp_path / "x"), "--task", "qqp", "--glue-dir",
                 str(glue_dir), "--calibration", "entropy"]) == 2
    assert "calibration applies to static activations only" in capsys.readouterr().err

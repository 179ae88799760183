"""The technique registry: the built-in techniques register through entry points, a technique written outside the
package runs through `compact run` and export by registering itself (its folder is all it touches), and the pipeline
modules name no technique."""

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import transformers as tf

from compact_nlp.cli import main
from compact_nlp.recipe import RecipeError, load_recipe
from compact_nlp.registry import Prepared, Technique, register, section_names, techniques, unregister
from compact_nlp.shrink import shrink
from conftest import tiny_hf_config

ROOT = Path(__file__).resolve().parents[1]
# the pipeline: it iterates the registry and never names a technique
PIPELINE = ["compact_nlp/run.py", "compact_nlp/combined.py", "compact_nlp/ship.py", "compact_nlp/hub.py",
            "compact_nlp/recipe.py", "compact_nlp/commands.py", "compact_nlp/cli.py", "compact_nlp/export/card.py",
            "compact_nlp/auto.py", "compact_nlp/protocol.py"]


@dataclass
class MagnitudeConfig:
    keep: float = 0.5

    def __post_init__(self):
        if not 0 < self.keep <= 1:
            raise ValueError(f"ffn_magnitude.keep must be in (0, 1], got {self.keep}.")


class FfnMagnitudePruning(Technique):
    """Magnitude pruning of FFN neurons (the smallest L2 norm of their input weights leave), written as a user would:
    outside compact, registered, nothing else touched."""

    name = "ffn_magnitude"
    order = 5

    def config(self, section):
        return MagnitudeConfig(**section) if section else None

    def prepare(self, model, config, context) -> Prepared:
        drop = {}
        for index, layer in enumerate(model.compact_bert.layers):
            norms = layer.ffn_in.weight.norm(dim=1)
            width = norms.numel()
            drop[index] = torch.argsort(norms)[: width - max(1, round(config.keep * width))].tolist()
        return Prepared(shrink(model, ffn=drop), [])

    def facts(self, model, config) -> dict:
        return {"ffn_magnitude": {"keep": config.keep, "widths": list(model.config.intermediate_size_per_layer)}}

    def card_line(self, result: dict) -> str:
        facts = result.get("ffn_magnitude")
        return f"FFN neurons pruned by magnitude (widths {facts['widths']})" if facts else ""


@pytest.fixture
def outside_technique():
    technique = register(FfnMagnitudePruning())
    yield technique
    unregister(technique.name)


def test_the_builtin_techniques_register_through_entry_points():
    assert {"hat", "token_pruning", "quant"} <= set(section_names())
    assert [t.name for t in techniques()][:3] == ["hat", "token_pruning", "quant"]  # hat first; quantization last


def test_an_outside_technique_runs_through_compact_run_and_export(outside_technique, tmp_path, tiny_tokenizer,
                                                                   capsys):
    model = tmp_path / "tiny-bert"
    tf.AutoModel.from_config(tiny_hf_config("bert")).save_pretrained(model)
    tiny_tokenizer.save_pretrained(model)
    words = "good bad great dull charming boring funny sad warm cold".split()
    rows = "".join(f"{words[i % 10]} film {words[(i * 3) % 10]},{'positive' if i % 2 else 'negative'}\n"
                   for i in range(40))
    (tmp_path / "reviews.csv").write_text("review,sentiment\n" + rows)
    with pytest.raises(RecipeError, match="ffn_magnitude: ffn_magnitude.keep must be in"):
        load_recipe("default", ["ffn_magnitude={keep: 2}"], data={"train": "x.csv"})
    out = tmp_path / "out"
    status = main(["run", "--train", str(tmp_path / "reviews.csv"), "--label-column", "sentiment", "--model", str(model),
                   "--out", str(out),
                   "--set", "ffn_magnitude={keep: 0.5}", "--set", "protocol.epochs=1", "--set", "protocol.batch_size=8",
                   "--set", "protocol.max_length=16", "--set", "export.mobile=false"])
    assert status == 0, capsys.readouterr().err
    folder = out / "seed-1" / "model"
    config = json.loads((folder / "config.json").read_text())
    full = tiny_hf_config("bert").intermediate_size
    assert config["intermediate_size_per_layer"] == [full // 2] * tiny_hf_config("bert").num_hidden_layers  # smaller
    assert (folder / "model.onnx").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["recipe"]["ffn_magnitude"] == {"keep": 0.5}
    assert results["per_seed"][0]["ffn_magnitude"]["widths"] == config["intermediate_size_per_layer"]
    assert "FFN neurons pruned by magnitude" in (folder / "README.md").read_text()
    assert config["id2label"] == {"0": "negative", "1": "positive"}


def _named_techniques(path: Path, names: set[str]) -> list[str]:
    """Where a module names a technique: an identifier or attribute, a string constant (docstrings and comments
    aside), or an import of a technique package."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in names or isinstance(node, ast.Name) and node.id in names:
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                and node.value in names:
            found.append(f"{path.name}:{node.lineno} {node.value!r}")
        elif isinstance(node, ast.ImportFrom) and node.module and set(node.module.split(".")) & names:
            found.append(f"{path.name}:{node.lineno} from {node.module}")
    return found


def test_the_pipeline_names_no_technique():
    names = {t.name for t in techniques()}
    found = [hit for module in PIPELINE for hit in _named_techniques(ROOT / module, names)]
    assert not found, "the pipeline names techniques (iterate compact_nlp.registry instead):\n" + "\n".join(found)


def test_the_check_finds_a_technique_named_in_code(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""hat is fine in a docstring."""\nfrom compact_nlp.quant import x\ny = recipe.hat\nz = "token_pruning"\n')
    assert len(_named_techniques(module, {"hat", "quant", "token_pruning"})) == 3

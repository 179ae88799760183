"""One import namespace, light imports, and the `compact` command, as installed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_technique_packages_install_under_compact_nlp():
    import compact_nlp.hat
    import compact_nlp.quant
    import compact_nlp.token_pruning

    assert Path(compact_nlp.hat.__file__).resolve() == ROOT / "hat" / "__init__.py"
    assert Path(compact_nlp.token_pruning.__file__).resolve() == ROOT / "token_pruning" / "__init__.py"
    assert Path(compact_nlp.quant.__file__).resolve() == ROOT / "quant" / "__init__.py"


def test_import_registers_auto_classes_and_leaves_heavy_backends_unloaded():
    code = ("import sys, compact_nlp; from transformers import AutoConfig; "
            "assert AutoConfig.for_model('compact-bert').model_type == 'compact-bert'; "
            "print(sorted(m for m in ('onnxruntime', 'datasets', 'evaluate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_compact_command_is_installed():
    out = subprocess.run([Path(sys.executable).parent / "compact", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "export" in out.stdout and "bench" in out.stdout


def test_the_wheel_maps_the_technique_packages_and_ships_the_data(tmp_path):
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    names = zipfile.ZipFile(next(tmp_path.glob("compact_nlp-*.whl"))).namelist()
    for expected in ("compact_nlp/hat/__init__.py", "compact_nlp/token_pruning/__init__.py",
                     "compact_nlp/quant/__init__.py", "compact_nlp/export/onnx.py",
                     "compact_nlp/data/sample_sentences.txt", "compact_nlp/data/load.py",
                     "compact_nlp/recipes/default.yaml", "compact_nlp/recipes/glue/sst2.yaml",
                     "compact_nlp/recipes/presets/smoke.yaml"):
        assert expected in names
    assert not any(name.startswith(("hat/", "quant/", "token_pruning/", "tests/")) for name in names)


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_runs_on_a_csv_from_anywhere(tmp_path, tiny_tokenizer):
    """Recipes and presets are package data: a wheel installed outside the repo runs `compact run --preset smoke` on a
    CSV from a temporary folder. The fresh venv sees this venv's dependencies (torch & co.) through a path file, but
    not its editable compact-nlp, which lives in a .pth there that a path file does not process."""
    import sysconfig
    import venv

    import transformers as tf

    from conftest import tiny_hf_config

    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True)
    fresh = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(fresh)
    python = fresh / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                    str(next(wheels.glob("compact_nlp-*.whl")))], check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    model = work / "tiny-bert"
    tf.AutoModel.from_config(tiny_hf_config("bert")).save_pretrained(model)
    tiny_tokenizer.save_pretrained(model)
    words = "good bad great dull charming boring funny sad warm cold".split()
    rows = "".join(f"{words[i % 10]} film {words[(i * 7) % 10]},{('neg', 'pos')[i % 2]}\n" for i in range(200))
    (work / "reviews.csv").write_text("review,sentiment\n" + rows)
    run = subprocess.run([fresh / "bin" / "compact", "run", "--train", "reviews.csv", "--label-column", "sentiment",
                          "--model", "tiny-bert", "--preset", "smoke", "--set", "export.mobile=false",
                          "--out", "out"], cwd=work, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    where = subprocess.run([python, "-c", "import compact_nlp.recipe as r; print(r.RECIPES_DIR)"], cwd=work,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert str(ROOT) not in where and Path(where, "presets", "smoke.yaml").is_file()  # from the installed wheel
    config = json.loads((work / "out" / "seed-1" / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}


def test_every_subpackage_is_listed_for_the_wheel():
    """pyproject lists packages by hand (the technique folders map into compact_nlp); a new subpackage left out of
    that list installs without its code (compact_nlp.compress once did)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"compact_nlp." + ".".join(p.parent.relative_to(root / "compact_nlp").parts)
             for p in (root / "compact_nlp").rglob("__init__.py") if p.parent != root / "compact_nlp"}
    assert found <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"

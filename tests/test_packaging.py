"""One import namespace, light imports, and the `compact` command, as installed."""

import subprocess
import sys
from pathlib import Path

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
                     "compact_nlp/data/sample_sentences.txt"):
        assert expected in names
    assert not any(name.startswith(("hat/", "quant/", "token_pruning/", "tests/")) for name in names)

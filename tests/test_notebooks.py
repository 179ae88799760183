"""The notebooks run top to bottom (tiny models; COMPACT_NOTEBOOK_REAL=1 switches them to the real MiniLM)."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.real_weights  # they tokenize with the real MiniLM's tokenizer, read from its pip package
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_notebook_runs(path, minilm_path, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.delenv("COMPACT_NOTEBOOK_REAL", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel inherits it: what the notebook writes is pytest's to clean
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_there_is_a_notebook_per_technique_and_for_the_pipeline():
    assert [p.stem for p in NOTEBOOKS] == ["01_quickstart", "02_hat", "03_token_pruning", "04_quant", "05_combined"]

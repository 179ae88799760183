"""The real all-MiniLM-L6-v2 end to end: convert, export to .onnx and .ort, load back, pipelines on real SST-2."""

import pytest

from compact_nlp import AutoCompactModel, export_model
from compact_nlp.bench import pipeline_agreement, real_sentences
from conftest import GLUE_DIR, requires_glue, requires_minilm

pytestmark = [pytest.mark.slow, pytest.mark.real_weights, pytest.mark.real_data, requires_minilm, requires_glue]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from compact_nlp.pretrained import DEFAULT_MODEL, resolve_checkpoint

    folder = tmp_path_factory.mktemp("minilm")
    report = export_model(AutoCompactModel.from_pretrained(DEFAULT_MODEL), folder,
                          tokenizer_source=resolve_checkpoint(DEFAULT_MODEL), mobile=True, target_platform="arm")
    return folder, report


@pytest.mark.parametrize("file_name", ["model.onnx", "model.ort"])
def test_pipelines_agree_on_real_sentences(exported, file_name, parity):
    folder, report = exported
    assert report["size_mb"]["model.ort"] < 90
    sentences, source = real_sentences(GLUE_DIR, limit=300)
    assert source.startswith("SST-2 dev") and len(sentences) == 300
    agreement = pipeline_agreement(folder, sentences, file_name=file_name)
    parity("all-MiniLM-L6-v2", f"feature-extraction pipeline, {file_name} vs PyTorch, 300 SST-2",
           agreement["max_abs_diff"])
    assert agreement["max_abs_diff"] <= 1e-4
    assert agreement["min_cosine"] >= 0.9999

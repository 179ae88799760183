"""Property tests (hypothesis) of issue 30's boundaries: the ONNX Runtime model on random ids, masks and lengths,
the data loaders on random file contents, and atomic writes failing at random points. The property each time: no
traceback (only the error type of that kind of mistake), no wrong answer, no file changed outside the output."""

import errno
import hashlib
from pathlib import Path

import numpy as np
import pytest
import transformers as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compact_nlp import ORTModelForFeatureExtraction, ORTModelForSequenceClassification, export_model
from compact_nlp.convert import from_hf_model
from compact_nlp.data import DataError, load_task_data
from compact_nlp.export.inputs import RuntimeInputError
from compact_nlp.io import atomic_path, write_text
from conftest import tiny_hf_config

VOCAB = 99
SETTINGS = dict(deadline=None, database=None,  # nothing written into the checkout
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> ORTModelForSequenceClassification:
    config = tiny_hf_config("bert")
    config.num_labels = 3
    torch_model = from_hf_model(tf.AutoModelForSequenceClassification.from_config(config)).eval()
    folder = tmp_path_factory.mktemp("props") / "model"
    export_model(torch_model, folder)
    return ORTModelForSequenceClassification.from_pretrained(folder)


@st.composite
def batches(draw):
    batch, length = draw(st.integers(1, 6)), draw(st.integers(1, 24))
    low, high = draw(st.sampled_from([(0, VOCAB - 1), (0, VOCAB - 1), (-3, VOCAB + 3)]))
    ids = np.array(draw(st.lists(st.integers(low, high), min_size=batch * length, max_size=batch * length)))
    mask = np.array(draw(st.lists(st.sampled_from([0, 1, 1, 1]), min_size=batch * length, max_size=batch * length)))
    as_float = draw(st.booleans()) and draw(st.booleans())
    ids = ids.reshape(batch, length).astype(np.float64 if as_float else np.int64)
    return ids, mask.reshape(batch, length), draw(st.sampled_from([None, 8, 40, 10_000]))


@settings(max_examples=80, **SETTINGS)
@given(batches())
def test_the_runtime_refuses_bad_inputs_and_answers_each_row_as_if_alone(model, case):
    ids, mask, max_batch_tokens = case
    model.max_batch_tokens = max_batch_tokens
    invalid = ids.dtype.kind == "f" or ids.min() < 0 or ids.max() >= VOCAB or (mask.sum(axis=1) == 0).any()
    if invalid:
        with pytest.raises(RuntimeInputError):
            model(input_ids=ids, attention_mask=mask)
        return
    logits = model(input_ids=ids, attention_mask=mask).logits
    assert logits.shape == (len(ids), 3) and np.isfinite(logits).all()
    for row in range(len(ids)):  # the same text alone, from its first real token to its last: the same answer
        real = np.flatnonzero(mask[row])
        cut = slice(int(real[0]), int(real[-1]) + 1)
        alone = model(input_ids=ids[row:row + 1, cut], attention_mask=mask[row:row + 1, cut]).logits
        np.testing.assert_allclose(logits[row], alone[0], atol=1e-5)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> ORTModelForFeatureExtraction:
    torch_model = from_hf_model(tf.AutoModel.from_config(tiny_hf_config("bert"))).eval()
    folder = tmp_path_factory.mktemp("props") / "encoder"
    export_model(torch_model, folder)
    return ORTModelForFeatureExtraction.from_pretrained(folder)


@settings(max_examples=40, **SETTINGS)
@given(batches())
def test_per_token_outputs_are_each_rows_own_states_at_its_real_positions(encoder, case):
    """A batch cut into chunks by length puts every row's states back where its real tokens are (left, right or
    inner padding): at those positions, the same as the row alone (padding positions carry no meaning, as in
    transformers)."""
    ids, mask, max_batch_tokens = case
    if ids.dtype.kind == "f" or ids.min() < 0 or ids.max() >= VOCAB or (mask.sum(axis=1) == 0).any():
        return  # refused: the test above checks how
    encoder.max_batch_tokens = max_batch_tokens
    states = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    assert states.shape[:2] == ids.shape
    for row in range(len(ids)):
        real = np.flatnonzero(mask[row])
        cut = slice(int(real[0]), int(real[-1]) + 1)
        alone = encoder(input_ids=ids[row:row + 1, cut], attention_mask=mask[row:row + 1, cut]).last_hidden_state
        kept = mask[row, cut].astype(bool)
        np.testing.assert_allclose(states[row, cut][kept], alone[0][kept], atol=1e-4)


CELLS = st.one_of(st.text(max_size=12), st.sampled_from(["", "0", "1", "2.5", "pos", "neg", '"', "a,b", "\t", "NaN"]))


@st.composite
def table_files(draw):
    suffix = draw(st.sampled_from([".csv", ".tsv", ".json", ".jsonl"]))
    kind = draw(st.sampled_from(["table", "table", "text", "bytes"]))
    if kind == "bytes":
        return suffix, draw(st.binary(max_size=200))
    if kind == "text":
        return suffix, draw(st.text(max_size=200)).encode()
    sep = "\t" if suffix == ".tsv" else ","
    header = draw(st.sampled_from([["text", "label"], ["sentence", "label"], ["text"], ["a", "b", "c"], []]))
    rows = draw(st.lists(st.lists(CELLS, min_size=0, max_size=4), max_size=12))
    lines = [sep.join(header)] + [sep.join(row) for row in rows]
    if suffix == ".jsonl":
        lines = [f'{{"text": "{row[0] if row else ""}", "label": "{row[-1] if row else ""}"}}' for row in rows]
    if suffix == ".json":
        lines = ["[" + ",".join(f'{{"text": {row!r}}}' for row in rows).replace("'", '"') + "]"]
    return suffix, "\n".join(lines).encode()


def _snapshot(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@settings(max_examples=60, **SETTINGS)
@given(table_files())
def test_the_data_loaders_take_a_file_or_say_what_is_wrong_with_it(tmp_path_factory, case):
    suffix, content = case
    folder = tmp_path_factory.mktemp("data")
    path = folder / f"train{suffix}"
    path.write_bytes(content)
    before = _snapshot(folder)
    try:
        data = load_task_data(path)
    except DataError as error:
        assert str(error) and "\n" not in str(error).strip()[:200]  # one line first: what is wrong and what to do
    else:
        assert len(data.train) >= 1 and data.spec.text_columns
    assert _snapshot(folder) == before  # reading wrote nothing beside the user's file


@settings(max_examples=40, **SETTINGS)
@given(old=st.text(max_size=300), new=st.text(max_size=300), fail_after=st.one_of(st.none(), st.integers(0, 300)))
def test_an_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path_factory, old, new, fail_after):
    folder = tmp_path_factory.mktemp("atomic")
    path = folder / "state.json"
    write_text(path, old)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "w") as handle:
                if fail_after is not None:
                    handle.write(new[:fail_after])
                    raise OSError(errno.ENOSPC, "No space left on device")
                handle.write(new)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    with open(path, newline="") as handle:  # no newline translation: the exact text
        assert handle.read() == (old if fail_after is not None else new)
    assert [p.name for p in folder.iterdir()] == ["state.json"]

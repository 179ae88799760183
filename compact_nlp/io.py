"""Atomic writes: a file compact writes is either the old one or the complete new one, never half of either."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the final file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def save_pretrained_atomic(obj, save_directory: str | os.PathLike) -> list[str]:
    """`obj.save_pretrained` (a model, config or tokenizer) into a scratch folder, then each file moved into place."""
    import shutil

    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=save_directory, prefix=".saving-") as scratch:
        obj.save_pretrained(scratch)
        names = sorted(os.listdir(scratch))
        for name in names:
            src = Path(scratch) / name
            if src.is_dir():  # e.g. sentence-transformers' 1_Pooling/
                shutil.copytree(src, save_directory / name, dirs_exist_ok=True)
            else:
                os.replace(src, save_directory / name)
    return names

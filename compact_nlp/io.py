"""Files in and out: atomic writes (a file compact writes is either the old one or the complete new one, never half
of either), and the upload of a compact folder to the Hugging Face hub (compact_nlp.hub re-exports it)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from fnmatch import fnmatch
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
        _fsync(tmp)  # the bytes are on disk before the name points at them (a power cut leaves old or new)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync(path: str | os.PathLike) -> None:
    """fsync a file, or a folder (its entries); a file system that cannot sync a folder is left as it is."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_folder(src: str | os.PathLike, dst: str | os.PathLike, ignore=None) -> None:
    """Copy folder `src` to `dst` through a scratch folder beside `dst`, so an interrupted copy never leaves half a
    folder (`ignore`: shutil.copytree's)."""
    dst = Path(dst)
    scratch = dst.with_name(dst.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(src, scratch, ignore=ignore)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(scratch, dst)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def save_pretrained_atomic(obj, save_directory: str | os.PathLike) -> list[str]:
    """`obj.save_pretrained` (a model, config or tokenizer) into a scratch folder, then each file moved into place."""
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
                _fsync(src)
                os.replace(src, save_directory / name)
        _fsync(save_directory)
    return names


# what a killed or failed write leaves: atomic_path's temp files, save_pretrained_atomic's and convert_to_ort's scratch
SCRATCH_PATTERNS = (".*.tmp", ".saving-*", ".ort-convert-*")


def remove_scratch(folder: str | os.PathLike) -> list[str]:
    """Remove the scratch files and folders that killed or failed writes left in `folder` (not its subfolders);
    returns their names. Only compact's own scratch names are touched."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for child in sorted(folder.iterdir()):
        if any(fnmatch(child.name, pattern) for pattern in SCRATCH_PATTERNS):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            removed.append(child.name)
    return removed


class OutputOverlapsInputError(ValueError):
    """An output folder that is, contains or lies inside one of the command's inputs."""


def refuse_overwrite(out: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output folder that would overwrite (or, emptied, delete) an input: the same path, a folder inside
    an input folder, or a folder that contains an input. `inputs` maps a name for the message to a path (hub ids are skipped)."""
    target = Path(out).expanduser().resolve()
    for name, source in inputs.items():
        if source is None or not Path(source).expanduser().exists():
            continue
        source = Path(source).expanduser().resolve()
        inside_input = source.is_dir() and source in target.parents  # writing into a model folder changes it
        if target == source or inside_input or target in source.parents:
            raise OutputOverlapsInputError(
                f"the output {out} would overwrite the {name} {source}: writing it there would replace the files "
                "the command reads (and then compare the result with itself). Give a new output folder.")


# never uploaded: training state, scratch files
IGNORED = ("checkpoints/*", "checkpoint-*/*", ".*", "*/.*", "*.tmp", "bench.json", "bench.md")


def files_to_upload(folder: str | os.PathLike) -> list[tuple[str, int]]:
    """(relative path, bytes) of what `push_folder` uploads, with IGNORED left out."""
    folder = Path(folder)
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if not any(fnmatch(relative, pattern) for pattern in IGNORED):
            files.append((relative, path.stat().st_size))
    return files


def push_folder(folder: str | os.PathLike, repo_id: str, private: bool = False, commit_message: str | None = None,
                dry_run: bool = False, token: str | None = None, api=None) -> list[tuple[str, int]]:
    """Upload a compact folder to the hub (one commit); with dry_run, only return what would be uploaded."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a compact folder (no config.json); push the folder that "
                                "`compact export` or `compact run` wrote (OUT/seed-N/model).")
    files = files_to_upload(folder)
    if dry_run:
        return files
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", ignore_patterns=list(IGNORED),
                      commit_message=commit_message or "Upload compact model")
    return files

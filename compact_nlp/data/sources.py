"""Reading task data as `datasets` objects: CSV, TSV, JSON, JSONL and Parquet files, a folder saved with
`save_to_disk`, a hub dataset id, or a `Dataset`/`DatasetDict` the caller already holds.

The files are read by `datasets`' own builders (the way `load_dataset("csv", data_files=...)` reads them); what is
ours is the checking around them, so that a file that cannot be used gets one line that names the file and the fix
instead of a builder's traceback.
"""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path

import datasets

from ..glue import hub_reachable
from .task import DataError

# file suffix -> (datasets builder, extra reader arguments)
READERS = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t", "quoting": csv.QUOTE_NONE}),  # TSV text is not quoted (GLUE's files, most exports)
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".pq": ("parquet", {}),
}
TEXT_FORMATS = (".csv", ".tsv", ".json", ".jsonl")
VALIDATION_NAMES = ("validation", "dev", "valid", "val")  # what a DatasetDict may call its validation split


def describe(source) -> str:
    """A portable name for a source, for reports and cards: a file's name, a hub id, or the object's kind."""
    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        return f"a datasets.{type(source).__name__} object"
    path = Path(str(source))
    return path.name if path.exists() else str(source)


def read_source(source, role: str):
    """A `Dataset` or `DatasetDict` from `source` (a path, a hub id "name" / "name:config", or a datasets object).
    `role` (train, validation, test) is only for messages."""
    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"{role} data must be a file path, a saved dataset folder, a hub dataset id or a "
                        f"datasets.Dataset/DatasetDict, got {type(source).__name__}.")
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_saved(path, role)
    if path.is_file():
        return read_file(path, role)
    if not looks_like_hub_id(str(source)):
        raise DataError(f"{role} data {source}: no such file or folder; check the path.")
    return _read_hub(str(source), role)


def looks_like_hub_id(text: str) -> bool:
    """"name", "owner/name" or "owner/name:config", not a path: no file suffix, no leading ./~, at most one slash."""
    return (Path(text).suffix.lower() not in READERS and not text.startswith((".", "/", "~"))
            and text.count("/") <= 1 and "\\" not in text and bool(text.strip()))


def read_file(path: Path, role: str) -> datasets.Dataset:
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise DataError(f"{role} file {path.name}: unknown format {suffix or '(no suffix)'}; compact reads "
                        f"{', '.join(READERS)} files (or a folder saved with Dataset.save_to_disk).")
    if path.stat().st_size == 0:
        raise DataError(f"{role} file {path.name} is empty; it needs a header and at least one row.")
    if suffix in TEXT_FORMATS:
        lines = [line for line in _utf8_text(path, role).splitlines() if line.strip()]
        if suffix in (".csv", ".tsv") and len(lines) < 2:
            raise DataError(f"{role} file {path.name} has a header but no rows.")
    builder, kwargs = READERS[suffix]
    try:
        with _quiet():
            data = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as error:  # the builders wrap pandas/pyarrow errors in several types; all mean "unreadable"
        cause = error.__cause__ or error
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise DataError(f"{role} file {path.name} could not be read as {suffix[1:].upper()} ({reason}); check that "
                        "every row has the same fields as the header.") from None
    if len(data) == 0:
        raise DataError(f"{role} file {path.name} has a header but no rows.")
    return data


@contextlib.contextmanager
def _quiet():
    """No "Generating train split" bar for reading one local file (it takes a second; the bar is noise around the
    one line an error gets)."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _utf8_text(path: Path, role: str) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise DataError(f"{role} file {path.name} is not UTF-8 (byte 0x{raw[error.start]:02x} on line {line}); "
                        "save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`).") from None


def _read_saved(path: Path, role: str):
    if not any((path / name).is_file() for name in ("dataset_dict.json", "state.json", "dataset_info.json")):
        files = sorted(p.name for p in path.iterdir())[:8]
        raise DataError(f"{role} data {path.name}/ is a folder but not one saved by datasets' save_to_disk "
                        f"(it holds {', '.join(files) or 'nothing'}); give a data file instead.")
    try:
        return datasets.load_from_disk(str(path))
    except Exception as error:
        raise DataError(f"{role} data {path.name}/ could not be loaded with datasets.load_from_disk ({error}).") \
            from None


def _read_hub(dataset_id: str, role: str):
    name, _, config = dataset_id.partition(":")
    if not hub_reachable():
        raise DataError(f"{role} data {dataset_id}: no such file or folder here, and the hub is not reachable to "
                        "load it as a dataset id; give a local file (CSV, TSV, JSON, JSONL, Parquet).")
    try:
        return datasets.load_dataset(name, config or None)
    except Exception as error:
        raise DataError(f"{role} data {dataset_id}: could not load it from the hub ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''}).") from None


def split_of(data, role: str, source):
    """One split from what `read_source` returned: a Dataset as it is; from a DatasetDict, the split named `role`
    (validation also as dev/valid/val), or None when it has none."""
    if isinstance(data, datasets.Dataset):
        return data
    names = VALIDATION_NAMES if role == "validation" else (role,)
    for name in names:
        if name in data:
            return data[name]
    if role == "train":
        raise DataError(f"{describe(source)} has no train split (it has {', '.join(data)}); pass train= a split "
                        "or file explicitly.")
    return None

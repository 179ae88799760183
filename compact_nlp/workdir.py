"""An output folder belongs to one job: the first run records what it was asked to do (the command, its arguments and
a digest of its input files) in OUT/.compact-job.json; the same command again resumes there, and a different one is
refused with a line that says what differs and how to proceed (another folder, --restart to start over, or --reuse
where the command keeps finished stages: the user says so, and the job file then records the new job).

--restart removes only a folder compact itself claimed (one with the job file): a folder of the user's own files is
never emptied.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

from .io import write_json

JOB_FILE = ".compact-job.json"


class OutputInUseError(ValueError):
    """OUT holds another job's files (or files compact did not write)."""


_ABSENT = object()


@dataclass
class Job:
    """What a job was asked to do: enough to tell a resume of it from a different job.

    `defaults` maps a setting (its dotted path in `arguments`) to its default: a job file written before the setting
    existed lacks it, and is the same job as long as this one leaves it at the default."""

    command: str
    arguments: dict  # the settings that change the result (not e.g. --debug); JSON-serialisable
    inputs: dict = field(default_factory=dict)  # input name -> digest (input_digest)
    reusable: bool = False  # the command keeps finished stages that still fit (--reuse): run, search
    defaults: dict = field(default_factory=dict)

    def __post_init__(self):
        # a path given as a Path or as a string is the same setting, and a job file holds only JSON
        self.arguments = _plain(self.arguments)

    def differences(self, other: Job) -> list[str]:
        """What differs from `other`, setting by setting (e.g. "argument recipe.protocol.epochs: 3 -> 2")."""
        changed = [] if self.command == other.command else [f"command {other.command} -> {self.command}"]
        for kind, mine, theirs in (("argument", _flat(self.arguments), _flat(other.arguments)),
                                   ("input", self.inputs, other.inputs)):
            for key in sorted(set(mine) | set(theirs)):
                now, then = mine.get(key, _ABSENT), theirs.get(key, _ABSENT)
                if now == then or (_ABSENT in (now, then) and (then if now is _ABSENT else now) ==
                                   self.defaults.get(key, _ABSENT)) or _opened(key, now, then, mine, theirs):
                    continue
                changed.append(f"{kind} {key}: {_shown(then)} -> {_shown(now)}")
        return changed


def _plain(value):
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested settings as {dotted path: value}; an empty mapping is a value of its own."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _opened(key: str, now, then, mine: dict, theirs: dict) -> bool:
    """Whether `key` went from None to settings of its own (or back): the settings below it name the change."""
    if {id(now), id(then)} != {id(None), id(_ABSENT)}:
        return False
    nested = mine if now is _ABSENT else theirs
    return any(k.startswith(f"{key}.") for k in nested)


def _shown(value) -> str:
    return "(not recorded)" if value is _ABSENT else repr(value)


def defaults_of(cls, prefix: str = "") -> dict:
    """The defaults of dataclass `cls`'s fields as {dotted path: value}, through nested dataclasses: Job.defaults."""
    found = {}
    for spec in fields(cls):
        if spec.default is not MISSING:
            value = spec.default
        elif spec.default_factory is not MISSING:
            value = spec.default_factory()
        else:
            continue
        if is_dataclass(value):
            found.update(defaults_of(type(value), f"{prefix}{spec.name}."))
        else:
            found[f"{prefix}{spec.name}"] = value
    return found


def input_digest(source: str | os.PathLike | None) -> str | None:
    """sha256 of a local file (or of a folder's files, by relative path and content); other sources (a hub id, a
    dataset name) stand for themselves."""
    if source is None:
        return None
    path = Path(source)
    if not path.exists():
        return str(source)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and ".compact" not in p.name)
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def claim_output(out: str | os.PathLike, job: Job, restart: bool = False, reuse: bool = False) -> bool:
    """Make `out` this job's folder. Returns True when it resumes an earlier run of the same job (or, with `reuse`,
    keeps what a different job or a copy left there), False when it starts fresh. Raises OutputInUseError when `out`
    holds a different job (unless `restart` or `reuse`) or files compact did not write (unless `reuse`)."""
    if restart and reuse:
        raise OutputInUseError("--restart discards OUT and --reuse keeps it; give one of them.")
    out = Path(out)
    job_file = out / JOB_FILE
    if out.exists() and not out.is_dir():
        raise OutputInUseError(f"{out} is a file, not a folder; give an output folder.")
    if job_file.is_file():
        earlier = Job(**json.loads(job_file.read_text()))
        changes = job.differences(earlier)
        if not changes:
            return True
        if reuse:
            write_json(job_file, asdict(job))
            return True
        if not restart:
            raise OutputInUseError(
                f"{out} holds a different {earlier.command} job ({'; '.join(changes[:3])}"
                f"{'; ...' if len(changes) > 3 else ''}); give another output folder, or --restart to discard it"
                f"{', or --reuse to keep its finished stages' if job.reusable else ''}.")
        _empty(out)
    elif out.is_dir() and any(out.iterdir()):
        if reuse:  # e.g. stage folders the user copied in from another run
            write_json(job_file, asdict(job))
            return True
        raise OutputInUseError(f"{out} is not empty and was not written by compact; give a new or empty folder "
                               "(compact never deletes files it did not write)"
                               f"{', or --reuse to keep stage folders copied from another run' if job.reusable else ''}.")
    out.mkdir(parents=True, exist_ok=True)
    write_json(job_file, asdict(job))
    return False


def _empty(out: Path) -> None:
    """Remove what an earlier job wrote into `out` (a folder it claimed), keeping `out` itself."""
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()

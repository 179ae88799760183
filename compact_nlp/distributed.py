"""Several processes (`accelerate launch`, `torchrun`) and the device training runs on.

Training is data-parallel through the Trainer (accelerate underneath); everything else compact does between training
runs (exporting, timing on the CPU, writing files, deciding from what it measured) must happen once, and every process
must then go on with the same values, or the Trainer's collectives stop lining up. Two patterns do that:

- `on_main(fn, ...)`: the main process runs `fn` and every process returns its result. For `compact run`, whose
  processes all walk the same steps (each trains; one exports, times and writes).
- `lead(job)` with `everywhere(fn, ...)`: for a job that decides what to train from what it measures (compact
  compress). The main process runs the job; the others follow, and run only what the job passes to `everywhere`
  (training runs, which need every process), until the job ends; then each returns the job's result.

With one process all three are plain calls. accelerate gives the process group and the broadcast; this module is
only the protocol between the processes, which no library offers for a job shaped like compress.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from datetime import timedelta

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

DEVICES = ("auto", "cpu", "cuda")
# The other processes wait while the main one exports and times models (compress measures for many minutes before the
# first training run); gloo's default of 30 minutes would end the job there.
WAIT = timedelta(hours=24)
_STOP = "compact-distributed-stop"
_leading = False  # this is the main process of a `lead` job ...
_inside = 0  # ... and these many `everywhere` calls are running (the followers run them too)


class DeviceError(ValueError):
    """A training device that cannot be used here."""


def uses_cuda(device: str) -> bool:
    """Whether training runs on a GPU: `cuda`, or `auto` where one is visible; `cuda` without one is refused."""
    if device not in DEVICES:
        raise DeviceError(f"device must be one of {', '.join(DEVICES)}, got {device!r}.")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False); "
                          "train with --device cpu (or auto), or install a CUDA build of torch.")
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def process_count() -> int:
    """How many processes the launcher started (1 without a launcher); read from its environment, so asking does
    not start the process group."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def per_process(batch_size: int) -> int:
    """Each process's share of a training batch: compact's batch sizes are the whole step's (as in the recipes whose
    numbers docs/results.md reports), so N processes train with the same steps and batches as one, N times faster
    where each has its own device."""
    count = process_count()
    if batch_size % count:
        raise ValueError(f"a batch of {batch_size} rows does not split evenly over {count} processes; start a number "
                         f"of processes that divides it, or set protocol.batch_size to a multiple of {count}.")
    return batch_size // count


def _state(cpu: bool | None = None) -> PartialState:
    """accelerate's process state; the first call starts the process group (on the CPU: gloo). The Trainer's
    TrainingArguments then find it started and share it."""
    if PartialState._shared_state:
        return PartialState()
    return PartialState(cpu=not torch.cuda.is_available() if cpu is None else cpu, timeout=WAIT)


def is_main() -> bool:
    return process_count() == 1 or _state().is_main_process


def _broadcast(value=None):
    """The main process's `value`, on every process."""
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _outcome(fn, args, kwargs) -> tuple[bool, object]:
    """(True, result) or (False, the exception), in a form every process can unpickle."""
    try:
        return True, fn(*args, **kwargs)
    except Exception as error:  # sent to the other processes, which raise it too, then raised here
        try:
            pickle.dumps(error)
        except Exception:
            error = RuntimeError(f"{type(error).__name__}: {error}")
        return False, error


def on_main(fn, *args, **kwargs):
    """`fn(*args, **kwargs)` on the main process; every process returns its result (or raises its exception)."""
    if process_count() == 1 or (_leading and not _inside):  # a lead job's own step: its followers are not in it
        return fn(*args, **kwargs)
    ok, value = _broadcast(_outcome(fn, args, kwargs) if _state().is_main_process else None)
    if not ok:
        raise value
    return value


def everywhere(fn, *args, **kwargs):
    """Inside `lead`: the followers run `fn(*args, **kwargs)` with the main process (a training run; `fn` and its
    arguments travel pickled, so `fn` is a module-level function). Elsewhere: a plain call."""
    global _inside
    if not _leading:
        return fn(*args, **kwargs)
    _broadcast((fn, args, kwargs))
    _inside += 1
    try:
        return fn(*args, **kwargs)
    finally:
        _inside -= 1


def lead(job, cpu: bool):
    """Run `job()` on the main process while the others follow it (see the module docstring); every process returns
    its result or raises its exception. `cpu`: the processes train on the CPU (gloo) rather than on GPUs."""
    global _leading
    if process_count() == 1:
        return job()
    if _state(cpu).is_main_process:
        _leading = True
        try:
            outcome = _outcome(job, (), {})
        finally:
            _leading = False
        _broadcast(_STOP)
        ok, value = _broadcast(outcome)
    else:
        while (call := _broadcast()) != _STOP:
            fn, args, kwargs = call
            fn(*args, **kwargs)
        ok, value = _broadcast()
    if not ok:
        raise value
    return value


def finish(code: int = 0) -> int:
    """End a run: alone, return `code`. Under several processes, leave the process group together, then end this
    process with `code` at once, output flushed: gloo's worker threads can still abort the interpreter's teardown
    ("terminate called without an active exception", exit -6) after the work is written, even once the group is
    destroyed (pytorch/pytorch#179291), and a launcher reads that abort as a failed run."""
    if process_count() == 1 or not torch.distributed.is_initialized():
        return code
    _state().wait_for_everyone()
    torch.distributed.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


__all__ = ["DEVICES", "DeviceError", "everywhere", "finish", "is_main", "lead", "on_main", "per_process",
           "process_count", "uses_cuda"]

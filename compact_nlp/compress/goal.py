"""What the user asks `compact compress` for, checked before anything trains: one target (a speedup over the fastest
int8 peer, a latency at batch 1 on their text, or a size), the largest drop they accept, and the limits of the run."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from ..distributed import DeviceError, uses_cuda

SPEEDUP, LATENCY, SIZE = "speedup", "latency_ms", "size_mb"
EMBEDDINGS = "embeddings"  # unlabelled text, a sentence-embedding model (compact_nlp.compress.embed_job)
TASKS = ("classification", "regression", "pairs", EMBEDDINGS)  # what --task may say; labelled data must agree
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$")


class GoalError(ValueError):
    """A goal or limit that cannot be used as given; the message names the fix."""


@dataclass(frozen=True)
class Goal:
    """One target and the accepted drop (points of the task's main metric, on the 0-100 scale)."""

    kind: str  # SPEEDUP, LATENCY or SIZE
    value: float
    max_drop: float

    def __post_init__(self):
        if self.kind not in (SPEEDUP, LATENCY, SIZE):
            raise GoalError(f"the target must be --speedup, --latency-ms or --size-mb, got {self.kind!r}.")
        if not self.value > 0:
            raise GoalError(f"--{self.kind.replace('_', '-')} must be a positive number, got {self.value}.")
        if self.kind == SPEEDUP and self.value < 1:
            raise GoalError(f"--speedup {self.value} asks for a slower model; give a factor above 1 (e.g. 3).")
        if not self.max_drop >= 0:
            raise GoalError(f"--max-drop must be 0 or more points (e.g. 1 for one point), got {self.max_drop}.")

    def describe(self) -> str:
        target = {SPEEDUP: f"{self.value:g}x faster than the fastest int8 peer",
                  LATENCY: f"at most {self.value:g} ms at batch 1", SIZE: f"at most {self.value:g} MB"}[self.kind]
        return f"{target}, at most {self.max_drop:g} points worse"

    def to_dict(self) -> dict:
        return asdict(self)


def goal_from(speedup: float | None, latency_ms: float | None, size_mb: float | None, max_drop: float) -> Goal:
    given = [(kind, value) for kind, value in ((SPEEDUP, speedup), (LATENCY, latency_ms), (SIZE, size_mb))
             if value is not None]
    if len(given) != 1:
        raise GoalError("give exactly one target: --speedup X, --latency-ms T or --size-mb S.")
    return Goal(given[0][0], float(given[0][1]), float(max_drop))


def parse_duration(text: str | float | int | None) -> float | None:
    """Seconds from "2h", "90m", "1h30m", "45s" or a bare number of seconds; None stays None (no limit)."""
    if text is None or isinstance(text, (int, float)):
        seconds = text
    else:
        match = _DURATION.match(str(text))
        if str(text).strip().replace(".", "", 1).isdigit():
            seconds = float(text)
        elif match and any(match.groups()):
            hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
            seconds = hours * 3600 + minutes * 60 + secs
        else:
            raise GoalError(f"--time-budget {text!r} is not a duration; write e.g. 2h, 90m, 1h30m or 600 (seconds).")
    if seconds is not None and seconds <= 0:
        raise GoalError(f"--time-budget must be positive, got {text!r}.")
    return seconds


@dataclass(frozen=True)
class Limits:
    """How the run may spend its time: the wall-clock budget, the threads latency is measured with, the seeds the
    chosen plan is trained with (the held-out drop is their mean)."""

    time_budget_s: float | None = None
    threads: int = 1
    seeds: int = 1
    device: str = "auto"  # what trains (compact_nlp.distributed.uses_cuda); latency is always measured on the CPU

    def __post_init__(self):
        if self.threads < 1:
            raise GoalError(f"--threads must be 1 or more, got {self.threads}.")
        if self.seeds < 1:
            raise GoalError(f"--seeds must be 1 or more, got {self.seeds}.")
        try:
            uses_cuda(self.device)
        except DeviceError as error:
            raise GoalError(f"--{error}") from None

    def to_dict(self) -> dict:
        return asdict(self)

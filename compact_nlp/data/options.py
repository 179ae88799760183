"""The data options every command that takes a task shares (--train, --validation, --text-column, ...), and the
task data they name: the user's own, or a GLUE task by name."""

from __future__ import annotations

import argparse

from .load import task_data_from_options
from .task import PROBLEM_TYPES

__all__ = ["add_data_options", "task_data_from_options", "at_least", "in_range", "positive_float"]


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Your own data, the same way in every command that takes a task (compact_nlp.data.load_task_data)."""
    group = parser.add_argument_group("your data (instead of a GLUE task)")
    group.add_argument("--train", default=None, metavar="FILE",
                       help="training data: CSV, TSV, JSON, JSONL or Parquet file, a save_to_disk folder or a hub id")
    group.add_argument("--validation", default=None, metavar="FILE",
                       help="scored once, on what ships (default: 10%% of --train, carved with a fixed seed)")
    group.add_argument("--test", default=None, metavar="FILE", help="also scored, when it has labels")
    group.add_argument("--text-column", default=None, metavar="COL[,COL2]",
                       help="the text column, or two for sentence pairs (default: inferred)")
    group.add_argument("--label-column", default=None, metavar="COL",
                       help="the label column (default: label, labels, target, class, category, score or y)")
    group.add_argument("--problem-type", default=None, choices=PROBLEM_TYPES,
                       help="default: inferred (text or integer labels: classification; fractions: regression; "
                            "lists: multi-label)")


# argparse types with ranges: a number no run can use is refused when the command is parsed (exit 2, one line),
# not after training, and not silently turned into meaningless output


def at_least(minimum: int):
    """An int >= minimum (threads, lengths, calls, rounds, seeds' count, examples ...)."""
    def parse(text: str) -> int:
        value = _number(text, int, "an integer")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small: give an integer >= {minimum}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def in_range(low: int, high: int):
    """An int in [low, high] (e.g. the ONNX opset)."""
    def parse(text: str) -> int:
        value = _number(text, int, "an integer")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not supported: give an integer from {low} to {high}")
        return value
    parse.__name__ = f"integer in {low}..{high}"
    return parse


def positive_float(text: str) -> float:
    """A finite float > 0 (epochs, tolerances)."""
    value = _number(text, float, "a number")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{value} must be a finite number > 0")
    return value


def non_negative_float(text: str) -> float:
    """A finite float >= 0 (an accepted loss in points)."""
    value = _number(text, float, "a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is negative: give 0 or more")
    return value


def _number(text: str, kind: type, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None

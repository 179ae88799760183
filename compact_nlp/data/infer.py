"""From a user's raw columns to the task layout (compact_nlp/data/task.py): which columns are text and which is the
label, what problem it is, and the label names. Explicit choices always win; what is inferred is said in the notes.

Every check here runs before anything is trained or written, and a failure is one line naming the column, the
split and the fix.
"""

from __future__ import annotations

import math

import datasets

from .task import MULTI_LABEL, PROBLEM_TYPES, REGRESSION, SINGLE_LABEL, DataError

LABEL_NAMES = ("label", "labels", "target", "class", "category", "score", "y")  # tried in order when not given
ID_COLUMNS = ("idx", "id", "index", "Unnamed: 0")  # never text


def _names(names) -> str:
    """Names for a one-line message: as they are, or quoted when they hold a line break or other control
    character (a header cell of a broken file)."""
    shown = [str(n) if str(n).isprintable() and str(n).strip() else repr(n) for n in names]
    return ", ".join(shown) or "no columns"


def choose_columns(columns: list[str], text, label: str | None, where: str) -> tuple[tuple[str, ...], str]:
    """(text columns, label column) among `columns`: the given ones (checked), else inferred."""
    if label is not None:
        _check_present([label], columns, where, "--label-column")
    else:
        label = next((c for c in LABEL_NAMES if c in columns), None)
        if label is None:
            raise DataError(f"{where}: no label column found among {_names(columns)}; name it with "
                            "--label-column (recipe: data.label).")
    if text is not None:
        text = tuple(c.strip() for c in text.split(",")) if isinstance(text, str) else tuple(text)
        _check_present(list(text), columns, where, "--text-column")
        if label in text:
            raise DataError(f"{where}: column {label!r} is both the label and a text column; pick others.")
        if not 1 <= len(text) <= 2:
            raise DataError(f"--text-column takes one column, or two for sentence pairs; got {list(text)}.")
        return text, label
    return _infer_text(columns, label, where), label


def _check_present(wanted: list[str], columns: list[str], where: str, flag: str) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(f"{where}: no column {', '.join(map(repr, missing))} ({flag}); its columns are "
                        f"{_names(columns)}.")


def _infer_text(columns: list[str], label: str, where: str) -> tuple[str, ...]:
    candidates = tuple(c for c in columns if c != label and c not in ID_COLUMNS)
    if 1 <= len(candidates) <= 2:
        return candidates
    raise DataError(f"{where}: cannot tell which of {_names(candidates)} hold the text; name one "
                    "(or two, for sentence pairs) with --text-column (recipe: data.text).")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str)
                                                                                  and not value.strip())


def check_labels(values: list, column: str, where: str) -> None:
    """No empty labels and one kind of value (all text, all numbers or all lists)."""
    empty = [i for i, v in enumerate(values) if _missing(v)]
    if empty:
        raise DataError(f"{where}: {len(empty)} row(s) have no {column!r} (first: data row {empty[0] + 1}); fill in "
                        "or drop those rows.")
    kinds = {"list" if isinstance(v, (list, tuple)) else "text" if isinstance(v, str) else "number" for v in values}
    if len(kinds) > 1:
        raise DataError(f"{where}: column {column!r} mixes {' and '.join(sorted(kinds))} labels; use one kind "
                        "(e.g. all label names).")


def infer_problem_type(values: list, given: str | None, column: str, where: str) -> str:
    if given is not None:
        if given not in PROBLEM_TYPES:
            raise DataError(f"problem type {given!r} is not one of {', '.join(PROBLEM_TYPES)}.")
        return given
    first = values[0]
    if isinstance(first, (list, tuple)):
        return MULTI_LABEL
    if isinstance(first, float) and any(not float(v).is_integer() for v in values):
        return REGRESSION
    return SINGLE_LABEL


def label_names(values: list, problem_type: str, column: str, where: str) -> tuple[str, ...] | None:
    """The label names train defines: sorted (numerically for numbers), as text."""
    if problem_type == REGRESSION:
        return None
    flat = [v for row in values for v in _as_list(row)] if problem_type == MULTI_LABEL else values
    unique = sorted(set(flat), key=lambda v: (isinstance(v, str), v))
    if problem_type == SINGLE_LABEL and len(unique) < 2:
        raise DataError(f"{where}: every row has the label {_name(unique[0])!r}; a classifier needs at least two "
                        f"classes in {column!r}.")
    return tuple(_name(v) for v in unique)


def _as_list(value) -> list:
    if isinstance(value, str):  # "a,b" in a CSV cell, when the problem type says multi-label
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _name(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def encode_labels(values: list, problem_type: str, names: tuple[str, ...] | None, column: str, where: str) -> list:
    """Label ids (single-label), multi-hot rows (multi-label) or floats (regression); a label train never had is an
    error that names it."""
    if problem_type == REGRESSION:
        try:
            return [float(v) for v in values]
        except (TypeError, ValueError):
            bad = next(v for v in values if not _is_number(v))
            raise DataError(f"{where}: {column!r} holds {bad!r}, not a number, in a regression task; fix the value "
                            "or set --problem-type single_label_classification.") from None
    ids = {name: i for i, name in enumerate(names)}
    rows = [[_name(v) for v in _as_list(row)] for row in values] if problem_type == MULTI_LABEL else \
        [[_name(v)] for v in values]
    unseen = sorted({n for row in rows for n in row} - set(ids))
    if unseen:
        raise DataError(f"{where}: label(s) {', '.join(map(repr, unseen[:5]))} in {column!r} never occur in train "
                        f"(train has {_names(names)}); fix them or add such rows to train.")
    if problem_type == SINGLE_LABEL:
        return [ids[row[0]] for row in rows]
    return [[1.0 if name in row else 0.0 for name in names] for row in rows]


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def label_feature(problem_type: str, names: tuple[str, ...] | None):
    if problem_type == REGRESSION:
        return datasets.Value("float32")
    if problem_type == SINGLE_LABEL:
        return datasets.ClassLabel(names=list(names))
    return datasets.Sequence(datasets.Value("float32"), length=len(names))


def check_texts(split, columns: tuple[str, ...], where: str) -> list[list[str]]:
    """The text columns as strings; a missing text is an error naming the row."""
    texts = []
    for column in columns:
        values = split[column]
        empty = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and math.isnan(v))]
        if empty:
            raise DataError(f"{where}: {len(empty)} row(s) have no text in {column!r} (first: data row "
                            f"{empty[0] + 1}); fill in or drop those rows.")
        texts.append([v if isinstance(v, str) else str(v) for v in values])
    return texts

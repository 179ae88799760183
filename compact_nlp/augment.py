"""Augmented copies of the training text for a distillation transfer set (recipe `transfer: [augmented]`).

TinyBERT (Jiao et al. 2020, §3.3) shows that on small GLUE tasks most of what distillation gains comes from letting
the teacher label many perturbed copies of the training sentences: the student then learns the teacher's function
around the data, not only at the gold points. TinyBERT perturbs with a masked language model and GloVe neighbours;
neither is available offline here (all-MiniLM-L6-v2 has no MLM head), so the copies use EDA's resource-free word
operations (Wei & Zou 2019): random deletion, replacement by a word drawn from the task's own training text (at its
frequency there), and swaps of two words. A perturbed pair may no longer mean what its gold label says; that is fine, because transfer rows carry
no gold label and only the teacher's logits teach them.

Written here because the libraries that offer these operations (nlpaug, textattack) are unmaintained or pull in
downloads and heavy dependencies for what is a few lines of seeded list edits.
"""

from __future__ import annotations

import random

DEFAULT_COPIES = 2  # measured on MRPC at a fixed step budget: 2 copies gained, 8 left each gold row seen once
WORD_PROBABILITY = 0.1  # EDA's alpha: the share of a sentence's words each operation touches


def perturb(words: list[str], vocabulary: list[str], rng: random.Random,
            probability: float = WORD_PROBABILITY) -> list[str]:
    """One perturbed copy: each word deleted or replaced with `probability`, then about `probability` of the
    positions swapped in pairs. Never empty: a sentence that loses every word keeps one of its own."""
    out = []
    for word in words:
        draw = rng.random()
        if draw < probability:
            continue
        out.append(rng.choice(vocabulary) if draw < 2 * probability else word)
    if not out:
        out = [rng.choice(words)] if words else []
    for _ in range(max(1, round(probability * len(out))) if len(out) > 1 else 0):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def augmented_rows(rows: dict[str, list[str]], copies: int, seed: int) -> dict[str, list[str]]:
    """`copies` perturbed copies of every row of `rows` (column name -> texts; one or two text columns), each text
    column perturbed independently. Replacement words come from the same texts, so nothing outside the training
    data enters. Seeded: the same rows, copies and seed give the same copies."""
    if copies < 1:
        raise ValueError(f"augmented copies must be at least 1, got {copies}.")
    rng = random.Random(seed)
    # every word occurrence, so a replacement is drawn at the word's frequency in the training text
    vocabulary = [word for texts in rows.values() for text in texts for word in text.split()]
    if not vocabulary:
        raise ValueError("cannot augment: the training texts have no words.")
    out: dict[str, list[str]] = {column: [] for column in rows}
    count = len(next(iter(rows.values())))
    for _ in range(copies):
        for i in range(count):
            for column, texts in rows.items():
                out[column].append(" ".join(perturb(texts[i].split(), vocabulary, rng)))
    return out


def augmented_copies(source: str) -> int | None:
    """The number of copies a transfer source asks for: 'augmented' (DEFAULT_COPIES) or 'augmented:N'; None for
    any other source."""
    name, _, count = source.partition(":")
    if name != "augmented":
        return None
    if not count:
        return DEFAULT_COPIES
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"transfer source {source!r}: the copies after 'augmented:' must be a whole number >= 1, "
                         f"e.g. 'augmented:8'.")
    return int(count)

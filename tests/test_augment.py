"""The augmented transfer set (compact_nlp.augment): seeded, made of the training text only, never empty."""

import pytest

from compact_nlp.augment import DEFAULT_COPIES, augmented_copies, augmented_rows, perturb

PAIRS = {"sentence1": ["the company said profits rose in the third quarter .", "shares fell", "ok"],
         "sentence2": ["third-quarter profits were up , the company said .", "the stock dropped sharply", "fine ."]}


def test_copies_are_seeded_per_row_and_drawn_from_the_training_words_only():
    first = augmented_rows(PAIRS, copies=3, seed=1)
    assert first == augmented_rows(PAIRS, copies=3, seed=1)
    assert first != augmented_rows(PAIRS, copies=3, seed=2)
    assert all(len(texts) == 3 * 3 for texts in first.values())
    training_words = {w for texts in PAIRS.values() for t in texts for w in t.split()}
    for texts in first.values():
        assert all(text.split() and set(text.split()) <= training_words for text in texts)
    # copies differ from their source rows: the teacher sees the neighbourhood of the data, not the data again
    assert sum(a != b for a, b in zip(first["sentence1"], PAIRS["sentence1"] * 3)) >= 5


def test_perturb_never_returns_an_empty_sentence():
    import random

    rng = random.Random(0)
    for _ in range(200):  # probability 0.5: a one- or two-word sentence often loses every word
        assert perturb(["only"], ["x"], rng, probability=0.5) in (["only"], ["x"])
        assert len(perturb(["two", "words"], ["x"], rng, probability=0.5)) >= 1


def test_the_transfer_source_names_its_copies():
    assert augmented_copies("augmented") == DEFAULT_COPIES
    assert augmented_copies("augmented:3") == 3
    assert augmented_copies("swapped") is None and augmented_copies("mnli") is None
    for bad in ("augmented:0", "augmented:-1", "augmented:x"):
        with pytest.raises(ValueError, match="whole number >= 1"):
            augmented_copies(bad)
    with pytest.raises(ValueError, match="at least 1"):
        augmented_rows(PAIRS, copies=0, seed=1)

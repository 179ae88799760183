"""Vocabulary trimming: keep only the wordpieces a task's training text uses, rewriting the tokenizer and the
embedding table together.

In all-MiniLM-L6-v2 the word embeddings are 11.7M of 22.7M parameters, and a GLUE task's training text uses a
fraction of the 30522 pieces. Trimming keeps the special tokens and every piece the text produces, in their
original order. WordPiece matches greedily, longest piece first, so any text made of kept pieces tokenizes exactly as
before (the longest match it found is still there, and no longer one appears). A word whose pieces were dropped is
split into shorter kept pieces ("poised" -> "po ##ise ##d"), or becomes [UNK] when no split exists. That changes
the input for words the training text never used, so the accuracy effect is measured, not assumed (docs/quant.md).

Only WordPiece tokenizers (BERT, MiniLM, DistilBERT, ELECTRA) can be trimmed this way: BPE and Unigram vocabularies
are tied to their merges and scores.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class VocabularyTrimError(ValueError):
    pass


def used_token_ids(tokenizer, texts: Iterable, batch_size: int = 1000) -> list[int]:
    """Sorted ids the tokenizer produces for `texts` (strings or (a, b) pairs), plus its special tokens."""
    used = set(tokenizer.all_special_ids)
    texts = list(texts)
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        if chunk and isinstance(chunk[0], (tuple, list)):
            encoded = tokenizer([a for a, _ in chunk], [b for _, b in chunk])["input_ids"]
        else:
            encoded = tokenizer(chunk)["input_ids"]
        for ids in encoded:
            used.update(ids)
    return sorted(used)


def trimmed_tokenizer(tokenizer, keep_ids: list[int]):
    """The same tokenizer over the kept pieces only (new ids: their rank among keep_ids)."""
    model = tokenizer.backend_tokenizer.model
    if type(model).__name__ != "WordPiece":
        raise VocabularyTrimError(f"vocabulary trimming supports WordPiece tokenizers (BERT, MiniLM, DistilBERT, "
                                  f"ELECTRA); this one is {type(model).__name__}. Leave trim_vocabulary off.")
    if tokenizer.unk_token_id not in keep_ids:
        raise VocabularyTrimError("the kept ids must include the [UNK] token; unseen pieces map to it.")
    pieces = tokenizer.convert_ids_to_tokens(keep_ids)
    kwargs = {k: tokenizer.init_kwargs[k] for k in ("do_lower_case", "tokenize_chinese_chars", "strip_accents",
                                                    "model_max_length")
              if k in tokenizer.init_kwargs}
    specials = {name: getattr(tokenizer, name) for name in ("unk_token", "sep_token", "pad_token", "cls_token",
                                                            "mask_token") if getattr(tokenizer, name, None)}
    trimmed = type(tokenizer)(vocab={piece: i for i, piece in enumerate(pieces)}, **kwargs, **specials)
    if len(trimmed) != len(pieces):
        raise VocabularyTrimError(f"the rebuilt tokenizer has {len(trimmed)} pieces, expected {len(pieces)}.")
    return trimmed


def trim_embedding_rows(model, keep_ids: list[int], table_suffix: str = "word_embeddings.weight") -> str:
    """Keep only the rows `keep_ids` of the ONNX graph's word-embedding table, in place; returns its name."""
    from onnx import numpy_helper

    table = next((i for i in model.graph.initializer if i.name.endswith(table_suffix)), None)
    if table is None:
        raise VocabularyTrimError(f"no initializer named *{table_suffix} in the graph: nothing to trim.")
    rows = numpy_helper.to_array(table)
    if max(keep_ids) >= rows.shape[0]:
        raise VocabularyTrimError(f"token id {max(keep_ids)} is outside the embedding table ({rows.shape[0]} rows); "
                                  "the tokenizer does not belong to this model.")
    table.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(rows[keep_ids]), table.name))
    return table.name

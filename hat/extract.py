"""Extraction: a SubTransformer becomes a standalone, physically smaller CompactBert (through compact_nlp.shrink).

The extracted model has its own config (hidden size, per-layer heads and FFN widths, `config.search` recording the
space and the SubTransformer) and computes exactly what the SuperTransformer computes when it runs that
SubTransformer (tests/test_hat.py::test_extraction_parity). Distil it further with CompactTrainer, then save and
export it like any CompactBert.
"""

from __future__ import annotations

from compact_nlp.modeling import CompactBertForSequenceClassification
from compact_nlp.shrink import take

from .elastic import SuperTransformer
from .space import SubTransformer


def extract(supernet: SuperTransformer, sub: SubTransformer) -> CompactBertForSequenceClassification:
    """The SubTransformer `sub` of `supernet` as its own model: its layers, and the front slices of their heads,
    FFN neurons and hidden channels, copied out of the shared weights."""
    supernet.space.check(sub)
    layers = supernet.space.layers_for(sub.depth)
    config = supernet.model.config
    heads = [list(range(config.num_heads_per_layer[i])) for i in range(config.num_hidden_layers)]
    ffn = [list(range(config.intermediate_size_per_layer[i])) for i in range(config.num_hidden_layers)]
    for j, i in enumerate(layers):
        heads[i], ffn[i] = list(range(sub.heads[j])), list(range(sub.ffn[j]))
    model = take(supernet.model, heads=heads, ffn=ffn, layers=layers, hidden=list(range(sub.hidden)))
    model.config.search = supernet.sub_config(sub).search
    return model

"""compact_nlp.token_pruning: cascade token and head pruning (SpAtten, Wang et al., HPCA 2021; LTP thresholds).

Tokens really leave the sequence layer by layer (top-k by accumulated attention, gathered in order), and heads
leave the model through `compact_nlp.shrink`. Nothing is implemented here yet (issue 5); the export path it needs
(a data-dependent top-k/gather with dynamic lengths) is shown to work in tests/test_export.py.
"""

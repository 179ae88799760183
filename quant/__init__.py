"""compact_nlp.quant: int8 (PTQ and QAT, as in Q8BERT) and binary weights (BinaryBERT / BiT) for CompactBert.

Nothing is implemented here yet (issue 4); this package imports only compact_nlp's base.
"""

"""compact_nlp.hat: hardware-aware transformer search (HAT, Wang et al., ACL 2020).

Elastic SuperTransformer from a fine-tuned CompactBert, a latency predictor trained on ONNX Runtime measurements,
evolutionary search under a latency budget, and SubTransformer extraction through `compact_nlp.shrink`.
Nothing is implemented here yet (issue 6); this package imports only compact_nlp's base (`compact_nlp.modeling`,
`compact_nlp.shrink`).
"""

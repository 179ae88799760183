"""compact_nlp.hat: hardware-aware transformer search (HAT, Wang et al., ACL 2020) for fine-tuned encoders.

    space = SearchSpace.from_model(model.config)                       # heads, FFN, depth, hidden choices
    supernet = SuperTransformer(rewire(model, importance(model, batches)), space)
    CompactTrainer(model=supernet, teacher_model=model, hooks=[SandwichHook(space)], ...).train()
    data = collect_latency(supernet, measurer, "latency.jsonl", count=200)
    predictor = LatencyPredictor.fit(data)
    result = evolutionary_search(space, predictor, budget_ms, fitness)
    small = extract(supernet, result.best.sub)                          # a standalone, physically smaller CompactBert

`compact search RECIPE --model DIR` runs all of it (compact_nlp.search); docs/hat.md has the measured results. This
package imports compact_nlp's base (`modeling`, `shrink`, `config_section`, `io`, the hook interface `hooks`) and
`distill` (HatConfig checks its SubTransformer distillation settings).
"""

from .config import HatConfig, HatConfigError
from .elastic import SandwichHook, SuperTransformer, importance, rewire
from .extract import extract
from .latency import (
    LatencyData,
    LatencyPredictor,
    LatencyRecord,
    LatencySpec,
    LatencySpecMismatch,
    Measurer,
    collect_latency,
)
from .search import Candidate, SearchResult, evolutionary_search, given_subtransformer, pareto_front, plot_search
from .space import SearchSpace, SearchSpaceError, SubTransformer

__all__ = [
    "Candidate", "HatConfig", "HatConfigError", "LatencyData", "LatencyPredictor", "LatencyRecord", "LatencySpec",
    "LatencySpecMismatch", "Measurer", "SandwichHook", "SearchResult", "SearchSpace", "SearchSpaceError",
    "SubTransformer", "SuperTransformer", "collect_latency", "evolutionary_search", "extract", "given_subtransformer",
    "importance", "pareto_front", "plot_search", "rewire",
]

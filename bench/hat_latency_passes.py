"""Measure every SST-2 SubTransformer twice more (hat.latency_passes=3) and fit the predictor on the means: stages 1-2
of compact search only, in a copy of the SST-2 search folder (its rewired model and latency.jsonl), so the search's
own predictor and results stay as they are. Results: bench/results/hat_latency_passes3.json (docs/hat.md).

    mkdir -p $R/hat/sst2_passes3 && cp -r $R/hat/sst2/{rewired,latency.jsonl} $R/hat/sst2_passes3/
    R=runs-folder [GLUE=glue_data] OMP_NUM_THREADS=1 python bench/hat_latency_passes.py
"""
import json
import os
import statistics
from pathlib import Path

from transformers import AutoTokenizer

from compact_nlp.auto import AutoCompactModelForSequenceClassification
from compact_nlp.glue import task_texts
from compact_nlp.hat import HatConfig, LatencySpec, SuperTransformer
from compact_nlp.recipe import load_recipe
from compact_nlp.run import protocol_splits
from compact_nlp.search import latency_stage, make_measurer, search_space_for
from compact_nlp.ship import machine

R = Path(os.environ["R"])
out = R / "hat" / "sst2_passes3"
ft = str(R / "baselines" / "sst2" / "seed-1" / "model")
recipe = load_recipe("recipes/glue/sst2.yaml", [f"model={ft}", "hat.latency_passes=3"], presets=["hat"])
config = HatConfig.from_dict(recipe.hat)
task, data, train, _, heldout = protocol_splits(recipe, recipe.protocol.seeds[0], os.environ.get("GLUE", "../shared/data/glue_data"))
tokenizer = AutoTokenizer.from_pretrained(ft)
rewired = AutoCompactModelForSequenceClassification.from_pretrained(out / "rewired")
supernet = SuperTransformer(rewired, search_space_for(config, rewired.config))
spec = LatencySpec(precision=config.precision, threads=config.threads, batch=config.batch,
                   sequence_length=config.sequence_length, hardware=f"{machine()['processor']}, {machine()['cores']} cores")
texts = [t if isinstance(t, str) else " ".join(t) for t in task_texts(train, task.name, 2000)]
data, predictor = latency_stage(supernet, make_measurer(config, spec, tokenizer, texts), config, out)


def spread(a: float, b: float) -> float:
    return abs(a - b) / ((a + b) / 2)


# where the noise is: the two passes of one session against each other, and the earlier session against their mean
passes = {}
for record in data.records:
    passes.setdefault(record.sub, []).append((record.repeat, record.ms))
thrice = [[ms for _, ms in sorted(p)] for p in passes.values() if len(p) == 3]
same_session = [spread(b, c) for _, b, c in thrice]
across = [spread(a, (b + c) / 2) for a, b, c in thrice]
one_pass = json.loads((R / "hat" / "sst2" / "search_results.json").read_text())["predictor"]
results = {
    "what": "SST-2 HAT latency data in 3 passes (hat.latency_passes=3): pass 1 is the search's own (an earlier "
            "session), passes 2 and 3 were measured in one later session; the predictor trains on each model's mean",
    "spec": predictor.spec.to_dict(), "one_pass": one_pass, "three_passes": predictor.metrics,
    "spread_between_passes": {
        "models": len(thrice),
        "same_session_median_pct": round(100 * statistics.median(same_session), 1),
        "across_sessions_median_pct": round(100 * statistics.median(across), 1)}}
Path("bench/results/hat_latency_passes3.json").write_text(json.dumps(results, indent=1) + "\n")
print(json.dumps(results, indent=1))

"""Measure every SST-2 SubTransformer again until it has PASSES measurements (hat.latency_passes=PASSES, default 3)
and fit the predictor on the means: stages 1-2 of compact search only, in a copy of the SST-2 search folder (its
rewired model and latency.jsonl), so the search's own predictor and results stay as they are. Each later run starts
from the previous one's folder, so every pass after the first comes from a later session.
Results: bench/results/hat_latency_passes{PASSES}.json (docs/hat.md).

    mkdir -p $R/hat/sst2_passes3 && cp -r $R/hat/sst2/{rewired,latency.jsonl} $R/hat/sst2_passes3/
    R=runs-folder [GLUE=glue_data] OMP_NUM_THREADS=1 python bench/experiments/hat_latency_passes.py
    mkdir -p $R/hat/sst2_passes5 && cp -r $R/hat/sst2_passes3/{rewired,latency.jsonl} $R/hat/sst2_passes5/
    R=runs-folder PASSES=5 OMP_NUM_THREADS=1 python bench/experiments/hat_latency_passes.py
"""
import json
import os
import statistics
from pathlib import Path

from transformers import AutoTokenizer

from compact_nlp.auto import AutoCompactModelForSequenceClassification
from compact_nlp.data import task_texts
from compact_nlp.hat import HatConfig, LatencySpec, SuperTransformer
from compact_nlp.hat.measure import make_measurer
from compact_nlp.hat.pipeline import latency_stage, search_space_for
from compact_nlp.protocol import protocol_splits
from compact_nlp.recipe import load_recipe
from compact_nlp.run import load_data
from compact_nlp.ship import machine

R = Path(os.environ["R"])
PASSES = int(os.environ.get("PASSES", "3"))
out = R / "hat" / f"sst2_passes{PASSES}"
ft = str(R / "baselines" / "sst2" / "seed-1" / "model")
recipe = load_recipe("recipes/glue/sst2.yaml", [f"model={ft}", f"hat.latency_passes={PASSES}"], presets=["hat"])
config = HatConfig.from_dict(recipe.hat)
task_data = load_data(recipe, os.environ.get("GLUE", "../shared/data/glue_data"))
train = protocol_splits(recipe.protocol, task_data, recipe.protocol.seeds[0]).train
tokenizer = AutoTokenizer.from_pretrained(ft)
rewired = AutoCompactModelForSequenceClassification.from_pretrained(out / "rewired")
supernet = SuperTransformer(rewired, search_space_for(config, rewired.config))
spec = LatencySpec(precision=config.precision, threads=config.threads, batch=config.batch,
                   sequence_length=config.sequence_length, hardware=f"{machine()['processor']}, {machine()['cores']} cores")
texts = [t if isinstance(t, str) else " ".join(t) for t in task_texts(train, task_data.spec, 2000)]
data, predictor = latency_stage(supernet, make_measurer(config, spec, tokenizer, texts), config, out)


def spread(a: float, b: float) -> float:
    return abs(a - b) / ((a + b) / 2)


# where the noise is: each pass against the mean of the model's other passes (pass 1 is the search's own session)
passes = {}
for record in data.records:
    passes.setdefault(record.sub, []).append((record.repeat, record.ms))
complete = [[ms for _, ms in sorted(p)] for p in passes.values() if len(p) == PASSES]
each_pass = {f"pass {i + 1}": round(100 * statistics.median(
    spread(ms[i], statistics.fmean(ms[:i] + ms[i + 1:])) for ms in complete), 1) for i in range(PASSES)}
one_pass = json.loads((R / "hat" / "sst2" / "search_results.json").read_text())["predictor"]
results = {
    "what": f"SST-2 HAT latency data in {PASSES} passes (hat.latency_passes={PASSES}): pass 1 is the search's own (an "
            "earlier session), passes 2 and 3 were measured in one later session"
            + (", passes 4 and 5 in a session after that" if PASSES == 5 else "")
            + "; the predictor trains on each model's mean",
    "spec": predictor.spec.to_dict(), "one_pass": one_pass, f"{PASSES}_passes": predictor.metrics,
    "spread_between_passes": {"models": len(complete), "each_pass_vs_mean_of_others_median_pct": each_pass}}
if PASSES == 3:  # the two passes of one session against each other, and the earlier session against their mean
    results["three_passes"] = results.pop("3_passes")
    results["spread_between_passes"].update(
        same_session_median_pct=round(100 * statistics.median(spread(b, c) for _, b, c in complete), 1),
        across_sessions_median_pct=round(100 * statistics.median(spread(a, (b + c) / 2) for a, b, c in complete), 1))
Path(f"bench/results/hat_latency_passes{PASSES}.json").write_text(json.dumps(results, indent=1) + "\n")
print(json.dumps(results, indent=1))

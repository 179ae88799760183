"""HAT's latency data and predictor on a quiet machine: stage 2 of compact search alone, for the SST-2 search's space.

Latency depends on shapes only, so the SubTransformers are cut from the offline all-MiniLM-L6-v2 with a 2-label head
(the same shapes as the SST-2 fine-tune the search ran on; no training is needed). Every model is measured PASSES
times (hat.latency_passes, default 2): the second pass comes minutes after the first, so the spread between passes is
the noise floor including drift, and the predictor learns each model's mean. Nothing else may run on the machine
meanwhile: the script records the load average before and after, and says so when it was not quiet.
Results: bench/results/hat_latency_quiet.{json,md} (docs/hat.md).

    R=runs-folder [MODELS=300] [PASSES=2] [GLUE=glue_data] OMP_NUM_THREADS=1 python bench/experiments/hat_latency_quiet.py
"""
import json
import os
import statistics
import time
from pathlib import Path

from transformers import AutoTokenizer

from compact_nlp.auto import AutoCompactModelForSequenceClassification
from compact_nlp.hat import HatConfig, LatencyPredictor, SuperTransformer
from compact_nlp.hat.measure import latency_spec, make_measurer, measuring_texts
from compact_nlp.hat.pipeline import latency_stage, search_space_for
from compact_nlp.io import write_json, write_text
from compact_nlp.pretrained import resolve_checkpoint
from compact_nlp.protocol import protocol_splits
from compact_nlp.recipe import load_recipe
from compact_nlp.run import load_data
from compact_nlp.ship import machine

R = Path(os.environ["R"])
MODELS, PASSES, SPLITS = int(os.environ.get("MODELS", "300")), int(os.environ.get("PASSES", "2")), 10
out = R / "hat" / f"minilm_quiet_{MODELS}x{PASSES}"
source = resolve_checkpoint("sentence-transformers/all-MiniLM-L6-v2")
recipe = load_recipe("recipes/glue/sst2.yaml", [f"hat.latency_models={MODELS}", f"hat.latency_passes={PASSES}"],
                     presets=["hat"])
config = HatConfig.from_dict(recipe.hat)
task_data = load_data(recipe, os.environ.get("GLUE", "../shared/data/glue_data"))
train = protocol_splits(recipe.protocol, task_data, recipe.protocol.seeds[0]).train
tokenizer = AutoTokenizer.from_pretrained(source)
model = AutoCompactModelForSequenceClassification.from_pretrained(source, num_labels=2).eval()
supernet = SuperTransformer(model, search_space_for(config, model.config))
spec = latency_spec(config)  # the search's own setting: its latency.jsonl can be copied into a search's OUT

load_before, started = os.getloadavg(), time.perf_counter()
data, predictor = latency_stage(supernet, make_measurer(config, spec, tokenizer, measuring_texts(train, task_data.spec)),
                                config, out)
minutes, load_after = (time.perf_counter() - started) / 60, os.getloadavg()


def spread(a: float, b: float) -> float:
    return abs(a - b) / ((a + b) / 2)


passes: dict = {}
for record in data.records:
    passes.setdefault(record.sub, []).append((record.repeat, record.ms))
complete = [[ms for _, ms in sorted(p)] for p in passes.values() if len(p) == PASSES and PASSES > 1]
splits = [LatencyPredictor.fit(data, seed=seed).metrics for seed in range(SPLITS)]
kinds = {kind: {"median_test_mape": round(statistics.median(m["kinds"][kind]["test"]["mape"] for m in splits), 2),
                "median_test_rmse_ms": round(statistics.median(m["kinds"][kind]["test"]["rmse_ms"] for m in splits), 4),
                "test_mape": [m["kinds"][kind]["test"]["mape"] for m in splits]} for kind in ("mlp", "cost")}
kinds["auto"] = {"median_test_mape": round(statistics.median(m["test"]["mape"] for m in splits), 2),
                 "chose": [m["kind"] for m in splits]}
results = {
    "what": __doc__.split("\n\n")[0].replace("\n", " "), "spec": spec.to_dict(), "machine": machine(),
    "space": supernet.space.to_dict(), "models": MODELS, "passes": PASSES,
    "minutes_this_run": round(minutes, 1), "load_average_before": [round(x, 2) for x in load_before],
    "load_average_after": [round(x, 2) for x in load_after],
    "full_model_ms": round(data.mean_latency()[supernet.space.largest()], 4),
    "noise_floor": data.noise_floor(),
    "spread_between_passes_median_pct": round(100 * statistics.median(spread(p[0], p[-1]) for p in complete), 2)
    if complete else None,
    "predictor_default_split": predictor.metrics, "splits": SPLITS, "over_splits": kinds}
write_json(Path("bench/results/hat_latency_quiet.json"), results)
floor = results["noise_floor"]
rows = [f"# HAT latency predictor on a quiet machine ({MODELS} SubTransformers x {PASSES} passes)", "",
        f"Setting: {spec.runtime}, {spec.precision}, {spec.threads} thread, batch {spec.batch}, {spec.sequence_length} "
        f"real tokens; {spec.hardware}. Full model: {results['full_model_ms']} ms. Collection: {results['minutes_this_run']} "
        f"min; load average before {results['load_average_before'][0]}, after {results['load_average_after'][0]}.", "",
        f"Noise floor (every model measured {PASSES} times, minutes apart): MAPE {floor.get('mape')}%, RMSE "
        f"{floor.get('rmse_ms')} ms over {floor.get('models')} models; median spread between passes "
        f"{results['spread_between_passes_median_pct']}%.", "",
        f"| predictor | median test MAPE over {SPLITS} splits | median test RMSE ms | default split (seed 0) test MAPE |",
        "|---|---|---|---|"]
for kind in ("mlp", "cost"):
    rows.append(f"| {'HAT MLP' if kind == 'mlp' else 'cost model'} | {kinds[kind]['median_test_mape']}% | "
                f"{kinds[kind]['median_test_rmse_ms']} | {predictor.metrics['kinds'][kind]['test'].get('mape')}% |")
rows.append(f"| auto (validation chooses) | {kinds['auto']['median_test_mape']}% | | {predictor.metrics['test'].get('mape')}% "
            f"({predictor.kind}) |")
write_text(Path("bench/results/hat_latency_quiet.md"), "\n".join(rows) + "\n")
print(json.dumps(results, indent=1))

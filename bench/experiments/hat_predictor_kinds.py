"""HAT's MLP latency predictor against the cost-model predictor, on the SST-2 search's real measurements (one pass,
and the three- and five-pass means of bench/experiments/hat_latency_passes.py), over ten train/validation/test
splits of the measured models. Each split fits both kinds on the same 70%, "auto" keeps the lower validation MAPE,
and the test 15% is only reported. Results: bench/results/hat_predictor_kinds.{json,md} (docs/hat.md).

    R=runs-folder OMP_NUM_THREADS=1 python bench/experiments/hat_predictor_kinds.py
"""
import json
import os
import statistics
from pathlib import Path

from compact_nlp.hat import LatencyData, LatencyPredictor, LatencySpec
from compact_nlp.hat.space import SearchSpace
from compact_nlp.io import write_json, write_text

R = Path(os.environ["R"])
SPLITS = 10
results = {"what": __doc__.split("\n\n")[0].replace("\n", " "), "splits": SPLITS, "data": {}}
DATA = (("one pass", R / "hat" / "sst2" / "latency.jsonl"),
        ("three passes (mean)", R / "hat" / "sst2_passes3" / "latency.jsonl"),
        ("five passes (mean)", R / "hat" / "sst2_passes5" / "latency.jsonl"))  # bench/experiments/hat_latency_passes.py
for name, path in ((name, path) for name, path in DATA if path.is_file()):
    header = json.loads(path.open().readline())
    data = LatencyData(path, LatencySpec.from_dict(header["spec"]), SearchSpace.from_dict(header["space"]))
    runs = [LatencyPredictor.fit(data, seed=seed).metrics for seed in range(SPLITS)]
    summary = {"measured_models": runs[0]["measured_models"], "noise_floor": runs[0]["noise_floor"],
               "auto_chose": [m["kind"] for m in runs]}
    for kind in ("mlp", "cost"):
        mape = [m["kinds"][kind]["test"]["mape"] for m in runs]
        summary[kind] = {"test_mape": mape, "median_test_mape": round(statistics.median(mape), 2),
                         "median_test_rmse_ms": round(statistics.median(m["kinds"][kind]["test"]["rmse_ms"]
                                                                        for m in runs), 4)}
    auto = [m["test"]["mape"] for m in runs]
    summary["auto"] = {"test_mape": auto, "median_test_mape": round(statistics.median(auto), 2)}
    summary["cost_better_on_splits"] = sum(c < m for c, m in zip(summary["cost"]["test_mape"],
                                                                 summary["mlp"]["test_mape"]))
    results["data"][name] = summary
    print(name, {k: summary[k]["median_test_mape"] for k in ("mlp", "cost", "auto")}, flush=True)

out = Path("bench/results/hat_predictor_kinds")
write_json(out.with_suffix(".json"), results)
rows = ["| latency data | models | noise floor MAPE (1 measurement) | HAT's MLP | cost model | auto (validation "
        "chooses) | cost model better |", "|---|---|---|---|---|---|---|"]
for name, s in results["data"].items():
    rows.append(f"| {name} | {s['measured_models']} | {s['noise_floor']['mape']}% | {s['mlp']['median_test_mape']}% | "
                f"{s['cost']['median_test_mape']}% | {s['auto']['median_test_mape']}% | "
                f"{s['cost_better_on_splits']} of {SPLITS} splits |")
write_text(out.with_suffix(".md"), "# SST-2 latency predictors: median test MAPE over "
           f"{SPLITS} splits\n\n" + "\n".join(rows) + "\n")

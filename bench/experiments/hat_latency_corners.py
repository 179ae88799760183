"""Does measuring the corners of the space fix the latency predictor's error on the models a search chooses?

On the quiet machine the predictor tests at 4-5% MAPE on random SubTransformers, yet overestimates the four models
the SST-2 search shipped by 12-27% (docs/hat.md, last section). The hand-picked uniform models sit at corners of the
space that a random sample covers thinly. This script measures the uniform corners (full and smallest width, every
hidden size and depth: 30 models) twice with the search's own measurer, adds them to a copy of the search's latency
data, and fits both predictor kinds over 10 train/validation/test splits with and without them. Reported: the median
test MAPE, and the mean error on the four shipped models against their side-by-side timing at the search's length
(bench/results/hat_sst2_quiet.json, `fixed_1t`). Two checks on where the error comes from: each shipped model timed
with the search's measurer in three forms (cut from the SuperTransformer, the shipped PyTorch model, the shipped
`.ort`), and the drift between the collection's two passes. The search's latency file is copied to RUN/../corners/latency.jsonl
and the corners are appended there (an interrupted run resumes).
Results: bench/results/hat_latency_corners.{json,md}.

    RUN=runs/hat/sst2 FT=runs/baselines/sst2/seed-1/model [GLUE=glue_data] OMP_NUM_THREADS=1 \
        python bench/experiments/hat_latency_corners.py
"""
import json
import os
import shutil
import statistics
from pathlib import Path

import onnxruntime as ort
import torch
from transformers import AutoTokenizer

from compact_nlp.auto import AutoCompactModelForSequenceClassification
from compact_nlp.glue import load_glue
from compact_nlp.hat import LatencyPredictor, LatencySpec, SearchSpace, SubTransformer, SuperTransformer, extract
from compact_nlp.hat.latency import LatencyData, LatencyRecord
from compact_nlp.hat.measure import OnnxRuntimeMeasurer, measuring_texts
from compact_nlp.io import write_json, write_text
from compact_nlp.runtime import session_options
from compact_nlp.ship import machine

RUN, FT = Path(os.environ["RUN"]), os.environ["FT"]
RESULTS = Path(__file__).parent.parent / "results"
SPLITS = 10
CORNER_PASSES = (10, 11)  # repeat indices of their own, never confused with the search's passes 0 and 1

header = json.loads((RUN / "latency.jsonl").open().readline())
spec, space = LatencySpec.from_dict(header["spec"]), SearchSpace.from_dict(header["space"])
random_only = LatencyData(RUN / "latency.jsonl", spec, space)
with_corners_path = RUN.parent / "corners" / "latency.jsonl"
if not with_corners_path.exists():
    with_corners_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(RUN / "latency.jsonl", with_corners_path)
with_corners = LatencyData(with_corners_path, spec, space)  # appended to: an interrupted run resumes

tokenizer = AutoTokenizer.from_pretrained(FT)
texts = measuring_texts(load_glue("sst2", os.environ.get("GLUE", "../shared/data/glue_data"))["train"], "sst2")
measurer = OnnxRuntimeMeasurer(spec, tokenizer, texts)
supernet = SuperTransformer(
    AutoCompactModelForSequenceClassification.from_pretrained(str(RUN / "supernet" / "model")).eval(), space)
corners = [space.uniform(depth, hidden, heads, ffn) for hidden in space.hidden for depth in space.depth
           for heads, ffn in ((space.heads[0], space.ffn[0]), (space.heads[-1], space.ffn[-1]))]
done = {(r.sub, r.repeat) for r in with_corners.records}
for repeat in CORNER_PASSES:
    for sub in corners:
        if (sub, repeat) not in done:
            with torch.no_grad():
                with_corners.append(LatencyRecord(sub, min(measurer.measure(extract(supernet, sub).eval())), repeat))
            print(repeat, sub, with_corners.records[-1].ms, flush=True)

bench = json.loads((RESULTS / "hat_sst2_quiet.json").read_text())
shipped, forms = {}, {}
for name, row in bench["variants"].items():
    if "budget" in name:
        sub = SubTransformer(row["hidden"], tuple(row["heads"]), tuple(row["ffn"]))
        shipped[sub] = row["fixed_1t"]["median_ms"]
        folder = Path(row["file"]).parent.parent  # RUN/sub-<budget>-<label>
        shipped_pytorch = AutoCompactModelForSequenceClassification.from_pretrained(str(folder / "pytorch")).eval()
        with torch.no_grad():
            forms[str(sub)] = {"cut from the SuperTransformer": min(measurer.measure(extract(supernet, sub).eval())),
                               "shipped PyTorch model": min(measurer.measure(shipped_pytorch)),
                               "shipped .ort": min(measurer.time_session(ort.InferenceSession(
                                   str(folder / "model" / "model.ort"), session_options(spec.threads),
                                   providers=["CPUExecutionProvider"])))}
        print(sub, forms[str(sub)], flush=True)

by_model: dict = {}
for record in random_only.records:
    if record.repeat in (0, 1):
        by_model.setdefault(record.sub, {})[record.repeat] = record.ms
second_over_first = [m[1] / m[0] for m in by_model.values() if len(m) == 2]
pass_drift = {"models": len(second_over_first),
              "median_second_over_first": round(statistics.median(second_over_first), 3),
              "median_second_over_first_under_0.7ms": round(statistics.median(
                  m[1] / m[0] for m in by_model.values() if len(m) == 2 and m[0] < 0.7), 3)}

rows = {}
for data_name, data in (("random sample (the search's)", random_only), ("random sample + 30 corners", with_corners)):
    for kind in ("mlp", "cost"):
        tests, on_shipped, predicted = [], [], {}
        for seed in range(SPLITS):
            predictor = LatencyPredictor.fit(data, space, seed=seed, kind=kind)
            tests.append(predictor.metrics["test"]["mape"])
            on_shipped.append(statistics.mean(abs(predictor.predict(s) - ms) / ms * 100 for s, ms in shipped.items()))
            if seed == 0:
                predicted = {str(s): round(predictor.predict(s), 3) for s in shipped}
        rows[f"{data_name}, {kind}"] = {"median_test_mape": round(statistics.median(tests), 2),
                                        "median_mape_on_shipped": round(statistics.median(on_shipped), 2),
                                        "seed0_predicted_ms": predicted}
        print(data_name, kind, rows[f"{data_name}, {kind}"], flush=True)

full = space.largest()
results = {"run": str(RUN), "spec": spec.to_dict(), "corners": [str(s) for s in corners],
           "corner_ms": {str(s): [r.ms for r in with_corners.records if r.sub == s] for s in corners},
           "full_model_ms_now_vs_data": [[r.ms for r in with_corners.records if r.sub == full and r.repeat >= 10],
                                         round(random_only.mean_latency()[full], 4)],
           "shipped_measured_ms": {str(s): ms for s, ms in shipped.items()}, "shipped_forms_ms": forms,
           "pass_drift": pass_drift, "predictors": rows, "splits": SPLITS,
           "machine": machine()}
write_json(RESULTS / "hat_latency_corners.json", results)
lines = ["# HAT latency predictor: does measuring the corners of the space help on the models a search ships?", "",
         f"Search run: `{RUN}`; {spec.runtime}, {spec.precision}, {spec.threads} thread, batch {spec.batch}, "
         f"{spec.sequence_length} tokens. Corners: the uniform models of full and smallest width for every hidden size "
         f"and depth ({len(corners)}), measured twice with the search's measurer. Shipped models: the four "
         "SubTransformers of `hat_sst2_quiet.md`, timed side by side at the search's length.", "",
         "| latency data, predictor | median test MAPE (10 splits) | median MAPE on the 4 shipped models |",
         "|---|---|---|"]
lines += [f"| {name} | {r['median_test_mape']}% | {r['median_mape_on_shipped']}% |" for name, r in rows.items()]
lines += ["", "Predicted ms on the default split (seed 0), against measured:", "",
          "| shipped model | measured | " + " | ".join(rows) + " |", "|---|---|" + "---|" * len(rows)]
lines += [f"| {s} | {ms} | " + " | ".join(str(r["seed0_predicted_ms"][str(s)]) for r in rows.values()) + " |"
          for s, ms in shipped.items()]
lines += ["", "The same shipped models timed now with the search's measurer, in three forms (ms, best round median):", "",
          "| shipped model | " + " | ".join(next(iter(forms.values()))) + " |", "|---|" + "---|" * 3]
lines += [f"| {s} | " + " | ".join(f"{ms:.3f}" for ms in f.values()) + " |" for s, f in forms.items()]
lines += ["", f"Drift in the search's data: the second pass over the first, median over {pass_drift['models']} models: "
          f"{pass_drift['median_second_over_first']} (models under 0.7 ms: "
          f"{pass_drift['median_second_over_first_under_0.7ms']})."]
write_text(RESULTS / "hat_latency_corners.md", "\n".join(lines) + "\n")
print("\n".join(lines))

"""What the held-out split chose as the combined pipeline's last int8 step (quant.int8.fallback_to_ptq), per task and
seed, read from the runs' results.json: both candidates' held-out scores, the one shipped and its dev score, and the
held-out scores of the earlier runs' QAT models (each seed on its own split) that docs/combined.md compares with.
Results: bench/results/combined_quant_choice.json.

    R=runs-folder python bench/experiments/combined_quant_choice.py
"""
import json
import os
from pathlib import Path

from compact_nlp.io import write_json

R = Path(os.environ["R"])
RUNS = {"sst2": R / "combined/sst2-fb", "mrpc": R / "combined/mrpc", "rte": R / "combined/rte"}
EARLIER = {"mrpc": R / "combined/mrpc-qat", "rte": R / "combined/rte-qat"}  # compact b7f9374: QAT always


def per_seed(folder: Path) -> list[dict]:
    return json.loads((folder / "results.json").read_text())["per_seed"]


results = {"what": __doc__.split("\n\n")[0].replace("\n", " "), "tasks": {}}
for task, folder in RUNS.items():
    rows = [{"seed": r["seed"], **r["quant_choice"], "dev": r["dev"]} for r in per_seed(folder)]
    entry = {"run": str(folder), "seeds": rows}
    if task in EARLIER:
        entry["earlier_run_qat_heldout"] = [{"seed": r["seed"], "heldout": r["heldout"]} for r in per_seed(EARLIER[task])]
    results["tasks"][task] = entry
    print(task, [(r["seed"], r["shipped"], r["heldout"]) for r in rows])
write_json(Path("bench/results/combined_quant_choice.json"), results)

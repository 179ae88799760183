"""What the held-out split chose among token-pruning fine-tuning settings (issue 5), read from the runs' per-seed
results.json: each candidate's settings, steps, transfer rows and held-out scores on seed 1's split, then dev only
for the seeds of the chosen settings. The candidates were compared on held-out before any of their dev scores was
read. Results: bench/results/token_pruning_heldout_choice.json.

    R=runs-folder python bench/experiments/token_pruning_heldout_choice.py
"""
import json
import os
from pathlib import Path

from compact_nlp.io import write_json

R = Path(os.environ["R"]) / "prune"
CANDIDATES = {  # run folder: the settings on top of the token-pruning preset (keep 0.45)
    "mrpc": {"mrpc_k45": "lr 1e-4, 3 epochs (the earlier table's setting)",
             "mrpc_k45_aug2": "lr 1e-4, 1 epoch, transfer [augmented] (2 copies: the same steps)",
             "mrpc_k45_swap_e3": "lr 1e-4, 3 epochs, transfer [swapped]",
             "mrpc_k45_aug2_e3": "lr 1e-4, 3 epochs, transfer [augmented] (2 copies)"},
    "sst2": {"sst2_k45_rest": "lr 1e-4, 1 epoch, transfer [rest_of_train]"},
}
CHOSEN = {"mrpc": "mrpc_k45_aug2_e3", "sst2": "sst2_k45_rest"}
# SST-2's candidate was compared with an earlier session's run, whose folder is gone (docs/token_pruning.md)
EARLIER = {"sst2": {"settings": "lr 1e-4, 3 epochs, no transfer set", "heldout_seed1": {"accuracy": 88.85},
                    "dev_seed1": {"accuracy": 85.09}}}


def seed_result(run: str, seed: int) -> dict:
    return json.loads((R / run / f"seed-{seed}" / "results.json").read_text())


results = {"what": __doc__.split("\n\n")[0].replace("\n", " "), "tasks": {}}
for task, runs in CANDIDATES.items():
    rows = []
    for run, settings in runs.items():
        first = seed_result(run, 1)
        rows.append({"run": run, "settings": settings, "train_steps": first["train_steps"],
                     "transfer_examples": first["transfer_examples"],
                     "heldout_seed1": {k: round(100 * v, 2) for k, v in first["heldout"].items()
                                       if k in ("accuracy", "f1", "combined_score")}})
    chosen = CHOSEN[task]
    seeds = sorted(int(p.name.split("-")[1]) for p in (R / chosen).glob("seed-*") if (p / "results.json").is_file())
    results["tasks"][task] = {"candidates": rows, "chosen": chosen,
                              "chosen_dev": {s: seed_result(chosen, s)["dev"] for s in seeds},
                              **({"earlier_candidate": EARLIER[task]} if task in EARLIER else {})}
    print(task, [(r["run"], r["heldout_seed1"]) for r in rows], "->", chosen)
write_json(Path(__file__).parent.parent / "results" / "token_pruning_heldout_choice.json", results)

"""The combined pipeline: `compact run RECIPE` with a `hat:` section and a `token_pruning:` and/or `quant:` section.

One recipe, one model, one `.ort` file. Every stage distils from the fine-tuned full model (the recipe's `teacher`)
and makes its choices on the protocol's held-out split; the dev set is only evaluated on what each stage ships.
In OUT/ (a finished stage is skipped when the run starts again, an interrupted one resumes):

    1. hat/            compact search (compact_nlp.search) on the fine-tuned model under the one latency budget:
                       rewire, latency data + predictor, SuperTransformer, evolutionary search, extract, distil;
                       the searched SubTransformer's fp32 weights are hat/sub-<budget>-searched/pytorch/;
    2. token_pruning/  compact run of that SubTransformer with the token_pruning section (fine-tuned with
                       distillation; heads leave first when the section says so): token_pruning/seed-<s>/model;
    3. quant/          compact run of the pruned model with the quant section: int8 QAT (the combined preset lets
                       the held-out split fall back to PTQ), or binary weights; quant/seed-<s>/model is what ships;
    4. model/          the first seed's final folder (PyTorch weights, model.onnx, model.ort, required_operators.config)
                       with a card naming all three steps; OUT/results.json holds every stage's numbers.

Why this order:
- Search comes first: it needs the full model's weights to share among SubTransformers. Its latency is measured in
  the int8 form that ships, so it already searches for the final precision.
- Token pruning comes next: its schedule is per layer, so the depth must be fixed first, and its fine-tuning
  repairs what removing tokens costs.
- Quantization comes last: QAT learns its activation ranges on the final architecture and the final token
  distribution, and the binary export packs the final shapes. The opposite order would fine-tune fake-quantized
  weights through two more changes of the model.

Every step of every seed trains on the first seed's train split and chooses on its held-out split
(protocol.split_seed): the search ran once, on that seed's split, so another seed's held-out rows would be rows the
searched model was trained on. The seeds differ in the model each step distils from (that seed's fine-tuned model)
and in their training randomness.

`stages:` in the recipe overrides the protocol and distillation of steps 2 and 3 (e.g. QAT trains one epoch at a lower
learning rate than pruning); without it, both use the recipe's.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .io import write_json

STAGE_NAMES = ("token_pruning", "quant")
STAGE_KEYS = ("protocol", "distillation", "transfer")  # what a stage may change; the technique sections stay the recipe's


def is_combined(recipe) -> bool:
    return bool(recipe.hat) and bool(recipe.token_pruning or recipe.quant)


def stage_recipe(recipe, stage: str, model: str):
    """The plain `compact run` recipe of step `stage` ("token_pruning" or "quant"): the recipe's protocol, teacher and
    distillation with the stage's overrides, that stage's technique section only, starting from `model`."""
    from .recipe import Recipe, _build, merge

    data = recipe.to_dict()
    data.update(model=model, hat=None, stages=None, token_pruning=recipe.token_pruning if stage == "token_pruning"
                else None, quant=recipe.quant if stage == "quant" else None)
    data = merge(data, (recipe.stages or {}).get(stage) or {})
    if data["protocol"].get("split_seed") is None:  # the searched model trained on the first seed's split
        data["protocol"]["split_seed"] = recipe.protocol.seeds[0]
    built = _build(Recipe, data, "")
    built.validate()
    return built


def hat_recipe(recipe):
    """The `compact search` recipe of step 1: the recipe without the later steps' sections."""
    from .recipe import Recipe, _build

    data = recipe.to_dict()
    data.update(token_pruning=None, quant=None, stages=None)
    return _build(Recipe, data, "")


def run_combined(recipe, out: str | os.PathLike, glue_dir: str | None = None) -> dict:
    """Run the combined pipeline (module docstring) into `out`; returns (and writes to OUT/results.json) every stage's
    numbers, with the final model's under "summary"."""
    from .hat import HatConfig
    from .hub import write_model_card
    from .run import run_recipe
    from .search import run_search

    out = Path(out)
    budget = HatConfig.from_dict(recipe.hat).budgets[0]
    seed_model = recipe.model.replace("{seed}", str(recipe.protocol.seeds[0]))
    searched = run_search(hat_recipe(recipe), seed_model, out / "hat", glue_dir=glue_dir)
    entry = searched["budgets"][f"{budget:g}"]
    model = str(out / "hat" / f"sub-{budget:g}-searched" / "pytorch")

    stages = {"hat": _hat_summary(entry, searched)}
    for stage in STAGE_NAMES:
        if getattr(recipe, stage):
            stage_results = run_recipe(stage_recipe(recipe, stage, model), out / stage, glue_dir=glue_dir)
            stages[stage] = {"recipe": stage_results["recipe"], "summary": stage_results["summary"],
                             "per_seed": stage_results["per_seed"]}
            model = str(out / stage / "seed-{seed}" / "model")

    last = stages[STAGE_NAMES[-1] if recipe.quant else STAGE_NAMES[0]]
    per_seed = [_with_every_step(r, entry, stages) for r in last["per_seed"]]
    results = {"recipe": recipe.to_dict(), "summary": last["summary"], "per_seed": per_seed, "stages": stages}
    final = out / "model"
    shipped = Path(model.replace("{seed}", str(recipe.protocol.seeds[0])))
    _replace_folder(shipped, final)
    write_json(out / "results.json", results)
    # the card's training line describes the last step, with the settings that step really used
    write_model_card(final, {**results, "recipe": {**results["recipe"], "protocol": last["recipe"]["protocol"]}})
    return results


def _hat_summary(entry: dict, searched: dict) -> dict:
    best = entry["searched"]
    return {"subtransformer": best["subtransformer"], "budget_ms": entry["search"]["budget_ms"],
            "predicted_ms": best["predicted_ms"], "measured_ms": best["measured_ms"],
            "full_model_ms": searched["full_model_ms"], "dev": best["dev"], "heldout": best["heldout"],
            "latency_ms_batch1": best["latency_ms_batch1"], "search_minutes": entry["search_minutes"]}


def _with_every_step(result: dict, entry: dict, stages: dict) -> dict:
    """A final seed's results with what the earlier steps did to the model, for its card."""
    pruned = stages.get("token_pruning", {}).get("per_seed", [{}])
    pruning = next((r for r in pruned if r.get("seed") == result["seed"]), {})
    return {**result, "subtransformer": entry["searched"]["subtransformer"],
            **({"token_pruning": pruning["token_pruning"]} if "token_pruning" in pruning else {}),
            **({"heads_per_layer": pruning["heads_per_layer"]} if "heads_per_layer" in pruning else {})}


def _replace_folder(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` through a scratch folder, so an interrupted copy never leaves a half-written model."""
    scratch = dst.with_name(dst.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(src, scratch)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(scratch, dst)

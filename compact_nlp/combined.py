"""The combined pipeline: `compact run RECIPE` with a standalone technique's section (a search: `hat:`) and the
sections of techniques that train (e.g. `token_pruning:`, `quant:`). The standalone technique runs first and each
other one runs as its own `compact run` step, in registry order (compact_nlp.registry); below, the built-in ones.

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
from pathlib import Path

from .data import TaskData
from .export.card import write_model_card
from .io import replace_folder, write_json
from .registry import card_lines
from .run import load_data, run_recipe


def is_combined(recipe) -> bool:
    return bool(recipe.standalone_techniques()) and bool(recipe.techniques())


def run_combined(recipe, out: str | os.PathLike, glue_dir: str | None = None, data: TaskData | None = None) -> dict:
    """Run the combined pipeline (module docstring) into `out`; returns (and writes to OUT/results.json) every stage's
    numbers, with the final model's under "summary"."""
    out = Path(out)
    data = data or load_data(recipe, glue_dir)
    first = recipe.standalone_techniques()[0]
    produced = first.run_standalone(recipe.standalone_only(), first.config(recipe.sections[first.name]), data,
                                    out / first.name, glue_dir)
    model, stages = produced.model_dir, {first.name: produced.summary}
    for technique in recipe.techniques():
        stage_results = run_recipe(recipe.stage(technique.name, model), out / technique.name, glue_dir, data)
        stages[technique.name] = {"recipe": stage_results["recipe"], "summary": stage_results["summary"],
                                  "per_seed": stage_results["per_seed"]}
        model = str(out / technique.name / "seed-{seed}" / "model")

    last = stages[recipe.techniques()[-1].name]
    per_seed = [_with_every_step(r, produced.facts, stages) for r in last["per_seed"]]
    results = {"recipe": recipe.to_dict(), "summary": last["summary"], "per_seed": per_seed, "stages": stages}
    final = out / "model"
    replace_folder(Path(model.replace("{seed}", str(recipe.protocol.seeds[0]))), final)
    write_json(out / "results.json", results)
    # the card's training line describes the last step, with the settings that step really used
    write_model_card(final, {**results, "recipe": {**results["recipe"], "protocol": last["recipe"]["protocol"]}},
                     technique_lines=card_lines(per_seed[0]))
    return results


def _with_every_step(result: dict, facts: dict, stages: dict) -> dict:
    """A final seed's results with what the earlier steps did to the model (the standalone step's facts, each
    training step's results for that seed), for its card; the last step's own numbers win."""
    merged = dict(facts)
    for stage in stages.values():
        for earlier in stage.get("per_seed", []) if isinstance(stage, dict) else []:
            if earlier.get("seed") == result["seed"]:
                merged.update(earlier)
    merged.update(result)
    return merged

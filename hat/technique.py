"""Hardware-aware search as a registered technique (compact_nlp.registry): the recipe's `hat:` section. It is
standalone: it produces a model (the searched SubTransformer, extracted and distilled) before any other technique
trains, so `compact run` runs the search first and the combined pipeline trains the others from its result."""

from __future__ import annotations

from ..distributed import process_count
from ..registry import PlanOption, StandaloneResult, Technique, register
from .config import HatConfig
from .space import shallowest_depth
from .distil import distil_folder, results_path
from .pipeline import run_search


# `compact compress` plans a search at these shares of the full model's int8 latency, with priors of the drop (points)
# from SST-2 runs (docs/results.md "HAT search": HAT alone -0.80 at 33% and 25%; HAT + int8 -0.63 to -0.99 at 45%,
# -1.08 at 22%; one re-measured 50% search that chose 3 layers lost 1.94): they only order plans, held-out decides.
PLAN_SHARES = ((0.5, 0.8), (0.33, 1.2), (0.25, 1.6))
# Fixed work of a search, whatever the data's size, as measured on 2 cores beside another job (compress on SST-2,
# docs/results.md): 220 SubTransformers exported and timed in 12 minutes, evolution in 2, and 1,500 SuperTransformer
# steps in 15, where each example passes one of the sandwich's SubTransformers, about half the full model on average
SECONDS_PER_LATENCY_MODEL = 3.5
EVOLUTION_SECONDS = 150.0
SANDWICH_SHARE = 0.5


class HardwareAwareSearch(Technique):
    name = "hat"
    order = 0
    standalone = True
    preset = "hat"  # recipes/presets/hat.yaml: the settings `compact search` starts from
    description = "hardware-aware transformer search (HAT) under a latency budget, measured in the shipped form"

    def config(self, section: dict | None):
        return HatConfig.from_dict(section) if section else None

    def check(self, config, recipe) -> None:
        if process_count() > 1:  # each step trains a SubTransformer sampled at random: one process samples for all
            raise ValueError(f"hardware-aware search (hat:) runs in one process, and {process_count()} were started: "
                             "run it without accelerate launch / torchrun.")
        if not recipe.techniques():
            return  # alone: compact search compares every budget it is given
        if not recipe.teacher:
            raise ValueError("the combined pipeline distils every step from the fine-tuned full model: set teacher "
                             "to it (usually the same folder as model).")
        if len(config.budgets) != 1:
            raise ValueError(f"the combined pipeline ships one model, so hat.budgets takes one budget, got "
                             f"{config.budgets}; e.g. --set hat.budgets=[0.5] (compact search compares several).")

    def plan_options(self) -> list[PlanOption]:
        """For `compact compress`: a search under each of PLAN_SHARES of the full model's latency, with the defaults'
        SuperTransformer training and one distillation of the searched SubTransformer (no reference models: the
        planner compares attempts itself). None under several processes: the search runs in one."""
        if process_count() > 1:
            return []
        defaults = HatConfig()
        fixed_seconds = SECONDS_PER_LATENCY_MODEL * (defaults.latency_models + defaults.noise_models *
                                                     defaults.noise_repeats) + EVOLUTION_SECONDS
        supernet_examples = round(defaults.supernet_steps * defaults.supernet_batch_size * SANDWICH_SHARE)
        # the stage records the distillation's length and rate (the search reads them from its own section)
        stage = {"protocol": {"epochs": defaults.distill_epochs, "learning_rate": defaults.distill_learning_rate}}
        return [PlanOption(f"HAT search at {share:g} of the latency",
                           {"budgets": [share], "full_reference": False, "uniform_reference": False,
                            "sequence_length": None, "distill_longer": 1.0}, stage, drop,
                           latency_share=share, shallowest=shallowest_depth,
                           late_keys=("budgets", "distill_longer"), seed_key="supernet_seed",
                           lengthen_key="distill_longer",
                           fixed_examples=supernet_examples,
                           fixed_seconds=fixed_seconds)
                for share, drop in PLAN_SHARES]

    def card_line(self, result: dict) -> str:
        sub = result.get("subtransformer")
        if not sub:
            return ""
        return (f"a SubTransformer found by hardware-aware search (HAT) and distilled: hidden {sub['hidden']}, "
                f"{len(sub['heads'])} layers, heads {sub['heads']}, FFN widths {sub['ffn']}")


    def run_standalone(self, recipe, config, data, out, glue_dir: str | None = None) -> StandaloneResult:
        """The search (hat.pipeline) from the first seed's model; with one budget, its searched SubTransformer's fp32
        weights are what the next steps start from."""
        seed_model = recipe.model.replace("{seed}", str(recipe.protocol.seeds[0]))
        searched = run_search(recipe, seed_model, out, data, glue_dir=glue_dir)
        budget = config.budgets[0]
        entry = searched["budgets"][f"{budget:g}"]
        best = entry["searched"]
        summary = {"subtransformer": best["subtransformer"], "budget_ms": entry["search"]["budget_ms"],
                   "predicted_ms": best["predicted_ms"], "measured_ms": best["measured_ms"],
                   "full_model_ms": searched["full_model_ms"], "dev": best["dev"], "heldout": best["heldout"],
                   "latency_ms_batch1": best["latency_ms_batch1"], "search_minutes": entry["search_minutes"],
                   "sequence_length": searched["spec"]["sequence_length"],  # the length its budget was timed at
                   "headline": f"{best['subtransformer']} measured {best['measured_ms']} ms vs full "
                               f"{searched['full_model_ms']} ms ({config.precision})"}
        folder = distil_folder(out, budget, "searched", recipe.protocol.seeds[0], searched["supernet_seed"],
                               config.distill_longer)
        return StandaloneResult(model_dir=str(folder / "pytorch"), summary=summary,
                                facts={"subtransformer": best["subtransformer"]}, lines=search_lines(searched),
                                results_file=str(results_path(out, recipe.protocol.seeds[0], searched["supernet_seed"],
                                                                 config.distill_longer)))


def search_lines(results: dict) -> list[str]:
    """What `compact search` prints: the predictor, then each budget's models with their dev scores."""
    p = results["predictor"]
    lines = [f"latency predictor: test MAPE {p['test'].get('mape')}% (noise floor {p['noise_floor'].get('mape')}%), "
             f"full model {results['full_model_ms']} ms"]
    for fraction, entry in results["budgets"].items():
        for label in ("searched", "uniform"):
            if label in entry:
                r = entry[label]
                dev = r["dev"][next(iter(r["dev"]))]
                lines.append(f"budget {fraction}: {label} {r['subtransformer']} predicted {r['predicted_ms']} ms, "
                             f"measured {r['measured_ms']} ms, dev {', '.join(f'{k} {100 * v:.2f}' for k, v in dev.items())}")
    if "full_reference" in results:
        r = results["full_reference"]
        dev = r["dev"][next(iter(r["dev"]))]
        lines.append(f"full model, trained the same way: {r['measured_ms']} ms, dev "
                     f"{', '.join(f'{k} {100 * v:.2f}' for k, v in dev.items())}")
    return lines


TECHNIQUE = register(HardwareAwareSearch())

"""`compact search RECIPE --model DIR` (and the combined pipeline's first step): HAT on a fine-tuned model, end to
end, resumable stage by stage.

In OUT/ (each stage is skipped when its result is there, and resumes when it was interrupted):
    1. rewired/      heads, FFN neurons and hidden channels ranked by Taylor importance on training batches and put
                     in that order (hat.rewire): the SuperTransformer's shared weights;
    2. latency.jsonl ONNX Runtime measurements of SubTransformers in the form that ships (hat.measure), or your
                     own measurer's named by hat.measurer (e.g. one that times on a phone), noise floor first,
                     append-only (latency depends on shapes only: measured before training);
       predictor/    HAT's MLP latency predictor with its test-split RMSE and MAPE;
    3. supernet/     the SuperTransformer trained with the sandwich rule through CompactTrainer, distilled from the
                     fine-tuned model, on train minus the held-out split (Trainer checkpoints: resumable);
    4. search-<budget>/  the evolutionary search for each budget (a fraction of the full model's measured latency),
                     fitness = the task metric with inherited weights on the held-out split; state.json resumes it;
                     pareto.png;
    5. sub-<budget>-<searched|uniform>/  the chosen SubTransformer (and, with hat.uniform_reference, the hand-picked
                     uniform one under the same budget, uniform_baseline) extracted (hat.extract), distilled further
                     from the fine-tuned model (on the training rows and the recipe's transfer set); pytorch/
                     holds its fp32 weights, model/ the shipped int8 form (model.onnx, model.ort) with a card;
                     results.json; `-seed<N>` folders for more distillation seeds (hat.distill_seeds, or
                     another protocol seed sharing the search: hat.supernet_seed);
       sub-1-full/   the full architecture through the same SuperTransformer training and distillation
                     (hat.full_reference), so the SubTransformers are compared with a model trained as much as they.
OUT/search_results.json gathers every stage's numbers. The dev set is touched only in step 5, on the exported file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..auto import AutoCompactModelForSequenceClassification
from ..data import TaskData, TaskSpec, as_spec
from ..distill import DistillationConfig
from ..io import save_pretrained_atomic, write_json
from ..metrics import compute_metrics
from ..pretrained import require_package, resolve_checkpoint
from ..protocol import protocol_splits, seen_heldout, tokenize, transfer_set, with_transfer
from ..trainer import CompactConfig, CompactTrainer, remove_checkpoints
from .config import HatConfig, HatConfigError
from .elastic import SandwichHook, SuperTransformer, importance, rewire
from .distil import distil_and_ship, distil_folder, results_path, search_log as _log
from .extract import extract
from .latency import LatencyPredictor, collect_latency
from .measure import latency_spec, make_measurer, measuring_texts, typical_length
from .search import evolutionary_search, given_subtransformer, plot_search
from .space import SearchSpace


def logits_distillation():
    """What the SuperTransformer learns from the fine-tuned model: its logits and the labels (hidden-state
    distillation would need one projection per hidden size of the space)."""
    return CompactConfig(distillation=DistillationConfig(temperature=1.0, task_weight=1.0, logits_weight=1.0))


# --- data -----------------------------------------------------------------------------------------------------------
def collate_batches(tokenized, collator, batch_size: int, count: int | None = None,
                    by_length: bool = False) -> list[dict]:
    """The first `count` padded batches of tokenized rows (in order, or sorted by length for evaluation)."""
    order = list(range(len(tokenized)))
    if by_length:  # evaluation: similar lengths together, less padding
        order.sort(key=lambda i: len(tokenized[i]["input_ids"]))
    rows = [order[i:i + batch_size] for i in range(0, len(order), batch_size)][:count]
    return [collator([tokenized[i] for i in chunk]) for chunk in rows]


def heldout_fitness(supernet, batches: list[dict], task):
    """fitness(sub): the task's main metric of SubTransformer `sub` on the held-out batches, with inherited weights.
    task: its TaskSpec or GLUE name."""
    spec = as_spec(task)
    main = spec.main_metric

    def fitness(sub) -> float:
        supernet.eval()
        logits, labels = [], []
        with torch.no_grad():
            for batch in batches:
                features = {k: v for k, v in batch.items() if k != "labels"}
                logits.append(supernet(**features, sub=sub).logits.numpy())
                labels.append(batch["labels"].numpy())
        return 100 * compute_metrics(spec, np.concatenate(logits), np.concatenate(labels))[main]

    return fitness


def search_space_for(config, model_config):
    default = SearchSpace.from_model(model_config, config.layer_selection)
    return SearchSpace(max_layers=model_config.num_hidden_layers, hidden=config.hidden or default.hidden,
                       heads=config.heads or default.heads, ffn=config.ffn or default.ffn,
                       depth=config.depth or default.depth, layer_selection=config.layer_selection)


def rewired_model(model, train_tokenized, collator, config, out: Path):
    """Stage 1: the fine-tuned model with its most important heads, neurons and channels first."""
    folder = out / "rewired"
    if (folder / "config.json").is_file():
        return AutoCompactModelForSequenceClassification.from_pretrained(folder)
    _log(f"ranking heads, FFN neurons and hidden channels on {config.importance_batches} training batches")
    ranks = importance(model, collate_batches(train_tokenized, collator, 32, config.importance_batches))
    rewired = rewire(model, ranks)
    save_pretrained_atomic(rewired, folder)
    return rewired


def train_supernet(supernet, teacher, train_tokenized, collator, tokenizer, config, out: Path, seed: int):
    """Stage 3: sandwich-rule training of every SubTransformer at once, distilled from the fine-tuned model."""
    folder = out / "supernet"
    final = folder / "model"
    if (final / "config.json").is_file():
        supernet.model.load_state_dict(load_file(final / "model.safetensors"))
        return
    hook = SandwichHook(supernet.space, random_subs=config.random_subs, seed=seed)
    micro = config.supernet_batch_size // len(hook)
    args = TrainingArguments(
        str(folder / "checkpoints"), max_steps=config.supernet_steps, per_device_train_batch_size=micro,
        gradient_accumulation_steps=len(hook), learning_rate=config.supernet_learning_rate, warmup_steps=0.1,
        weight_decay=0.01, save_strategy="steps", save_steps=max(1, config.supernet_steps // 5), save_total_limit=1,
        logging_steps=25, report_to=[], use_cpu=not torch.cuda.is_available(), seed=seed, eval_strategy="no",
        train_sampling_strategy="group_by_length", disable_tqdm=False,
    )
    trainer = CompactTrainer(
        model=supernet, args=args, train_dataset=train_tokenized, teacher_model=teacher, hooks=[hook],
        compact_config=logits_distillation(),
        data_collator=collator, processing_class=tokenizer,
    )
    resume = os.path.isdir(args.output_dir) and get_last_checkpoint(args.output_dir) is not None
    _log(f"training the SuperTransformer: {config.supernet_steps} steps of {config.supernet_batch_size} examples "
         f"({len(hook)} SubTransformers per step){' (resuming)' if resume else ''}")
    trainer.train(resume_from_checkpoint=True if resume else None)
    save_pretrained_atomic(supernet.model, final)
    remove_checkpoints(folder / "checkpoints")


# Above this repeat-noise floor (MAPE of repeated measurements of one model) the machine is too busy for a latency
# predictor to reach the 1-6% error HAT reports: no predictor is more accurate than the numbers it learns from.
NOISY_FLOOR_PCT = 5.0


def report_noise_floor(floor: dict) -> None:
    """Log the noise floor measured before the SubTransformers, and say what to do when it is too high."""
    if not floor.get("models"):
        return
    _log(f"latency noise floor: {floor['mape']}% ({floor['rmse_ms']} ms) over {floor['measurements']} measurements "
         f"of {floor['models']} models")
    if floor["mape"] > NOISY_FLOOR_PCT:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        _log(f"WARNING: repeated measurements of one model differ by {floor['mape']}% (over {NOISY_FLOOR_PCT}%; load "
             f"average {load}), so the latency predictor cannot be more accurate than that. Stop other jobs on this "
             "machine and delete latency.jsonl to measure again, or set hat.latency_passes=3 to learn from means, "
             "or measure on a dedicated device (hat.measurer).")


def latency_stage(supernet, measurer, config, out: Path):
    """Stage 2: measurements (resumable) and the predictor fitted on them."""
    predictor_dir = out / "predictor"

    def progress(done, total, sub, ms):
        if done % 10 == 0 or done == total:
            _log(f"latency {done}/{total}: {ms:.3f} ms ({sub})")

    data = collect_latency(supernet, measurer, out / "latency.jsonl", count=config.latency_models, seed=config.seed,
                           noise_models=config.noise_models, noise_repeats=config.noise_repeats,
                           passes=config.latency_passes, progress=progress, on_noise_floor=report_noise_floor)
    if (predictor_dir / "latency_predictor.json").is_file():
        predictor = LatencyPredictor.load(predictor_dir)
        predictor.check(measurer.spec, supernet.space)
        if config.latency_predictor not in ("auto", predictor.kind):
            raise HatConfigError(
                f"{predictor_dir} holds a '{predictor.kind}' latency predictor, and hat.latency_predictor asks for "
                f"'{config.latency_predictor}'. Delete that folder to fit a new one from the measurements (they are "
                "kept), or set hat.latency_predictor to auto.")
        return data, predictor
    predictor = LatencyPredictor.fit(data, supernet.space, seed=config.seed, kind=config.latency_predictor)
    predictor.save(predictor_dir)
    _log(f"latency predictor ({predictor.kind}): test {predictor.metrics['test']}, "
         f"noise floor {predictor.metrics['noise_floor']}")
    return data, predictor


def search_budget(supernet, predictor, full_ms: float, fraction: float, fitness, config, out: Path):
    """Stage 4 for one budget: the evolutionary search and its Pareto plot."""
    folder, budget = out / f"search-{fraction:g}", fraction * full_ms
    if config.subtransformer:  # given, not searched for (hat.subtransformer)
        return given_subtransformer(supernet.space, predictor, budget, fitness, config.subtransformer)
    folder.mkdir(parents=True, exist_ok=True)

    def progress(generation, best):
        _log(f"budget {fraction:g}: generation {generation}/{config.iterations}, best {best.fitness:.2f} at "
             f"{best.predicted_ms:.3f} ms predicted ({best.sub})")

    result = evolutionary_search(
        supernet.space, predictor, budget, fitness, population=config.population, parents=config.parents,
        mutations=config.mutations, crossovers=config.crossovers, mutation_probability=config.mutation_probability,
        iterations=config.iterations, seed=config.seed, state_path=folder / "state.json", progress=progress)
    plot_search(result, folder / "pareto.png", title=f"HAT search at {fraction:.0%} of the full model's latency",
                fitness_name="held-out score (inherited weights)")
    return result


def uniform_baseline(space, predictor, budget_ms: float):
    """The hand-picked comparison: the same width in every layer, as wide as possible, then as deep as possible,
    within the budget (predicted). Full width with fewer layers comes first; when even the shallowest full-width
    model is over the budget, every dimension steps down one choice together (hidden, heads and FFN)."""
    steps = max(len(space.hidden), len(space.heads), len(space.ffn))
    for step in range(steps):
        def pick(choices):
            return choices[min(step, len(choices) - 1)]

        for depth in sorted(space.depth, reverse=True):
            sub = space.uniform(depth, hidden=pick(space.hidden), heads=pick(space.heads), ffn=pick(space.ffn))
            if predictor.predict(sub) <= budget_ms:
                return sub
    return None


@dataclass
class SearchInputs:
    """What every stage of a search reads: the protocol's splits, tokenized, and the fine-tuned model."""

    task: TaskSpec
    train: object
    dev: dict
    tokenizer: object
    teacher: object
    collator: object
    train_tokenized: object
    heldout_tokenized: object
    distil_tokenized: object  # the training rows plus the recipe's transfer set
    overlap: dict


def search_inputs(recipe, model_dir, data: TaskData, glue_dir: str | None, seed: int) -> SearchInputs:
    task, splits = data.spec, protocol_splits(recipe.protocol, data, seed)
    source = resolve_checkpoint(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(source)
    teacher = AutoCompactModelForSequenceClassification.from_pretrained(source).eval()
    max_length = recipe.protocol.max_length
    train_tokenized = tokenize(splits.train, tokenizer, task, max_length)
    # what the SuperTransformer and the SubTransformers learn from: the training rows, plus the recipe's transfer set
    # (unlabelled rows the fine-tuned model teaches); importance for the rewiring is ranked on labelled rows only
    transfer = transfer_set(recipe.transfer, task, splits, glue_dir, seed)
    return SearchInputs(
        task, splits.train, data.dev(), tokenizer, teacher, DataCollatorWithPadding(tokenizer), train_tokenized,
        tokenize(splits.heldout, tokenizer, task, max_length),
        with_transfer(train_tokenized, transfer, tokenizer, task, max_length),
        seen_heldout(task, splits.heldout, splits.train, transfer))


def budget_entry(fraction: float, supernet, predictor, measurer, full_ms: float, fitness, distil, config,
                 out: Path) -> dict:
    """Stages 4-5 for one budget: the search, the hand-picked uniform model, and each one distilled and measured."""
    result = search_budget(supernet, predictor, full_ms, fraction, fitness, config, out)
    uniform = uniform_baseline(supernet.space, predictor, result.budget_ms)
    # "uniform" is only ever a distilled model's results, as "searched" is: readers test `"uniform" in entry`
    entry = {"search": result.to_dict(), "search_minutes": round(result.seconds / 60, 2),
             "uniform_subtransformer": uniform.to_dict() if uniform else None,
             "uniform_heldout_inherited": fitness(uniform) if uniform else None}
    for label, sub in (("searched", result.best.sub), ("uniform", uniform if config.uniform_reference else None)):
        if sub is None:
            continue
        entry[label] = distil(sub, fraction, label, f"{label} at {fraction:g}")
        entry[label]["predicted_ms"] = round(predictor.predict(sub), 4)
        with torch.no_grad():  # the same shapes as the distilled model: measured beside its prediction
            entry[label]["measured_ms"] = round(min(measurer.measure(extract(supernet, sub).eval())), 4)
    return entry


def run_search(recipe, model_dir: str | os.PathLike, out: str | os.PathLike, data: TaskData,
               glue_dir: str | None = None) -> dict:
    """HAT on the fine-tuned model in `model_dir` with the recipe's protocol and `hat:` section, on `data` (see the
    module docstring for the stages). Returns (and writes to OUT/search_results.json; search_results-seed<N>.json
    for another seed's distillation after a shared search) every stage's numbers."""
    config = HatConfig.from_dict(recipe.hat or {})
    require_package("matplotlib", "matplotlib>=3.7", "compact search (it draws each budget's Pareto plot)")
    seed = recipe.protocol.seeds[0]
    search_seed = seed if config.supernet_seed is None else config.supernet_seed  # see HatConfig.supernet_seed
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    set_seed(search_seed)
    i = search_inputs(recipe, model_dir, data, glue_dir, search_seed)
    task, train, dev, tokenizer, teacher, collator = i.task, i.train, i.dev, i.tokenizer, i.teacher, i.collator
    train_tokenized, heldout_tokenized, distil_tokenized = i.train_tokenized, i.heldout_tokenized, i.distil_tokenized

    rewired = rewired_model(teacher, train_tokenized, collator, config, out)
    space = search_space_for(config, rewired.config)
    supernet = SuperTransformer(rewired, space)

    # latency depends on shapes only, so it is measured before training: on a quiet machine, and resumable alone
    texts = measuring_texts(train, task)  # hat.sequence_length null: timed at their mean length
    measurer = make_measurer(config, latency_spec(config, recipe.export.fuse_attention, typical_length(
        tokenizer, texts, recipe.protocol.max_length)), tokenizer, texts)
    spec = measurer.spec  # a measurer of your own may say where it timed (hardware, runtime)
    latency, predictor = latency_stage(supernet, measurer, config, out)
    train_supernet(supernet, teacher, distil_tokenized, collator, tokenizer, config, out, search_seed)
    full_ms = latency.mean_latency()[space.largest()]

    fitness_rows = heldout_tokenized.select(range(min(config.fitness_examples, len(heldout_tokenized))))
    fitness = heldout_fitness(supernet, collate_batches(fitness_rows, collator, 64, by_length=True), task)
    results = {"task": task.name, "seed": seed, "supernet_seed": search_seed, "model": str(model_dir),
               "space": space.to_dict(), "space_size": space.size(), "spec": spec.to_dict(), "hat": config.to_dict(),
               "full_model_ms": round(full_ms, 4), "predictor": predictor.metrics,
               "heldout_overlap": i.overlap, "full_model_heldout": fitness(space.largest()), "budgets": {}}
    def distil(sub, fraction: float, kind: str, label: str) -> dict:
        """The first distillation seed's result, with every seed's dev scores (the same data split for all: the
        SuperTransformer was trained on it; the seed changes the data order and dropout)."""
        folders = {s: distil_folder(out, fraction, kind, s, search_seed, config.distill_longer)
                   for s in range(seed, seed + config.distill_seeds)}
        runs = [distil_and_ship(supernet, sub, teacher, tokenizer, task, train, distil_tokenized, heldout_tokenized,
                                dev, collator, recipe, config, folder, s, label) for s, folder in folders.items()]
        per_seed = {split: {metric: [round(100 * r["dev"][split][metric], 2) for r in runs]
                            for metric in runs[0]["dev"][split]} for split in runs[0]["dev"]}
        return {**runs[0], "distill_seeds": list(range(seed, seed + config.distill_seeds)), "dev_per_seed": per_seed}

    for fraction in config.budgets:
        results["budgets"][f"{fraction:g}"] = budget_entry(fraction, supernet, predictor, measurer, full_ms, fitness,
                                                           distil, config, out)
    if config.full_reference:  # the full architecture through the same SuperTransformer training and distillation
        reference = distil(space.largest(), 1, "full", "full model, trained the same way")
        results["full_reference"] = {**reference, "measured_ms": round(full_ms, 4)}
    results["wall_minutes"] = round((time.perf_counter() - started) / 60, 1)
    write_json(results_path(out, seed, search_seed, config.distill_longer), results)
    return results

"""Stage 5 of a search (hat.pipeline): a chosen SubTransformer extracted, distilled further from the fine-tuned model
and shipped in int8, the form its budget was set in. Each distillation seed has its own folder; the search's own seed
(the one its SuperTransformer trained with) keeps the plain name."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from transformers.trainer_utils import get_last_checkpoint

from ..data import as_spec, task_texts
from ..distill import DistillationConfig
from ..export.card import write_model_card
from ..io import save_pretrained_atomic, write_json
from ..metrics import compute_metrics
from ..protocol import training_arguments
from ..quant.config import Int8Config
from ..quant.recipes import exporter as quant_exporter
from ..registry import card_lines
from ..ship import ship, summarize
from ..trainer import CompactConfig, CompactTrainer, remove_checkpoints
from .extract import extract


def search_log(message: str) -> None:
    print(f"[compact search {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _suffix(seed: int, search_seed: int, longer: float) -> str:
    """What tells apart the distillations of one search: a longer one (hat.distill_longer), a seed other than the
    search's own."""
    return (f"-distil{longer:g}x" if longer != 1 else "") + (f"-seed{seed}" if seed != search_seed else "")


def results_path(out: Path, seed: int, search_seed: int, longer: float = 1.0) -> Path:
    """The search's results file for a run whose distillation used `seed` and `longer` (as distil_folder names)."""
    return Path(out) / f"search_results{_suffix(seed, search_seed, longer)}.json"


def distil_folder(out: Path, fraction: float, label: str, seed: int, search_seed: int, longer: float = 1.0) -> Path:
    """Where the SubTransformer chosen at `fraction` ("searched", "uniform"; "full" at 1) is distilled with `seed`,
    `longer` times hat.distill_epochs (a longer distillation of the same search has a folder of its own)."""
    return Path(out) / f"sub-{fraction:g}-{label}{_suffix(seed, search_seed, longer)}"


def subtransformer_distillation(config, model):
    """What an extracted SubTransformer learns from the fine-tuned model: hat.distillation over logits-and-labels.
    Hidden states are matched layer to layer as the SubTransformer was cut: its layer i imitates the teacher layer it
    was copied from (config.search["layers"]), which a uniform map only approximates for some depths."""
    settings = config.subtransformer_distillation()
    if settings.get("hidden_weight", 0) > 0 and settings.get("layer_map") is None:
        settings["layer_map"] = [0] + [layer + 1 for layer in model.config.search["layers"]]
    return CompactConfig(distillation=DistillationConfig.from_dict(settings))


def ship_int8(model, tokenizer, folder: Path, task, train, dev: dict, max_length: int, mobile: bool = True,
              target_platform: str = "arm", fuse_attention: bool = True) -> dict:
    """Ship a distilled SubTransformer as compact search does: int8 PTQ (the form its budget was set in), scored on
    dev and timed by compact_nlp.ship.ship; 256 training texts for the fp32-vs-int8 agreement. task: its TaskSpec
    or GLUE name."""
    spec = as_spec(task)
    exporter = quant_exporter(Int8Config(), tokenizer, task_texts(train, spec, 256), max_length, mobile,
                              target_platform, fuse_attention=fuse_attention)
    return ship(model, tokenizer, folder, spec, dev, max_length, mobile=mobile, target_platform=target_platform,
                exporter=exporter)


def distil_and_ship(supernet, sub, teacher, tokenizer, task, train, train_tokenized, heldout_tokenized, dev,
                    collator, recipe, config, folder: Path, seed: int, label: str) -> dict:
    """Stage 5: extract `sub`, distil it from the fine-tuned model, ship it in int8 (the form the budget was set in)."""
    done = folder / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    p = recipe.protocol
    model = extract(supernet, sub)
    args = training_arguments(p, str(folder / "checkpoints"), seed, task.main_metric, max_steps=-1,
                              num_train_epochs=config.distill_epochs * config.distill_longer,
                              learning_rate=config.distill_learning_rate)
    trainer = CompactTrainer(
        model=model, args=args, train_dataset=train_tokenized, eval_dataset=heldout_tokenized, teacher_model=teacher,
        compact_config=subtransformer_distillation(config, model),
        data_collator=collator, processing_class=tokenizer,
        compute_metrics=lambda pred: compute_metrics(task, pred.predictions, pred.label_ids),
    )
    resume = os.path.isdir(args.output_dir) and get_last_checkpoint(args.output_dir) is not None
    search_log(f"{label}: distilling {sub}{' (resuming)' if resume else ''}")
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if resume else None)
    heldout = trainer.evaluate()
    train_seconds = time.perf_counter() - started
    save_pretrained_atomic(trainer.model, folder / "pytorch")  # the distilled fp32 SubTransformer, for later steps
    save_pretrained_atomic(tokenizer, folder / "pytorch")
    shipped = ship_int8(trainer.model, tokenizer, folder / "model", task, train, dev, p.max_length,
                        recipe.export.mobile, recipe.export.target_platform, recipe.export.fuse_attention)
    result = {"label": label, "task": task.name, "data": task.to_dict(),  # the card reads the task from here
              "subtransformer": sub.to_dict(), "seed": seed, "train_seconds": round(train_seconds, 1),
              "distillation": trainer.compact_config.distillation.to_dict(), "train_examples": len(train),
              "transfer_examples": len(train_tokenized) - len(train), "heldout_examples": len(heldout_tokenized),
              "heldout": {k.removeprefix("eval_"): v for k, v in heldout.items()}, **shipped}
    write_json(done, result)
    remove_checkpoints(folder / "checkpoints")
    card_recipe = recipe.to_dict()  # the card states the distillation this model had, not the protocol's fine-tuning
    card_recipe["protocol"].update(epochs=config.distill_epochs * config.distill_longer,
                                   learning_rate=config.distill_learning_rate)
    card_recipe["teacher"] = card_recipe["model"]
    card_recipe["distillation"] = result["distillation"]
    write_model_card(folder / "model", {"recipe": card_recipe, "summary": summarize([result]), "per_seed": [result]},
                     technique_lines=card_lines(result))
    return result

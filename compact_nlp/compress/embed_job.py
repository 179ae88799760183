"""`compact compress MODEL OUT --task embeddings --data TEXT ...`: the goal in, a sentence-embedding model out.

A sentence-embedding model has no labels to fine-tune on, so its plans are the ones `compact embed` makes by hand:
a student with fewer layers (spread over the original's), distilled on the user's unlabelled text so that its
normalized mean-pooled embedding learns the original's, shipped as int8 `model.ort` with the sentence-transformers
files. The planner here picks the depth: every depth's int8 model is measured on this machine before anything
trains (an untrained proxy ships with the latency and size a trained one will), the depths predicted to meet the
target are tried deepest first (the one expected to lose least), each escalating to twice the distillation while the
held-out drop is too large. Token pruning (it changes which tokens the mean pools over) and binary weights are not
planned for embeddings.

The score and the held-out sentences: compact_nlp.compress.embed_measure. In OUT/: plan/ (the measurements),
attempts/<plan>-seed-<s>.json, steps/ (each student and its int8 model, shared between attempts), model/ (what
ships), report.{md,json} and candidates.png; the same command resumes where a killed run stopped.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from transformers import AutoConfig

from ..distributed import everywhere
from ..embeddings import distil_student, ship_embeddings
from ..embeddings_measure import sentence_transformers_check
from ..io import replace_folder, write_json, write_text
from ..pretrained import resolve_checkpoint
from ..ship import cpu_name
from ..workdir import Job, claim_output, defaults_of, input_digest
from .budget import Clock, TrainingPlan, kept_decision
from .embed_measure import (REFERENCE, EmbeddingBaseline, EmbeddingTexts, full_depth_student, measure_baseline,
                            original_embeddings, read_texts, score_embeddings, shipped_embeddings,
                            time_beside_reference)
from .goal import SIZE, Goal, GoalError, Limits
from .planner import Attempt, Target, best, distance, meets_target, target_of
from .plans import DEPTH_DROP, depths
from .report import CompressResult, write_report

EPOCHS, BATCH_SIZE, LEARNING_RATE = 1.0, 64, 1.0e-4  # compact embed's defaults (docs/results.md, embeddings)
MIN_ROWS = 1000
OVERHEAD_S = 60.0  # shipping (export, int8, .ort) and scoring one attempt
TEACHER_SHARE = 0.3  # of a distillation step's time: the teacher's forward pass; the rest scales with depth
PREDICTION_SLACK = 1.05  # as compact_nlp.compress.planner's


@dataclass
class EmbedPlan:
    """A depth of the student, shipped int8; `training` multiplies its distillation epochs (an escalation)."""

    original_layers: int
    layers: int
    predicted_ms: float
    predicted_size_mb: float
    training: float = 1.0

    @property
    def distils(self) -> bool:
        return self.layers < self.original_layers

    @property
    def label(self) -> str:
        trained = f", distilled {self.training:g}x" if self.training != 1 else ""
        return f"{self.layers} of {self.original_layers} layers{trained}, int8"

    @property
    def slug(self) -> str:
        return f"L{self.layers}-x{self.training:g}"

    @property
    def expected_drop(self) -> float:  # a prior: it only orders the plans (plans.DEPTH_DROP)
        return DEPTH_DROP * (1 - self.layers / self.original_layers)

    def seconds(self, rows: int, seconds_per_example: float) -> float:
        if not self.distils:
            return OVERHEAD_S
        share = TEACHER_SHARE + (1 - TEACHER_SHARE) * self.layers / self.original_layers
        return rows * EPOCHS * self.training * seconds_per_example * share + OVERHEAD_S

    def to_dict(self) -> dict:
        return {"label": self.label, "layers": self.layers, "training": self.training, "options": {},
                "predicted_ms": self.predicted_ms, "predicted_size_mb": self.predicted_size_mb,
                "expected_drop": round(self.expected_drop, 2)}


def embed_plans(baseline: EmbeddingBaseline, original_layers: int, target: Target) -> list[EmbedPlan]:
    """The depths predicted to meet the target, deepest first."""
    plans = [EmbedPlan(original_layers, int(layers), ms, mb) for layers, (ms, mb) in baseline.depths.items()]
    feasible = [p for p in plans if (p.predicted_size_mb <= target.size_mb * PREDICTION_SLACK if target.kind == SIZE
                                     else p.predicted_ms <= target.ms * PREDICTION_SLACK)]
    return sorted(feasible, key=lambda p: -p.layers)


def embed_training(texts: EmbeddingTexts, plan: EmbedPlan | None, seconds_per_example: float,
                   seconds_left: float | None) -> TrainingPlan:
    """Sentences each student distils on (`train_subset`): all of them, or as many as let the first plan's attempt
    use half the time left (so that an escalation fits); refused when that is below MIN_ROWS."""
    rows = len(texts.train)
    if seconds_left is None or plan is None or plan.seconds(rows, seconds_per_example) <= seconds_left / 2:
        return TrainingPlan(EPOCHS, rows, 0.0)
    per_row = (plan.seconds(rows, seconds_per_example) - OVERHEAD_S) / rows
    fitted = int((seconds_left / 2 - OVERHEAD_S) / per_row)
    if fitted < MIN_ROWS:
        raise GoalError(f"the time budget affords distilling on {max(fitted, 0)} sentences, fewer than {MIN_ROWS}: "
                        f"give a longer --time-budget (about {plan.seconds(MIN_ROWS, seconds_per_example) * 2 / 60:.0f}"
                        " min at least) or a smaller target.")
    return TrainingPlan(EPOCHS, fitted, 0.0, note=f"the time budget affords {fitted} of the {rows} training "
                                                  "sentences per student")


def embed_job(model: str, texts: EmbeddingTexts, goal: Goal, limits: Limits, text_column: str | None) -> Job:
    source_digest = input_digest(model) if os.path.isdir(model) else model
    return Job("compress", {**goal.to_dict(), **limits.to_dict(), "task": "embeddings", "model": model,
                            "text_column": text_column}, {"model": source_digest, "data": texts.digest()},
               defaults=defaults_of(Limits))


@dataclass
class EmbedContext:
    source: str
    texts: EmbeddingTexts
    rows: int
    max_length: int
    out: Path
    baseline: EmbeddingBaseline
    target: Target
    threads: int
    device: str = "auto"  # what the students distil on

    def timed_in_frame(self, model_ort: Path, sentences: list[str]) -> float:
        """The file's median ms timed beside the reference now, in the baseline's timing frame."""
        timed = time_beside_reference(self.source, {"model": model_ort}, self.out / "plan", sentences,
                                      self.max_length, self.threads)
        return round(timed["model"] * self.baseline.reference_ms / timed[REFERENCE], 3)


def run_embed_attempt(context: EmbedContext, plan: EmbedPlan, seed: int, clock: Clock, reference) -> Attempt:
    """Distil (or, at full depth, take the original), ship int8, score on the selection sentences; read back when a
    killed run finished it."""
    saved = context.out / "attempts" / f"{plan.slug}-seed-{seed}.json"
    if saved.is_file():
        return Attempt(**json.loads(saved.read_text())["attempt"])
    started = clock.elapsed
    where = context.out / "steps" / (f"{plan.slug}-rows{context.rows}-seed-{seed}" if plan.distils else plan.slug)
    if plan.distils:
        student = everywhere(distil_student, context.source, context.texts.train[:context.rows], where, plan.layers,
                             EPOCHS * plan.training, BATCH_SIZE, LEARNING_RATE, context.max_length, seed,
                             context.device)
    else:
        student = full_depth_student(context.source, where / "student")
    folder = ship_embeddings(student, where, context.texts.train, context.max_length)
    score = score_embeddings(shipped_embeddings(folder, context.texts.selection, context.max_length), reference)
    ms = context.timed_in_frame(folder / "model.ort", context.texts.selection)
    size = round((folder / "model.ort").stat().st_size / 2**20, 3)
    attempt = Attempt(plan.to_dict(), seed, str(folder), score.score, 100.0, ms, size,
                      round(context.target.peer_ms / ms, 2), round(clock.elapsed - started, 1), str(saved))
    write_json(saved, {"attempt": asdict(attempt), "mean_cosine": score.mean_cosine})
    clock.save()
    return attempt


def try_embed_plans(context: EmbedContext, plans: list[EmbedPlan], goal: Goal, limits: Limits, clock: Clock,
                    log) -> tuple[list[Attempt], list[Attempt]]:
    """Every attempt, and those of the plan that met the goal on the mean of the seeds (empty when none did)."""
    reference = original_embeddings(context.source, context.texts.selection, context.max_length)
    tried = []
    for plan in plans:
        for attempt_plan in ([plan, replace(plan, training=2.0)] if plan.distils else [plan]):
            seeds = list(range(1, 1 + (limits.seeds if attempt_plan.distils else 1)))  # full depth: nothing random
            expected = attempt_plan.seconds(context.rows, context.baseline.train_seconds_per_example) * len(seeds)
            if not clock.affords(expected):
                log(f"skip {attempt_plan.label}: about {expected / 60:.0f} min, {clock.left() / 60:.0f} min left")
                continue
            runs = []
            for seed in seeds:
                log(f"attempt {attempt_plan.label} (seed {seed}; about {expected / len(seeds) / 60:.0f} min)")
                runs.append(run_embed_attempt(context, attempt_plan, seed, clock, reference))
                log(f"  held-out similarity fidelity {runs[-1].score:.2f} (drop {runs[-1].drop:.2f}); "
                    f"{runs[-1].ms:.2f} ms; {runs[-1].size_mb:.2f} MB")
            tried += runs
            if not all(meets_target(a, context.target) for a in runs):
                break  # an escalation keeps the depth: it is no faster or smaller
            if sum(a.drop for a in runs) / len(runs) <= goal.max_drop:
                return tried, runs
    return tried, []


def final_numbers(context: EmbedContext, chosen: list[Attempt], model_name: str) -> dict:
    """The final sentences, read once: the shipped model (OUT/model) against the original, and the
    sentence-transformers check of the folder."""
    shipped = context.out / "model"
    reference = original_embeddings(context.source, context.texts.final, context.max_length)
    score = score_embeddings(shipped_embeddings(shipped, context.texts.final, context.max_length), reference)
    ms = context.timed_in_frame(shipped / "model.ort", context.texts.final)
    final = {"metric": "similarity fidelity (100 x Spearman of pair cosines vs the original's)",
             "score_mean": score.score, "teacher_score": 100.0, "drop": round(100.0 - score.score, 2),
             "mean_cosine_to_original": score.mean_cosine, "sentences": len(context.texts.final),
             "ms": ms, "teacher_ms": context.baseline.reference_ms,
             "speedup_vs_teacher": round(context.baseline.reference_ms / ms, 2), "peer": context.baseline.fastest_peer,
             "speedup_vs_peer": round(context.baseline.fastest_peer_ms / ms, 2), "size_mb": chosen[0].size_mb,
             "teacher_size_mb": context.baseline.reference_size_mb, "layers": chosen[0].plan["layers"],
             "base_model": model_name, "cpu": cpu_name(), "threads": context.threads}
    try:
        check = sentence_transformers_check(shipped, context.texts.final[:100], context.max_length)
        final["sentence_transformers_max_abs_diff"] = check.get("max_abs_diff_vs_compact_pytorch")
    except ImportError:
        final["sentence_transformers_max_abs_diff"] = "not checked: sentence-transformers is not installed"
    return final


def write_card(folder: Path, final: dict, source_text: str) -> None:
    """OUT/model/README.md: what was done and what was measured, in the hub's card format."""
    write_text(folder / "README.md", "\n".join([
        "---", f"base_model: {final['base_model']}", "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity", "tags: [compact, int8, distillation, onnx]", "---", "",
        f"# {final['base_model']}, compressed by compact", "",
        f"{final['layers']} layers (distilled from the original on {source_text}), int8 `model.ort` for ONNX Runtime "
        "(Mobile); the PyTorch weights and the sentence-transformers files load with `SentenceTransformer(folder)`.",
        "", "| measure (held-out sentences, read once) | value |", "|---|---|",
        f"| similarity fidelity (100 x Spearman of pair cosines vs the original's) | {final['score_mean']:.2f} |",
        f"| mean cosine to the original's embedding | {final['mean_cosine_to_original']:.4f} |",
        f"| batch-1 latency, x the original (ORT fp32) | {final['speedup_vs_teacher']:.2f} |",
        f"| x the fastest int8 peer measured in the same run ({final['peer']}) | {final['speedup_vs_peer']:.2f} |",
        f"| CPU (batch 1, {final['threads']} thread(s)) | {final['cpu']} |",
        f"| model.ort MB | {final['size_mb']:.2f} |", ""]))


def portable_name(model: str) -> str:
    """A hub id as it is; a local folder by its name (a card never holds a local path)."""
    return Path(model).name if os.path.isdir(model) else model


def compress_embeddings(model: str, data, out: Path, goal: Goal, limits: Limits, text_column: str | None = None,
                        dry_run: bool = False, accept_best: bool = False, restart: bool = False,
                        log=print) -> CompressResult:
    """The whole job (module docstring); returns what was planned, tried and shipped (also OUT/report.json)."""
    source = str(resolve_checkpoint(model))
    texts = read_texts(data, text_column)
    resumed = claim_output(out, embed_job(model, texts, goal, limits, text_column), restart)
    log(("resuming" if resumed else "starting") + f" compress (embeddings) into {out}: {goal.describe()}")
    clock = Clock(out / "clock.json", limits.time_budget_s)
    layers = original_layers(source)
    max_length = min(128, AutoConfig.from_pretrained(source).max_position_embeddings)
    baseline = measure_baseline(source, texts, depths(layers), max_length, limits.threads, out / "plan", log)
    target = target_of(goal, baseline.fastest_peer, baseline.fastest_peer_ms)
    plans = embed_plans(baseline, layers, target)
    training = kept_decision(out / "plan" / "training.json", lambda: embed_training(
        texts, plans[0] if plans else None, baseline.train_seconds_per_example, clock.left()))
    rows = training.train_subset
    notes = [f"training text: {len(texts.train)} distinct sentences of {texts.source}; {len(texts.selection)} held "
             f"out to choose on, {len(texts.final)} more to report on (read once)", *filter(None, [training.note])]
    result = CompressResult(goal.to_dict(), target.to_dict(), "planned", str(out), baseline.to_dict(),
                            training.to_dict(), {"heldout_score": 100.0}, [p.to_dict() for p in plans], notes=notes,
                            task="embeddings")
    minutes = {p.label: p.seconds(rows, baseline.train_seconds_per_example) / 60 for p in plans}
    if not plans:
        notes.append("no depth is predicted to meet the target on this machine")
    if dry_run or not plans:
        return _finish(result, "planned" if dry_run else "unmet", out, clock, minutes)
    context = EmbedContext(source, texts, rows, max_length, out, baseline, target, limits.threads, limits.device)
    tried, chosen = try_embed_plans(context, plans, goal, limits, clock, log)
    result.attempts = [a.to_dict() for a in tried]
    status = "met" if chosen else "unmet"
    if not chosen and tried and accept_best:
        pick = best(tried, target)
        chosen, status = [a for a in tried if a.plan["label"] == pick.plan["label"]], "accepted-best"
    result.distance = "" if status == "met" else (distance(tried, goal, target) if tried else
                                                  "the time budget ran out before any attempt")
    if chosen:
        replace_folder(Path(chosen[0].folder), out / "model")
        result.chosen = [a.to_dict() for a in chosen]
        result.final = final_numbers(context, chosen, portable_name(model))
        write_card(out / "model", result.final, texts.source)
    return _finish(result, status, out, clock, minutes)


def _finish(result: CompressResult, status: str, out: Path, clock: Clock, minutes: dict) -> CompressResult:
    result.status, result.wall_seconds = status, round(clock.elapsed, 1)
    clock.save()
    write_report(result, out, minutes)
    return result


def original_layers(source: str) -> int:
    return AutoConfig.from_pretrained(source).num_hidden_layers

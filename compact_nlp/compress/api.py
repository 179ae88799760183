"""`compact_nlp.compress()`: the Python form of `compact compress` (the phases: compact_nlp.compress.job)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

from ..data import TaskData, load_task_data, task_texts
from ..distributed import lead, uses_cuda
from ..export.card import write_model_card
from ..io import refuse_overwrite, replace_folder
from ..peers import ORT_DYNAMIC
from ..registry import card_lines
from ..ship import measure_shipped, summarize
from ..workdir import claim_output
from .budget import Clock, affordable, attempt_seconds, attempt_training, choose_training, kept_decision
from .embed_job import compress_embeddings
from .goal import EMBEDDINGS, GoalError, Limits, goal_from, parse_duration
from .job import (Setup, best_effort, check_inputs, check_model, fine_tune_teacher, is_fine_tuned, job_of,
                  plans_to_try, selection_data, teacher_warning, try_plans)
from .planner import closest, distance, target_of
from .prepare import (PEER_EXAMPLES, cache_folder, keep_measurements, measure_phase, measurement_key,
                      restore_measurements, selection_max_length, validation_peers)
from .report import CompressResult, write_report
from .steps import Context


def compress(model: str, data: TaskData | str | os.PathLike, out: str | os.PathLike, *, speedup: float | None = None,
             latency_ms: float | None = None, size_mb: float | None = None, max_drop: float = 1.0,
             task: str | None = None, time_budget: str | float | None = None, threads: int = 1, seeds: int = 1,
             dry_run: bool = False, accept_best: bool = False, restart: bool = False, text_column: str | None = None,
             device: str = "auto", log=print) -> CompressResult:
    """Compress `model` on `data` (a TaskData, or a file that compact_nlp.data.load_task_data reads) to one target
    (`speedup` over the fastest int8 peer measured here, `latency_ms` at batch 1, or `size_mb`) within `max_drop`
    points, into `out`; returns what was planned, tried and shipped (also in OUT/report.json). Run again with the
    same arguments to resume; other arguments on the same OUT are refused unless `restart`.
    `task="embeddings"`: a sentence-embedding model on unlabelled text in `data`'s `text_column` (embed_job).
    `device`: what trains (auto, cpu, cuda); latency is measured on the CPU. Under `accelerate launch` with several
    processes, every training run is data-parallel over them, and the main process measures, decides and writes
    (compact_nlp.distributed.lead); every process returns the result."""
    goal = goal_from(speedup, latency_ms, size_mb, max_drop)
    limits = Limits(parse_duration(time_budget), threads, seeds, device)
    return lead(lambda: _compress(model, data, Path(out), goal, limits, task, dry_run, accept_best, restart,
                                  text_column, log), cpu=not uses_cuda(device))


def _compress(model: str, data, out: Path, goal, limits: Limits, task: str | None, dry_run: bool, accept_best: bool,
              restart: bool, text_column: str | None, log) -> CompressResult:
    if task == EMBEDDINGS:
        refuse_overwrite(out, {"model": check_model(model)})
        return compress_embeddings(model, data, Path(out), goal, limits, text_column, dry_run, accept_best, restart,
                                   log)
    data = data if isinstance(data, TaskData) else load_task_data(data)
    source = check_inputs(model, data, task)
    refuse_overwrite(out, {"model": source})
    out = Path(out)
    job = job_of(model, data, goal, limits, task)
    resumed = claim_output(out, job, restart)
    log(("resuming" if resumed else "starting") + f" compress into {out}: {goal.describe()}")
    clock = Clock(out / "clock.json", limits.time_budget_s)
    selection, note = selection_data(data)
    setup = Setup(source, data, selection, goal, limits, out, selection_max_length(source, selection), [note])
    cache = cache_folder(measurement_key(job, limits.threads, setup.max_length))
    if restore_measurements(out / "plan", cache):
        setup.notes.append("the baseline and the plans' latency and size were measured by an earlier compress of the "
                           f"same model and data on this machine ({cache}); only the goal differs")
    baseline, plans, predictor = measure_phase(source, selection, setup.max_length, limits.threads, out, log,
                                               limits.device)
    target = target_of(goal, baseline.fastest_peer, baseline.fastest_peer_ms)
    rows, cost = len(selection.train), baseline.train_seconds_per_example
    ordered = plans_to_try(plans, target, predictor, lambda plan: attempt_seconds(plan, rows, 3, cost))
    keep_measurements(out / "plan", cache)
    if not ordered:
        near = closest(plans, target)
        setup.notes.append(f"no plan is predicted to meet the target; the nearest is {near.label} "
                           f"({near.predicted_ms:.2f} ms"
                           + (f", {near.predicted_size_mb:.2f} MB)" if near.predicted_size_mb is not None else ")"))
        ordered = [near] if accept_best else []
    needs_teacher = not is_fine_tuned(source, data)
    # against the whole budget, so that a resumed run (less time left) keeps the plans the first one chose from
    ordered, left_out = affordable(ordered, rows, cost, clock.budget_s, needs_teacher)
    setup.notes += left_out
    training = kept_decision(out / "plan" / "training.json", lambda: choose_training(
        rows, cost, clock.left(), needs_teacher, ordered[0] if ordered else None, limits.seeds))
    setup.notes += [n for n in (training.note,) if n]
    if needs_teacher:
        setup.notes.append(f"{model} has no head for this task: compact fine-tunes it first and distils from it; the "
                           "drop is counted from that fine-tuned model")
    minutes = {p.label: attempt_seconds(p, training.train_subset or rows, training.epochs, cost) / 60 for p in ordered}
    result = CompressResult(goal.to_dict(), target.to_dict(), "planned", str(out), baseline.to_dict(),
                            training.to_dict(), {}, [{**p.to_dict(), "proxy_measured": predictor.is_measured(p)}
                                                     for p in ordered], notes=setup.notes)
    if dry_run or not ordered:
        result.status = "planned" if dry_run else "unmet"
        result.distance = "" if dry_run else "no plan is predicted to reach the target on this machine"
        result.wall_seconds = round(clock.elapsed, 1)
        clock.save()
        write_report(result, out, minutes)
        return result
    return _train_and_ship(setup, result, ordered, target, baseline, training, clock, needs_teacher, minutes,
                           accept_best, log)


def _train_and_ship(setup: Setup, result: CompressResult, ordered, target, baseline, training, clock, needs_teacher,
                    minutes, accept_best, log) -> CompressResult:
    cost = baseline.train_seconds_per_example
    if needs_teacher:
        log(f"fine-tuning the teacher ({training.teacher_epochs:g} epochs"
            f"{f' on {training.teacher_subset} rows' if training.teacher_subset else ''})")
        teacher, score, cost = fine_tune_teacher(setup, training)
        if warning := teacher_warning(setup, score):
            log(f"warning: {warning}")
            setup.notes.append(warning)
        training = kept_decision(setup.out / "plan" / "attempt_training.json", lambda: replace(training, **dict(zip(
            ("epochs", "train_subset", "note"), attempt_training(len(setup.selection.train), cost, clock.left(),
                                                                  ordered[0])))))
        result.training = training.to_dict()
        setup.notes.append(f"training measured {cost:.3f} s per example while fine-tuning the teacher (the estimate "
                           f"before: {baseline.train_seconds_per_example:.3f}); the attempts are planned from it"
                           + (f": {training.note}" if training.note else ""))
    else:
        teacher, score = setup.model, None
    clock.save()
    context = Context(setup.selection, teacher, setup.max_length, training.epochs, training.train_subset,
                      device=setup.limits.device)
    tried, chosen = try_plans(setup, context, ordered, target, baseline.reference_ms, clock, training, cost, log)
    result.teacher = {"folder": teacher, "fine_tuned_here": needs_teacher,
                      "heldout_score": score if score is not None else (tried[0].teacher_score if tried else None)}
    result.attempts = [a.to_dict() for a in tried]
    if chosen:
        result.status = "met"
    elif tried and accept_best:
        result.status, chosen = "accepted-best", best_effort(tried, target)
    else:
        result.status = "unmet"
    result.distance = "" if result.met else (distance(tried, setup.goal, target) if tried else
                                             "the time budget ran out before any attempt")
    if chosen:
        result.chosen = [a.to_dict() for a in chosen]
        result.final = _final(setup, chosen, teacher)
    result.wall_seconds = round(clock.elapsed, 1)
    clock.save()
    write_report(result, setup.out, minutes)
    return result


def _final(setup: Setup, chosen: list, teacher: str) -> dict:
    """Read the user's validation split once: the chosen model of each seed, the teacher and ORT's int8 peer graph,
    side by side; OUT/model is the first seed's folder, with its card. The peers are measured again on the
    validation rows, and the speedup is over the fastest of them there (compact_nlp.compress.prepare.ValidationPeers):
    a model planned for the held-out rows' lengths may lead by another margin at the validation split's."""
    spec, per_seed, dev = setup.data.spec, [], setup.data.dev()
    peers = validation_peers(setup.out, task_texts(next(iter(dev.values())), spec, PEER_EXAMPLES),
                             setup.limits.threads, setup.max_length)
    for attempt in chosen:
        saved = json.loads(Path(attempt.result_file).read_text())
        step = saved["result"]
        report = {"size_mb": step["size_mb"], "parity": step["export_parity"], "parameters": step["parameters"],
                  "layers": step["layers"], "parity_label": step.get("parity_label")}
        measured = measure_shipped(attempt.folder, report, spec, dev, setup.max_length, original=teacher,
                                   beside={ORT_DYNAMIC: Path(peers.ort_graph)})
        peer_ms = measured["beside"][ORT_DYNAMIC]["median"] * peers.ratio_to_ort
        per_seed.append({**step, **measured, "seed": attempt.seed,
                         "speedup_vs_peer": peer_ms / measured["latency_ms_batch1"]["median"]})
    replace_folder(chosen[0].folder, setup.out / "model", ignore=shutil.ignore_patterns("checkpoints", ".*"))
    summary = summarize(per_seed)
    main = f"{spec.dev_splits[0]}/{spec.main_metric}"
    original = summary.get("original", {})
    speedup = original.get("latency_ms_batch1_median", 0) / summary["latency_ms_batch1_median"]
    vs_peer = statistics.mean(s["speedup_vs_peer"] for s in per_seed)
    results = {"recipe": json.loads(Path(chosen[0].result_file).read_text())["recipe"], "summary": summary,
               "per_seed": per_seed, "stages": [a.plan["label"] for a in chosen[:1]],  # OUT/report.json: each step
               "against_peer": {"name": peers.fastest, "speedup": vs_peer,
                                "cpu": per_seed[0]["machine"].get("cpu", "")}}
    write_model_card(setup.out / "model", results, technique_lines=card_lines(per_seed[0]))
    return {"metric": main, "score_mean": summary[main]["mean"], "score_sd": summary[main]["sd"],
            "teacher_score": original.get(main), "drop": round(original.get(main, 0) - summary[main]["mean"], 2),
            "ms": summary["latency_ms_batch1_median"], "teacher_ms": original.get("latency_ms_batch1_median"),
            "mean_tokens": per_seed[0]["latency_ms_batch1"]["mean_tokens"],  # against the held-out rows' (baseline)
            "speedup_vs_teacher": round(speedup, 2), "peer": peers.fastest,
            "speedup_vs_peer": round(vs_peer, 2), "peers_on_validation": peers.peers,
            "size_mb": per_seed[0]["size_mb"][per_seed[0]["artifact"]], "teacher_size_mb": original.get("size_mb"),
            "seeds": summary["seeds"]}


__all__ = ["CompressResult", "GoalError", "compress"]

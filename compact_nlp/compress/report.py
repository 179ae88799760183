"""What a compress says about itself: OUT/report.json (CompressResult), OUT/report.md (what was measured, tried and
chosen, and why) and OUT/candidates.png (held-out score against latency or size for every attempt, with the teacher
and the fastest peer marked)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..io import atomic_path, write_json, write_text
from .goal import SIZE
from .planner import Attempt

EXIT_UNMET = 3  # the goal was not reached and --accept-best was not given: nothing shipped


@dataclass
class CompressResult:
    """The outcome of `compress()`: whether the goal holds, what shipped (OUT/model) and every number behind it."""

    goal: dict
    target: dict
    status: str  # "met", "unmet", "accepted-best" (unmet, shipped with --accept-best), "planned" (--dry-run)
    out: str
    baseline: dict
    training: dict
    teacher: dict  # folder, fine_tuned_here, held-out score
    plans: list = field(default_factory=list)  # every plan in the order it would be tried, with predictions
    attempts: list = field(default_factory=list)  # Attempt.to_dict(), in the order they ran
    chosen: list = field(default_factory=list)  # the shipped plan's attempts (one per seed)
    final: dict = field(default_factory=dict)  # the user's validation split, read once: scores, latency, size
    distance: str = ""
    notes: list = field(default_factory=list)
    wall_seconds: float = 0.0
    task: str = ""  # "embeddings" for a sentence-embedding model (its drop is counted from the original itself)

    @property
    def met(self) -> bool:
        return self.status == "met"

    @property
    def exit_code(self) -> int:
        return EXIT_UNMET if self.status == "unmet" else 0


def plan_table(plans: list[dict], peer_ms: float | None, minutes: dict[str, float]) -> str:
    lines = ["| # | plan | predicted ms | x peer | predicted MB | prior drop | est. min |", "|---|---|---|---|---|---|---|"]
    for i, plan in enumerate(plans, 1):
        speed = f"{peer_ms / plan['predicted_ms']:.2f}" if peer_ms else "-"
        size = "after the search" if plan["predicted_size_mb"] is None else f"{plan['predicted_size_mb']:.2f}"
        lines.append(f"| {i} | {plan['label']} | {plan['predicted_ms']:.2f} | {speed} | {size} "
                     f"| {plan['expected_drop']:.1f} | {minutes.get(plan['label'], 0):.0f} |")
    return "\n".join(lines)


def attempts_table(attempts: list[dict]) -> str:
    lines = ["| attempt | seed | held-out | teacher | drop | ms | x peer | MB | min |", "|---|---|---|---|---|---|---|---|---|"]
    for a in attempts:
        speed = f"{a['speedup_vs_peer']:.2f}" if a["speedup_vs_peer"] else "-"
        lines.append(f"| {a['plan']['label']} | {a['seed']} | {a['score']:.2f} | {a['teacher_score']:.2f} | "
                     f"{a['drop']:.2f} | {a['ms']:.2f} | {speed} | {a['size_mb']:.2f} | {a['seconds'] / 60:.1f} |")
    return "\n".join(lines)


def markdown(result: CompressResult, minutes: dict[str, float]) -> str:
    b, t = result.baseline, result.target
    peers = _peer_lines(b["peers"])
    head = {"met": "The goal is met", "unmet": "The goal was not reached; nothing shipped",
            "accepted-best": "The goal was not reached; the best attempt shipped (--accept-best)",
            "planned": "Dry run: the plan, nothing trained"}[result.status]
    text = [f"# compact compress: {head}", "", f"Goal: {_goal_words(result.goal, result.task)}.", "",
            "## Measured before training", "",
            f"The reference (the model as fp32 `model.ort`) runs {b['reference_ms']:.2f} ms at batch 1 on the held-out "
            f"rows ({b['mean_tokens']:.1f} tokens on average); {b['reference_size_mb']:.1f} MB. Peers:", peers, "",
            f"Fastest peer: {b['fastest_peer']}, {_own_run_ms(b):.2f} ms in its own run, {b['fastest_peer_ms']:.2f} "
            "ms in the frame every plan is timed in (beside the reference, which sets the frame). Target: "
            + (f"{t['size_mb']:g} MB" if t["kind"] == SIZE else f"{t['ms']:.2f} ms") + ".", "",
            "## Plans predicted to meet the target, in the order they are tried", "",
            plan_table(result.plans, b["fastest_peer_ms"], minutes), "", "## Notes", "",
            *[f"- {note}" for note in result.notes]]
    if result.attempts:
        text += ["", "## Attempts (held-out rows)", "", attempts_table(result.attempts)]
    if result.chosen:
        text += ["", "## Chosen", "", _why(result)]
    if result.distance:
        text += ["", f"Distance: {result.distance}."]
    if result.final:
        text += ["", "## What shipped, on the validation split (read once)", "",
                 _final_words(result.final, result.baseline.get("mean_tokens"))]
    return "\n".join(text) + "\n"


def _why(result: CompressResult) -> str:
    chosen = result.chosen
    drops = [a["drop"] for a in chosen]
    mean = sum(drops) / len(drops)
    if result.status == "met":
        reason = (f"the first plan, in the order above, whose attempt met the target and whose held-out drop over "
                  f"{len(chosen)} seed(s) ({mean:.2f} points on average) is within {result.goal['max_drop']:g}")
    else:
        reason = "the best attempt (--accept-best): the smallest drop among those that met the target, else the nearest"
    return f"{chosen[0]['plan']['label']}: {reason}."


def _goal_words(goal: dict, task: str) -> str:
    kind = {"speedup": f"{goal['value']:g}x faster than the fastest int8 peer", "latency_ms":
            f"at most {goal['value']:g} ms at batch 1", "size_mb": f"at most {goal['value']:g} MB"}[goal["kind"]]
    if task == "embeddings":
        return f"{kind}, at most {goal['max_drop']:g} points of similarity fidelity below the original model"
    return f"{kind}, at most {goal['max_drop']:g} points worse than the fine-tuned model"


def _own_run_ms(baseline: dict) -> float:
    return next(p["median_ms"] for p in baseline["peers"] if p["name"] == baseline["fastest_peer"])


def _peer_lines(peers: list[dict]) -> str:
    return "\n".join(f"- {p['name']} ({p['runtime']}): " + (f"{p['median_ms']:.2f} ms" if p["available"] else
                                                           f"skipped: {p['reason']}") for p in peers)


LENGTH_GAP = 1.25  # validation inputs this much longer or shorter than the held-out rows get a line in the report


def _final_words(final: dict, heldout_tokens: float | None) -> str:
    rows = [f"| {k} | {v} |" for k, v in final.items() if not isinstance(v, (dict, list))]
    text = ["| measure | value |", "|---|---|", *rows]
    tokens = final.get("mean_tokens")
    if tokens and heldout_tokens and max(tokens / heldout_tokens, heldout_tokens / tokens) > LENGTH_GAP:
        text += ["", f"The validation inputs average {tokens:g} tokens, the held-out rows the plan was chosen on "
                 f"{heldout_tokens:g}: a model's lead over the peers changes with the length, so the speedup here "
                 "differs from the held-out one."]
    if final.get("peers_on_validation"):
        text += ["", "The peers, measured again on the validation rows, each in its own run; the fastest is placed by "
                 "its ratio to ORT dynamic int8, which was timed beside the shipped model:",
                 _peer_lines(final["peers_on_validation"])]
    return "\n".join(text)


def plot(result: CompressResult, path: Path) -> Path | None:
    """Held-out score against latency (or size) of every attempt, the teacher and the peer marked; None without
    matplotlib (the JSON and markdown still say everything)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    size = result.target["kind"] == SIZE
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [a["size_mb"] if size else a["ms"] for a in result.attempts]
    ax.scatter(xs, [a["score"] for a in result.attempts], label="attempts (held-out)")
    teacher = result.teacher.get("heldout_score")
    if teacher is not None:
        x = result.baseline["reference_size_mb"] if size else result.baseline["reference_ms"]
        ax.scatter([x], [teacher], marker="*", s=160, label="original (fp32)")
        ax.axhline(teacher - result.goal["max_drop"], linestyle=":", label="allowed drop")
    if not size:
        ax.axvline(result.baseline["fastest_peer_ms"], linestyle="--", color="grey",
                   label=f"peer: {result.baseline['fastest_peer']}")
        ax.axvline(result.target["ms"], linestyle="-.", color="red", label="target")
    ax.set_xlabel("MB" if size else "ms, batch 1 (held-out rows)")
    ax.set_ylabel("held-out score")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def write_report(result: CompressResult, out: Path, minutes: dict[str, float]) -> None:
    write_json(out / "report.json", asdict(result))
    write_text(out / "report.md", markdown(result, minutes))
    if result.attempts:
        plot(result, out / "candidates.png")


__all__ = ["Attempt", "CompressResult", "EXIT_UNMET", "markdown", "plot", "write_report"]

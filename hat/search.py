"""Evolutionary search under a latency budget (HAT, Wang et al. 2020, section 3.3).

    result = evolutionary_search(space, predictor, budget_ms, fitness, population=40, ..., state_path="s.json")

The population starts as random SubTransformers under the budget. Each generation keeps the `parents` fittest,
adds `mutations` mutated parents and `crossovers` children of two parents; a candidate whose predicted latency is
over the budget is rejected and drawn again, so no time is spent scoring it. Fitness is whatever the caller measures
(compact scores the task metric with the inherited SuperTransformer weights on the held-out split, never on dev);
each SubTransformer is scored once; among equally fit ones the faster (predicted) wins. The state is saved after every generation, so an interrupted search resumes,
and it refuses to resume with another space, budget or predictor setting.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compact_nlp.io import atomic_path, write_json

from .latency import LatencyPredictor, LatencySpec
from .space import SearchSpace, SearchSpaceError, SubTransformer

MAX_DRAWS = 10_000  # rejection sampling gives up after this many candidates over the budget


@dataclass
class Candidate:
    sub: SubTransformer
    predicted_ms: float
    fitness: float

    def to_dict(self) -> dict:
        return {"sub": self.sub.to_dict(), "predicted_ms": round(self.predicted_ms, 4), "fitness": self.fitness}

    @classmethod
    def from_dict(cls, data: dict) -> Candidate:
        return cls(SubTransformer.from_dict(data["sub"]), data["predicted_ms"], data["fitness"])


@dataclass
class SearchResult:
    best: Candidate
    budget_ms: float
    history: list[Candidate]  # every SubTransformer scored, in order
    best_per_generation: list[float] = field(default_factory=list)
    seconds: float = 0.0
    given: bool = False  # hat.subtransformer: the choice was given, not searched for

    def to_dict(self) -> dict:
        return {"best": self.best.to_dict(), "budget_ms": self.budget_ms, "seconds": round(self.seconds, 1),
                "evaluated": len(self.history), "best_per_generation": self.best_per_generation,
                **({"given": True} if self.given else {})}


def _draw(make: Callable[[], tuple], space: SearchSpace, predictor: LatencyPredictor, budget_ms: float) -> tuple:
    for _ in range(MAX_DRAWS):
        gene = make()
        if predictor.predict(space.decode(gene)) <= budget_ms:
            return gene
    raise SearchSpaceError(f"no SubTransformer under {budget_ms:.3f} ms turned up in {MAX_DRAWS} draws: the budget "
                           "is too tight for this space; raise it or add smaller choices.")


def given_subtransformer(space: SearchSpace, predictor: LatencyPredictor, budget_ms: float,
                         fitness: Callable[[SubTransformer], float], given: dict) -> SearchResult:
    """The result of a search that was not run: `given` ({hidden, heads, ffn}, checked against the space) is the
    choice, scored and predicted like a searched one, whatever the budget."""
    sub = SubTransformer.from_dict(given)
    space.check(sub)
    chosen = Candidate(sub, predictor.predict(sub), fitness(sub))
    return SearchResult(chosen, budget_ms, [chosen], [chosen.fitness], given=True)


def evolutionary_search(space: SearchSpace, predictor: LatencyPredictor, budget_ms: float,
                        fitness: Callable[[SubTransformer], float], population: int = 40, parents: int = 10,
                        mutations: int = 15, crossovers: int = 15, mutation_probability: float = 0.3,
                        iterations: int = 10, seed: int = 0, state_path: str | os.PathLike | None = None,
                        progress: Callable[[int, Candidate], None] | None = None) -> SearchResult:
    """Search `space` for the fittest SubTransformer whose predicted latency is at most `budget_ms`."""
    predictor.check(predictor.spec, space)  # its features are scaled to the space it was trained on
    smallest = predictor.predict(space.smallest())
    if smallest > budget_ms:
        raise SearchSpaceError(
            f"the budget {budget_ms:.3f} ms is below the smallest SubTransformer's predicted latency "
            f"({smallest:.3f} ms, {space.smallest()}): nothing in the space fits; raise the budget or add smaller "
            "choices to the space.")
    settings = {"space": space.to_dict(), "space_fingerprint": space.fingerprint(), "budget_ms": budget_ms,
                "spec": predictor.spec.to_dict(), "population": population, "parents": parents,
                "mutations": mutations, "crossovers": crossovers, "mutation_probability": mutation_probability,
                "seed": seed}
    path = Path(state_path) if state_path else None
    state = _resumed(path, settings) or {"history": [], "population": [], "generation": 0, "seconds": 0.0,
                                         "best_per_generation": []}
    history = [Candidate.from_dict(c) for c in state["history"]]
    scored: dict[SubTransformer, Candidate] = {c.sub: c for c in history}
    genes = [tuple(g) for g in state["population"]]
    generation, seconds = state["generation"], state["seconds"]
    best_per_generation: list[float] = state["best_per_generation"]

    def score(gene: tuple) -> Candidate:
        sub = space.decode(gene)
        if sub not in scored:
            scored[sub] = Candidate(sub, predictor.predict(sub), float(fitness(sub)))
            history.append(scored[sub])
        return scored[sub]

    while generation < iterations:
        started = time.perf_counter()
        rng = random.Random(f"{seed}-{generation}")  # per generation: a resumed search draws the same candidates
        genes = _breed(space, predictor, budget_ms, genes, score, rng, generation == 0, population, parents,
                       mutations, crossovers, mutation_probability)
        for gene in genes:
            score(gene)
        best = max((scored[space.decode(g)] for g in genes), key=lambda c: (c.fitness, -c.predicted_ms))
        best_per_generation.append(best.fitness)
        generation += 1
        seconds += time.perf_counter() - started
        if path is not None:
            write_json(path, {"settings": settings, "generation": generation, "seconds": seconds,
                              "population": [list(g) for g in genes], "history": [c.to_dict() for c in history],
                              "best_per_generation": best_per_generation})
        if progress is not None:
            progress(generation, best)
    best = max((scored[space.decode(g)] for g in genes), key=lambda c: (c.fitness, -c.predicted_ms))
    return SearchResult(best, budget_ms, history, best_per_generation, seconds)


def _resumed(path: Path | None, settings: dict) -> dict | None:
    """The saved state of a search at `path` (None when there is none); refused when its settings differ."""
    if path is None or not path.is_file():
        return None
    state = json.loads(path.read_text())
    if "spec" in state["settings"]:  # a state written before LatencySpec.attention existed reads as decomposed
        state["settings"]["spec"] = LatencySpec.from_dict(state["settings"]["spec"]).to_dict()
    changed = sorted(k for k in settings if state["settings"].get(k) != settings[k])
    if changed:
        raise SearchSpaceError(
            f"{path} holds a search with other settings ({', '.join(changed)} changed); a search resumes only "
            "with the same space, budget, latency setting and evolution settings. Use a new state file.")
    return state


def _breed(space: SearchSpace, predictor: LatencyPredictor, budget_ms: float, genes: list[tuple],
           score: Callable[[tuple], Candidate], rng: random.Random, first: bool, population: int, parents: int,
           mutations: int, crossovers: int, mutation_probability: float) -> list[tuple]:
    """The next generation under the budget: `population` random genes first, then the `parents` fittest with their
    mutants and crossovers."""
    if first:
        return [_draw(lambda: space.random_gene(rng), space, predictor, budget_ms) for _ in range(population)]
    ranked = sorted(genes, key=lambda g: (score(g).fitness, -score(g).predicted_ms), reverse=True)
    top = ranked[:parents]
    children = [_draw(lambda: space.mutate(rng.choice(top), rng, mutation_probability), space, predictor,
                      budget_ms) for _ in range(mutations)]
    children += [_draw(lambda: space.crossover(rng.choice(top), rng.choice(top), rng), space, predictor,
                       budget_ms) for _ in range(crossovers)]
    return top + children


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates no other one beats on both predicted latency (lower) and fitness (higher), fastest first."""
    front, best_fitness = [], float("-inf")
    for c in sorted(candidates, key=lambda c: (c.predicted_ms, -c.fitness)):
        if c.fitness > best_fitness:
            front.append(c)
            best_fitness = c.fitness
    return front


def plot_search(result: SearchResult, path: str | os.PathLike, title: str = "", fitness_name: str = "fitness",
                reference: tuple[float, float, str] | None = None) -> None:
    """Save a PNG: every candidate scored (predicted latency vs fitness), the Pareto front, the budget and the
    chosen SubTransformer; `reference` = (ms, fitness, label) marks e.g. the full model."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plotting the search needs matplotlib: pip install matplotlib") from error

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([c.predicted_ms for c in result.history], [c.fitness for c in result.history], s=12, alpha=0.4,
               color="tab:gray", label=f"candidates scored ({len(result.history)})")
    front = pareto_front(result.history)
    ax.plot([c.predicted_ms for c in front], [c.fitness for c in front], "-o", ms=4, color="tab:blue",
            label="Pareto front")
    ax.axvline(result.budget_ms, color="tab:red", ls="--", label=f"budget {result.budget_ms:.2f} ms")
    ax.scatter([result.best.predicted_ms], [result.best.fitness], s=120, marker="*", color="tab:red", zorder=5,
               label="chosen")
    if reference is not None:
        ax.scatter([reference[0]], [reference[1]], s=60, marker="s", color="black", zorder=5, label=reference[2])
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel(fitness_name)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)

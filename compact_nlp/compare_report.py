"""The files `compact bench` writes (compact_nlp.compare): OUT.json, OUT.md and three plots, OUT_pareto.png (dev
metric vs latency), OUT_size.png and OUT_length.png (latency vs sequence length)."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import numpy as np

from .compare_peers import ORT_FP32, PEERS, PYTORCH
from .io import atomic_path, write_json, write_text


def measured(results: dict) -> dict:
    """The rows that were measured (a peer whose environment is missing or failed is skipped with the reason)."""
    return {name: r for name, r in results["rows"].items() if "skipped" not in r}


def faster_peer(results: dict, key: str | None = None) -> str:
    """The fastest peer of the run at `key` (default: real lengths, the first thread count), whichever runtime."""
    key = key or f"real_{results['threads'][0]}t"
    timed = {n: r for n, r in measured(results).items() if r.get("kind", "peer" if n in PEERS else "") == "peer"
             and key in r["latency"]}
    return min(timed, key=lambda n: timed[n]["latency"][key]["median_ms"])


def _ms(results: dict, name: str, key: str) -> float | None:
    stats = results["rows"][name]["latency"].get(key)
    return stats["median_ms"] if stats else None


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def _label(name: str, row: dict) -> str:
    return f"{name} †" if row.get("timed") == "own process" else name


def _fidelity_cell(row: dict) -> str:
    value = row.get("fidelity")
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if row.get("fidelity_metric", "").startswith("argmax") else f"{value:.4f}"


def _resource_cells(row: dict) -> str:
    if row.get("load_s") is None:
        return "n/a ¹ | n/a ¹ |"
    return f"{row['load_s']:.2f} | {row['peak_rss_mb']:.0f} |"


def _header(results: dict, peer: str) -> list[str]:
    rows, metric = results["rows"], results["metric"]
    first = results["threads"][0]
    runtimes = sorted({r["runtime"] for r in rows.values() if r.get("timed") == "own process" and r.get("runtime")})
    return [
        f"# compact bench: {results['task']}, every way to ship the fine-tuned model, side by side (one run)",
        "",
        f"Dev {metric} on all {results['dev_examples']} dev examples, mean +- sd over seeds {results['seeds']}. "
        f"Latency: batch 1, median ms; 'real' = the first {results['real_length_examples']} dev inputs at their own "
        f"lengths ({results['mean_real_tokens']} tokens on average, unpadded); "
        f"{'/'.join(map(str, results['lengths']))} = one input of that many real tokens (joined dev texts), "
        f"{results['rounds']} rounds x {results['calls_per_round']} calls. "
        f"Fidelity: {rows[PYTORCH].get('fidelity_metric', 'agreement with fp32')} (PyTorch fp32's predictions) on "
        f"the {results['real_length_examples']} timed inputs. "
        f"The fastest peer at real lengths, {first} thread(s), is **{peer}**: 'x faster than fastest peer' is against "
        f"it. Machine: {results['machine'].get('cpu', '')} {results['machine']['platform']}, "
        f"{results['machine']['cores']} cores."
        + (f" Optimum rows: {', '.join(f'{k} {v}' for k, v in results['optimum_versions'].items())}, in its own "
           "environment." if results.get("optimum_versions") else "")
        + (f" Peers in their own environments: {'; '.join(runtimes)}." if runtimes else ""),
        "",
    ]


def _main_table(results: dict) -> list[str]:
    rows, metric = results["rows"], results["metric"]
    peer = faster_peer(results)
    fp32_mb = rows[ORT_FP32]["size_mb"]
    fp32_dev = rows[PYTORCH]["dev"]["mean"]
    first, others = f"real_{results['threads'][0]}t", [f"real_{t}t" for t in results["threads"][1:]]
    lines = _header(results, peer) + [
        f"| variant | dev {metric} | vs fp32 | agrees with fp32 | file | MB | smaller than ORT fp32 | "
        f"real, {first[5:-1]} thread(s) | x faster than fastest peer | x faster than PyTorch | "
        + "".join(f"real, {k[5:-1]} threads | " for k in others) + "load s | peak RAM MB |",
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(others) + "---|---|",
    ]
    for name, r in rows.items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} |" + " |" * (10 + len(others)))
            continue
        dev = r["dev"]
        spread = f"+- {dev['sd']:.2f}" if len(dev["values"]) > 1 else f"(seed {dev.get('seeds', results['seeds'])[0]})"
        lines.append(
            f"| {_label(name, r)} | {dev['mean']:.2f} {spread} | {dev['mean'] - fp32_dev:+.2f} | {_fidelity_cell(r)} | "
            f"{r['file']} | {r['size_mb']} | {fp32_mb / r['size_mb']:.1f}x | {_ms(results, name, first)} | "
            f"{_ratio(_ms(results, peer, first), _ms(results, name, first))} | "
            f"{_ratio(_ms(results, PYTORCH, first), _ms(results, name, first))} | "
            + "".join(f"{_ms(results, name, k) or 'n/a'} | " for k in others) + _resource_cells(r))
    return lines + _footnotes(results)


def _footnotes(results: dict) -> list[str]:
    rows = results["rows"]
    notes = [""]
    if any(r.get("timed") == "own process" for r in rows.values()):
        notes.append("† Timed in its own process, in its runtime's own environment (compact_nlp.peers.workers), "
                     "after the interleaved rows and by the same loop and statistic (each timed input's fastest "
                     "of the same number of passes; rounds x calls on each long input): NOT interleaved with the other rows, so drift "
                     "on the machine between them is not cancelled out. It runs the same fine-tuned fp32 model, "
                     "converted by its runtime's own recipe; its dev metric comes from its own predictions on "
                     "every dev input (batch 1, unpadded); load time and peak RAM from a fresh process of its "
                     "worker loading the converted files.")
    missing = {name: r.get("load_note") or "not measured" for name, r in measured(results).items()
               if r.get("load_s") is None}
    if missing:
        notes.append("¹ n/a: " + "; ".join(f"{name}: {why}" for name, why in missing.items()) + ".")
    skipped = {name: r["skipped"] for name, r in rows.items() if "skipped" in r}
    if skipped:
        notes.append("Skipped peers: " + "; ".join(f"{name}: {why}" for name, why in skipped.items()) + ".")
    return notes


def _long_inputs_table(results: dict) -> list[str]:
    rows = measured(results)
    settings = [(n, t) for n in results["lengths"] for t in results["threads"]]
    keys = [f"{n}_{t}t" for n, t in settings]
    fastest = {key: faster_peer(results, key) for key in keys}
    lines = ["", "Long inputs (real tokens, no padding): median ms (x faster than the fastest peer at that setting).",
             "", "| variant | " + " | ".join(f"{n} tok, {t} thr" for n, t in settings) + " |",
             "|---|" + "---|" * len(keys)]
    for name, r in rows.items():
        cells = [f"{_ms(results, name, key)} ({_ratio(_ms(results, fastest[key], key), _ms(results, name, key))})"
                 if key in r["latency"] else "n/a" for key in keys]
        lines.append(f"| {_label(name, r)} | " + " | ".join(cells) + " |")
    lines += ["", "Fastest peer at each setting: " + "; ".join(f"{key}: {name}" for key, name in fastest.items()) + "."]
    floors = [r["latency"][k]["noise_floor"] for r in rows.values() for k in keys if k in r["latency"]]
    lines += ["", f"Repeat-noise floor of the long-input medians (spread of round medians / median): "
                  f"median {statistics.median(floors):.0%}, max {max(floors):.0%}.", ""]
    return lines


def markdown(results: dict) -> str:
    return "\n".join(_main_table(results) + _long_inputs_table(results))


def _pareto_plot(results: dict, stem: Path, plt, ticker, colors) -> Path:
    rows, metric = results["rows"], results["metric"]
    legend_rows = (len(rows) + 2) // 2  # the legend below the axes, 2 columns, the Pareto front included
    figure, axis = plt.subplots(figsize=(9, 5 + 0.22 * legend_rows))  # accuracy vs latency: up and left is better
    first = results["threads"][0]
    points = [(r["latency"][f"real_{first}t"]["median_ms"], r["dev"]["mean"], name) for name, r in rows.items()]
    for number, ((x, y, name), color) in enumerate(zip(points, colors), 1):
        # points are numbered, names go in the legend: clustered rows' names would print over each other
        axis.errorbar(x, y, yerr=rows[name]["dev"]["sd"], fmt="o", capsize=3, color=color, label=f"{number}. {name}")
        axis.annotate(str(number), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
    front, best = [], -1e9
    for x, y, _ in sorted(points):
        if y > best:
            front.append((x, y))
            best = y
    axis.plot(*zip(*front), "--", color="grey", linewidth=1, label="Pareto front")
    axis.set_xscale("log")
    for ticks in (axis.xaxis.set_major_formatter, axis.xaxis.set_minor_formatter):  # 2, 3, 4 ms, not 2x10^0
        ticks(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_xlabel(f"latency, batch 1, real dev lengths, {first} thread(s) (ms, log scale)")
    axis.set_ylabel(f"dev {metric} (mean over seeds)")
    axis.set_title(f"{results['task']}: accuracy vs latency")
    figure.legend(*axis.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
    figure.tight_layout(rect=(0, 0.045 * legend_rows * 5 / (5 + 0.22 * legend_rows), 1, 1))
    return _save(figure, stem, "pareto")


def _size_plot(results: dict, stem: Path, plt) -> Path:
    rows = results["rows"]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    names = list(rows)
    axis.barh(names, [rows[n]["size_mb"] for n in names])
    for i, n in enumerate(names):
        axis.text(rows[n]["size_mb"], i, f" {rows[n]['size_mb']} MB ({rows[n]['file']})", va="center", fontsize=7)
    axis.set_xlabel("size of the file that ships (MB)")
    axis.invert_yaxis()
    axis.set_title(f"{results['task']}: size")
    figure.tight_layout()
    return _save(figure, stem, "size")


def _length_plot(results: dict, stem: Path, plt, colors) -> Path:
    rows = results["rows"]
    figure, axes = plt.subplots(1, len(results["threads"]), figsize=(11, 6), sharey=True)
    for axis, n_threads in zip(np.atleast_1d(axes), results["threads"]):
        axis.set_prop_cycle(color=colors)
        for name, r in rows.items():
            xs = [results["mean_real_tokens"], *results["lengths"]]
            ys = [r["latency"][f"real_{n_threads}t"]["median_ms"],
                  *[r["latency"][f"{n}_{n_threads}t"]["median_ms"] for n in results["lengths"]]]
            axis.plot(xs, ys, "o-", label=name, linewidth=2.5 if name.startswith("combined") else 1)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("real tokens in the input (first point: dev mean)")
        axis.set_title(f"{n_threads} thread{'s' if n_threads > 1 else ''}")
    np.atleast_1d(axes)[0].set_ylabel("latency, batch 1 (ms, log scale)")
    figure.legend(*np.atleast_1d(axes)[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)
    figure.suptitle(f"{results['task']}: how cost grows with the input length")
    figure.tight_layout(rect=(0, 0.14 + 0.02 * (len(rows) // 3), 1, 1))  # room below for the legend
    return _save(figure, stem, "length")


def plots(results: dict, stem: Path) -> list[Path]:
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("the bench's plots need matplotlib: pip install matplotlib") from error

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    results = {**results, "rows": measured(results)}  # a skipped peer has no point to plot
    rows = results["rows"]
    # one color per row, the same in the Pareto and length plots (tab10 would repeat past 10 rows)
    colors = plt.cm.tab20(np.linspace(0, 1, 20))[:len(rows)] if len(rows) > 10 else plt.cm.tab10.colors[:len(rows)]
    written = [_pareto_plot(results, stem, plt, matplotlib.ticker, colors), _size_plot(results, stem, plt),
               _length_plot(results, stem, plt, colors)]
    plt.close("all")
    return written


def _save(figure, stem: Path, kind: str) -> Path:
    path = stem.with_name(f"{stem.name}_{kind}.png")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    return path


def write_report(results: dict, out: str | os.PathLike) -> list[Path]:
    """OUT.json, OUT.md and the plots (OUT_pareto.png, OUT_size.png, OUT_length.png)."""
    stem = Path(out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_json(stem.with_name(stem.name + ".json"), results)
    write_text(stem.with_name(stem.name + ".md"), markdown(results))
    return [stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md"), *plots(results, stem)]

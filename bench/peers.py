"""Every int8 runtime a user could pick instead of compact, on the original all-MiniLM-L6-v2 (offline, from the
`compact-nlp[models]` package), measured by compact_nlp.peers.measure_int8_peers: batch 1, 1 thread, real SST-2 dev
sentences at their own lengths, and inputs of exactly 128 / 256 real tokens (consecutive dev sentences joined, then
cut). Fidelity: cosine of mean-pooled embeddings to PyTorch fp32 (mean / min). Latency is also given as a ratio of
ORT dynamic int8 (quantize_dynamic defaults) in the same setting; ORT and Optimum are interleaved in one process, the
other peers time themselves in their own processes one after another (not interleaved).

    bash bench/peers_setup.sh                      # once: the peer environments under /work/peer-envs
    .venv/bin/python bench/peers.py [--sentences 200] [--long 24] [--rounds 3] [--out bench/results/peers]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from compact_nlp.bench import real_sentences
from compact_nlp.io import write_json, write_text
from compact_nlp.peers import ORT_DYNAMIC, measure_int8_peers
from compact_nlp.pretrained import DEFAULT_MODEL, MIRRORS


def long_texts(tokenizer, sentences: list[str], length: int, count: int) -> list[str]:
    """`count` texts of at least `length` tokens, each consecutive dev sentences joined (cut to `length` later)."""
    texts, i = [], 0
    for _ in range(count):
        text = ""
        while len(tokenizer(text)["input_ids"]) < length:
            text, i = f"{text} {sentences[i % len(sentences)]}", i + 1
        texts.append(text.strip())
    return texts


def cpu_name() -> str:
    lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), platform.machine())


def table(settings: dict[str, list[dict]]) -> str:
    names = list(dict.fromkeys(r["name"] for rows in settings.values() for r in rows))
    head = "| runtime | " + " | ".join(f"{s}: ms (x ORT int8) | {s}: cosine mean / min" for s in settings) + " | MB |"
    lines = [head, "|---|" + "---|---|" * len(settings) + "---|"]
    for name in names:
        cells, size = [], ""
        for rows in settings.values():
            r = next((r for r in rows if r["name"] == name), None)
            ort = next(r for r in rows if r["name"] == ORT_DYNAMIC)
            if r is None or not r["available"]:
                cells += [f"skipped: {r['reason'][:120] if r else 'not run'}", ""]
                continue
            cells += [f"{r['median_ms']:.2f} ({r['median_ms'] / ort['median_ms']:.2f})",
                      f"{r['fidelity']:.4f} / {r['fidelity_min']:.4f}"]
            size = r["size_mb"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {size} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--long", type=int, default=24, help="inputs per long length")
    parser.add_argument("--lengths", type=int, nargs="*", default=[128, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="bench/results/peers")
    args = parser.parse_args(argv)
    model = MIRRORS[DEFAULT_MODEL].path()
    tokenizer = AutoTokenizer.from_pretrained(model)
    sentences, source = real_sentences(limit=None)
    inputs = {"real lengths": (sentences[:args.sentences], 512)}
    inputs.update({f"{n} tokens": (long_texts(tokenizer, sentences, n, args.long), n) for n in args.lengths})
    settings, started = {}, time.time()
    for setting, (texts, max_length) in inputs.items():
        print(f"[peers] {setting}: {len(texts)} inputs", file=sys.stderr, flush=True)
        rows = measure_int8_peers(model, texts, threads=1, output="last_hidden_state", rounds=args.rounds,
                                  max_length=max_length)
        settings[setting] = [asdict(r) for r in rows]
    results = {"model": f"{DEFAULT_MODEL} ({model})", "text": source, "sentences": args.sentences,
               "long_inputs": args.long, "rounds": args.rounds, "threads": 1, "batch": 1,
               "cpu": cpu_name(), "cores": len(__import__("os").sched_getaffinity(0)),
               "python": platform.python_version(), "minutes": round((time.time() - started) / 60, 1),
               "settings": settings}
    markdown = (f"# Int8 peers on {DEFAULT_MODEL} (bench/peers.py)\n\nBatch 1, 1 thread, {results['cpu']}. Real "
                f"lengths: the first {args.sentences} {source} sentences; N tokens: {args.long} inputs of N real "
                f"tokens (joined dev sentences). Median of {args.rounds} passes; x ORT int8 = ratio to ORT dynamic "
                "int8 (quantize_dynamic defaults) in the same setting. ORT rows are interleaved in one process; "
                "the other peers time themselves in their own process (not interleaved). Cosine: mean-pooled "
                "embeddings vs PyTorch fp32.\n\n" + table(settings) + "\n\nRuntimes: " +
                "; ".join(f"{r['name']}: {r['runtime']}" for r in settings["real lengths"] if r["runtime"]) + "\n")
    write_json(Path(args.out + ".json"), results)
    write_text(Path(args.out + ".md"), markdown)
    print(markdown)


if __name__ == "__main__":
    main()

"""STS-B dev for a `compact compress --task embeddings` run: the shipped model and the original side by side, the
Spearman of their cosine similarities against STS-B's gold scores, and latency at STS-B's real lengths against the
original on ORT fp32 and ORT dynamic int8 (compact_nlp.embeddings_measure, the same measurement as `compact embed`).
compress chose its plan on held-out sentences of the user's own text and never saw STS-B dev; this reads it once.

    python bench/compress_embed_stsb.py OUT [--original MODEL] [--glue-dir DIR] [--name compress_embeddings_stsb]
Writes bench/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compact_nlp.embeddings_measure import markdown, measure, sentence_transformers_check
from compact_nlp.embeddings_text import sts_pairs
from compact_nlp.glue import default_glue_dir
from compact_nlp.io import write_json, write_text
from compact_nlp.pretrained import resolve_checkpoint

RESULTS = Path(__file__).parent / "results"
MAX_LENGTH = 128  # what compress --task embeddings ships with (embed_job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the compress run's OUT (its model/ is what shipped)")
    parser.add_argument("--original", default="sentence-transformers/all-MiniLM-L6-v2", help="the run's MODEL")
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--name", default="compress_embeddings_stsb")
    args = parser.parse_args()
    compress = json.loads((args.out / "report.json").read_text())
    shipped = args.out / "model"
    first, second, scores = sts_pairs(args.glue_dir or default_glue_dir())
    sentences = list(dict.fromkeys(first + second))
    report = measure(str(resolve_checkpoint(args.original)), shipped, shipped, sentences, "STS-B dev",
                     max_length=MAX_LENGTH, pairs=(first, second, scores))
    chosen = compress["chosen"][0]["plan"]
    text = next(n for n in compress["notes"] if n.startswith("training text: ")).removeprefix("training text: ")
    report.update(model=args.original, layers=chosen["layers"], training_text=text,
                  epochs=compress["training"]["epochs"] * chosen["training"],
                  training_sentences=compress["training"]["train_subset"],
                  sentence_transformers=sentence_transformers_check(shipped, sentences[:200], MAX_LENGTH),
                  compress_run=args.out.name, compress_status=compress["status"], compress_chosen=chosen["label"],
                  compress_final=compress["final"])
    write_json(RESULTS / f"{args.name}.json", report)
    write_text(RESULTS / f"{args.name}.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()

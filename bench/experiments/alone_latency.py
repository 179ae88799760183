"""One `.onnx`/`.ort` file timed alone in a fresh process at SST-2 dev's real lengths (batch 1, 1 thread, the first
200 dev sentences, one pass per round after a warm-up of 20): the check behind docs/results.md's note on how
`compact bench` interleaves its rows.

    OMP_NUM_THREADS=1 python bench/experiments/alone_latency.py FILE=TOKENIZER_FOLDER [...] [--glue-dir DIR]
Prints each file's median ms per pass.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer

from compact_nlp.glue import default_glue_dir, load_glue
from compact_nlp.runtime import session_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", metavar="FILE=TOKENIZER_FOLDER")
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dev = load_glue("sst2", args.glue_dir or default_glue_dir())["validation"]["sentence"][:200]
    for item in args.files:
        path, tokenizer_folder = item.split("=", 1)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
        session = ort.InferenceSession(path, session_options(1, spinning=False), providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        feeds = [{k: v.astype(np.int64) for k, v in tokenizer(text, return_tensors="np", truncation=True,
                                                              max_length=128).items() if k in names} for text in dev]
        for feed in feeds[:20]:
            session.run(None, feed)
        medians = []
        for _ in range(args.rounds):
            times = []
            for feed in feeds:
                start = time.perf_counter()
                session.run(None, feed)
                times.append((time.perf_counter() - start) * 1e3)
            medians.append(round(statistics.median(times), 3))
        print(path, "median ms per pass:", medians)


if __name__ == "__main__":
    main()

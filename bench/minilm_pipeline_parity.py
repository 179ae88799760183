"""The real all-MiniLM-L6-v2 through compact, end to end (issue 2's acceptance check), written to bench/results/.

Converts the offline MiniLM to CompactBert, exports model.onnx and model.ort (arm), loads both back, and runs
`pipeline("feature-extraction")` with the PyTorch and the ONNX Runtime backend on real SST-2 dev sentences; also
compares CompactBert's pipeline with transformers' own BertModel pipeline on the same sentences.

    python bench/minilm_pipeline_parity.py [--glue-dir DIR] [--sentences 300]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from transformers import AutoModel, AutoTokenizer, pipeline

from compact_nlp import AutoCompactModel, export_model
from compact_nlp.bench import feature_agreement, pipeline_agreement, real_sentences
from compact_nlp.glue import default_glue_dir
from compact_nlp.io import write_json, write_text
from compact_nlp.pretrained import DEFAULT_MODEL, resolve_checkpoint

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    glue_dir = args.glue_dir or default_glue_dir()
    if glue_dir is None:
        raise SystemExit("needs GLUE data: pass --glue-dir or set COMPACT_GLUE_DIR")

    sentences, source = real_sentences(glue_dir, limit=args.sentences)
    folder = Path(tempfile.mkdtemp(prefix="compact-minilm-"))
    report = export_model(AutoCompactModel.from_pretrained(DEFAULT_MODEL), folder,
                          tokenizer_source=resolve_checkpoint(DEFAULT_MODEL), mobile=True, target_platform="arm")
    rows = {name: pipeline_agreement(folder, sentences, file_name=name) for name in ("model.onnx", "model.ort")}

    # CompactBert (PyTorch) against transformers' own model, through the same pipeline
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ours = pipeline("feature-extraction", model=AutoCompactModel.from_pretrained(folder), tokenizer=tokenizer)(sentences)
    theirs = pipeline("feature-extraction", model=AutoModel.from_pretrained(resolve_checkpoint(DEFAULT_MODEL)),
                      tokenizer=tokenizer)(sentences)
    rows["CompactBert vs transformers (PyTorch)"] = feature_agreement(theirs, ours)

    results = {"model": DEFAULT_MODEL, "text": source, "export_report": {k: report[k] for k in (
        "onnx_parity", "ort_parity", "size_mb", "ort_mobile", "mobile_usability")}, "pipeline_agreement": rows}
    out = Path(args.out)
    write_json(out / "minilm_pipeline_parity.json", results)
    lines = [f"# all-MiniLM-L6-v2 through compact: pipeline(\"feature-extraction\") on {len(sentences)} {source} sentences",
             "", "| compared | max abs diff (token embeddings) | min cosine (mean-pooled) | mean cosine |",
             "|---|---|---|---|"]
    for name, row in rows.items():
        label = f"ORT {name} vs PyTorch CompactBert" if name.startswith("model.") else name
        lines.append(f"| {label} | {row['max_abs_diff']:.2e} | {row['min_cosine']:.10f} | {row['mean_cosine']:.10f} |")
    lines += ["", f"Sizes (MB): {report['size_mb']}. Export parity on random + padded batches: ONNX "
              f"{report['onnx_parity']['max_abs_diff']:.2e}, .ort {report['ort_parity']['max_abs_diff']:.2e}. "
              f"Mobile usability (onnxruntime): {report['mobile_usability']['verdict']}.", ""]
    write_text(out / "minilm_pipeline_parity.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

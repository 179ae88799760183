"""The files of a quantized folder besides the graph (tokenizer, config.json with the quant section, the PyTorch
weights) and the checks written beside it: which vocabulary ships, how closely the quantized file follows fp32."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from compact_nlp.io import atomic_path, save_pretrained_atomic, write_json

from .config import Int8Config
from .vocab import VocabularyTrimError, trimmed_tokenizer, used_token_ids


def _input_names(path: Path) -> list[str]:
    import onnx

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def trim_plan(config: Int8Config, tokenizer, vocabulary_texts: Iterable | None):
    """(kept token ids, the tokenizer the quantized folder ships): all ids and the same tokenizer unless trimming."""
    if not config.trim_vocabulary:
        return None, tokenizer
    texts = list(vocabulary_texts or [])
    if not texts:
        raise VocabularyTrimError("trim_vocabulary needs the task's training text (vocabulary_texts=): the kept "
                                  "pieces are the ones it uses.")
    keep_ids = used_token_ids(tokenizer, texts)
    return keep_ids, trimmed_tokenizer(tokenizer, keep_ids)


def write_folder_files(src: Path, out: Path, config: Int8Config, tokenizer) -> None:
    """The shipped tokenizer and config.json (with the Int8Config under `quant`, and the trimmed vocabulary)."""
    save_pretrained_atomic(tokenizer, out)
    model_config = json.loads((src / "config.json").read_text())
    model_config["quant"] = {config.section: config.to_dict()}
    model_config["vocab_size"] = len(tokenizer)
    model_config["pad_token_id"] = tokenizer.pad_token_id
    write_json(out / "config.json", model_config)


def write_pytorch_weights(src: Path, out: Path, trimmed: bool) -> None:
    """model.safetensors beside a QAT or binary graph: the fp32 copy the graph was exported from, whose weights sit
    exactly on their trained grids (int8 codes x scale, or +-alpha), so AutoCompactModel loads the model that ships.
    Skipped with a trimmed vocabulary: the shipped config.json counts the kept rows, the table has them all."""
    if trimmed:
        return
    with atomic_path(out / "model.safetensors") as tmp:
        shutil.copyfile(src / "model.safetensors", tmp)


def agreement(reference: Path, candidate: Path, feeds: list[dict], candidate_feeds: list[dict] | None = None) -> dict:
    """How closely the quantized file follows the fp32 one on real inputs: max |diff| of the outputs and, for
    classifiers, how often the argmax agrees. candidate_feeds: the same examples through the candidate's own
    tokenizer (a trimmed vocabulary)."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (reference, candidate)]
    diffs, same = [], []
    for feed, candidate_feed in zip(feeds, candidate_feeds or feeds):
        a, b = sessions[0].run(None, feed)[0], sessions[1].run(None, candidate_feed)[0]
        diffs.append(float(np.abs(a - b).max()))
        if a.ndim == 2 and a.shape[-1] > 1:
            same.append(bool((a.argmax(-1) == b.argmax(-1)).all()))
    result = {"examples": len(feeds), "max_abs_diff": max(diffs) if diffs else None,
              "median_abs_diff": float(np.median(diffs)) if diffs else None}
    if same:
        result["argmax_agreement"] = round(sum(same) / len(same), 4)
    return result

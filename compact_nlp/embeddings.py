"""`compact embed`: compress a sentence-embedding model (all-MiniLM-L6-v2) without labels, and measure its fidelity.

In OUT/ (each step is skipped when its result is there; training resumes from its last Trainer checkpoint):
    1. student/    the teacher with fewer layers (`layers` of them, spread over the depth as HAT's layer selection
                   does: for 4 of 6, layers 1, 2, 3, 5), distilled on unlabelled text only: the student's normalized
                   mean-pooled embedding learns the teacher's (squared distance, as Reimers & Gurevych 2020 distil
                   sentence embeddings), through CompactTrainer with EmbeddingDistillationHook;
    2. model/      what ships: int8 (compact_nlp.quant, dynamic activations, per-channel weights, int8 word
                   embeddings) model.onnx + model.ort, plus the student's PyTorch weights and the sentence-transformers
                   files (modules.json, 1_Pooling, 2_Normalize), so `SentenceTransformer(OUT/model)` loads it;
    3. report.json / report.md   fidelity on real pairs (STS-B dev: Spearman of cosine similarity, before and after,
                   and the mean cosine between original and compressed embeddings) and latency at batch 1 on the dev
                   sentences' real, unpadded lengths, side by side with the original (PyTorch and ORT fp32) and the
                   peer int8 (quantize_dynamic of the original's graph).
The training text (`text="glue"`) never includes STS-B dev: it is the train splits of STS-B, SST-2, MRPC and CoLA.
Without GLUE data, `text="python-docs"` (what `compact demo` runs offline) distils on real English prose that every
CPython install carries under the PSF License: Python's Language Reference topics and its standard library's
docstrings. Fidelity is then the cosine to the original on 1,000 of those sentences held out of training; STS-B
Spearman needs STS-B dev and is left out, and the report says so. Your own text (`text=` a CSV/TSV/JSON/JSONL/Parquet
file, a folder saved with save_to_disk, a hub id or a datasets object, with `text_column=` unless it has one string
column) is read the same way: its distinct sentences, shuffled with the seed, 1,000 held out (a tenth when it has
fewer than 10,000) for the fidelity measure and the rest to train on.

The text comes from compact_nlp.embeddings_text, the measuring and the report from compact_nlp.embeddings_measure.

Of compact's three techniques this uses depth reduction and int8: the HAT search needs a fitness, and for an embedding
model without labels that would be the held-out cosine of a trained SuperTransformer, not built yet; token pruning
changes which tokens the mean pools over.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .auto import AutoCompactModel
from .data.sources import describe
from .embeddings_measure import (encode_all, markdown, measure, sentence_transformers_check,  # noqa: F401
                                 spearman_of_cosine)
from .embeddings_text import (PYTHON_DOCS_HELD_OUT, PYTHON_DOCS_SOURCE, python_docs_sentences,  # noqa: F401
                              python_docs_split, source_split, sts_pairs, training_texts)
from .distributed import on_main, per_process, uses_cuda
from .export import export_model
from .hat import SearchSpace
from .io import save_pretrained_atomic, write_json, write_text
from .modeling import CompactBertConfig, mean_pool
from .pretrained import resolve_checkpoint
from .quant import Int8Config, quantize_folder
from .shrink import shrink
from .trainer import CompactHook, CompactTrainer, remove_checkpoints

BUILT_IN_TEXTS = ("glue", "python-docs")
SENTENCE_TRANSFORMERS_FILES = {  # written in this order; modules.json, last, marks the folder complete
    "sentence_bert_config.json": {"max_seq_length": None, "do_lower_case": False},  # None: the job's max_length
    "modules.json": [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ],
}


class EmbeddingDistillationHook(CompactHook):
    """The student's normalized mean-pooled embedding learns the teacher's: the squared distance between them
    (2 - 2 cos), averaged over the batch. Unlabelled text is all it needs."""

    def __init__(self, teacher, weight: float = 1.0):
        self.teacher = teacher.eval()
        self.weight = weight

    def loss_terms(self, model, inputs, outputs) -> dict:
        features = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        device = outputs.last_hidden_state.device
        if next(self.teacher.parameters()).device != device:  # the Trainer moves the student, not the hook's teacher
            self.teacher.to(device)
        with torch.no_grad():
            target = self.teacher.sentence_embedding(**features, normalize=True)
        student = F.normalize(mean_pool(outputs.last_hidden_state, inputs["attention_mask"]), dim=-1)
        return {"embedding": self.weight * (student - target).pow(2).sum(-1).mean()}


def _student(teacher, teacher_source: str, layers: int):
    """The teacher with `layers` of its layers, spread over the depth as HAT's layer selection does."""
    total = teacher.config.num_hidden_layers
    if not 1 <= layers <= total:
        raise ValueError(f"layers={layers}: the model has {total}; keep between 1 and {total}.")
    keep = SearchSpace.from_model(teacher.config).layers_for(layers)  # HAT's spread selection
    return shrink(AutoCompactModel.from_pretrained(teacher_source), layers=[i for i in range(total) if i not in keep])


def distil_student(teacher_source: str, texts: list[str], out: Path, layers: int, epochs: float, batch_size: int,
                   learning_rate: float, max_length: int, seed: int, device: str = "auto") -> Path:
    """Step 1: the shallower student distilled on `texts` on `device` (compact_nlp.distributed.uses_cuda); returns
    its folder (skipped when it exists). Under several processes each trains and the main one saves."""
    import datasets
    from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    folder = out / "student"
    if (folder / "config.json").is_file():
        return folder
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(teacher_source)
    teacher = AutoCompactModel.from_pretrained(teacher_source).eval()
    student = _student(teacher, teacher_source, layers)
    rows = datasets.Dataset.from_dict({"text": texts}).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_length), batched=True, remove_columns=["text"])
    args = TrainingArguments(
        str(out / "checkpoints"), num_train_epochs=epochs, per_device_train_batch_size=per_process(batch_size),
        learning_rate=learning_rate, warmup_steps=0.1, weight_decay=0.01, save_strategy="steps", save_steps=200,
        save_total_limit=1, logging_steps=50, report_to=[], use_cpu=not uses_cuda(device), seed=seed,
        train_sampling_strategy="group_by_length", remove_unused_columns=False)
    trainer = CompactTrainer(model=student, args=args, train_dataset=rows, hooks=[EmbeddingDistillationHook(teacher)],
                             data_collator=DataCollatorWithPadding(tokenizer))
    interrupted = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
    trainer.train(resume_from_checkpoint=True if interrupted else None)
    on_main(save_student, tokenizer, trainer.model.to("cpu"), folder)
    on_main(remove_checkpoints, args.output_dir)
    return folder


def save_student(tokenizer, model, folder: Path) -> None:
    save_pretrained_atomic(tokenizer, folder)
    save_pretrained_atomic(model, folder)  # config.json last: a restart skips the step only when it is there


def ship_embeddings(student: Path, out: Path, texts: list[str], max_length: int) -> Path:
    """Step 2: int8 model.onnx + model.ort, the PyTorch weights and the sentence-transformers files in OUT/model."""
    folder = out / "model"
    if (folder / "modules.json").is_file():
        return folder
    with tempfile.TemporaryDirectory() as scratch:
        export_model(AutoCompactModel.from_pretrained(student).eval(), scratch, tokenizer_source=student, mobile=False)
        quantize_folder(scratch, folder, Int8Config(), texts=texts[:256], max_length=max_length, mobile=True)
    shutil.copyfile(student / "model.safetensors", folder / "model.safetensors")  # what sentence-transformers loads
    hidden = CompactBertConfig.from_pretrained(student).hidden_size
    write_json(folder / "1_Pooling" / "config.json", {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True})
    (folder / "2_Normalize").mkdir(exist_ok=True)
    for name, content in SENTENCE_TRANSFORMERS_FILES.items():  # modules.json last: a restart skips this step on it
        if name == "sentence_bert_config.json":  # sentence-transformers truncates where compact's runtime does
            content = {**content, "max_seq_length": max_length}
        write_json(folder / name, content)
    return folder


def job_texts(text, text_column: str | None, glue_dir: str | None, limit: int, seed: int) -> dict:
    """What the job trains on and measures with: {train, sentences (measured), pairs (STS-B dev, or None),
    source (the training text, for the report), name (the measured sentences, for the report)}."""
    if isinstance(text, str) and text == "glue":
        train, source = training_texts(glue_dir, limit, seed)
        first, second, scores = sts_pairs(glue_dir)
        return {"train": train, "sentences": list(dict.fromkeys(first + second)), "pairs": (first, second, scores),
                "source": source, "name": "STS-B dev"}
    if isinstance(text, str) and text == "python-docs":
        train, held_out = python_docs_split(limit, seed)
        return {"train": train, "sentences": held_out, "pairs": None, "source": PYTHON_DOCS_SOURCE,
                "name": "held-out Python documentation"}
    train, held_out, column = source_split(text, text_column, limit, seed)
    where = describe(text)  # a file's name, never its local path
    return {"train": train, "sentences": held_out, "pairs": None, "source": f"{where}, column {column}",
            "name": f"held-out {where}"}


def compress_embeddings(out: str | os.PathLike, model: str = "sentence-transformers/all-MiniLM-L6-v2",
                        glue_dir: str | None = None, layers: int = 4, texts: int = 40000, epochs: float = 1.0,
                        batch_size: int = 64, learning_rate: float = 1e-4, max_length: int = 128,
                        seed: int = 1, text="glue", text_column: str | None = None) -> dict:
    """The whole job (module docstring); returns the report, also written to OUT/report.{json,md}. `max_length` is
    held to what the model's position embeddings cover. `text`: "glue" (GLUE training text, STS-B dev fidelity),
    "python-docs" (offline: Python's documentation, held-out fidelity) or your own text (a file, a saved dataset
    folder, a hub id or a datasets object; `text_column` names its column unless it has one string column;
    held-out fidelity)."""
    out = Path(out)
    started = time.perf_counter()
    source = str(resolve_checkpoint(model))
    max_length = min(max_length, AutoCompactModel.from_pretrained(source).config.max_sequence_length)
    chosen = job_texts(text, text_column, glue_dir, texts, seed)
    train, sentences = chosen["train"], chosen["sentences"]
    student = distil_student(source, train, out, layers, epochs, batch_size, learning_rate, max_length, seed)
    shipped = ship_embeddings(student, out, train, max_length)
    report = measure(source, shipped, student, sentences, chosen["name"], max_length, pairs=chosen["pairs"])
    check = sentences[:200]
    report.update(model=model, layers=layers, training_text=chosen["source"], training_sentences=len(train),
                  epochs=epochs, sentence_transformers=sentence_transformers_check(shipped, check, max_length),
                  wall_minutes=round((time.perf_counter() - started) / 60, 1))
    write_json(out / "report.json", report)
    write_text(out / "report.md", markdown(report))
    return report

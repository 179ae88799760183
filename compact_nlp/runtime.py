"""ONNX Runtime-backed models that stand in for the PyTorch ones, in pipelines and in user code.

`ORTModelForFeatureExtraction` / `ORTModelForSequenceClassification` (Optimum's names) take the same call as
`CompactBertModel` / `CompactBertForSequenceClassification` and return the same output classes, so
`transformers.pipeline("feature-extraction" | "text-classification", model=ort_model, tokenizer=...)` works.
They load `model.onnx` or `model.ort` from a compact folder; with `export=True` they export one first.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from .convert import load_compact
from .export import export_model
from .export.inputs import MAX_BATCH_TOKENS, as_int64, check_feed, plan_chunks, run_chunks
from .io import atomic_path, push_folder, save_pretrained_atomic
from .modeling import (
    CompactBertConfig,
    CompactBertForSequenceClassification,
    CompactBertModel,
    check_inputs,
    check_layer_count,
    mean_pool,
)
from .pretrained import CorruptFileError, NoSuchFolderError, resolve_checkpoint

ONNX_FILE, ORT_FILE = "model.onnx", "model.ort"


def session_options(threads: int | None = None, spinning: bool = True):
    """ORT session options. spinning=False: idle worker threads sleep instead of spinning, which a benchmark that
    keeps several multi-threaded sessions open side by side needs (their spinning workers would share the cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class ORTModel:
    """An ONNX Runtime session with the calling convention of the PyTorch model it was exported from."""

    auto_task: str = ""  # the pipeline task, and the key of compact_nlp.auto.AUTO_CLASSES
    auto_class: str = ""  # the drop-in class that loads this one with backend="onnxruntime"
    torch_class: type = CompactBertModel  # the PyTorch model it stands in for (export=True loads and exports one)
    required_output: str = ""  # the graph output that tells the two tasks apart
    main_input_name = "input_ids"

    def __init__(self, session, config: CompactBertConfig, model_path: Path):
        self.session = session
        self.config = config
        self.model_path = Path(model_path)
        self.export_scratch: tempfile.TemporaryDirectory | None = None  # export=True's folder, removed with the model
        self.input_names = [i.name for i in session.get_inputs()]
        self.max_batch_tokens: int | None = MAX_BATCH_TOKENS  # None: run every call as one batch
        self.one_row = dynamic_activations(self.model_path, config)  # run rows alone: batch-independent outputs
        self.output_names = [o.name for o in session.get_outputs()]
        # outputs along the input's sequence axis (last_hidden_state), told from logits by the axis names the
        # export gave them, not by their length (a 3-token chunk has as many tokens as 3 labels)
        sequence = session.get_inputs()[0].shape[1]
        self.per_token = [len(o.shape) >= 2 and o.shape[1] == sequence for o in session.get_outputs()]
        if self.required_output not in self.output_names:
            other = next(c for c in ORTModel.__subclasses__() if c.required_output in self.output_names)
            raise ValueError(
                f"{self.model_path} is a {other.auto_task} graph (outputs {self.output_names}), not "
                f"{self.auto_task}; load it with {other.__name__} (or {other.auto_class}, backend='onnxruntime')."
            )

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, export: bool = False, file_name: str | None = None,
                        threads: int | None = None, provider: str = "CPUExecutionProvider", **hf_kwargs):
        """Load `model.onnx` (or `file_name`, e.g. "model.ort") from a compact folder.

        export=True: the source is a PyTorch checkpoint (hub id, HF folder or compact folder without an ONNX file);
        it is converted and exported to a temporary folder first, removed with the model (keep it with
        `save_pretrained`).
        """
        import onnxruntime as ort

        folder = Path(resolve_checkpoint(name_or_path))
        file_name = file_name or (ONNX_FILE if (folder / ONNX_FILE).exists() else ORT_FILE)
        if not (folder / file_name).exists():
            if not export:
                raise FileNotFoundError(
                    f"{name_or_path} has no {ONNX_FILE} or {ORT_FILE}. Export it first "
                    f"(`compact export {name_or_path} OUT`) or pass export=True to export it now."
                )
            scratch = cls._export_to_temp(str(name_or_path), **hf_kwargs)
            model = cls.from_pretrained(scratch.name, file_name=ONNX_FILE, threads=threads, provider=provider)
            model.export_scratch = scratch  # until the model goes, save_pretrained copies from it
            return model
        config = CompactBertConfig.from_pretrained(folder)
        return cls(load_session(folder / file_name, session_options(threads), provider), config, folder / file_name)

    @classmethod
    def _export_to_temp(cls, name_or_path: str, **hf_kwargs) -> tempfile.TemporaryDirectory:
        model = load_compact(name_or_path, cls.torch_class, **hf_kwargs)
        scratch = tempfile.TemporaryDirectory(prefix="compact-ort-")
        export_model(model, scratch.name, tokenizer_source=None, mobile=False)
        return scratch

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write config.json and the ONNX/ORT file to a folder (atomically, file by file)."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        save_pretrained_atomic(self.config, save_directory)
        with atomic_path(save_directory / self.model_path.name) as tmp:
            shutil.copyfile(self.model_path, tmp)

    def push_to_hub(self, repo_id: str, private: bool = False, commit_message: str | None = None,
                    token: str | None = None):
        """Upload the folder this model was loaded from (config, ONNX/ORT files, tokenizer, card)."""
        return push_folder(self.model_path.parent, repo_id, private=private, commit_message=commit_message,
                           token=token)

    # --- what transformers pipelines use -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def to(self, device):
        if torch.device(device).type != "cpu":
            raise ValueError(f"this ONNX Runtime model runs on the CPU execution provider; got device {device}.")
        return self

    def eval(self):
        return self

    def can_generate(self) -> bool:
        return False

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def feed(self, input_ids, attention_mask=None, token_type_ids=None) -> dict[str, np.ndarray]:
        """The session's inputs, checked: int64, an all-ones mask and zero token types where not given (a
        RoBERTa-family tokenizer gives none), token_type_ids only where the graph takes them."""
        ids = None if input_ids is None else as_int64("input_ids", input_ids)
        check_inputs(ids, self.config)
        feed = {"input_ids": ids,
                "attention_mask": as_int64("attention_mask", attention_mask) if attention_mask is not None
                else np.ones_like(ids)}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = (
                as_int64("token_type_ids", token_type_ids) if token_type_ids is not None else np.zeros_like(ids)
            )
        check_feed(feed, self.config.vocab_size, self.config.type_vocab_size)
        return feed

    def run(self, input_ids, attention_mask=None, token_type_ids=None) -> tuple[list[np.ndarray], bool]:
        """Feed the session; returns numpy outputs and whether the caller passed torch tensors."""
        as_torch = isinstance(input_ids, torch.Tensor)
        feed = self.feed(input_ids, attention_mask, token_type_ids)
        chunks = plan_chunks(feed["attention_mask"], self.max_batch_tokens or feed["input_ids"].size, self.one_row)
        merged = chunks and run_chunks(lambda part: self.session.run(None, part), feed, chunks, self.per_token)
        return (merged or self.session.run(None, feed)), as_torch


def load_session(path: Path, options=None, provider: str = "CPUExecutionProvider"):
    """An ONNX Runtime session for `path`; a truncated or foreign file is named with what to do about it."""
    import onnxruntime as ort

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; export the folder first (compact export SRC OUT).")
    try:
        return ort.InferenceSession(str(path), options, providers=[provider])
    except Exception as error:  # onnxruntime raises its own classes (InvalidProtobuf, InvalidGraph, Fail, ...)
        first = str(error).splitlines()[0][:300]
        raise CorruptFileError(f"{path} cannot be loaded by ONNX Runtime ({type(error).__name__}: {first}); it is "
                               "truncated, corrupted or not an ONNX/ORT model: export it again "
                               "(compact export SRC OUT).") from error


def check_folder(folder: str | os.PathLike) -> CompactBertConfig:
    """Read what a command will use from an exported folder before it starts: config.json, the safetensors headers
    and every ONNX/ORT file (a corrupted file is named, not met as a traceback halfway through); returns the config."""
    folder = Path(resolve_checkpoint(folder))
    if not folder.is_dir():
        raise NoSuchFolderError(f"{folder}: no such folder; give a folder written by compact export.")
    config = CompactBertConfig.from_pretrained(folder)
    if (folder / "model.safetensors").is_file():
        check_layer_count(str(folder), config.num_hidden_layers)
    for name in (ONNX_FILE, ORT_FILE):
        if (folder / name).is_file():
            load_session(folder / name)
    return config


DYNAMIC_OPS = {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "DynamicQuantizeLSTM"}


def dynamic_activations(path: Path, config: CompactBertConfig) -> bool:
    """Whether the graph quantizes activations with a scale measured per call (over the whole batch)."""
    if path.suffix == ".onnx" and path.is_file():
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        return any(node.op_type in DYNAMIC_OPS for node in graph.node)
    sections = (config.quant or {}).values()
    return any(isinstance(s, dict) and s.get("activations") == "dynamic" for s in sections)


def _int64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.int64)


def _out(array: np.ndarray, as_torch: bool):
    return torch.from_numpy(array) if as_torch else array


class ORTModelForFeatureExtraction(ORTModel):
    auto_task = "feature-extraction"
    auto_class = "AutoCompactModel"
    required_output = "last_hidden_state"

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None) -> BaseModelOutputWithPooling:
        outputs, as_torch = self.run(input_ids, attention_mask, token_type_ids)
        named = dict(zip(self.output_names, outputs))
        return BaseModelOutputWithPooling(
            last_hidden_state=_out(named["last_hidden_state"], as_torch),
            pooler_output=_out(named["pooler_output"], as_torch) if "pooler_output" in named else None,
        )

    def sentence_embedding(self, input_ids, attention_mask=None, token_type_ids=None, normalize: bool = False):
        """Mean-pooled sentence embeddings, as CompactBertModel.sentence_embedding."""
        states = self.forward(torch.as_tensor(_int64(input_ids)), attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        mask = torch.as_tensor(_int64(attention_mask)) if attention_mask is not None else None
        embedding = mean_pool(states, mask)
        return torch.nn.functional.normalize(embedding, dim=-1) if normalize else embedding


class ORTModelForSequenceClassification(ORTModel):
    auto_task = "text-classification"
    auto_class = "AutoCompactModelForSequenceClassification"
    torch_class = CompactBertForSequenceClassification
    required_output = "logits"

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None) -> SequenceClassifierOutput:
        outputs, as_torch = self.run(input_ids, attention_mask, token_type_ids)
        return SequenceClassifierOutput(logits=_out(dict(zip(self.output_names, outputs))["logits"], as_torch))



class ORTCompactBertConfig(CompactBertConfig):
    """Only a key: under it transformers' Auto mapping lists the ORT class (see below); never instantiated."""


def _register_with_pipelines() -> None:
    """transformers' text-classification pipeline logs an error for model classes that its Auto mapping does not
    list (it checks class names). List ORTModelForSequenceClassification there under a key of its own, so that
    CompactBertConfig still maps to the PyTorch class alone."""
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.register(ORTCompactBertConfig, ORTModelForSequenceClassification, exist_ok=True)


_register_with_pipelines()

"""CompactBert -> one `model.onnx` file, checked against PyTorch at export.

Exporter: torch's dynamo exporter (`torch.onnx.export(..., dynamo=True)`), not the TorchScript one. Both export a
data-dependent top-k/gather of tokens with dynamic lengths (tests/test_export.py shows it), but TorchScript is
deprecated in torch 2.x and freezes Python arithmetic on shapes to constants, while torch.export records the
per-layer widths and the dynamic batch/sequence dimensions with their valid ranges. We write one file
(`external_data=False`) so `.ort` conversion and mobile apps get a single artifact.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io import atomic_path
from ..modeling import CompactBertForSequenceClassification, CompactBertModel
from .attention import fuse_attention as fuse_attention_graph  # export_onnx's flag has the function's name

DEFAULT_OPSET = 20  # Gelu is one op from opset 20 (ONNX Runtime >= 1.17); --opset 17 still works
MIN_OPSET, MAX_OPSET = 17, 22  # 17: one LayerNormalization op; 23 exports Attention that ORT 1.32's CPU EP rejects
DEFAULT_ATOL = 1e-4


class ExportParityError(RuntimeError):
    pass


def input_names(model: CompactBertModel | CompactBertForSequenceClassification) -> list[str]:
    names = ["input_ids", "attention_mask"]
    return names + ["token_type_ids"] if model.config.type_vocab_size else names


def output_names(model: CompactBertModel | CompactBertForSequenceClassification) -> list[str]:
    if isinstance(model, CompactBertForSequenceClassification):
        return ["logits"]
    return ["last_hidden_state"] + (["pooler_output"] if model.config.add_pooler else [])


class OnnxSignature(nn.Module):
    """Positional tensors in, a tuple of named outputs out: the calling convention of the exported graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.outputs = output_names(model)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         return_dict=True)
        return tuple(out[name] for name in self.outputs)


def example_inputs(model, batch: int, length: int, pad_from: list[int] | None = None,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Random token ids; row b is padded (pad token, mask 0) from position pad_from[b] on."""
    config = model.config
    low = 0 if config.pad_token_id is None else config.pad_token_id + 1  # real tokens are never the pad id
    input_ids = torch.randint(low, config.vocab_size, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    for b, start in enumerate(pad_from or []):
        attention_mask[b, start:] = 0
        if config.pad_token_id is not None:
            input_ids[b, start:] = config.pad_token_id
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if config.type_vocab_size:
        inputs["token_type_ids"] = torch.randint(0, config.type_vocab_size, (batch, length), generator=generator)
    return inputs


@dataclass
class ParityReport:
    max_abs_diff: float
    cases: list[dict]
    atol: float

    def to_dict(self) -> dict:
        return asdict(self)


def check_parity(model, session, atol: float = DEFAULT_ATOL, cases=None, seed: int = 0) -> ParityReport:
    """Run PyTorch and an ONNX Runtime session on random and padded batches; raise above `atol`."""
    cases = cases or [
        dict(batch=1, length=1), dict(batch=2, length=7), dict(batch=3, length=33, pad_from=[33, 20, 1]),
        dict(batch=2, length=min(128, model.config.max_sequence_length), pad_from=[60]),
    ]
    generator = torch.Generator().manual_seed(seed)
    names = [i.name for i in session.get_inputs()]
    results, worst = [], 0.0
    was_training = model.training
    model.eval()
    for case in cases:
        inputs = example_inputs(model, generator=generator, **case)
        with torch.no_grad():
            expected = OnnxSignature(model)(*[inputs.get(n) for n in input_names(model)])
        got = session.run(None, {n: inputs[n].numpy() for n in names})
        diff = max(float(np.abs(e.numpy() - g).max()) for e, g in zip(expected, got))
        results.append({**case, "max_abs_diff": diff})
        worst = max(worst, diff)
    model.train(was_training)
    report = ParityReport(max_abs_diff=worst, cases=results, atol=atol)
    if not worst <= atol:
        raise ExportParityError(
            f"ONNX Runtime output differs from PyTorch by {worst:.3g} (tolerance {atol:g}); cases: {results}. "
            "The exported graph does not compute what the model computes: please report it with the model config."
        )
    return report


def check_opset(opset: int) -> None:
    """Refuse an opset the exporter and ONNX Runtime do not both run, before anything is written."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: compact exports opsets {MIN_OPSET}..{MAX_OPSET} (from "
                         f"{MIN_OPSET} LayerNormalization is a single op); default {DEFAULT_OPSET}.")
    if opset > MAX_OPSET:
        raise ValueError(f"opset {opset} is too new: compact exports opsets {MIN_OPSET}..{MAX_OPSET} (above "
                         f"{MAX_OPSET}, ONNX Runtime cannot run the exported attention); default {DEFAULT_OPSET}.")


def _fuse_attention_in_file(path: Path) -> None:
    import onnx

    graph = onnx.load(str(path))
    if fuse_attention_graph(graph):
        onnx.save(graph, str(path))


def export_onnx(model, path: str | os.PathLike, opset: int = DEFAULT_OPSET, atol: float = DEFAULT_ATOL,
                check: bool = True, fuse_attention: bool = True) -> ParityReport | None:
    """Export to one ONNX file with dynamic batch and sequence axes; verify it with ONNX Runtime when `check`.

    fuse_attention: write each layer's attention as one MultiHeadAttention node (export/attention.py): faster on
    ONNX Runtime's CPU execution provider; False for graphs meant for NNAPI or CoreML, which do not run it."""
    check_opset(opset)
    was_training = model.training
    # eval() on the wrapper too: torch.onnx.export restores the *wrapper's* mode afterwards, and a new module is in
    # train mode, which would leave the caller's model with dropout switched on.
    wrapper = OnnxSignature(model).eval()
    names = input_names(model)
    example = example_inputs(model, batch=2, length=16)
    batch = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=1, max=model.config.max_sequence_length)
    args = tuple(example[n] for n in names)  # families without token types get a two-input graph
    dynamic = tuple({0: batch, 1: sequence} for _ in names)
    report = None
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():  # a failed export or parity check leaves no file
            warnings.simplefilter("ignore")  # the exporter warns about torchvision ops we do not use
            torch.onnx.export(
                wrapper, args, str(tmp), dynamo=True, external_data=False, opset_version=opset,
                input_names=names, output_names=wrapper.outputs, dynamic_shapes=dynamic, verbose=False,
                optimize=True,
            )
            if fuse_attention:
                _fuse_attention_in_file(tmp)
            if check:
                import onnxruntime as ort

                report = check_parity(model, ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]), atol)
    finally:
        model.train(was_training)
    return report

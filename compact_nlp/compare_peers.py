"""The peers of `compact bench` (compact_nlp.compare): what users ship without compact, made from the fine-tuned
fp32 model. transformers' own graph through onnxruntime's quantize_dynamic, with and without onnxruntime's BERT
fusions, and (with --optimum-python) Optimum itself, run in its own environment by compact_nlp/optimum_peer.py."""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path

from .auto import AutoCompactModel, AutoCompactModelForSequenceClassification
from .convert import to_hf_model
from .modeling import CompactBertConfig
from .optimum_peer import QUANTIZED, QUANTIZED_FUSED

PYTORCH = "PyTorch fp32"
ORT_FP32 = "ORT fp32"
PEER = "peer: ORT dynamic int8"
PEER_FUSED = "peer: ORT fusions + dynamic int8"
OPTIMUM = "Optimum: dynamic int8 (avx512_vnni)"
OPTIMUM_FUSED = "Optimum: O3 fusions + dynamic int8"
# the rows made from the fp32 model that users would ship instead of compact's
PEERS = (PEER, PEER_FUSED, OPTIMUM, OPTIMUM_FUSED)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export_hf_model(fp32_folder: Path, path: Path, output: str = "logits") -> None:
    """The fine-tuned model in transformers' own BertForSequenceClassification (output "logits"), or the encoder in
    BertModel (output "last_hidden_state"), exported as Optimum exported it (TorchScript exporter, dynamic batch and
    sequence)."""
    import torch

    auto = AutoCompactModelForSequenceClassification if output == "logits" else AutoCompactModel
    hf = to_hf_model(auto.from_pretrained(fp32_folder)).eval()

    class Output(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = hf

        def forward(self, input_ids, attention_mask, token_type_ids):
            return getattr(self.model(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids), output)

    example = tuple(torch.ones(1, 16, dtype=torch.long) for _ in INPUTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Output().eval(), example, str(path), dynamo=False, opset_version=17,
                          input_names=list(INPUTS), output_names=[output],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in INPUTS})


def ort_dynamic_int8(fp32_folder: Path, scratch: Path, output: str = "logits") -> tuple[Path, Path]:
    """transformers' own graph of the folder (scratch/hf.onnx) and onnxruntime's quantize_dynamic of it with its
    defaults (scratch/peer_dynamic.onnx): what a user gets from ORT's documented int8 recipe."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    scratch.mkdir(parents=True, exist_ok=True)
    hf_graph, plain = scratch / "hf.onnx", scratch / "peer_dynamic.onnx"
    export_hf_model(fp32_folder, hf_graph, output)
    quantize_dynamic(str(hf_graph), str(plain), weight_type=QuantType.QInt8)
    return hf_graph, plain


def peers(fp32_folder: Path, scratch: Path, output: str = "logits") -> dict[str, Path]:
    """The two peer int8 graphs of a fine-tuned folder (or of an encoder: output="last_hidden_state"), written into
    `scratch`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    config = CompactBertConfig.from_pretrained(fp32_folder)
    hf_graph, plain = ort_dynamic_int8(fp32_folder, scratch, output)
    fused_fp32, fused = scratch / "hf_fused.onnx", scratch / "peer_fused.onnx"
    optimized = optimize_model(str(hf_graph), model_type="bert", num_heads=config.num_heads_per_layer[0],
                               hidden_size=config.hidden_size)
    optimized.save_model_to_file(str(fused_fp32))
    # contrib ops (Attention, SkipLayerNormalization) defeat ONNX shape inference; tell the quantizer they are fp32
    quantize_dynamic(str(fused_fp32), str(fused), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return {PEER: plain, PEER_FUSED: fused}


class OptimumEnvironmentError(OSError):
    """--optimum-python names no python, or one whose environment cannot run Optimum (an OSError, so that the CLI
    reports it as a clear error like a missing file)."""


def optimum_peer(fp32_folder: Path, scratch: Path, python: str) -> tuple[dict[str, Path], dict]:
    """Optimum's own dynamic int8 graphs of a fine-tuned folder, plain and after its O3 fusions, made by `python` (an
    environment with Optimum) from the model saved as a transformers folder; returns {row name: graph} and the
    versions that environment used."""
    hf_folder = save_hf_folder(fp32_folder, scratch / "hf")
    script = Path(__file__).with_name("optimum_peer.py")
    try:
        done = subprocess.run([python, str(script), str(hf_folder), str(scratch / "optimum")], capture_output=True,
                              text=True, check=True)
    except FileNotFoundError:
        raise OptimumEnvironmentError(f"--optimum-python {python} does not exist; point it at the python of an "
                                      "environment with Optimum (docs/combined.md), or leave it out.") from None
    except subprocess.CalledProcessError as error:
        raise OptimumEnvironmentError(f"Optimum failed in {python} (is optimum-onnx[onnxruntime] installed there? "
                                      f"see docs/combined.md):\n{error.stderr[-2000:]}") from None
    return ({OPTIMUM: scratch / "optimum" / QUANTIZED, OPTIMUM_FUSED: scratch / "optimum" / QUANTIZED_FUSED},
            json.loads(done.stdout.strip().splitlines()[-1]))


def hf_model(fp32_folder: Path):
    """The fine-tuned folder as transformers' own BertForSequenceClassification."""
    return to_hf_model(AutoCompactModelForSequenceClassification.from_pretrained(fp32_folder)).eval()


def save_hf_folder(fp32_folder: Path, path: Path, output: str = "logits") -> Path:
    """The folder as transformers' own model (BertForSequenceClassification for output "logits", else BertModel) and
    its tokenizer, saved where a peer in another environment can load it."""
    from transformers import AutoTokenizer

    auto = AutoCompactModelForSequenceClassification if output == "logits" else AutoCompactModel
    to_hf_model(auto.from_pretrained(fp32_folder)).eval().save_pretrained(path)
    AutoTokenizer.from_pretrained(fp32_folder).save_pretrained(path)
    return path

"""LiteRT int8 as a peer (run by the litert environment's python; protocol: worker_common).

Its documented recipe: litert-torch converts the PyTorch model, which needs static shapes, so one signature per
length bucket (16, 32, 64, ... up to the longest input) in one multi-signature file that shares the weights;
ai-edge-quantizer's dynamic_wi8_afp32 recipe (per-channel int8 weights, activations quantized per call) makes it int8;
ai_edge_litert's Interpreter runs it with `threads` threads. Each input runs in the smallest bucket that fits it,
padded with attention_mask 0 (the padding is part of its time, as it is for a LiteRT user).
"""

import sys
from pathlib import Path

sys.path[0:1] = []  # this folder holds compact's modules: they must not shadow the peer's packages
sys.path.append(str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import worker_common as common  # noqa: E402

NAMES = ("input_ids", "attention_mask", "token_type_ids")


ROW = "LiteRT int8 (ai-edge-quantizer)"


def buckets(inputs: list[dict]) -> list[int]:
    longest, sizes = max(x["input_ids"].shape[1] for x in inputs), [16]
    while sizes[-1] < min(longest, 512):
        sizes.append(sizes[-1] * 2)
    return sizes


def convert(spec: dict) -> dict:
    """One signature per length bucket up to the longest input (timed, scored or long), quantized to int8."""
    import litert_torch
    import torch
    from ai_edge_quantizer import quantizer, recipe
    from transformers import AutoModel, AutoModelForSequenceClassification

    sizes = buckets(common.every_input(spec))
    auto = AutoModelForSequenceClassification if spec["output"] == "logits" else AutoModel
    model = auto.from_pretrained(spec["hf_folder"], attn_implementation="eager").eval()

    class Wrapped(torch.nn.Module):
        def forward(self, input_ids, attention_mask, token_type_ids):
            return getattr(model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids),
                           spec["output"])

    converter = None
    for size in sizes:
        sample = tuple(torch.ones(1, size, dtype=torch.long) for _ in NAMES)
        converter = (litert_torch.signature if converter is None else converter.signature)(f"len{size}", Wrapped(),
                                                                                          sample)
    float_path, int8_path = spec["out"] / "model_fp32.tflite", spec["out"] / "model_int8.tflite"
    converter.convert().export(str(float_path))
    quantized = quantizer.Quantizer(str(float_path), recipe.dynamic_wi8_afp32()).quantize()
    quantized.export_model(str(int8_path), overwrite=True)
    return {"files": [str(int8_path)], "sizes": sizes}


def load(spec: dict, artifacts: dict, name: str, threads: int):
    """The interpreter with one runner per bucket; the call pads each input to the smallest bucket that fits it."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=artifacts["files"][0], num_threads=threads)
    sizes, by_size = artifacts["sizes"], {}
    for size in sizes:
        runner = interpreter.get_signature_runner(f"len{size}")
        details = runner.get_input_details()  # {arg name: {dtype, shape, ...}}; args_0.. in forward()'s order
        ordered = sorted(details, key=lambda arg: int(arg.rsplit("_", 1)[-1]) if arg[-1].isdigit() else 0)
        by_size[size] = (runner, [(arg, details[arg]["dtype"]) for arg in ordered])

    def call(x):
        length = x["input_ids"].shape[1]
        size = next(s for s in sizes if s >= length)
        runner, args = by_size[size]
        feed = {}
        for (arg, dtype), input_name in zip(args, NAMES):
            padded = np.zeros((1, size), dtype=dtype)
            padded[0, :length] = x[input_name][0]
            feed[arg] = padded
        return next(iter(runner(**feed).values()))

    return call


def runtime(artifacts: dict) -> str:
    import ai_edge_litert
    import litert_torch

    return (f"ai-edge-litert {ai_edge_litert.__version__}, litert-torch {litert_torch.__version__}, "
            f"buckets {artifacts['sizes']}")


if __name__ == "__main__":
    common.main((ROW,), convert, load, runtime, modules=("ai_edge_litert.interpreter",))

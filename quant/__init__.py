"""compact_nlp.quant: int8 (Q8BERT) and binary (BinaryBERT / BiT) quantization of CompactBert, shipped to ONNX Runtime
and ORT Mobile.

    from compact_nlp.quant import Int8Config, quantize_folder, prepare_qat, QuantizationHook, export_qat

    # post-training: an export folder (model.onnx + tokenizer) -> int8 folder (model.onnx, model.ort)
    quantize_folder("fp32", "int8", Int8Config(), texts=train_sentences)
    quantize_folder("fp32", "int8-qdq", Int8Config(activations="static"), texts=train_sentences)

    # quantization-aware training inside CompactTrainer, distilled from the fp32 model, then both exports
    model = prepare_qat(fp32_model_copy, Int8Config(mode="qat"))
    CompactTrainer(model=model, teacher_model=fp32_model, hooks=[QuantizationHook()], ...).train()
    export_qat(model, "int8-qat", tokenizer, texts=train_sentences)

    # binary weights (W1A8 by default), trained from the fp32 model with two-stage distillation, shipped packed
    model = prepare_binary(fp32_model_copy, BinaryConfig())
    CompactTrainer(model=model, teacher_model=fp32_model, hooks=binary_hooks(config), ...).train()
    export_binary(model, "binary", tokenizer, texts=train_sentences)

In a recipe: `quant: {int8: {...}}` or `quant: {binary: {...}}` (presets int8-ptq, int8-qat, binary).
"""

from .binary import TwoStageDistillationHook, binary_hooks, export_binary, load_binary_checkpoint, prepare_binary
from .config import BinaryConfig, Int8Config, QuantConfigError
from .onnx_int8 import AlreadyQuantizedError, CalibrationError, quantize_folder
from .qat import QuantizationHook, export_qat, prepare_qat


__all__ = ["Int8Config", "BinaryConfig", "QuantConfigError", "prepare_binary", "binary_hooks", "export_binary",
           "load_binary_checkpoint", "TwoStageDistillationHook", "AlreadyQuantizedError", "CalibrationError", "quantize_folder",
           "prepare_qat", "QuantizationHook", "export_qat"]

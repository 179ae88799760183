"""compact_nlp.quant: int8 quantization of CompactBert (Q8BERT), shipped to ONNX Runtime and ORT Mobile.

    from compact_nlp.quant import Int8Config, quantize_folder, prepare_qat, QuantizationHook, export_qat

    # post-training: an export folder (model.onnx + tokenizer) -> int8 folder (model.onnx, model.ort)
    quantize_folder("fp32", "int8", Int8Config(), texts=train_sentences)
    quantize_folder("fp32", "int8-qdq", Int8Config(activations="static"), texts=train_sentences)

    # quantization-aware training inside CompactTrainer, distilled from the fp32 model, then both exports
    model = prepare_qat(fp32_model_copy, Int8Config(mode="qat"))
    CompactTrainer(model=model, teacher_model=fp32_model, hooks=[QuantizationHook()], ...).train()
    export_qat(model, "int8-qat", tokenizer, texts=train_sentences)

In a recipe: `quant: {int8: {...}}` (presets int8-ptq and int8-qat). Binary weights (BinaryBERT / BiT) are not
implemented yet.
"""

from .config import Int8Config, QuantConfigError
from .onnx_int8 import AlreadyQuantizedError, CalibrationError, quantize_folder
from .qat import QuantizationHook, export_qat, prepare_qat

__all__ = ["Int8Config", "QuantConfigError", "AlreadyQuantizedError", "CalibrationError", "quantize_folder",
           "prepare_qat", "QuantizationHook", "export_qat"]

"""OpenVINO int8 as a peer (run by the openvino environment's python; protocol: worker_common).

Its documented recipe for a transformer: the ONNX graph read by OpenVINO, NNCF post-training quantization
(nncf.quantize with model_type=TRANSFORMER, calibrated on the inputs themselves, at most 300), compiled for CPU with
the LATENCY hint. Two rows: OpenVINO's default inference precision (bf16 on AMX CPUs, which costs fidelity) and the
f32 hint.
"""

import sys
from pathlib import Path

sys.path[0:1] = []  # this folder holds compact's modules: they must not shadow the peer's packages
sys.path.append(str(Path(__file__).resolve().parent))

import worker_common as common  # noqa: E402


def quantized(spec: dict):
    import nncf
    import openvino as ov

    model = ov.Core().read_model(spec["onnx"])
    names = [port.get_any_name() for port in model.inputs]
    calibration = nncf.Dataset(spec["inputs"][:300], lambda x: {k: x[k] for k in names})
    int8 = nncf.quantize(model, calibration, model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=min(300, len(spec["inputs"])))
    ov.save_model(int8, str(spec["out"] / "openvino_int8.xml"))
    return int8, names


def main() -> None:
    import nncf
    import openvino as ov

    spec = common.read_spec()
    int8, names = quantized(spec)
    files = [spec["out"] / "openvino_int8.xml", spec["out"] / "openvino_int8.bin"]
    rows, default_hint = [], None
    for name, hint in (("OpenVINO int8 (NNCF, default hint)", None), ("OpenVINO int8 (NNCF, f32 hint)", "f32")):
        config = {"INFERENCE_NUM_THREADS": spec["threads"], "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        config.update({"INFERENCE_PRECISION_HINT": hint} if hint else {})
        compiled = ov.Core().compile_model(int8, "CPU", config)
        hint_type = compiled.get_property("INFERENCE_PRECISION_HINT")
        default_hint = default_hint or getattr(hint_type, "to_string", hint_type.__str__)()
        request = compiled.create_infer_request()
        output = compiled.output(0)

        def call(x, request=request, output=output):
            return request.infer({k: x[k] for k in names})[output]

        rows.append(common.row(spec, name, call, files, common.finish_output(spec)))
    common.write(spec, f"openvino {ov.__version__.split('-')[0]}, nncf {nncf.__version__} (default precision hint "
                       f"here: {default_hint})", rows)


if __name__ == "__main__":
    main()

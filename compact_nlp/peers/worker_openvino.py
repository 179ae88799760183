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


DEFAULT, F32 = "OpenVINO int8 (NNCF, default hint)", "OpenVINO int8 (NNCF, f32 hint)"
HINTS = {DEFAULT: None, F32: "f32"}
SEEN = {}  # the precision the default hint chose on this CPU, read when that row is compiled


def convert(spec: dict) -> dict:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(spec["onnx"])
    names = [port.get_any_name() for port in model.inputs]
    calibration = nncf.Dataset(spec["inputs"][:300], lambda x: {k: x[k] for k in names})
    int8 = nncf.quantize(model, calibration, model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=min(300, len(spec["inputs"])))
    xml = spec["out"] / "openvino_int8.xml"
    ov.save_model(int8, str(xml))
    return {"files": [str(xml), str(xml.with_suffix(".bin"))], "names": names}


def load(spec: dict, artifacts: dict, name: str, threads: int):
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    config.update({"INFERENCE_PRECISION_HINT": HINTS[name]} if HINTS[name] else {})
    compiled = ov.Core().compile_model(artifacts["files"][0], "CPU", config)
    if HINTS[name] is None:
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        SEEN["default"] = getattr(hint, "to_string", hint.__str__)()
    request, output, names = compiled.create_infer_request(), compiled.output(0), artifacts["names"]
    return lambda x: request.infer({k: x[k] for k in names})[output]


def runtime(artifacts: dict) -> str:
    import nncf
    import openvino as ov

    return (f"openvino {ov.__version__.split('-')[0]}, nncf {nncf.__version__} (default precision hint here: "
            f"{SEEN.get('default', 'not read')})")


if __name__ == "__main__":
    common.main((DEFAULT, F32), convert, load, runtime, modules=("openvino",))

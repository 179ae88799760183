"""Run by bench/arm64.py in the emulated arm64 Python (bench/arm64_setup.sh), which has onnxruntime and numpy only:
each file's outputs on its inputs, then its latency, by the peers' worker loop (compact_nlp/peers/worker_common.py,
imported by path: it imports nothing from compact).

    python3.11 arm64_worker.py SPEC.json    SPEC: {"files": {name: path}, "inputs": {name: inputs.json},
                                                   "rounds": n, "out": folder}
Writes out/result.json ({"runtime", "machine", "rows": {name: {median_ms, p90_ms, noise_floor, calls}}}) and
out/<name>.npy (the first output of every input, flattened, one row per input).
"""

import json
import platform
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compact_nlp" / "peers"))
from worker_common import read_inputs, time_inputs  # noqa: E402


def session_call(path: str):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return lambda x: session.run(None, {k: v for k, v in x.items() if k in names})[0]


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(spec["out"])
    rows = {}
    for name, path in spec["files"].items():
        call, inputs = session_call(path), read_inputs(spec["inputs"][name])
        np.save(out / f"{name}.npy", np.stack([np.asarray(call(x), dtype=np.float32).reshape(-1) for x in inputs]))
        rows[name] = time_inputs(call, inputs, spec["rounds"], warmup=3)
        print(f"{name}: {rows[name]['median_ms']} ms", flush=True)
    result = {"runtime": f"onnxruntime {ort.__version__}", "machine": platform.machine(), "rows": rows}
    (out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

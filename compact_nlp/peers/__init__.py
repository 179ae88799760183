"""The int8 runtimes a user could pick instead of compact, measured on the user's own inputs (measure_int8_peers),
and the fastest of them (fastest). Peer environments: bench/peers_setup.sh."""

from .envs import ENVIRONMENTS, peer_envs_root, peer_python
from .measure import ORT_DYNAMIC, encode_texts, measure_int8_peers, reference_outputs
from .optimum import OPTIMUM
from .result import PeerResult, fastest
from .workers import CTRANSLATE2, LITERT, OPENVINO_DEFAULT, OPENVINO_F32, WORKERS, PeerRun, WorkerRequest, run_workers

__all__ = ["CTRANSLATE2", "ENVIRONMENTS", "LITERT", "OPENVINO_DEFAULT", "OPENVINO_F32", "OPTIMUM", "ORT_DYNAMIC",
           "PeerResult", "PeerRun", "WORKERS", "WorkerRequest", "encode_texts", "fastest", "measure_int8_peers",
           "peer_envs_root", "peer_python", "reference_outputs", "run_workers"]

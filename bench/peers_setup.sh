#!/usr/bin/env bash
# The peer runtimes of `compact bench` and compact_nlp.peers, one virtual environment each, OUTSIDE the repo:
#
#     bash bench/peers_setup.sh [ROOT]          # ROOT defaults to $COMPACT_PEER_ENVS, else /work/peer-envs
#     bash bench/peers_setup.sh ROOT litert     # only the named environments (litert ctranslate2 openvino optimum)
#
# Each peer gets ROOT/<name>/ (a venv; compact runs ROOT/<name>/bin/python). They cannot share compact's
# environment: Optimum pins transformers < 4.58, litert-torch pulls jax/torchao, OpenVINO brings its own runtime.
# torch is pinned to 2.13.0, the CPU wheel this machine's pip finds locally (an unpinned torch pulls the CUDA build).
# An environment whose install fails is removed and ROOT/<name>.skipped says why (the last lines of pip's output);
# compact_nlp.peers reports that reason in the peer's row instead of a number.
set -u
ROOT="${1:-${COMPACT_PEER_ENVS:-/work/peer-envs}}"
shift || true
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(litert ctranslate2 openvino optimum)
PYTHON="${PYTHON:-python3.11}"
TORCH="torch==2.13.0"

declare -A PACKAGES=(
  # LiteRT: litert-torch converts the PyTorch model (static shapes: one signature per length bucket),
  # ai-edge-quantizer makes it dynamic-range int8, ai-edge-litert runs it
  [litert]="$TORCH ai-edge-litert==2.3.* ai-edge-quantizer==0.10.* litert-torch==0.10.* transformers<5.26"
  # CTranslate2: its transformers converter needs torch + transformers; inference needs only ctranslate2
  [ctranslate2]="$TORCH ctranslate2==4.8.* transformers<5.26"
  # OpenVINO + NNCF: converts the ONNX graph compact already exported (no torch needed)
  [openvino]="openvino==2026.4.* nncf==3.4.* onnx"
  # Optimum: its own ONNX export and ORTQuantizer; it supports transformers < 4.58 only
  [optimum]="$TORCH optimum-onnx[onnxruntime]==0.1.* transformers<4.58"
)

mkdir -p "$ROOT"
for name in "${NAMES[@]}"; do
  env="$ROOT/$name"
  if [ -x "$env/bin/python" ] && [ -f "$env/.installed" ]; then
    echo "$name: already installed in $env"
    continue
  fi
  rm -rf "$env" "$ROOT/$name.skipped"
  echo "$name: installing ${PACKAGES[$name]} into $env"
  log="$ROOT/$name.log"
  # shellcheck disable=SC2086
  if "$PYTHON" -m venv "$env" > "$log" 2>&1 \
      && "$env/bin/pip" install --quiet ${PACKAGES[$name]} >> "$log" 2>&1; then
    "$env/bin/pip" freeze > "$env/.installed"
    echo "$name: ok"
  else
    { echo "pip install ${PACKAGES[$name]} failed:"; tail -n 15 "$log"; } > "$ROOT/$name.skipped"
    rm -rf "$env"
    echo "$name: SKIPPED, see $ROOT/$name.skipped"
  fi
done

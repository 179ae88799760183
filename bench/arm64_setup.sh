#!/bin/bash
# An emulated arm64 Python with onnxruntime's aarch64 wheel, so that bench/arm64.py can run the .ort files compact
# ships through onnxruntime's ARM kernels on an x86 machine: Debian's qemu-user-static, Debian's arm64 python3.11
# and its libraries unpacked into DIR/root (no system install), and the aarch64 wheels (onnxruntime at this
# environment's version, numpy) in DIR/site. Needs root (apt's arm64 architecture; bench/arm64.py mounts an ARM
# /proc/cpuinfo privately, since qemu-user shows the host's and onnxruntime's cpuinfo crashes on it) and the Debian
# and PyPI registries.  Usage: bash bench/arm64_setup.sh [DIR=/work/arm64]  (about 2 minutes)
set -euo pipefail
DIR=${1:-/work/arm64}
PY=${PY:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
mkdir -p "$DIR/debs" "$DIR/root"
cd "$DIR/debs"
dpkg --add-architecture arm64
apt-get update -qq
apt-get download -qq qemu-user-static
for p in libc6 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libexpat1 zlib1g libffi8 libssl3 \
         libstdc++6 libgcc-s1 libbz2-1.0 liblzma5 libuuid1 libsqlite3-0 libncursesw6 libtinfo6 libreadline8 \
         libdb5.3 libgdbm6 libnsl2 libtirpc3 libcrypt1; do
    apt-get download -qq "$p:arm64"
done
for deb in *_arm64.deb; do dpkg -x "$deb" "$DIR/root"; done
dpkg -x qemu-user-static_*_amd64.deb "$DIR/qemu"
ORT=$("$PY" -c "import onnxruntime; print(onnxruntime.__version__)")
"$PY" -m pip install -q --target "$DIR/site" --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
    --platform manylinux_2_17_aarch64 --python-version 3.11 --implementation cp --only-binary=:all: \
    "onnxruntime==$ORT" numpy
# Cortex-A76 (the big core of 2019-2021 phones: Snapdragon 855-888, Dimensity 1000), with the dot-product
# instructions (asimddp) onnxruntime's int8 kernels use; qemu emulates the same CPU (-cpu cortex-a76)
for n in 0 1; do
    printf 'processor\t: %s\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n' "$n"
done > "$DIR/cpuinfo"
echo "arm64 environment ready in $DIR (onnxruntime $ORT)"
